//! Delete capture on the source: a delete log table and an `AFTER DELETE` trigger per hot
//! table, so hard deletes become tombstone rows (`_op = 'D'`) in the windows that cover them.
//! Query-based extraction cannot see a deleted row otherwise. docs/DELETES.md tells the story.
//!
//! Installed by `tidemark source install-delete-capture` (idempotent; `--uninstall` removes
//! it); `tidemark demo` installs it. What it creates, in the source role's current schema:
//!
//! - `tidemark_delete_log(table_name, id, organization_id, deleted_at, old_row)`: one row per
//!   deleted hot row, `old_row = to_jsonb(OLD)` (its last values), indexed on
//!   `(table_name, organization_id, deleted_at, id)` for the per-window scan;
//! - `tidemark_capture_delete()`: the trigger function, which names the log schema-qualified
//!   (so an application session with another `search_path` still finds it);
//! - a trigger `tidemark_delete_capture` (`AFTER DELETE … FOR EACH ROW`) per captured table.
//!
//! Invariants:
//! - `deleted_at` is `now()`, the deleting transaction's start, exactly like `updated_at` on
//!   writes: a window is closed only when no transaction that began before its end is open, so
//!   the argument that makes a closed window's `U` rows final holds unchanged for its `D` rows.
//! - Archival deletes are not business deletes: a transaction that set
//!   `tidemark.archival = 'on'` ([`crate::archive::ARCHIVAL_SETTING`], the tombstoning pass)
//!   deletes without a log row.
//! - Detection is by name on the source role's `search_path` ([`delete_log`]), the same
//!   resolution as the extraction's `COPY`; without the log, extraction exports `U` rows only.
//!
//! Not captured: `TRUNCATE`, deletes with triggers disabled (`session_replication_role =
//! replica`), and rows deleted before capture was installed.
//!
//! Must not touch: the control plane.

use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::{Error, Result};
use crate::schema::{Registry, Table, quote_ident};

/// Name of the delete log table.
pub const DELETE_LOG: &str = "tidemark_delete_log";
/// Name of the trigger on each captured hot table.
pub const TRIGGER: &str = "tidemark_delete_capture";
/// Name of the trigger function.
pub const FUNCTION: &str = "tidemark_capture_delete";

/// The delete log as found on the source: its schema-qualified, quoted name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteLog {
    pub qualified: String,
}

/// The delete log on the source role's `search_path`, if installed. One catalog lookup.
pub async fn delete_log(source: &PgPool) -> Result<Option<DeleteLog>> {
    let row = sqlx::query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
    )
    .bind(DELETE_LOG)
    .fetch_optional(source)
    .await
    .map_err(|e| Error::postgres("cannot look for the delete log on the source", e))?;
    Ok(row.map(|r| DeleteLog {
        qualified: format!(
            "{}.{}",
            quote_ident(&r.get::<String, _>("schema")),
            quote_ident(&r.get::<String, _>("name"))
        ),
    }))
}

/// State of one table after an install or uninstall.
#[derive(Debug, Clone, Serialize)]
pub struct TableCapture {
    pub table: Table,
    pub captured: bool,
}

/// What `install` or `uninstall` did.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    /// `schema.tidemark_delete_log`, or `None` when it was removed (or never existed).
    pub delete_log: Option<String>,
    pub tables: Vec<TableCapture>,
}

/// Which hot tables carry the capture trigger.
pub async fn captured_tables(source: &PgPool) -> Result<Vec<TableCapture>> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let captured: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)",
        )
        .bind(quote_ident(table.name()))
        .bind(TRIGGER)
        .fetch_one(source)
        .await
        .map_err(|e| Error::postgres(format!("cannot read the triggers of {table}"), e))?;
        out.push(TableCapture { table, captured });
    }
    Ok(out)
}

/// Creates the delete log and the trigger function (if missing) and puts the trigger on each
/// of `tables`, in one transaction. Idempotent. Every table must exist on the source with the
/// organization column of its newest published schema.
pub async fn install(source: &PgPool, registry: &Registry, tables: &[Table]) -> Result<CaptureReport> {
    let mut tx = source.begin().await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_optional(&mut *tx)
        .await?
        .flatten()
        .ok_or_else(|| {
            Error::config("the source role has no current schema (empty search_path) to create the delete log in")
        })?;
    let log = format!("{}.{}", quote_ident(&schema), quote_ident(DELETE_LOG));
    let function = format!("{}.{}", quote_ident(&schema), quote_ident(FUNCTION));
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {log} (
            table_name      text        NOT NULL,
            id              uuid        NOT NULL,
            organization_id uuid        NOT NULL,
            deleted_at      timestamptz NOT NULL DEFAULT now(),
            old_row         jsonb       NOT NULL
        );
        COMMENT ON TABLE {log} IS 'tidemark delete capture: hard deletes of the hot tables, exported as _op = D rows (docs/DELETES.md)';
        CREATE INDEX IF NOT EXISTS {window_idx} ON {log} (table_name, organization_id, deleted_at, id);
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
        LANGUAGE plpgsql AS $tidemark$
        DECLARE
            old_row jsonb;
        BEGIN
            -- Archival deletes (the cold-storage pass) are not business deletes.
            IF current_setting('{archival}', true) IN ('on') THEN
                RETURN OLD;
            END IF;
            old_row := to_jsonb(OLD);
            INSERT INTO {log} (table_name, id, organization_id, deleted_at, old_row)
            VALUES (TG_TABLE_NAME, (old_row->>'id')::uuid, (old_row->>TG_ARGV[0])::uuid, now(), old_row);
            RETURN OLD;
        END
        $tidemark$;",
        window_idx = quote_ident(&format!("{DELETE_LOG}_window_idx")),
        archival = crate::archive::ARCHIVAL_SETTING,
    );
    sqlx::raw_sql(&ddl)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::postgres("cannot create the delete log and its trigger function", e))?;
    for table in tables {
        let schema = registry.latest_restorable(*table)?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(quote_ident(table.name()))
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(Error::config(format!(
                "cannot capture deletes of {table}: the table does not exist on the source role's search_path"
            )));
        }
        let t = quote_ident(table.name());
        let trigger = format!(
            "DROP TRIGGER IF EXISTS {trg} ON {t}; \
             CREATE TRIGGER {trg} AFTER DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {function}('{org}')",
            trg = quote_ident(TRIGGER),
            org = schema.organization_column.replace('\'', "''"),
        );
        sqlx::raw_sql(&trigger)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::postgres(format!("cannot create the delete capture trigger on {table}"), e))?;
    }
    tx.commit().await?;
    Ok(CaptureReport {
        delete_log: Some(log),
        tables: captured_tables(source).await?,
    })
}

/// Removes the trigger from each of `tables`; when no hot table is captured any more, also the
/// trigger function and the delete log (with deletes not yet exported: they are lost).
pub async fn uninstall(source: &PgPool, tables: &[Table]) -> Result<CaptureReport> {
    let mut tx = source.begin().await?;
    for table in tables {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(quote_ident(table.name()))
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            sqlx::raw_sql(&format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote_ident(TRIGGER),
                quote_ident(table.name())
            ))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::postgres(format!("cannot drop the delete capture trigger on {table}"), e))?;
        }
    }
    let remaining: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_trigger WHERE tgname = $1")
        .bind(TRIGGER)
        .fetch_one(&mut *tx)
        .await?;
    let mut removed = false;
    if remaining == 0 {
        sqlx::raw_sql(&format!(
            "DROP FUNCTION IF EXISTS {}() CASCADE; DROP TABLE IF EXISTS {}",
            quote_ident(FUNCTION),
            quote_ident(DELETE_LOG)
        ))
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::postgres("cannot drop the delete log", e))?;
        removed = true;
    }
    tx.commit().await?;
    Ok(CaptureReport {
        delete_log: if removed {
            None
        } else {
            delete_log(source).await?.map(|l| l.qualified)
        },
        tables: captured_tables(source).await?,
    })
}
