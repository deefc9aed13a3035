//! BigQuery type mapping and DDL, derived from the published schema only.
//!
//! Per published table and major version three objects:
//! - `<table>_v<major>_raw`: every delivered row version, append-only, plus `_op` (`U`, or
//!   `D` for a delete, docs/DELETES.md; NULL, read as `U`, for rows loaded before delete
//!   capture), `_tidemark_delivery_id` and `_tidemark_loaded_at`; partitioned by `DATE(updated_at)` (a
//!   delivery's rows lie in its window, so the per-delivery guard and MERGE source prune to one
//!   or two partitions) and clustered by `_tidemark_delivery_id`;
//! - `<table>_v<major>`: one row per `id`, the newest `updated_at` (MERGE; a delete removes
//!   the row), clustered by `id`;
//! - `<table>_v<major>_latest`: a view over the raw table keeping the newest version of each
//!   `id` unless it is a delete (what the analyst table holds, computed from history).
//!
//! Type mapping (lossless): numeric(P,S) → `NUMERIC(P, S)` when S ≤ 9 and P − S ≤ 29, else
//! `BIGNUMERIC(P, S)`; timestamptz → `TIMESTAMP` (UTC, microseconds); date → `DATE`; int2/4/8
//! → `INT64`; float8 → `FLOAT64`; bool → `BOOL`; jsonb → `JSON` (or `STRING` when configured);
//! text[] → `ARRAY<STRING>` (REPEATED STRING); uuid, inet, text → `STRING`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::schema::{Column, ColumnType, OP_COLUMN, OP_DELETE, OP_UPSERT, TableSchema};

/// Metadata columns of the raw and analyst tables.
pub const DELIVERY_COLUMN: &str = "_tidemark_delivery_id";
pub const LOADED_AT_COLUMN: &str = "_tidemark_loaded_at";

/// How jsonb lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonbAs {
    /// A `JSON` column, parsed with `PARSE_JSON` (BigQuery's default `wide_number_mode`
    /// `exact`: a number a double cannot hold exactly is refused, never rounded).
    #[default]
    Json,
    /// A `STRING` column holding Postgres' JSON text unchanged.
    String,
}

/// Which of the tables a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The per-delivery load target: exactly the Parquet file's columns, jsonb as STRING.
    Stage,
    Raw,
    Analyst,
}

/// The BigQuery type of a published column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BqType {
    /// Standard SQL type name as the REST schema spells it (`STRING`, `NUMERIC`, ...).
    pub name: &'static str,
    /// Parameters of NUMERIC/BIGNUMERIC.
    pub precision_scale: Option<(u8, i8)>,
    /// REPEATED (arrays).
    pub repeated: bool,
}

impl BqType {
    /// The type as DDL text: `NUMERIC(12, 3)`, `ARRAY<STRING>`, `TIMESTAMP`.
    pub fn ddl(&self) -> String {
        let base = match self.precision_scale {
            Some((p, s)) => format!("{}({p}, {s})", self.name),
            None => self.name.to_string(),
        };
        if self.repeated { format!("ARRAY<{base}>") } else { base }
    }
}

/// The one mapping from published types to BigQuery types.
pub fn bq_type(ty: ColumnType, jsonb: JsonbAs) -> BqType {
    let plain = |name| BqType {
        name,
        precision_scale: None,
        repeated: false,
    };
    match ty {
        ColumnType::Uuid | ColumnType::Text | ColumnType::Inet => plain("STRING"),
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => plain("INT64"),
        ColumnType::Float8 => plain("FLOAT64"),
        ColumnType::Bool => plain("BOOL"),
        ColumnType::Numeric { precision, scale } => {
            // NUMERIC holds 29 integer and 9 fractional digits; BIGNUMERIC 38 and 38.
            let fits_numeric = scale <= 9 && (precision as i16 - scale as i16) <= 29;
            BqType {
                name: if fits_numeric { "NUMERIC" } else { "BIGNUMERIC" },
                precision_scale: Some((precision, scale)),
                repeated: false,
            }
        }
        ColumnType::Timestamptz => plain("TIMESTAMP"),
        ColumnType::Date => plain("DATE"),
        ColumnType::Jsonb => match jsonb {
            JsonbAs::Json => plain("JSON"),
            JsonbAs::String => plain("STRING"),
        },
        ColumnType::TextArray => BqType {
            name: "STRING",
            precision_scale: None,
            repeated: true,
        },
    }
}

/// The type of a column in a table of `role`: the stage table holds jsonb as the Parquet
/// file's STRING, whatever the published tables use.
fn column_type(c: &Column, role: Role, jsonb: JsonbAs) -> BqType {
    match role {
        Role::Stage => bq_type(c.ty, JsonbAs::String),
        Role::Raw | Role::Analyst => bq_type(c.ty, jsonb),
    }
}

/// `` `name` `` with BigQuery's escapes for backslash and backtick.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for ch in name.chars() {
        match ch {
            '`' => out.push_str("\\`"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

/// A single-quoted string literal with BigQuery's escapes.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Where the tables live: `dataset`, or `project`.`dataset` when the project is known.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub project: Option<String>,
    pub dataset: String,
}

impl Dataset {
    /// The quoted path of `table` in this dataset: `` `p`.`d`.`t` ``.
    pub fn table(&self, table: &str) -> String {
        match &self.project {
            Some(p) => format!(
                "{}.{}.{}",
                quote_ident(p),
                quote_ident(&self.dataset),
                quote_ident(table)
            ),
            None => format!("{}.{}", quote_ident(&self.dataset), quote_ident(table)),
        }
    }
}

/// Table names of a published schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub raw: String,
    pub analyst: String,
    pub latest: String,
}

pub fn table_names(schema: &TableSchema) -> TableNames {
    let base = format!("{}_v{}", schema.table.name(), schema.version);
    TableNames {
        raw: format!("{base}_raw"),
        analyst: base.clone(),
        latest: format!("{base}_latest"),
    }
}

fn column_defs(schema: &TableSchema, role: Role, jsonb: JsonbAs, out: &mut String) {
    for (i, c) in schema.columns.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        let ty = column_type(c, role, jsonb);
        // Arrays cannot be NOT NULL in BigQuery (an empty array is their NULL).
        let not_null = if !c.nullable && !ty.repeated { " NOT NULL" } else { "" };
        let _ = write!(
            out,
            "  {} {}{not_null} OPTIONS(description={})",
            quote_ident(&c.name),
            ty.ddl(),
            quote_literal(&c.description)
        );
    }
    if role != Role::Analyst {
        let _ = write!(
            out,
            ",\n  {} STRING OPTIONS(description={})",
            quote_ident(OP_COLUMN),
            quote_literal(OP_DESCRIPTION),
        );
    }
    if role != Role::Stage {
        let _ = write!(
            out,
            ",\n  {} STRING NOT NULL OPTIONS(description={}),\n  {} TIMESTAMP NOT NULL OPTIONS(description={})",
            quote_ident(DELIVERY_COLUMN),
            quote_literal("tidemark delivery that loaded this row version"),
            quote_ident(LOADED_AT_COLUMN),
            quote_literal("when tidemark loaded this row version (UTC)"),
        );
    }
}

/// The description of the raw table's `_op` column.
pub const OP_DESCRIPTION: &str = "U: this version of the id; D: the id was deleted at updated_at (last values); NULL: loaded before delete capture, a U";

/// `_op` of a raw row, NULL (loaded before delete capture) read as `U`.
pub fn op_expression(prefix: &str) -> String {
    format!("COALESCE({prefix}{}, '{OP_UPSERT}')", quote_ident(OP_COLUMN))
}

/// `CREATE TABLE IF NOT EXISTS` of the raw history table.
pub fn create_raw(schema: &TableSchema, ds: &Dataset, jsonb: JsonbAs) -> String {
    let names = table_names(schema);
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", ds.table(&names.raw));
    column_defs(schema, Role::Raw, jsonb, &mut sql);
    let _ = write!(
        sql,
        "\n)\nPARTITION BY DATE({})\nCLUSTER BY {}\nOPTIONS(description={})",
        quote_ident("updated_at"),
        quote_ident(DELIVERY_COLUMN),
        quote_literal(&format!(
            "{} v{}: every delivered row version (append-only). {}",
            schema.table, schema.version, schema.description
        ))
    );
    sql
}

/// `CREATE TABLE IF NOT EXISTS` of the analyst table (one row per id).
pub fn create_analyst(schema: &TableSchema, ds: &Dataset, jsonb: JsonbAs) -> String {
    let names = table_names(schema);
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", ds.table(&names.analyst));
    column_defs(schema, Role::Analyst, jsonb, &mut sql);
    let _ = write!(
        sql,
        "\n)\nCLUSTER BY {}\nOPTIONS(description={})",
        quote_ident("id"),
        quote_literal(&format!(
            "{} v{}: the newest version of each row. {}",
            schema.table, schema.version, schema.description
        ))
    );
    sql
}

/// `CREATE VIEW IF NOT EXISTS` of the latest view over the raw table.
pub fn create_latest_view(schema: &TableSchema, ds: &Dataset) -> String {
    let names = table_names(schema);
    format!(
        "CREATE VIEW IF NOT EXISTS {view}\nOPTIONS(description={desc})\nAS SELECT * EXCEPT({d}, {l}, {op_name})\nFROM (\n  SELECT * FROM {raw}\n  WHERE TRUE\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY {u} DESC, {op} DESC, {l} DESC) = 1\n)\nWHERE {op} <> '{OP_DELETE}'",
        op = op_expression(""),
        op_name = quote_ident(OP_COLUMN),
        view = ds.table(&names.latest),
        desc = quote_literal(&format!(
            "{} v{}: the newest version of each row, computed from the raw history, without deleted rows",
            schema.table, schema.version
        )),
        d = quote_ident(DELIVERY_COLUMN),
        l = quote_ident(LOADED_AT_COLUMN),
        raw = ds.table(&names.raw),
        id = quote_ident("id"),
        u = quote_ident("updated_at"),
    )
}

/// The CREATE statements (raw, analyst, latest view) of a schema, in order.
pub fn create_statements(schema: &TableSchema, ds: &Dataset, jsonb: JsonbAs) -> Vec<String> {
    vec![
        create_raw(schema, ds, jsonb),
        create_analyst(schema, ds, jsonb),
        create_latest_view(schema, ds),
    ]
}

/// The DDL file for `warehouse/bigquery/`: the three statements for `dataset` (unqualified by
/// project, so they run in the session's default project), separated by `;` and a blank line.
pub fn ddl(schema: &TableSchema, dataset: &str) -> String {
    let ds = Dataset {
        project: None,
        dataset: dataset.to_string(),
    };
    let mut out = String::new();
    for s in create_statements(schema, &ds, JsonbAs::default()) {
        out.push_str(&s);
        out.push_str(";\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The REST `TableSchema` (`{"fields": [...]}`) of a table of `role`.
pub fn schema_json(schema: &TableSchema, role: Role, jsonb: JsonbAs) -> Value {
    let mut fields: Vec<Value> = schema
        .columns
        .iter()
        .map(|c| {
            let ty = column_type(c, role, jsonb);
            let mode = if ty.repeated {
                "REPEATED"
            } else if c.nullable || role == Role::Stage {
                // The stage table takes whatever the file holds; NOT NULL is the published
                // tables' business (and is checked when rows move there).
                "NULLABLE"
            } else {
                "REQUIRED"
            };
            let mut f = json!({"name": c.name, "type": ty.name, "mode": mode, "description": c.description});
            if let Some((p, s)) = ty.precision_scale {
                f["precision"] = Value::String(p.to_string());
                f["scale"] = Value::String(s.to_string());
            }
            f
        })
        .collect();
    if role != Role::Analyst {
        fields.push(json!({"name": OP_COLUMN, "type": "STRING", "mode": "NULLABLE", "description": OP_DESCRIPTION}));
    }
    if role != Role::Stage {
        fields.push(json!({"name": DELIVERY_COLUMN, "type": "STRING", "mode": "REQUIRED"}));
        fields.push(json!({"name": LOADED_AT_COLUMN, "type": "TIMESTAMP", "mode": "REQUIRED"}));
    }
    json!({ "fields": fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Registry, Table};

    #[test]
    fn numeric_picks_numeric_or_bignumeric_by_digits() {
        let t = |p, s| bq_type(ColumnType::Numeric { precision: p, scale: s }, JsonbAs::Json).ddl();
        assert_eq!(t(12, 3), "NUMERIC(12, 3)");
        assert_eq!(t(38, 9), "NUMERIC(38, 9)");
        assert_eq!(t(30, 0), "BIGNUMERIC(30, 0)");
        assert_eq!(t(20, 10), "BIGNUMERIC(20, 10)");
        assert_eq!(bq_type(ColumnType::TextArray, JsonbAs::Json).ddl(), "ARRAY<STRING>");
        assert_eq!(bq_type(ColumnType::Jsonb, JsonbAs::Json).ddl(), "JSON");
        assert_eq!(bq_type(ColumnType::Jsonb, JsonbAs::String).ddl(), "STRING");
        assert_eq!(bq_type(ColumnType::Timestamptz, JsonbAs::Json).ddl(), "TIMESTAMP");
        assert_eq!(bq_type(ColumnType::Inet, JsonbAs::Json).ddl(), "STRING");
        assert_eq!(bq_type(ColumnType::Uuid, JsonbAs::Json).ddl(), "STRING");
    }

    #[test]
    fn quoting_escapes_backticks_quotes_and_backslashes() {
        assert_eq!(quote_ident("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(quote_literal("it's \\ fine"), "'it\\'s \\\\ fine'");
        let ds = Dataset {
            project: Some("my-proj".into()),
            dataset: "ds".into(),
        };
        assert_eq!(ds.table("t"), "`my-proj`.`ds`.`t`");
    }

    #[test]
    fn ddl_covers_raw_analyst_and_latest_with_every_column() {
        let reg = Registry::embedded();
        let s = reg.get(Table::Events, 1).unwrap();
        let text = ddl(&s, "tidemark");
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS `tidemark`.`events_v1_raw`"),
            "{text}"
        );
        assert!(
            text.contains("CREATE TABLE IF NOT EXISTS `tidemark`.`events_v1` ("),
            "{text}"
        );
        assert!(
            text.contains("CREATE VIEW IF NOT EXISTS `tidemark`.`events_v1_latest`"),
            "{text}"
        );
        assert!(text.contains("PARTITION BY DATE(`updated_at`)"), "{text}");
        for c in &s.columns {
            assert_eq!(
                text.matches(&format!("  {} ", quote_ident(&c.name))).count(),
                2,
                "{}",
                c.name
            );
        }
        let raw = schema_json(&s, Role::Raw, JsonbAs::Json);
        assert_eq!(raw["fields"].as_array().unwrap().len(), s.columns.len() + 3);
        assert_eq!(raw["fields"][s.columns.len()]["name"], "_op");
        assert_eq!(
            raw["fields"][0],
            json!({"name": "id", "type": "STRING", "mode": "REQUIRED", "description": s.columns[0].description})
        );
        let stage = schema_json(&s, Role::Stage, JsonbAs::Json);
        assert_eq!(
            stage["fields"].as_array().unwrap().len(),
            s.columns.len() + 1,
            "published columns and _op"
        );
        assert!(stage["fields"].as_array().unwrap().iter().all(|f| f["type"] != "JSON"));
    }
}
