//! Snowflake names, types and DDL derived from a published schema.
//!
//! Per table and major version: `<TABLE>_V<major>_RAW` (every delivered row version, append-only,
//! plus `_OP` (`U`, or `D` for a delete, docs/DELETES.md; NULL, read as `U`, for rows loaded
//! before delete capture), `_TIDEMARK_DELIVERY_ID` and `_TIDEMARK_LOADED_AT`), `<TABLE>_V<major>`
//! (one row per `ID`, newest `UPDATED_AT` wins, a delete removes it) and the view
//! `<TABLE>_V<major>_LATEST` (the newest version of each `ID` computed from the raw table,
//! without deleted ids, same columns as the analyst table).
//!
//! Identifiers: every name is double-quoted. Names tidemark generates are upper-cased first,
//! which is how Snowflake resolves an unquoted name, so analysts can write
//! `select id, updated_at from events_v1` without quotes. Names from the configuration
//! (database, schema, stage) follow Snowflake's rule for unquoted identifiers: a plain
//! identifier (`[A-Za-z_][A-Za-z0-9_$]*`) is upper-cased, anything else is taken verbatim.

use std::collections::HashSet;

use crate::schema::{ColumnType, OP_COLUMN, OP_DELETE, OP_UPSERT, TableSchema};

/// The raw table's provenance columns (also in the analyst table and the view).
pub const DELIVERY_ID_COLUMN: &str = "_tidemark_delivery_id";
pub const LOADED_AT_COLUMN: &str = "_tidemark_loaded_at";

/// `"a""b"`: a quoted identifier, taken verbatim.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// An identifier from the configuration, resolved as Snowflake resolves it unquoted (plain
/// names upper-cased) and then quoted. `a.b.c` is not split: use [`config_path`].
pub fn config_ident(ident: &str) -> String {
    quote_ident(&resolve_config_ident(ident))
}

/// The name Snowflake would resolve `ident` to when written unquoted.
pub fn resolve_config_ident(ident: &str) -> String {
    let plain = ident
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        ident.to_ascii_uppercase()
    } else {
        ident.to_string()
    }
}

/// A possibly qualified configured name (`STAGE`, `SCHEMA.STAGE`, `DB.SCHEMA.STAGE`), each
/// part resolved; unqualified parts are taken from `database` / `schema`.
pub fn config_path(name: &str, database: &str, schema: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let (db, sch, obj) = match parts.as_slice() {
        [obj] => (database, schema, *obj),
        [sch, obj] => (database, *sch, *obj),
        [db, sch, obj] => (*db, *sch, *obj),
        _ => (database, schema, name),
    };
    format!("{}.{}.{}", config_ident(db), config_ident(sch), config_ident(obj))
}

/// A column or table name tidemark generates (published names are `[a-z0-9_]`).
pub fn ident(name: &str) -> String {
    quote_ident(&name.to_ascii_uppercase())
}

/// The Snowflake type of a column in the analyst table and the view.
pub fn analyst_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Jsonb => "VARIANT".into(),
        other => raw_type(other),
    }
}

/// The Snowflake type of a column in the raw table (what COPY loads from Parquet).
pub fn raw_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Uuid => "VARCHAR(36)".into(),
        ColumnType::Text => "VARCHAR".into(),
        ColumnType::Int2 => "NUMBER(5,0)".into(),
        ColumnType::Int4 => "NUMBER(10,0)".into(),
        ColumnType::Int8 => "NUMBER(19,0)".into(),
        ColumnType::Float8 => "FLOAT".into(),
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Numeric { precision, scale } => format!("NUMBER({precision},{scale})"),
        ColumnType::Timestamptz => "TIMESTAMP_TZ(6)".into(),
        ColumnType::Date => "DATE".into(),
        // The document's text exactly as exported; the analyst table parses it to VARIANT.
        ColumnType::Jsonb => "VARCHAR".into(),
        ColumnType::Inet => "VARCHAR".into(),
        ColumnType::TextArray => "ARRAY".into(),
    }
}

/// Fully qualified, quoted names of one published table's objects.
#[derive(Debug, Clone)]
pub struct TableNames {
    pub raw: String,
    pub analyst: String,
    pub latest: String,
}

impl TableNames {
    /// In `database.schema` (configured names), or unqualified when `location` is `None`.
    pub fn new(schema: &TableSchema, location: Option<(&str, &str)>) -> TableNames {
        let base = format!("{}_v{}", schema.table.name(), schema.version);
        let prefix = match location {
            Some((db, sch)) => format!("{}.{}.", config_ident(db), config_ident(sch)),
            None => String::new(),
        };
        TableNames {
            raw: format!("{prefix}{}", ident(&format!("{base}_raw"))),
            analyst: format!("{prefix}{}", ident(&base)),
            latest: format!("{prefix}{}", ident(&format!("{base}_latest"))),
        }
    }
}

fn column_defs(schema: &TableSchema, ty: fn(ColumnType) -> String) -> Vec<String> {
    schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                ident(&c.name),
                ty(c.ty),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect()
}

fn comment(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `_op` of a raw row, NULL (loaded before delete capture) read as `U`.
pub fn op_expression() -> String {
    format!("COALESCE({}, '{OP_UPSERT}')", ident(OP_COLUMN))
}

/// The analyst-facing select list over the raw table: jsonb parsed to VARIANT, provenance last.
pub fn analyst_select_list(schema: &TableSchema) -> Vec<String> {
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            if c.ty == ColumnType::Jsonb {
                format!("PARSE_JSON({0}) AS {0}", ident(&c.name))
            } else {
                ident(&c.name)
            }
        })
        .collect();
    cols.push(ident(DELIVERY_ID_COLUMN));
    cols.push(ident(LOADED_AT_COLUMN));
    cols
}

/// `CREATE TABLE IF NOT EXISTS` raw and analyst tables and `CREATE VIEW IF NOT EXISTS` the
/// latest view, in that order. `location` qualifies the names (see [`TableNames::new`]).
pub fn create_statements(schema: &TableSchema, location: Option<(&str, &str)>) -> Vec<String> {
    let names = TableNames::new(schema, location);
    let provenance = [
        format!("{} VARCHAR(36) NOT NULL", ident(DELIVERY_ID_COLUMN)),
        format!("{} TIMESTAMP_TZ(6) NOT NULL", ident(LOADED_AT_COLUMN)),
    ];
    let mut raw_cols = column_defs(schema, raw_type);
    // NULL for rows loaded before delete capture: read as U (docs/DELETES.md).
    raw_cols.push(format!("{} VARCHAR(1)", ident(OP_COLUMN)));
    raw_cols.extend(provenance.iter().cloned());
    let mut analyst_cols = column_defs(schema, analyst_type);
    analyst_cols.extend(provenance.iter().cloned());
    analyst_cols.push(format!("PRIMARY KEY ({})", ident("id")));
    let what = format!("{} v{}", schema.table.name(), schema.version);
    let raw = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n) COMMENT = {}",
        names.raw,
        raw_cols.join(",\n    "),
        comment(&format!(
            "tidemark raw history of {what}: every delivered row version, append-only; jsonb as text"
        ))
    );
    let analyst = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n) COMMENT = {}",
        names.analyst,
        analyst_cols.join(",\n    "),
        comment(&format!(
            "tidemark analyst table of {what}: one row per id, newest updated_at wins"
        ))
    );
    let latest = format!(
        "CREATE VIEW IF NOT EXISTS {} AS\nSELECT {}\nFROM (\n  SELECT *\n  FROM {}\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {} DESC, {op} DESC, {} DESC) = 1\n) AS NEWEST\nWHERE {op} <> '{OP_DELETE}'",
        names.latest,
        analyst_select_list(schema).join(", "),
        names.raw,
        ident("id"),
        ident("updated_at"),
        ident(LOADED_AT_COLUMN),
        op = op_expression(),
    );
    vec![raw, analyst, latest]
}

/// `ALTER TABLE … ADD COLUMN IF NOT EXISTS` for each published column (and `_op` on the raw
/// table) that an existing table lacks ([`crate::deliver::ddl::widen_then_create_view`]; `have`
/// lower-cased). Added columns are nullable, as every additive column is (`tidemark schema
/// check` refuses a new NOT NULL one).
pub fn add_column_statements(schema: &TableSchema, table: &str, raw: bool, have: &HashSet<String>) -> Vec<String> {
    let ty = if raw { raw_type } else { analyst_type };
    schema
        .columns
        .iter()
        .map(|c| (c.name.as_str(), ty(c.ty)))
        .chain(raw.then(|| (OP_COLUMN, "VARCHAR(1)".to_string())))
        .filter(|(name, _)| !have.contains(*name))
        .map(|(name, ty)| format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {ty}", ident(name)))
        .collect()
}

/// The DDL of one table as a script (statements separated by `;` and a blank line), for
/// `tidemark schema ddl --warehouse snowflake` and the committed files under `warehouse/`.
pub fn ddl_script(schema: &TableSchema) -> String {
    let mut out = format!(
        "-- Generated by tidemark from schemas/{}/v{}.json; do not edit.\n-- {}\n\n",
        schema.table.name(),
        schema.version,
        schema.description.replace('\n', " ")
    );
    for s in create_statements(schema, None) {
        out.push_str(&s);
        out.push_str(";\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Registry, Table};

    #[test]
    fn identifiers_follow_snowflake_resolution() {
        assert_eq!(config_ident("analytics"), "\"ANALYTICS\"");
        assert_eq!(config_ident("My Db"), "\"My Db\"");
        assert_eq!(config_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(config_path("raw.stg", "db", "sch"), "\"DB\".\"RAW\".\"STG\"");
        assert_eq!(ident("updated_at"), "\"UPDATED_AT\"");
    }

    #[test]
    fn every_type_has_a_lossless_mapping_and_ddl_names_every_column() {
        let reg = Registry::embedded();
        let events = reg.get(Table::Events, 1).unwrap();
        let stmts = create_statements(&events, Some(("analytics", "tidemark")));
        assert_eq!(stmts.len(), 3);
        assert!(stmts[0].starts_with("CREATE TABLE IF NOT EXISTS \"ANALYTICS\".\"TIDEMARK\".\"EVENTS_V1_RAW\""));
        assert!(stmts[0].contains("\"PAYLOAD\" VARCHAR NOT NULL"), "{}", stmts[0]);
        assert!(stmts[1].contains("\"PAYLOAD\" VARIANT NOT NULL"), "{}", stmts[1]);
        assert!(stmts[1].contains("\"RISK_SCORE\" NUMBER(6,2)"), "{}", stmts[1]);
        assert!(stmts[1].contains("\"TAGS\" ARRAY NOT NULL"), "{}", stmts[1]);
        assert!(
            stmts[1].contains("\"UPDATED_AT\" TIMESTAMP_TZ(6) NOT NULL"),
            "{}",
            stmts[1]
        );
        assert!(stmts[1].contains("PRIMARY KEY (\"ID\")"), "{}", stmts[1]);
        assert!(
            stmts[2].contains("PARSE_JSON(\"PAYLOAD\") AS \"PAYLOAD\""),
            "{}",
            stmts[2]
        );
        for c in &events.columns {
            assert!(stmts[0].contains(&ident(&c.name)), "{}", c.name);
        }
        assert_eq!(raw_type(ColumnType::Int2), "NUMBER(5,0)");
        assert_eq!(raw_type(ColumnType::Inet), "VARCHAR");
        assert_eq!(raw_type(ColumnType::Uuid), "VARCHAR(36)");
        assert!(ddl_script(&events).contains("\"EVENTS_V1_LATEST\""));
    }
}
