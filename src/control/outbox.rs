//! `warehouse_deliveries` as a durable outbox: plan → lease → heartbeat → complete | fail.
//!
//! A lease is `(lease_owner, lease_token)`; the token comes from a sequence, so a newer lease
//! always has a larger token. Every state change of a leased delivery names its token, and
//! matches zero rows once another worker has taken the delivery over.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::control::destinations::Destination;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::Table;

/// One leased delivery, with everything a worker needs to run it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub delivery_id: Uuid,
    pub destination_id: Uuid,
    pub organization_id: Uuid,
    pub table: Table,
    pub schema_version: u32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub owner: String,
    pub token: i64,
}

/// Which deliveries a worker may take.
#[derive(Debug, Clone, Default)]
pub struct LeaseFilter {
    pub destination_id: Option<Uuid>,
    pub table: Option<Table>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// What a successful delivery records.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub rows: i64,
    pub bytes: i64,
    pub last_cursor: Option<(DateTime<Utc>, Uuid)>,
    pub receipt: serde_json::Value,
}

/// Inserts one pending delivery of schema `version` per `[start, end)` range, skipping any range
/// that overlaps an existing delivery of the same destination × table × version (a window
/// already covered by a backfill chunk, or the reverse). Callers hold the watermark row lock of
/// the destination × table × version, so concurrent planners cannot race past the overlap
/// check. Returns how many were new.
pub async fn insert_ranges(
    tx: &mut Transaction<'_, Postgres>,
    dest: &Destination,
    table: Table,
    version: u32,
    ranges: &[(DateTime<Utc>, DateTime<Utc>)],
) -> Result<u64> {
    if ranges.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = ranges.iter().map(|_| Uuid::new_v4()).collect();
    let starts: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.0).collect();
    let ends: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.1).collect();
    let n = sqlx::query(
        "INSERT INTO warehouse_deliveries (id, destination_id, organization_id, \"table\", schema_version, \
           watermark_start, watermark_end, max_attempts) \
         SELECT w.id, $1, $2, $3::warehouse_table, $4, w.s, w.e, $5 \
         FROM unnest($6::uuid[], $7::timestamptz[], $8::timestamptz[]) AS w(id, s, e) \
         WHERE NOT EXISTS ( \
           SELECT 1 FROM warehouse_deliveries x \
           WHERE x.destination_id = $1 AND x.\"table\" = $3::warehouse_table AND x.schema_version = $4 \
             AND x.watermark_start > w.s - interval '1 day' AND x.watermark_start < w.e AND x.watermark_end > w.s) \
         ON CONFLICT (destination_id, \"table\", watermark_start, watermark_end, schema_version) DO NOTHING",
    )
    .bind(dest.id)
    .bind(dest.organization_id)
    .bind(table.db_label())
    .bind(version as i32)
    .bind(dest.max_attempts)
    .bind(&ids)
    .bind(&starts)
    .bind(&ends)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n)
}

/// Locks (creating if needed) the watermark row of a destination × table × schema version:
/// every planner of that triple serialises here. Returns its `planned_through`.
pub async fn lock_watermark(
    tx: &mut Transaction<'_, Postgres>,
    destination_id: Uuid,
    table: Table,
    schema_version: u32,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query(
        "INSERT INTO warehouse_watermarks (destination_id, \"table\", schema_version) VALUES ($1, $2::warehouse_table, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(destination_id)
    .bind(table.db_label())
    .bind(schema_version as i32)
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT planned_through FROM warehouse_watermarks \
         WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3 FOR UPDATE",
    )
    .bind(destination_id)
    .bind(table.db_label())
    .bind(schema_version as i32)
    .fetch_one(&mut **tx)
    .await?)
}

/// Takes the oldest due delivery (or one whose lease expired) with `FOR UPDATE SKIP LOCKED`.
pub async fn lease(pool: &PgPool, owner: &str, ttl_seconds: f64, filter: &LeaseFilter) -> Result<Option<Lease>> {
    // A delivery whose worker died on its last allowed attempt goes to the dead letters
    // instead of being leased again.
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'dead_letter', updated_at = now(), \
           last_error = concat_ws('; ', last_error, 'lease of ' || lease_owner || ' expired on the last allowed attempt (worker died?)') \
         WHERE status = 'leased' AND lease_expires_at < now() AND attempts >= max_attempts",
    )
    .execute(pool)
    .await?;
    // Expired leases first (rare), then the oldest due window: each an ordered index scan
    // that stops at the first row it can lock, however long the queue.
    let mut row = None;
    for candidates in [
        "d.status = 'leased' AND d.lease_expires_at < now() ORDER BY d.lease_expires_at",
        "d.status IN ('pending', 'failed') AND d.next_attempt_at <= now() ORDER BY d.watermark_start, d.id",
    ] {
        row = sqlx::query(&format!(
            "WITH next AS ( \
               SELECT d.id FROM warehouse_deliveries d \
               JOIN warehouse_destinations w ON w.id = d.destination_id AND w.status = 'active' \
               WHERE ($3::uuid IS NULL OR d.destination_id = $3) \
                 AND ($4::text IS NULL OR d.\"table\" = $4::warehouse_table) \
                 AND ($5::timestamptz IS NULL OR d.watermark_start >= $5) \
                 AND ($6::timestamptz IS NULL OR d.watermark_end <= $6) \
                 AND {candidates} \
               LIMIT 1 \
               FOR UPDATE OF d SKIP LOCKED) \
             UPDATE warehouse_deliveries d SET status = 'leased', lease_owner = $1, \
               lease_token = nextval('warehouse_lease_token_seq'), \
               lease_expires_at = now() + make_interval(secs => $2), attempts = d.attempts + 1, updated_at = now() \
             FROM next WHERE d.id = next.id \
             RETURNING d.id, d.destination_id, d.organization_id, d.\"table\"::text AS table_label, d.schema_version, \
               d.watermark_start, d.watermark_end, d.attempts, d.max_attempts, d.lease_token"
        ))
        .bind(owner)
        .bind(ttl_seconds)
        .bind(filter.destination_id)
        .bind(filter.table.map(|t| t.db_label()))
        .bind(filter.from)
        .bind(filter.to)
        .fetch_optional(pool)
        .await?;
        if row.is_some() {
            break;
        }
    }
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Lease {
        delivery_id: row.try_get("id")?,
        destination_id: row.try_get("destination_id")?,
        organization_id: row.try_get("organization_id")?,
        table: Table::from_db_label(&row.try_get::<String, _>("table_label")?)?,
        schema_version: row.try_get::<i32, _>("schema_version")? as u32,
        window_start: row.try_get("watermark_start")?,
        window_end: row.try_get("watermark_end")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        owner: owner.to_string(),
        token: row.try_get("lease_token")?,
    }))
}

fn fenced(lease: &Lease, action: &str) -> Error {
    Error::new(
        ErrorKind::Fenced,
        format!("cannot {action}: the lease was taken over by another worker"),
    )
    .with_context("delivery", lease.delivery_id)
    .with_context("token", lease.token)
}

/// Extends the lease. `Fenced` once it has been taken over.
pub async fn heartbeat(pool: &PgPool, lease: &Lease, ttl_seconds: f64) -> Result<()> {
    let n = sqlx::query(
        "UPDATE warehouse_deliveries SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'leased'",
    )
    .bind(lease.delivery_id)
    .bind(lease.token)
    .bind(ttl_seconds)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 1 {
        Ok(())
    } else {
        Err(fenced(lease, "extend the lease"))
    }
}

/// Marks the delivery delivered with its receipt and advances the watermark, in one
/// transaction, only if the lease is still ours.
pub async fn complete(pool: &PgPool, lease: &Lease, done: &Completion) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Lock order: watermark row first (as the planner does), then the delivery.
    lock_watermark(&mut tx, lease.destination_id, lease.table, lease.schema_version).await?;
    let n = sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'delivered', receipt = $3, row_count = $4, bytes = $5, \
           last_updated_at = $6, last_id = $7, delivered_at = now(), last_error = NULL, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'leased'",
    )
    .bind(lease.delivery_id)
    .bind(lease.token)
    .bind(&done.receipt)
    .bind(done.rows)
    .bind(done.bytes)
    .bind(done.last_cursor.map(|c| c.0))
    .bind(done.last_cursor.map(|c| c.1))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(fenced(lease, "complete the delivery"));
    }
    advance_watermark(&mut tx, lease.destination_id, lease.table, lease.schema_version).await?;
    sqlx::query("UPDATE warehouse_destinations SET last_delivery_at = now() WHERE id = $1")
        .bind(lease.destination_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Recomputes the watermark of (destination, table, schema version) from its deliveries:
/// `delivered_through` is the start of the oldest undelivered window (or the planned horizon
/// when all are delivered) and the high-water mark is the last row of the newest delivery
/// before it.
pub async fn advance_watermark(
    tx: &mut Transaction<'_, Postgres>,
    destination_id: Uuid,
    table: Table,
    version: u32,
) -> Result<()> {
    sqlx::query(
        "WITH bound AS ( \
           SELECT COALESCE( \
             (SELECT min(watermark_start) FROM warehouse_deliveries \
               WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3 \
                 AND status <> 'delivered'), \
             GREATEST(w.planned_through, (SELECT watermark_end FROM warehouse_deliveries \
               WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3 \
               ORDER BY watermark_start DESC LIMIT 1))) AS through \
           FROM warehouse_watermarks w \
           WHERE w.destination_id = $1 AND w.\"table\" = $2::warehouse_table AND w.schema_version = $3), \
         last AS ( \
           SELECT d.last_updated_at, d.last_id FROM warehouse_deliveries d, bound \
           WHERE d.destination_id = $1 AND d.\"table\" = $2::warehouse_table AND d.schema_version = $3 \
             AND d.status = 'delivered' AND d.last_updated_at IS NOT NULL AND d.watermark_start < bound.through \
           ORDER BY d.watermark_start DESC LIMIT 1) \
         UPDATE warehouse_watermarks w SET delivered_through = bound.through, \
           last_updated_at = COALESCE((SELECT last_updated_at FROM last), w.last_updated_at), \
           last_id = COALESCE((SELECT last_id FROM last), w.last_id), updated_at = now() \
         FROM bound WHERE w.destination_id = $1 AND w.\"table\" = $2::warehouse_table AND w.schema_version = $3",
    )
    .bind(destination_id)
    .bind(table.db_label())
    .bind(version as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed attempt: `failed` with a backoff, or `dead_letter` when the error is not
/// retryable or the attempts are used up. Returns the new status.
pub async fn fail(pool: &PgPool, lease: &Lease, error: &Error, backoff: std::time::Duration) -> Result<String> {
    let permanent = !error.is_retryable();
    let message = format!("[{}] {error}", error.kind().as_str());
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE warehouse_deliveries SET \
           status = CASE WHEN $3 OR attempts >= max_attempts THEN 'dead_letter'::warehouse_delivery_status \
                         ELSE 'failed'::warehouse_delivery_status END, \
           next_attempt_at = now() + make_interval(secs => $4), last_error = $5, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'leased' RETURNING status::text",
    )
    .bind(lease.delivery_id)
    .bind(lease.token)
    .bind(permanent)
    .bind(backoff.as_secs_f64())
    .bind(&message)
    .fetch_optional(pool)
    .await?;
    status.ok_or_else(|| fenced(lease, "record the failure"))
}

/// Gives a lease back untouched (graceful shutdown): the attempt does not count.
pub async fn release(pool: &PgPool, lease: &Lease) -> Result<()> {
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'pending', attempts = greatest(attempts - 1, 0), \
           lease_expires_at = NULL, next_attempt_at = now(), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 AND status = 'leased'",
    )
    .bind(lease.delivery_id)
    .bind(lease.token)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts dead letters (optionally of one destination / table / delivery) back in the queue.
pub async fn retry(
    pool: &PgPool,
    destination_id: Option<Uuid>,
    table: Option<Table>,
    delivery_id: Option<Uuid>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), \
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now() \
         WHERE status = 'dead_letter' AND ($1::uuid IS NULL OR destination_id = $1) \
           AND ($2::text IS NULL OR \"table\" = $2::warehouse_table) AND ($3::uuid IS NULL OR id = $3)",
    )
    .bind(destination_id)
    .bind(table.map(|t| t.db_label()))
    .bind(delivery_id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Counts deliveries still to do (not delivered, not dead) in a filter; backfill's progress.
pub async fn count_by_status(pool: &PgPool, filter: &LeaseFilter) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT status::text, count(*) FROM warehouse_deliveries d \
         WHERE ($1::uuid IS NULL OR d.destination_id = $1) AND ($2::text IS NULL OR d.\"table\" = $2::warehouse_table) \
           AND ($3::timestamptz IS NULL OR d.watermark_start >= $3) AND ($4::timestamptz IS NULL OR d.watermark_end <= $4) \
         GROUP BY 1",
    )
    .bind(filter.destination_id)
    .bind(filter.table.map(|t| t.db_label()))
    .bind(filter.from)
    .bind(filter.to)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}
