//! Databricks SQL for a published schema: the type mapping, identifier and literal quoting, and
//! the CREATE statements of the three objects per table and major version (Unity Catalog,
//! `catalog.schema.name`):
//!
//! - `<table>_v<major>_raw`: every delivered row version, append-only (`COPY INTO`), plus
//!   `_op STRING` (`U`, or `D` for a delete, docs/DELETES.md; NULL, read as `U`, for rows
//!   loaded before delete capture, so an existing table upgrades with `ADD COLUMN`),
//!   `_tidemark_delivery_id STRING` and `_tidemark_loaded_at TIMESTAMP`;
//! - `<table>_v<major>`: the analyst table, one row per `id`, newest `updated_at` wins and a
//!   delete removes the row (`MERGE`);
//! - `<table>_v<major>_latest`: a view over the raw table keeping the newest version of each id,
//!   without the ids whose newest version is a delete.
//!
//! Every statement is idempotent (`IF NOT EXISTS`), so adapters run them before their first
//! delivery and `tidemark schema ddl --warehouse databricks` can print them for review.

use crate::schema::{ColumnType, OP_COLUMN, OP_DELETE, OP_UPSERT, TableSchema};

/// Column holding the delivery that loaded a raw row.
pub const DELIVERY_COLUMN: &str = "_tidemark_delivery_id";
/// Column holding when COPY INTO loaded a raw row.
pub const LOADED_AT_COLUMN: &str = "_tidemark_loaded_at";

/// The Databricks type of a published column type. Lossless:
/// numeric(p,s) → `DECIMAL(p,s)`; timestamptz → `TIMESTAMP` (an instant, microseconds, shown in
/// the session time zone, UTC by default); jsonb → `STRING` holding the JSON text (query it with
/// `from_json`/`parse_json`, or `payload:field` paths); text[] → `ARRAY<STRING>`; uuid and inet
/// → `STRING` in their canonical Postgres text form.
pub fn databricks_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Uuid | ColumnType::Text | ColumnType::Jsonb | ColumnType::Inet => "STRING".into(),
        ColumnType::Int2 => "SMALLINT".into(),
        ColumnType::Int4 => "INT".into(),
        ColumnType::Int8 => "BIGINT".into(),
        ColumnType::Float8 => "DOUBLE".into(),
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Numeric { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Timestamptz => "TIMESTAMP".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::TextArray => "ARRAY<STRING>".into(),
    }
}

/// Quotes a Databricks identifier: `` a`b `` → `` `a``b` ``.
pub fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Quotes a Databricks string literal. Databricks SQL reads backslash escapes inside literals
/// (and `'a''b'` as two adjacent literals), so quotes and backslashes are backslash-escaped.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The three-part names of a table's objects, quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub raw: String,
    pub analyst: String,
    pub latest: String,
}

impl TableNames {
    pub fn new(catalog: &str, schema: &str, table: &TableSchema) -> TableNames {
        let base = format!("{}_v{}", table.table.name(), table.version);
        let name = |suffix: &str| {
            format!(
                "{}.{}.{}",
                quote_ident(catalog),
                quote_ident(schema),
                quote_ident(&format!("{base}{suffix}"))
            )
        };
        TableNames {
            raw: name("_raw"),
            analyst: name(""),
            latest: name("_latest"),
        }
    }
}

fn column_definitions(table: &TableSchema) -> Vec<String> {
    table
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{} COMMENT {}",
                quote_ident(&c.name),
                databricks_type(c.ty),
                if c.nullable { "" } else { " NOT NULL" },
                quote_literal(&c.description)
            )
        })
        .collect()
}

/// `CREATE TABLE IF NOT EXISTS` of the raw table, `CREATE TABLE IF NOT EXISTS` of the analyst
/// table, and `CREATE VIEW IF NOT EXISTS` of the latest view, in that order.
pub fn create_statements(catalog: &str, schema: &str, table: &TableSchema) -> Vec<String> {
    let names = TableNames::new(catalog, schema, table);
    let what = format!("tidemark {} v{}", table.table.name(), table.version);
    let mut raw_columns = column_definitions(table);
    raw_columns.push(format!(
        "{} STRING COMMENT 'U: this version of the id; D: the id was deleted at updated_at (last values); NULL: loaded before delete capture, a U.'",
        quote_ident(OP_COLUMN)
    ));
    raw_columns.push(format!(
        "{} STRING NOT NULL COMMENT 'tidemark delivery that loaded this row version.'",
        quote_ident(DELIVERY_COLUMN)
    ));
    raw_columns.push(format!(
        "{} TIMESTAMP NOT NULL COMMENT 'When COPY INTO loaded this row version.'",
        quote_ident(LOADED_AT_COLUMN)
    ));
    let raw = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) USING DELTA COMMENT {}",
        names.raw,
        raw_columns.join(",\n  "),
        quote_literal(&format!(
            "{what} raw history: every delivered row version, append-only. {}",
            table.description
        ))
    );
    let analyst = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) USING DELTA COMMENT {}",
        names.analyst,
        column_definitions(table).join(",\n  "),
        quote_literal(&format!(
            "{what}: one row per id, the newest updated_at wins. {}",
            table.description
        ))
    );
    let latest = format!(
        "CREATE VIEW IF NOT EXISTS {} COMMENT {} AS\nSELECT {cols}\nFROM (\n  SELECT {cols}, {op} AS {op_name}\n  FROM {}\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {} DESC, {op} DESC, {} DESC) = 1\n) AS newest\nWHERE {op_name} <> '{OP_DELETE}'",
        names.latest,
        quote_literal(&format!(
            "{what}: the newest version of each id in the raw history, without deleted ids."
        )),
        names.raw,
        quote_ident("id"),
        quote_ident("updated_at"),
        quote_ident(LOADED_AT_COLUMN),
        cols = select_list(table, ""),
        op = op_expression(""),
        op_name = quote_ident(OP_COLUMN),
    );
    vec![raw, analyst, latest]
}

/// `ALTER TABLE … ADD COLUMNS` for each published column (and `_op` on the raw table) that an
/// existing table lacks ([`crate::deliver::ddl::widen_then_create_view`]; `have` lower-cased).
/// One statement per column; added columns are nullable, as every additive column is.
pub fn add_column_statements(
    table: &TableSchema,
    relation: &str,
    raw: bool,
    have: &std::collections::HashSet<String>,
) -> Vec<String> {
    const OP_DESCRIPTION: &str = "U or D; NULL: loaded before delete capture, a U.";
    table
        .columns
        .iter()
        .map(|c| (c.name.as_str(), databricks_type(c.ty), c.description.as_str()))
        .chain(raw.then(|| (OP_COLUMN, "STRING".to_string(), OP_DESCRIPTION)))
        .filter(|(name, _, _)| !have.contains(*name))
        .map(|(name, ty, description)| {
            format!(
                "ALTER TABLE {relation} ADD COLUMNS ({} {ty} COMMENT {})",
                quote_ident(name),
                quote_literal(description)
            )
        })
        .collect()
}

/// `_op` of a raw row, NULL (loaded before delete capture) read as `U`.
fn op_expression(prefix: &str) -> String {
    let col = if prefix.is_empty() {
        quote_ident(OP_COLUMN)
    } else {
        format!("{prefix}.{}", quote_ident(OP_COLUMN))
    };
    format!("coalesce({col}, '{OP_UPSERT}')")
}

/// `` `a`, `b`, ... `` (each prefixed with `prefix.` when given), in published order.
pub fn select_list(table: &TableSchema, prefix: &str) -> String {
    table
        .columns
        .iter()
        .map(|c| {
            if prefix.is_empty() {
                quote_ident(&c.name)
            } else {
                format!("{prefix}.{}", quote_ident(&c.name))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `COPY INTO` the raw table from one staged Parquet file. The file name is listed in `FILES`,
/// so COPY INTO's own load tracking makes a second run of the same delivery load nothing.
pub fn copy_into(
    names: &TableNames,
    table: &TableSchema,
    directory: &str,
    file_name: &str,
    delivery_id: uuid::Uuid,
) -> String {
    format!(
        "COPY INTO {} FROM (\n  SELECT {}, {}, {} AS {}, current_timestamp() AS {}\n  FROM {}\n)\nFILEFORMAT = PARQUET\nFILES = ({})\nCOPY_OPTIONS ('mergeSchema' = 'false')",
        names.raw,
        select_list(table, ""),
        quote_ident(OP_COLUMN),
        quote_literal(&delivery_id.to_string()),
        quote_ident(DELIVERY_COLUMN),
        quote_ident(LOADED_AT_COLUMN),
        quote_literal(directory),
        quote_literal(file_name),
    )
}

/// `MERGE` this delivery's raw rows into the analyst table: per id the delivery's newest
/// version (newest `updated_at`, the `U` on a tie: a delete and a re-insert in one transaction
/// leave the row); a `D` deletes the analyst row unless that row is newer; a `U` updates an id
/// only when it is newer, and inserts one only when no delete in the raw history is newer
/// (a replayed older version never resurrects a deleted row). Replaying a delivery changes
/// nothing.
pub fn merge(names: &TableNames, table: &TableSchema, delivery_id: uuid::Uuid) -> String {
    let id = quote_ident("id");
    let updated_at = quote_ident("updated_at");
    let set = table
        .columns
        .iter()
        .map(|c| format!("{0} = s.{0}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE INTO {analyst} AS t\nUSING (\n  SELECT v.*, d.{deleted_at}\n  FROM (\n    SELECT {cols}, {op} AS {op_name}\n    FROM {raw}\n    WHERE {delivery} = {did}\n    QUALIFY ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY {updated_at} DESC, {op} DESC, {loaded} DESC) = 1\n  ) AS v\n  LEFT JOIN (\n    SELECT {id}, max({updated_at}) AS {deleted_at}\n    FROM {raw}\n    WHERE {op_name} = '{OP_DELETE}' AND {id} IN (SELECT {id} FROM {raw} WHERE {delivery} = {did})\n    GROUP BY {id}\n  ) AS d ON d.{id} = v.{id}\n) AS s\nON t.{id} = s.{id}\nWHEN MATCHED AND s.{op_name} = '{OP_DELETE}' AND s.{updated_at} >= t.{updated_at} THEN DELETE\nWHEN MATCHED AND s.{op_name} = '{OP_UPSERT}' AND s.{updated_at} > t.{updated_at} THEN UPDATE SET {set}\nWHEN NOT MATCHED AND s.{op_name} = '{OP_UPSERT}' AND (s.{deleted_at} IS NULL OR s.{deleted_at} <= s.{updated_at}) THEN INSERT ({cols}) VALUES ({values})",
        analyst = names.analyst,
        raw = names.raw,
        cols = select_list(table, ""),
        delivery = quote_ident(DELIVERY_COLUMN),
        did = quote_literal(&delivery_id.to_string()),
        loaded = quote_ident(LOADED_AT_COLUMN),
        values = select_list(table, "s"),
        op = op_expression(""),
        op_name = quote_ident(OP_COLUMN),
        deleted_at = quote_ident("_tidemark_deleted_at"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Registry, Table};

    #[test]
    fn every_published_type_maps_losslessly() {
        let cases = [
            ("uuid", "STRING"),
            ("text", "STRING"),
            ("int2", "SMALLINT"),
            ("int4", "INT"),
            ("int8", "BIGINT"),
            ("float8", "DOUBLE"),
            ("bool", "BOOLEAN"),
            ("numeric(24,9)", "DECIMAL(24,9)"),
            ("timestamptz", "TIMESTAMP"),
            ("date", "DATE"),
            ("jsonb", "STRING"),
            ("inet", "STRING"),
            ("text[]", "ARRAY<STRING>"),
        ];
        for (ty, want) in cases {
            assert_eq!(databricks_type(ty.parse().unwrap()), want, "{ty}");
        }
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_literal(r"it's a \ test"), r"'it\'s a \\ test'");
        assert_eq!(quote_literal("two\nlines"), r"'two\nlines'");
    }

    #[test]
    fn create_statements_name_three_objects_per_major_version() {
        let schema = Registry::embedded().get(Table::Events, 1).unwrap();
        let ddl = create_statements("lake", "sec ops", &schema);
        assert_eq!(ddl.len(), 3);
        assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS `lake`.`sec ops`.`events_v1_raw` ("));
        assert!(ddl[0].contains("`_tidemark_delivery_id` STRING NOT NULL"));
        assert!(ddl[0].contains("`risk_score` DECIMAL(6,2) COMMENT"));
        assert!(ddl[0].contains("`tags` ARRAY<STRING> NOT NULL"));
        assert!(ddl[0].ends_with("USING DELTA COMMENT 'tidemark events v1 raw history: every delivered row version, append-only. One security event ingested from a sensor or integration, normalized to a common envelope with the raw vendor payload attached.'"));
        assert!(ddl[1].starts_with("CREATE TABLE IF NOT EXISTS `lake`.`sec ops`.`events_v1` ("));
        assert!(!ddl[1].contains("_tidemark_delivery_id"));
        assert!(ddl[2].starts_with("CREATE VIEW IF NOT EXISTS `lake`.`sec ops`.`events_v1_latest`"));
        assert!(ddl[2].contains("FROM `lake`.`sec ops`.`events_v1_raw`"));
    }

    #[test]
    fn merge_only_moves_rows_forward() {
        let schema = Registry::embedded().get(Table::Assets, 1).unwrap();
        let names = TableNames::new("c", "s", &schema);
        let id = uuid::Uuid::nil();
        let sql = merge(&names, &schema, id);
        assert!(sql.contains("WHERE `_tidemark_delivery_id` = '00000000-0000-0000-0000-000000000000'"));
        assert!(
            sql.contains("WHEN MATCHED AND s.`_op` = 'U' AND s.`updated_at` > t.`updated_at` THEN UPDATE SET"),
            "{sql}"
        );
        assert!(
            sql.contains("WHEN MATCHED AND s.`_op` = 'D' AND s.`updated_at` >= t.`updated_at` THEN DELETE"),
            "{sql}"
        );
        assert!(
            sql.contains("WHEN NOT MATCHED AND s.`_op` = 'U' AND (s.`_tidemark_deleted_at` IS NULL OR s.`_tidemark_deleted_at` <= s.`updated_at`) THEN INSERT"),
            "an older version never resurrects a deleted id: {sql}"
        );
        let copy = copy_into(&names, &schema, "/Volumes/c/s/v/tidemark/assets/v1", "x.parquet", id);
        assert!(copy.contains("FILES = ('x.parquet')"), "{copy}");
        assert!(copy.contains("FROM '/Volumes/c/s/v/tidemark/assets/v1'"), "{copy}");
    }
}
