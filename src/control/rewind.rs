//! Rewinding a watermark: delivered windows of one destination × table from an instant on go
//! back into the queue, so the next `run` extracts and delivers them again.
//!
//! What makes it safe (each enforced here, in one transaction):
//! - **No delivery in flight**: a window of the range under an unexpired lease refuses the whole
//!   rewind (the worker could complete it while we re-queue it).
//! - **Nothing cold storage relies on**: a delivery that proves a tombstone
//!   (`cold_storage_proofs`) is never re-queued. Re-extracting its window would read the hot
//!   table *without* the archived rows and overwrite (object stores) or replace (the raw table
//!   of a warehouse) the very copy recall needs. Such a range is refused, naming the newest
//!   proof, so the operator can rewind from after it.
//! - **Serialized with the tombstone pass**: the destination row is locked `FOR UPDATE`, which
//!   waits for tombstone batches holding it `FOR KEY SHARE`; and those batches re-check, under
//!   a share lock on the delivery rows, that their proofs are still delivered.
//! - **Watermark recomputed from the deliveries**: `delivered_through` moves back to the first
//!   re-queued window, the high-water mark to the last delivered row before it.
//!
//! Only `delivered` deliveries are re-queued; `pending`/`failed` ones are already due and
//! `dead_letter` ones are `tidemark retry`'s business. Re-delivery reuses each window's delivery
//! id, so every adapter's replay rule applies (objects are rewritten under the same key,
//! warehouses replace the delivery's raw rows and MERGE, the replica upserts, Iceberg commits
//! only if the table has no snapshot of that delivery): a rewind never duplicates rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::control::outbox;
use crate::error::{Error, Result};
use crate::schema::Table;

/// What a rewind of one schema version did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RewindVersion {
    pub schema_version: u32,
    /// Delivered windows put back in the queue.
    pub requeued: i64,
    pub requeued_rows: i64,
    pub first_window: Option<DateTime<Utc>>,
    pub last_window_end: Option<DateTime<Utc>>,
    /// Windows of the range left as they were, by status (`pending`, `failed`, `dead_letter`).
    pub untouched: Vec<(String, i64)>,
    pub delivered_through_before: Option<DateTime<Utc>>,
    pub delivered_through_after: Option<DateTime<Utc>>,
}

/// The outcome of [`rewind`].
#[derive(Debug, Clone, Serialize)]
pub struct Rewind {
    pub destination_id: Uuid,
    pub table: Table,
    pub from: DateTime<Utc>,
    pub executed: bool,
    pub versions: Vec<RewindVersion>,
}

/// The deliveries of the pair and version that end after the instant (`$1`..`$4`).
fn range_condition(alias: &str) -> String {
    format!(
        "{alias}destination_id = $1 AND {alias}\"table\" = $2::warehouse_table AND {alias}schema_version = $3 \
         AND {alias}watermark_end > $4"
    )
}

/// Re-queues the delivered windows of `destination_id` × `table` (every schema version it has
/// watermarks for, or only `version`) that end after `from`. With `execute == false` nothing
/// changes and the report says what would.
pub async fn rewind(
    pool: &PgPool,
    destination_id: Uuid,
    table: Table,
    version: Option<u32>,
    from: DateTime<Utc>,
    execute: bool,
) -> Result<Rewind> {
    let mut tx = pool.begin().await?;
    // Waits for tombstone batches that rely on this destination (they hold FOR KEY SHARE).
    sqlx::query("SELECT 1 FROM warehouse_destinations WHERE id = $1 FOR UPDATE")
        .bind(destination_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::invalid(format!("no destination {destination_id}")))?;
    let versions: Vec<i32> = sqlx::query_scalar(
        "SELECT schema_version FROM warehouse_watermarks WHERE destination_id = $1 AND \"table\" = $2::warehouse_table \
           AND ($3::int IS NULL OR schema_version = $3) ORDER BY 1",
    )
    .bind(destination_id)
    .bind(table.db_label())
    .bind(version.map(|v| v as i32))
    .fetch_all(&mut *tx)
    .await?;
    if versions.is_empty() {
        return Err(Error::invalid(match version {
            Some(v) => format!("{table} v{v} has no watermark for this destination: nothing was ever planned"),
            None => format!("{table} has no watermark for this destination: nothing was ever planned"),
        }));
    }
    let mut report = Rewind {
        destination_id,
        table,
        from,
        executed: execute,
        versions: Vec::new(),
    };
    for v in versions {
        let v = v as u32;
        // Lock the watermark row: planners and completions of this pair wait for us.
        outbox::lock_watermark(&mut tx, destination_id, table, v).await?;
        let before: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT delivered_through FROM warehouse_watermarks \
             WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3",
        )
        .bind(destination_id)
        .bind(table.db_label())
        .bind(v as i32)
        .fetch_one(&mut *tx)
        .await?;
        let range = range_condition("");
        let leased: Option<(i64, DateTime<Utc>)> = sqlx::query(&format!(
            "SELECT count(*), min(watermark_start) FROM warehouse_deliveries \
             WHERE {range} AND status = 'leased' AND lease_expires_at > now() HAVING count(*) > 0"
        ))
        .bind(destination_id)
        .bind(table.db_label())
        .bind(v as i32)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        if let Some((n, first)) = leased {
            return Err(Error::invalid(format!(
                "{n} window(s) of {table} v{v} from {first} on are being delivered right now (leased); \
                 pause the destination, wait for them to finish, then rewind"
            )));
        }
        let proven: Option<(i64, DateTime<Utc>)> = sqlx::query(&format!(
            "SELECT count(*), max(d.watermark_end) FROM warehouse_deliveries d \
             JOIN cold_storage_proofs p ON p.delivery_id = d.id \
             WHERE {} HAVING count(*) > 0",
            range_condition("d.")
        ))
        .bind(destination_id)
        .bind(table.db_label())
        .bind(v as i32)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        if let Some((n, last)) = proven {
            return Err(Error::invalid(format!(
                "{n} delivered window(s) of {table} v{v} in the range prove archived rows (cold storage): \
                 re-delivering them would replace the copy those rows are recalled from. \
                 Rewind from {last} or later"
            )));
        }
        let untouched: Vec<(String, i64)> = sqlx::query(&format!(
            "SELECT status::text, count(*) FROM warehouse_deliveries WHERE {range} AND status <> 'delivered' \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(destination_id)
        .bind(table.db_label())
        .bind(v as i32)
        .bind(from)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, _>>()?;
        let row = sqlx::query(&format!(
            "SELECT count(*), COALESCE(sum(row_count), 0)::bigint, min(watermark_start), max(watermark_end) \
             FROM warehouse_deliveries WHERE {range} AND status = 'delivered'"
        ))
        .bind(destination_id)
        .bind(table.db_label())
        .bind(v as i32)
        .bind(from)
        .fetch_one(&mut *tx)
        .await?;
        let mut entry = RewindVersion {
            schema_version: v,
            requeued: row.try_get(0)?,
            requeued_rows: row.try_get(1)?,
            first_window: row.try_get(2)?,
            last_window_end: row.try_get(3)?,
            untouched,
            delivered_through_before: before,
            delivered_through_after: before,
        };
        if execute && entry.requeued > 0 {
            sqlx::query(&format!(
                "UPDATE warehouse_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), \
                   lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, delivered_at = NULL, \
                   last_error = NULL, updated_at = now() \
                 WHERE {range} AND status = 'delivered'"
            ))
            .bind(destination_id)
            .bind(table.db_label())
            .bind(v as i32)
            .bind(from)
            .execute(&mut *tx)
            .await?;
            // The high-water mark is recomputed from the deliveries still delivered before the
            // new bound; clear it first so a rewind to before every delivery leaves none.
            sqlx::query(
                "UPDATE warehouse_watermarks SET last_updated_at = NULL, last_id = NULL \
                 WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3",
            )
            .bind(destination_id)
            .bind(table.db_label())
            .bind(v as i32)
            .execute(&mut *tx)
            .await?;
            outbox::advance_watermark(&mut tx, destination_id, table, v).await?;
            entry.delivered_through_after = sqlx::query_scalar(
                "SELECT delivered_through FROM warehouse_watermarks \
                 WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $3",
            )
            .bind(destination_id)
            .bind(table.db_label())
            .bind(v as i32)
            .fetch_one(&mut *tx)
            .await?;
        }
        report.versions.push(entry);
    }
    if execute {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(report)
}
