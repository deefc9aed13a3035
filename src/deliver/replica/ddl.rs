//! Type mapping and DDL of the Postgres replica, generated from a published schema.
//!
//! Per published table and major version, in the configured Postgres schema:
//! - `<table>_v<major>`: the analyst table, one row per `id` (primary key), native types
//!   equal to the source's (the published type *is* a Postgres type: uuid, numeric(p,s),
//!   timestamptz, jsonb, text[], inet, …), `NOT NULL` where the contract says so;
//! - `<table>_v<major>_raw` (optional): append-only history, every delivered version plus
//!   `_op` (`U`, or `D` for a delete: docs/DELETES.md), `_tidemark_delivery_id` and
//!   `_tidemark_loaded_at`, unique on `(id, updated_at)`;
//! - `<table>_v<major>_deleted`: the deleted-ids ledger, the newest delete per `id`
//!   (`deleted_at`), so that a replayed older version never resurrects a deleted row;
//! - `<table>_v<major>_latest`: a view with the newest version of each `id` that is not a
//!   delete (from the history when it is kept, else the analyst table itself).
//!
//! Plus two bookkeeping tables per schema: `_tidemark_deliveries` (one row per delivery id: the
//! replay ledger) and `_tidemark_replica` (the one organization this schema replicates).
//!
//! Every identifier is quoted ([`quote_ident`]); descriptions become `COMMENT`s through an
//! escaped literal ([`quote_literal`]).

use crate::schema::{Column, ColumnType, OP_COLUMN, OP_DELETE, OP_UPSERT, TableSchema, quote_ident};

/// Name of the replay ledger table.
pub const LEDGER: &str = "_tidemark_deliveries";
/// Name of the table that records which organization a schema replicates.
pub const OWNER: &str = "_tidemark_replica";
/// Extra columns of the history table.
pub const DELIVERY_ID_COLUMN: &str = "_tidemark_delivery_id";
pub const LOADED_AT_COLUMN: &str = "_tidemark_loaded_at";
/// The deleted-ids ledger's time of the delete.
pub const DELETED_AT_COLUMN: &str = "deleted_at";

/// Unquoted names of one table's replica objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub analyst: String,
    pub raw: String,
    pub latest: String,
    pub deleted: String,
}

pub fn table_names(schema: &TableSchema) -> TableNames {
    let base = format!("{}_v{}", schema.table.name(), schema.version);
    TableNames {
        raw: format!("{base}_raw"),
        latest: format!("{base}_latest"),
        deleted: format!("{base}_deleted"),
        analyst: base,
    }
}

/// `"namespace"."name"`.
pub fn qualified(namespace: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(namespace), quote_ident(name))
}

/// A SQL string literal: `it's` → `'it''s'` (standard_conforming_strings, on since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The replica's type of a published column: the same Postgres type as the source.
pub fn postgres_type(ty: ColumnType) -> String {
    ty.postgres_type()
}

fn column_definition(c: &Column) -> String {
    format!(
        "{} {}{}",
        quote_ident(&c.name),
        postgres_type(c.ty),
        if c.nullable { "" } else { " NOT NULL" }
    )
}

/// The history's `_op` column: `U` or `D`, `U` for versions loaded before delete capture.
pub fn op_column_definition() -> String {
    format!(
        "{op} text NOT NULL DEFAULT '{OP_UPSERT}' CHECK ({op} IN ('{OP_UPSERT}', '{OP_DELETE}'))",
        op = quote_ident(OP_COLUMN)
    )
}

/// The published columns, quoted, in order: `"id", "organization_id", …`. Names only: a
/// derived column (a v2 expression over the source row) is a plain column in the replica.
pub fn column_list(schema: &TableSchema) -> String {
    schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table's replica DDL, per object, so setup can create exactly what is missing (and
/// comment only on what it created, which needs ownership).
#[derive(Debug, Clone)]
pub struct TableDdl {
    /// `CREATE SCHEMA IF NOT EXISTS`.
    pub schema: String,
    /// The analyst table, its `updated_at` index and comments.
    pub analyst: Vec<String>,
    /// The history table and its comments; empty without history.
    pub raw: Vec<String>,
    /// The deleted-ids ledger and its comment.
    pub deleted: Vec<String>,
    /// `CREATE OR REPLACE VIEW … _latest` and its comment.
    pub latest: Vec<String>,
}

impl TableDdl {
    pub fn new(schema: &TableSchema, namespace: &str, raw_history: bool) -> TableDdl {
        let names = table_names(schema);
        let analyst = qualified(namespace, &names.analyst);
        let raw = qualified(namespace, &names.raw);
        let latest = qualified(namespace, &names.latest);
        let deleted = qualified(namespace, &names.deleted);
        let columns: Vec<String> = schema.columns.iter().map(column_definition).collect();
        let cols = column_list(schema);
        let what = format!("{} v{}", schema.table, schema.version);
        let column_comments = |target: &str| -> Vec<String> {
            schema
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "COMMENT ON COLUMN {target}.{} IS {}",
                        quote_ident(&c.name),
                        quote_literal(&c.description)
                    )
                })
                .collect()
        };
        let mut analyst_sql = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {analyst} (\n  {},\n  PRIMARY KEY (\"id\")\n)",
                columns.join(",\n  ")
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {analyst} (\"updated_at\")",
                quote_ident(&format!("{}_updated_at_idx", names.analyst))
            ),
            format!(
                "COMMENT ON TABLE {analyst} IS {}",
                quote_literal(&format!(
                    "{} One row per id, the newest updated_at wins (tidemark replica of {what}).",
                    schema.description
                ))
            ),
        ];
        analyst_sql.extend(column_comments(&analyst));
        let mut raw_sql = Vec::new();
        let view = if raw_history {
            raw_sql.push(format!(
                "CREATE TABLE IF NOT EXISTS {raw} (\n  {},\n  {},\n  {} uuid NOT NULL,\n  {} timestamptz NOT NULL,\n  UNIQUE (\"id\", \"updated_at\")\n)",
                columns.join(",\n  "),
                op_column_definition(),
                quote_ident(DELIVERY_ID_COLUMN),
                quote_ident(LOADED_AT_COLUMN),
            ));
            raw_sql.push(format!(
                "COMMENT ON TABLE {raw} IS {}",
                quote_literal(&format!(
                    "Every delivered version of {what}, append-only; unique on (id, updated_at) (tidemark)."
                ))
            ));
            raw_sql.extend(column_comments(&raw));
            format!(
                "CREATE OR REPLACE VIEW {latest} AS\n  SELECT {names} FROM (\n    SELECT DISTINCT ON (\"id\") *\n    FROM {raw}\n    ORDER BY \"id\", \"updated_at\" DESC, {op} DESC\n  ) AS newest\n  WHERE {op} <> '{OP_DELETE}'",
                op = quote_ident(OP_COLUMN),
                names = schema
                    .columns
                    .iter()
                    .map(|c| quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        } else {
            format!("CREATE OR REPLACE VIEW {latest} AS\n  SELECT {cols} FROM {analyst}")
        };
        let deleted_sql = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {deleted} (\n  \"id\" uuid PRIMARY KEY,\n  {} timestamptz NOT NULL,\n  {} uuid NOT NULL\n)",
                quote_ident(DELETED_AT_COLUMN),
                quote_ident(DELIVERY_ID_COLUMN),
            ),
            format!(
                "COMMENT ON TABLE {deleted} IS {}",
                quote_literal(&format!(
                    "Ids of {what} deleted at the source, with the newest delete; a version not newer than it is never loaded again (tidemark)."
                ))
            ),
        ];
        TableDdl {
            schema: format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(namespace)),
            analyst: analyst_sql,
            raw: raw_sql,
            deleted: deleted_sql,
            latest: vec![
                view,
                format!(
                    "COMMENT ON VIEW {latest} IS {}",
                    quote_literal(&format!("Newest version of each id of {what} (tidemark)."))
                ),
            ],
        }
    }
}

/// `CREATE` statements of one table's replica objects, in execution order: schema, analyst
/// table, history table, view. Idempotent (`IF NOT EXISTS` / `OR REPLACE`) except the
/// `COMMENT`s, which need ownership and are meant to run right after the objects were created.
pub fn create_statements(schema: &TableSchema, namespace: &str, raw_history: bool) -> Vec<String> {
    let ddl = TableDdl::new(schema, namespace, raw_history);
    std::iter::once(ddl.schema)
        .chain(ddl.analyst)
        .chain(ddl.deleted)
        .chain(ddl.raw)
        .chain(ddl.latest)
        .collect()
}

/// Everything a schema needs for one table, for hand provisioning (`create_tables: false`)
/// and `warehouse/postgres/`: [`create_statements`] with the bookkeeping tables of
/// [`control_statements`] after the `CREATE SCHEMA`. Idempotent except the `COMMENT`s.
pub fn provisioning_statements(schema: &TableSchema, namespace: &str, raw_history: bool) -> Vec<String> {
    let mut out = create_statements(schema, namespace, raw_history);
    let control = control_statements(namespace).into_iter().skip(1);
    out.splice(1..1, control);
    out
}

/// The schema's bookkeeping tables: the replay ledger and the owning organization.
pub fn control_statements(namespace: &str) -> Vec<String> {
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(namespace)),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  \
               \"delivery_id\" uuid PRIMARY KEY,\n  \
               \"organization_id\" uuid NOT NULL,\n  \
               \"table_name\" text NOT NULL,\n  \
               \"schema_version\" integer NOT NULL,\n  \
               \"window_start\" timestamptz NOT NULL,\n  \
               \"window_end\" timestamptz NOT NULL,\n  \
               \"rows\" bigint NOT NULL,\n  \
               \"raw_inserted\" bigint NOT NULL,\n  \
               \"inserted\" bigint NOT NULL,\n  \
               \"updated\" bigint NOT NULL,\n  \
               \"skipped_as_older\" bigint NOT NULL,\n  \
               \"loads\" integer NOT NULL DEFAULT 1,\n  \
               \"first_loaded_at\" timestamptz NOT NULL DEFAULT now(),\n  \
               \"loaded_at\" timestamptz NOT NULL DEFAULT now()\n)",
            qualified(namespace, LEDGER)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  \
               \"singleton\" boolean PRIMARY KEY DEFAULT true CHECK (\"singleton\"),\n  \
               \"organization_id\" uuid NOT NULL,\n  \
               \"created_at\" timestamptz NOT NULL DEFAULT now()\n)",
            qualified(namespace, OWNER)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Registry, Table};

    #[test]
    fn column_lists_name_derived_columns_without_their_expressions() {
        let reg = Registry::embedded();
        let findings = reg.get(Table::Findings, 2).unwrap();
        assert!(
            findings.derived_columns().next().is_some(),
            "findings v2 has derived columns"
        );
        let expected: Vec<String> = findings.columns.iter().map(|c| quote_ident(&c.name)).collect();
        assert_eq!(column_list(&findings), expected.join(", "));
        let sql = create_statements(&findings, "tidemark", true).join(";\n");
        for c in findings.derived_columns() {
            assert!(!sql.contains(c.expression.as_deref().unwrap()), "{sql}");
        }
    }

    #[test]
    fn ddl_quotes_identifiers_and_maps_types_natively() {
        let reg = Registry::embedded();
        let events = reg.get(Table::Events, 1).unwrap();
        let sql = create_statements(&events, "my \"schema\"", true).join(";\n");
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS \"my \"\"schema\"\"\".\"events_v1\" ("),
            "{sql}"
        );
        for expected in [
            "\"id\" uuid NOT NULL",
            "\"actor_ip\" inet,",
            "\"tags\" text[] NOT NULL",
            "\"payload\" jsonb NOT NULL",
            "\"risk_score\" numeric(6,2),",
            "\"severity\" smallint NOT NULL",
            "\"updated_at\" timestamp with time zone NOT NULL",
            "\"_tidemark_delivery_id\" uuid NOT NULL",
            "UNIQUE (\"id\", \"updated_at\")",
            "PRIMARY KEY (\"id\")",
            "\"my \"\"schema\"\"\".\"events_v1_latest\"",
        ] {
            assert!(sql.contains(expected), "missing {expected}: {sql}");
        }
        // Descriptions become escaped literals.
        let audit = reg.get(Table::AuditLog, 1).unwrap();
        for s in create_statements(&audit, "tidemark", false) {
            if let Some(lit) = s.split_once(" IS ").map(|(_, l)| l) {
                let inner = &lit[1..lit.len() - 1];
                assert!(!inner.replace("''", "").contains('\''), "unescaped quote in {s}");
            }
        }
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            table_names(&events),
            TableNames {
                analyst: "events_v1".into(),
                raw: "events_v1_raw".into(),
                latest: "events_v1_latest".into(),
                deleted: "events_v1_deleted".into(),
            }
        );
        // Without history the view reads the analyst table.
        let sql = create_statements(&events, "t", false).join(";\n");
        assert!(!sql.contains("events_v1_raw"), "{sql}");
        assert!(sql.contains("SELECT \"id\""), "{sql}");
    }
}
