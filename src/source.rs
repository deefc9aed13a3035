//! The source database as the published schemas see it: drift detection between a live table
//! and its published schema. Tables are resolved on the source role's `search_path`, exactly as
//! the extraction's `COPY` resolves them. Run before a table is first extracted by a process, so a
//! dropped, renamed or retyped column becomes a precise `Schema` error (dead-lettered, nothing
//! written) instead of a mis-decoded file.

use sqlx::{PgPool, Row};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableSchema;

/// Compares the live table with its published schema: every published column must exist with
/// the same type and nullability (extra source columns are allowed: they are not exported), and
/// every derived column's expression must evaluate on it.
pub async fn check_table(source: &PgPool, schema: &TableSchema) -> Result<()> {
    let table = schema.table.name();
    let rows = sqlx::query(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS ty, a.attnotnull AS notnull \
         FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(crate::schema::quote_ident(table))
    .fetch_all(source)
    .await
    .map_err(|e| Error::postgres(format!("cannot read the source definition of {table}"), e))?;
    if rows.is_empty() {
        return Err(Error::new(
            ErrorKind::Schema,
            format!("source table {table} does not exist (on the source role's search_path)"),
        ));
    }
    let mut problems = Vec::new();
    for col in &schema.columns {
        if col.expression.is_some() {
            // Derived: it must evaluate on the live table (every column it reads exists with a
            // type the expression and the cast accept). Planned only, never executed over rows.
            let probe = format!(
                "SELECT {} FROM {} WHERE false",
                col.select_item(),
                crate::schema::quote_ident(table)
            );
            if let Err(e) = sqlx::query(&probe).fetch_optional(source).await {
                match &e {
                    sqlx::Error::Database(db) => problems.push(format!(
                        "derived column {} cannot be computed from the source: {}",
                        col.name,
                        db.message()
                    )),
                    _ => {
                        return Err(Error::postgres(
                            format!("cannot check the source definition of {table}"),
                            e,
                        ));
                    }
                }
            }
            continue;
        }
        let found = rows.iter().find(|r| r.get::<String, _>("name") == col.name);
        match found {
            None => problems.push(format!("column {} is missing", col.name)),
            Some(r) => {
                let ty: String = r.get("ty");
                let notnull: bool = r.get("notnull");
                if ty != col.ty.postgres_type() {
                    problems.push(format!("column {} is {ty}, published {}", col.name, col.ty));
                }
                if !col.nullable && !notnull {
                    problems.push(format!("column {} is nullable, published NOT NULL", col.name));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Schema,
            format!(
                "source table {table} has drifted from published schema v{}: {}",
                schema.version,
                problems.join("; ")
            ),
        ))
    }
}
