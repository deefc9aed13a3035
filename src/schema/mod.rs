//! Published schemas: the contract between the source tables and every export.
//!
//! `schemas/<table>/v<major>.json` is the single source of truth for column names, order,
//! types, nullability and descriptions. Arrow schemas, the `COPY` column list, Parquet metadata
//! and the JSONL shape are all derived from it here; nothing else in the crate spells a column.
//!
//! The files are compiled into the binary; `--schemas-dir` (or `TIDEMARK_SCHEMAS_DIR`) reads
//! them from disk instead, so an operator can test a revision before a release.
//!
//! A column is either a source column of the same name, or *derived*: its `expression` (SQL
//! over the source table's columns) is evaluated in the extraction's `SELECT` and cast to the
//! published type. That is how a new major retypes a column the source keeps as it is (see
//! docs/SCHEMAS.md). Compatibility between revisions of a major is checked in [`compat`].
//!
//! Must not touch: the database. Checking a schema against a live table lives in `source`.

pub mod compat;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{Field, Schema as ArrowSchema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
pub use types::ColumnType;

/// The ten hot tables tidemark exports. The database enum `warehouse_table` has exactly these
/// labels, upper-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Events,
    Findings,
    RuleRuns,
    SiemDeliveries,
    WorkflowDeliveries,
    AuditLog,
    OauthGrants,
    Identities,
    Assets,
    BaselineScores,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Events,
        Table::Findings,
        Table::RuleRuns,
        Table::SiemDeliveries,
        Table::WorkflowDeliveries,
        Table::AuditLog,
        Table::OauthGrants,
        Table::Identities,
        Table::Assets,
        Table::BaselineScores,
    ];

    /// The source table name and the name used in object keys and warehouse tables.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Findings => "findings",
            Table::RuleRuns => "rule_runs",
            Table::SiemDeliveries => "siem_deliveries",
            Table::WorkflowDeliveries => "workflow_deliveries",
            Table::AuditLog => "audit_log",
            Table::OauthGrants => "oauth_grants",
            Table::Identities => "identities",
            Table::Assets => "assets",
            Table::BaselineScores => "baseline_scores",
        }
    }

    /// The label of the control plane's `warehouse_table` enum.
    pub fn db_label(self) -> String {
        self.name().to_ascii_uppercase()
    }

    pub fn from_db_label(label: &str) -> Result<Table> {
        label.to_ascii_lowercase().parse()
    }
}

// `EMBEDDED_SCHEMAS`: every `schemas/<table>/v<major>.json`, listed by build.rs.
include!(concat!(env!("OUT_DIR"), "/embedded_schemas.rs"));

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = Error;
    fn from_str(s: &str) -> Result<Table> {
        let wanted = s.trim().to_ascii_lowercase();
        Table::ALL.into_iter().find(|t| t.name() == wanted).ok_or_else(|| {
            let known: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
            Error::invalid(format!("unknown table '{s}'; known tables: {}", known.join(", ")))
        })
    }
}

/// The envelope column every export ends with, after the published columns: `'U'` when the
/// row is the id's version as of `updated_at`, `'D'` when the id was deleted at `updated_at`
/// (the other columns then hold the deleted row's last values). Never in `schemas/*.json`:
/// it describes the change, not the row, so the archive's row hash leaves it out.
pub const OP_COLUMN: &str = "_op";
/// `_op` of a row version.
pub const OP_UPSERT: &str = "U";
/// `_op` of a delete.
pub const OP_DELETE: &str = "D";

/// One column of a published schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
    pub description: String,
    /// SQL expression over the source table's columns that yields this column (cast to `type`);
    /// absent for a source column of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

impl Column {
    /// The column's item in the extraction's `SELECT` list.
    pub fn select_item(&self) -> String {
        match &self.expression {
            Some(expr) => format!("({expr})::{} AS {}", self.ty.postgres_type(), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// A published schema file, `schemas/<table>/v<version>.json`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    pub table: Table,
    pub version: u32,
    pub description: String,
    pub primary_key: Vec<String>,
    pub cursor: Vec<String>,
    pub organization_column: String,
    pub columns: Vec<Column>,
}

impl TableSchema {
    /// Parses and validates one schema file. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TableSchema> {
        let schema: TableSchema = serde_json::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Schema, format!("invalid schema file {origin}: {e}")))?;
        schema.validate().map_err(|e| {
            Error::new(
                ErrorKind::Schema,
                format!("invalid schema file {origin}: {}", e.message()),
            )
        })?;
        Ok(schema)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            {
                return Err(Error::invalid(format!(
                    "column name '{}' must be lower-case [a-z0-9_]",
                    c.name
                )));
            }
            if c.name == OP_COLUMN || c.name.starts_with("_tidemark") {
                return Err(Error::invalid(format!(
                    "column name '{}' is reserved for tidemark's envelope columns",
                    c.name
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(Error::invalid(format!("column '{}' appears twice", c.name)));
            }
            if let Some(expr) = &c.expression {
                let keyed = c.name == "id" || c.name == "updated_at" || c.name == self.organization_column;
                if keyed {
                    return Err(Error::invalid(format!(
                        "column '{}' keys windows, rows and organizations: it must be a source column, not an expression",
                        c.name
                    )));
                }
                if expr.trim().is_empty() || expr.contains(';') || expr.contains("--") || expr.contains("/*") {
                    return Err(Error::invalid(format!(
                        "column '{}': expression must be one non-empty SQL expression, without ';' or comments",
                        c.name
                    )));
                }
            }
        }
        let require = |name: &str, ty: ColumnType, role: &str| -> Result<()> {
            match self.column(name) {
                Some(c) if c.ty == ty && !c.nullable => Ok(()),
                Some(c) => Err(Error::invalid(format!(
                    "{role} column '{name}' must be non-null {ty}, found {}{}",
                    c.ty,
                    if c.nullable { " (nullable)" } else { "" }
                ))),
                None => Err(Error::invalid(format!(
                    "{role} column '{name}' is not among the columns"
                ))),
            }
        };
        if self.primary_key != ["id"] {
            return Err(Error::invalid("primary_key must be [\"id\"]"));
        }
        if self.cursor != ["updated_at", "id"] {
            return Err(Error::invalid("cursor must be [\"updated_at\", \"id\"]"));
        }
        if self.version == 0 {
            return Err(Error::invalid("version must be >= 1"));
        }
        require("id", ColumnType::Uuid, "primary key")?;
        require("updated_at", ColumnType::Timestamptz, "cursor")?;
        require(&self.organization_column, ColumnType::Uuid, "organization")?;
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The Arrow schema every encoder writes. Field metadata carries the published type and
    /// description so Parquet files are self-describing.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let mut md = std::collections::HashMap::new();
                md.insert("tidemark.type".to_string(), c.ty.to_string());
                md.insert("description".to_string(), c.description.clone());
                Field::new(&c.name, c.ty.arrow_type(), c.nullable).with_metadata(md)
            })
            .collect();
        let mut md = std::collections::HashMap::new();
        md.insert("tidemark.table".to_string(), self.table.name().to_string());
        md.insert("tidemark.schema_version".to_string(), self.version.to_string());
        Arc::new(ArrowSchema::new_with_metadata(fields, md))
    }

    /// [`arrow_schema`](Self::arrow_schema) plus the trailing non-null `_op` column
    /// ([`OP_COLUMN`]): what an export writes (objects, warehouse raw tables).
    pub fn export_arrow_schema(&self) -> SchemaRef {
        let published = self.arrow_schema();
        let mut fields: Vec<Field> = published.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut md = std::collections::HashMap::new();
        md.insert("tidemark.type".to_string(), ColumnType::Text.to_string());
        md.insert(
            "description".to_string(),
            "Change envelope: U when the row is this id's version as of updated_at, D when the id was deleted at \
             updated_at (the other columns then hold the deleted row's last values)."
                .to_string(),
        );
        fields.push(Field::new(OP_COLUMN, arrow_schema::DataType::Utf8, false).with_metadata(md));
        Arc::new(ArrowSchema::new_with_metadata(fields, published.metadata().clone()))
    }

    /// `"id", "organization_id", ...` quoted, in published order, for `SELECT` lists; a derived
    /// column is `(<expression>)::<type> AS "<name>"`.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(Column::select_item)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns computed from an expression rather than read as they are.
    pub fn derived_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.expression.is_some())
    }

    /// Whether every column is a source column of the same name and type, so exported rows can
    /// be written back into the source table (cold-storage restore).
    pub fn is_restorable(&self) -> bool {
        self.derived_columns().next().is_none()
    }

    /// `schemas/<table>/v<major>.json`, relative to the schemas directory.
    pub fn file_name(&self) -> String {
        format!("{}/v{}.json", self.table.name(), self.version)
    }
}

/// Quotes a SQL identifier (Postgres and ANSI): `a"b` → `"a""b"`.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// All published schemas, keyed by (table, major version).
#[derive(Debug, Clone)]
pub struct Registry {
    schemas: BTreeMap<(Table, u32), Arc<TableSchema>>,
}

impl Registry {
    /// The schemas compiled into this binary (every `schemas/<table>/v<major>.json`).
    pub fn embedded() -> Registry {
        let mut schemas = BTreeMap::new();
        for (path, text) in EMBEDDED_SCHEMAS {
            let origin = format!("schemas/{path} (embedded)");
            let schema = TableSchema::parse(text, &origin)
                .unwrap_or_else(|e| panic!("embedded schema is invalid; the build is broken: {e}"));
            assert_eq!(
                schema.file_name(),
                *path,
                "embedded schema {origin} declares another table or version; the build is broken"
            );
            schemas.insert((schema.table, schema.version), Arc::new(schema));
        }
        for table in Table::ALL {
            assert!(
                schemas.contains_key(&(table, 1)),
                "schemas/{table}/v1.json is missing; the build is broken"
            );
        }
        Registry { schemas }
    }

    /// Reads `<dir>/<table>/v<N>.json` for every table. Every table needs at least `v1.json`.
    pub fn from_dir(dir: &Path) -> Result<Registry> {
        let mut schemas = BTreeMap::new();
        for table in Table::ALL {
            let tdir = dir.join(table.name());
            let entries = std::fs::read_dir(&tdir).map_err(|e| {
                Error::new(
                    ErrorKind::Schema,
                    format!("cannot read schema directory {}", tdir.display()),
                )
                .with_source(e)
            })?;
            for entry in entries {
                let path = entry
                    .map_err(|e| Error::new(ErrorKind::Schema, "cannot list schema directory").with_source(e))?
                    .path();
                let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                    continue;
                };
                let Some(major) = file
                    .strip_prefix('v')
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|v| v.parse::<u32>().ok())
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::new(ErrorKind::Schema, format!("cannot read schema file {}", path.display())).with_source(e)
                })?;
                let schema = TableSchema::parse(&text, &path.display().to_string())?;
                if schema.table != table || schema.version != major {
                    return Err(Error::new(
                        ErrorKind::Schema,
                        format!(
                            "invalid schema file {}: it declares table '{}' version {} but its path says '{}' version {}",
                            path.display(),
                            schema.table,
                            schema.version,
                            table,
                            major
                        ),
                    ));
                }
                schemas.insert((table, major), Arc::new(schema));
            }
            if !schemas.contains_key(&(table, 1)) {
                return Err(Error::new(
                    ErrorKind::Schema,
                    format!("missing schema file {}/v1.json", tdir.display()),
                ));
            }
        }
        Ok(Registry { schemas })
    }

    /// The embedded registry, or the one in `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<Registry> {
        match dir {
            Some(d) => Registry::from_dir(d),
            None => Ok(Registry::embedded()),
        }
    }

    pub fn get(&self, table: Table, version: u32) -> Result<Arc<TableSchema>> {
        self.schemas
            .get(&(table, version))
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Schema, format!("no published schema {table} v{version}")))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TableSchema>> {
        self.schemas.values()
    }

    /// The published majors of a table, ascending.
    pub fn versions(&self, table: Table) -> Vec<u32> {
        self.schemas
            .keys()
            .filter(|(t, _)| *t == table)
            .map(|(_, v)| *v)
            .collect()
    }

    /// The newest major of a table whose rows can be restored into the source (no derived
    /// columns); the newest major when none can.
    pub fn latest_restorable(&self, table: Table) -> Result<Arc<TableSchema>> {
        let all: Vec<&Arc<TableSchema>> = self.schemas.values().filter(|s| s.table == table).collect();
        all.iter()
            .rev()
            .find(|s| s.is_restorable())
            .or(all.last())
            .map(|s| Arc::clone(s))
            .ok_or_else(|| Error::new(ErrorKind::Schema, format!("no published schema for {table}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_parse_and_cover_every_table() {
        let reg = Registry::embedded();
        for t in Table::ALL {
            let s = reg.get(t, 1).unwrap();
            assert_eq!(s.table, t);
            assert_eq!(s.columns[0].name, "id");
            assert_eq!(s.arrow_schema().fields().len(), s.columns.len());
        }
    }

    #[test]
    fn malformed_schema_names_the_file_and_problem() {
        let err = TableSchema::parse("{\"table\": \"events\"", "x/v1.json").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Schema);
        assert!(err.to_string().contains("x/v1.json"), "{err}");

        let bad_type = Registry::embedded().get(Table::Events, 1).unwrap();
        let mut json = serde_json::to_value(&*bad_type).unwrap();
        json["columns"][1]["type"] = "varchar(3)".into();
        let err = TableSchema::parse(&json.to_string(), "y/v1.json").unwrap_err();
        assert!(err.to_string().contains("varchar(3)"), "{err}");

        let mut json = serde_json::to_value(&*bad_type).unwrap();
        json["columns"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "updated_at");
        let err = TableSchema::parse(&json.to_string(), "z/v1.json").unwrap_err();
        assert!(err.to_string().contains("updated_at"), "{err}");
    }

    #[test]
    fn unknown_table_lists_known_ones() {
        let err = "evnts".parse::<Table>().unwrap_err();
        assert!(err.to_string().contains("events, findings"), "{err}");
    }

    #[test]
    fn every_schema_file_is_embedded_and_findings_v2_derives_two_columns() {
        let reg = Registry::embedded();
        assert_eq!(reg.versions(Table::Findings), vec![1, 2]);
        assert_eq!(reg.versions(Table::Events), vec![1]);
        let v2 = reg.get(Table::Findings, 2).unwrap();
        let derived: Vec<&str> = v2.derived_columns().map(|c| c.name.as_str()).collect();
        assert_eq!(derived, ["severity", "risk_score"]);
        assert!(!v2.is_restorable() && reg.get(Table::Findings, 1).unwrap().is_restorable());
        assert_eq!(reg.latest_restorable(Table::Findings).unwrap().version, 1);
        let list = v2.select_list();
        assert!(list.starts_with("\"id\", \"organization_id\""), "{list}");
        assert!(list.contains("END)::text AS \"severity\", (round("), "{list}");
        assert!(list.contains(", 2))::numeric(5,2) AS \"risk_score\""), "{list}");
        // The Arrow schema carries the published (v2) types.
        let arrow = v2.arrow_schema();
        assert_eq!(
            arrow.field_with_name("severity").unwrap().data_type(),
            &arrow_schema::DataType::Utf8
        );
        assert_eq!(arrow.metadata()["tidemark.schema_version"], "2");
    }

    #[test]
    fn expressions_are_refused_on_key_columns_and_must_be_one_expression() {
        let base = serde_json::to_value(&*Registry::embedded().get(Table::Findings, 1).unwrap()).unwrap();
        for (column, expr, wanted) in [
            (0, "gen_random_uuid()", "keys windows"),
            (15, "now()", "keys windows"),
            (7, "severity; DROP TABLE findings", "without ';'"),
            (7, "severity -- x", "without ';' or comments"),
            (7, "  ", "non-empty"),
        ] {
            let mut json = base.clone();
            json["columns"][column]["expression"] = expr.into();
            let err = TableSchema::parse(&json.to_string(), "f/v1.json").unwrap_err();
            assert!(err.to_string().contains(wanted), "{expr}: {err}");
        }
    }

    #[test]
    fn quote_ident_escapes_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
