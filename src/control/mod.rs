//! The control plane: destinations, the delivery outbox and watermarks, in Postgres.
//!
//! Invariants:
//! - Every write to a leased delivery is conditional on `(id, lease_token)`; a worker whose
//!   lease was taken over changes nothing (fencing).
//! - Completing a delivery, recording its receipt and advancing the watermark happen in one
//!   transaction.
//! - Re-planning is idempotent: the unique key `(destination_id, table, watermark_start,
//!   watermark_end, schema_version)` absorbs duplicates.
//! - Each schema version a destination receives for a table (several during a dual-write
//!   window) has its own deliveries and its own watermark row.
//!
//! Must not touch: the source's hot tables (see `extract`), object stores (see `deliver`).

pub mod destinations;
pub mod outbox;
pub mod rewind;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::error::{Error, ErrorKind, Result};

/// `application_name` of tidemark's own sessions. The window-closing rule ignores these
/// (they never write the hot tables); anything else with an open transaction holds windows open.
pub const APP_CONTROL: &str = "tidemark-control";
pub const APP_EXTRACT: &str = "tidemark-extract";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects a pool with a clear error naming the (password-free) target on failure.
pub async fn connect(url: &str, application_name: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::config(format!("invalid database URL: {e}")))?
        .application_name(application_name);
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    // One direct attempt first: an unreachable database fails at once with the real cause,
    // instead of after the pool's acquire timeout.
    let probe = sqlx::PgConnection::connect_with(&options).await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot connect to the database at {target}"),
        )
        .with_source(e)
    })?;
    let _ = probe.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options))
}

/// Applies the control-plane migrations shipped in this binary.
pub async fn migrate(pool: &PgPool) -> Result<Vec<String>> {
    let before: Vec<i64> = applied_versions(pool).await.unwrap_or_default();
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !before.contains(&m.version))
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await?)
}

/// Fails with a precise message when the control plane has not been migrated.
pub async fn ensure_migrated(pool: &PgPool) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('warehouse_deliveries') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::config(
            "the control plane is not set up in this database; run `tidemark migrate` first",
        ))
    }
}
