//! `warehouse_destinations`: who receives what. A destination belongs to one organization and
//! only ever receives that organization's rows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::schema::Table;

/// Destination kinds, exactly the labels of the `warehouse_destination_kind` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DestinationKind {
    Snowflake,
    Bigquery,
    Databricks,
    IcebergS3,
    ParquetS3,
    JsonlS3,
    PostgresReplica,
}

impl DestinationKind {
    pub const ALL: [DestinationKind; 7] = [
        DestinationKind::Snowflake,
        DestinationKind::Bigquery,
        DestinationKind::Databricks,
        DestinationKind::IcebergS3,
        DestinationKind::ParquetS3,
        DestinationKind::JsonlS3,
        DestinationKind::PostgresReplica,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DestinationKind::Snowflake => "SNOWFLAKE",
            DestinationKind::Bigquery => "BIGQUERY",
            DestinationKind::Databricks => "DATABRICKS",
            DestinationKind::IcebergS3 => "ICEBERG_S3",
            DestinationKind::ParquetS3 => "PARQUET_S3",
            DestinationKind::JsonlS3 => "JSONL_S3",
            DestinationKind::PostgresReplica => "POSTGRES_REPLICA",
        }
    }
}

impl fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for DestinationKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        DestinationKind::ALL
            .into_iter()
            .find(|k| k.label() == wanted)
            .ok_or_else(|| {
                let known: Vec<_> = DestinationKind::ALL.iter().map(|k| k.label()).collect();
                Error::invalid(format!(
                    "unknown destination kind '{s}'; known kinds: {}",
                    known.join(", ")
                ))
            })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub kind: DestinationKind,
    pub name: String,
    pub config: serde_json::Value,
    pub enabled_tables: Vec<Table>,
    /// The default major of tables not in `schema_versions` (1).
    pub schema_version: i32,
    /// Per table, the majors it receives (several during a dual-write window); see
    /// [`Destination::versions`].
    pub schema_versions: BTreeMap<Table, Vec<u32>>,
    pub window_seconds: i32,
    pub grace_seconds: i32,
    pub max_attempts: i32,
    pub start_from: Option<DateTime<Utc>>,
    pub status: String,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Destination {
    /// The majors of `table` this destination receives, ascending: each is planned and
    /// delivered on its own, with its own watermark.
    pub fn versions(&self, table: Table) -> Vec<u32> {
        match self.schema_versions.get(&table) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => vec![self.schema_version.max(1) as u32],
        }
    }
}

/// What `destination add` inserts.
#[derive(Debug, Clone)]
pub struct NewDestination {
    pub organization_id: Uuid,
    pub kind: DestinationKind,
    pub name: String,
    pub config: serde_json::Value,
    pub enabled_tables: Vec<Table>,
    pub window_seconds: i32,
    pub grace_seconds: i32,
    pub max_attempts: i32,
    pub start_from: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, organization_id, kind::text AS kind, name, config, enabled_tables::text[] AS enabled_tables, \
     schema_version, schema_versions, window_seconds, grace_seconds, max_attempts, start_from, status::text AS status, last_delivery_at, \
     last_error, created_at";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Destination> {
    let tables: Vec<String> = row.try_get("enabled_tables")?;
    Ok(Destination {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        kind: row.try_get::<String, _>("kind")?.parse()?,
        name: row.try_get("name")?,
        config: row.try_get("config")?,
        enabled_tables: tables.iter().map(|t| Table::from_db_label(t)).collect::<Result<_>>()?,
        schema_version: row.try_get("schema_version")?,
        schema_versions: parse_versions(row.try_get("schema_versions")?)?,
        window_seconds: row.try_get("window_seconds")?,
        grace_seconds: row.try_get("grace_seconds")?,
        max_attempts: row.try_get("max_attempts")?,
        start_from: row.try_get("start_from")?,
        status: row.try_get("status")?,
        last_delivery_at: row.try_get("last_delivery_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
    })
}

fn parse_versions(value: serde_json::Value) -> Result<BTreeMap<Table, Vec<u32>>> {
    let raw: BTreeMap<String, Vec<u32>> = serde_json::from_value(value)
        .map_err(|e| Error::invalid(format!("invalid schema_versions of a destination: {e}")))?;
    raw.into_iter()
        .map(|(t, mut v)| {
            v.sort_unstable();
            v.dedup();
            Ok((t.parse::<Table>()?, v))
        })
        .collect()
}

pub async fn insert(pool: &PgPool, d: &NewDestination) -> Result<Destination> {
    let tables: Vec<String> = d.enabled_tables.iter().map(|t| t.db_label()).collect();
    let row = sqlx::query(&format!(
        "INSERT INTO warehouse_destinations (id, organization_id, kind, name, config, enabled_tables, window_seconds, \
         grace_seconds, max_attempts, start_from) \
         VALUES ($1, $2, $3::warehouse_destination_kind, $4, $5, $6::warehouse_table[], $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(d.organization_id)
    .bind(d.kind.label())
    .bind(&d.name)
    .bind(&d.config)
    .bind(&tables)
    .bind(d.window_seconds)
    .bind(d.grace_seconds)
    .bind(d.max_attempts)
    .bind(d.start_from)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Error::invalid(format!("organization {} already has a destination named '{}'", d.organization_id, d.name))
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23514") => {
            Error::invalid(format!("destination rejected by a constraint: {}", db.message()))
        }
        _ => Error::postgres("cannot insert destination", e),
    })?;
    from_row(&row)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Destination>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM warehouse_destinations ORDER BY organization_id, name"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Destination> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM warehouse_destinations WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(r) => from_row(&r),
        None => Err(Error::invalid(format!("no destination with id {id}"))),
    }
}

/// Finds a destination by id or by name (a name must be unique across organizations to be used alone).
pub async fn resolve(pool: &PgPool, id_or_name: &str) -> Result<Destination> {
    if let Ok(id) = Uuid::parse_str(id_or_name) {
        return get(pool, id).await;
    }
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM warehouse_destinations WHERE name = $1"))
        .bind(id_or_name)
        .fetch_all(pool)
        .await?;
    match rows.len() {
        0 => Err(Error::invalid(format!("no destination named '{id_or_name}'"))),
        1 => from_row(&rows[0]),
        n => Err(Error::invalid(format!(
            "{n} destinations are named '{id_or_name}' (in different organizations); use the id"
        ))),
    }
}

pub async fn set_status(pool: &PgPool, id: Uuid, status: &str) -> Result<()> {
    let n = sqlx::query(
        "UPDATE warehouse_destinations SET status = $2::warehouse_destination_status, updated_at = now(), \
         last_error = CASE WHEN $2 = 'active' THEN NULL ELSE last_error END WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::invalid(format!("no destination with id {id}")));
    }
    Ok(())
}

/// Replaces a destination's configuration (validated and probed by the caller). Deliveries
/// read the configuration when they start, so the next attempt of every window uses it; one
/// already running finishes with the configuration it started with.
pub async fn set_config(pool: &PgPool, id: Uuid, config: &serde_json::Value) -> Result<()> {
    let n = sqlx::query("UPDATE warehouse_destinations SET config = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(config)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::invalid(format!("no destination with id {id}")));
    }
    Ok(())
}

/// Sets the majors `table` is delivered in (validated by the caller against the published
/// schemas). A version that is added starts from `start` when given (its windows before it are
/// not planned; backfill them), else from the destination's start; a version that was delivered
/// before and is added again resumes where it stopped. A removed version is retired: no new
/// windows are planned for it; deliveries already planned still complete, and its watermark
/// stays. Returns the previous versions.
pub async fn set_schema_versions(
    pool: &PgPool,
    id: Uuid,
    table: Table,
    versions: &[u32],
    start: Option<DateTime<Utc>>,
) -> Result<Vec<u32>> {
    let mut versions = versions.to_vec();
    versions.sort_unstable();
    versions.dedup();
    if versions.is_empty() || versions.contains(&0) {
        return Err(Error::invalid(
            "--versions must name at least one major version (1, 2, ...)",
        ));
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM warehouse_destinations WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::invalid(format!("no destination with id {id}")))?;
    let dest = from_row(&row)?;
    let before = dest.versions(table);
    let label = table.db_label();
    for v in versions.iter().filter(|v| !before.contains(v)) {
        let start = start.map(|s| crate::plan::align_down(s, dest.window_seconds as i64));
        // A fresh watermark row starts the version at `start` (NULL: the destination's start);
        // an existing one (the version was retired and comes back) is left to resume.
        sqlx::query(
            "INSERT INTO warehouse_watermarks (destination_id, \"table\", schema_version, planned_through, delivered_through) \
             VALUES ($1, $2::warehouse_table, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&label)
        .bind(*v as i32)
        .bind(start)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE warehouse_destinations SET schema_versions = jsonb_set(schema_versions, ARRAY[$2], to_jsonb($3::int[])), \
         updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(table.name())
    .bind(versions.iter().map(|v| *v as i32).collect::<Vec<i32>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(before)
}

/// Marks a destination `error` (e.g. its configuration no longer builds); `resume` clears it.
pub async fn set_error(pool: &PgPool, id: Uuid, message: &str) -> Result<()> {
    sqlx::query(
        "UPDATE warehouse_destinations SET status = 'error', last_error = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a destination and its delivery history. Refuses while a delivery is leased.
pub async fn remove(pool: &PgPool, id: Uuid) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM warehouse_destinations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM warehouse_deliveries WHERE destination_id = $1 AND status = 'leased' AND lease_expires_at > now()",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if leased > 0 {
        return Err(Error::invalid(format!(
            "destination {id} has {leased} deliveries in flight; pause it and retry once they finish"
        )));
    }
    let n = sqlx::query("DELETE FROM warehouse_destinations WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if n == 0 {
        return Err(Error::invalid(format!("no destination with id {id}")));
    }
    Ok(n)
}
