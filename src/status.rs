//! Operator view: per destination × table × schema version, the watermark, lag and delivery
//! counts, and the source transaction holding windows open, if any. A version the destination
//! no longer receives (retired after a dual-write window) is listed while it has a watermark,
//! marked `retired`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::Result;
use crate::plan::BlockingTransaction;

#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub destination_id: Uuid,
    pub destination: String,
    pub organization_id: Uuid,
    pub kind: String,
    pub destination_status: String,
    pub table: String,
    pub schema_version: i32,
    /// The destination no longer receives this version (no new windows are planned for it).
    pub retired: bool,
    /// High-water mark: `(updated_at, id)` of the last row of the delivered prefix.
    pub watermark_updated_at: Option<DateTime<Utc>>,
    pub watermark_id: Option<Uuid>,
    /// Every window before this instant is delivered.
    pub delivered_through: Option<DateTime<Utc>>,
    pub planned_through: Option<DateTime<Utc>>,
    /// `now − delivered_through`, in seconds.
    pub lag_seconds: Option<f64>,
    pub pending: i64,
    pub leased: i64,
    pub delivered: i64,
    pub failed: i64,
    pub dead_letter: i64,
    pub rows_delivered: i64,
    pub bytes_delivered: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub now: DateTime<Utc>,
    pub tables: Vec<TableStatus>,
    /// The oldest open source transaction (other than tidemark's own), when it has been open for
    /// more than a second: it holds every window that ends after its start.
    pub blocking_transaction: Option<BlockingTransaction>,
    /// When the oldest prepared (two-phase) source transaction was prepared: while one exists,
    /// no window closes.
    pub prepared_transaction_since: Option<DateTime<Utc>>,
}

pub async fn table_status(control: &PgPool) -> Result<(DateTime<Utc>, Vec<TableStatus>)> {
    let rows = sqlx::query(
        "SELECT now() AS now, d.id, d.name, d.organization_id, d.kind::text AS kind, d.status::text AS dstatus, \
           lower(t.tbl::text) AS tbl, sv.ver, sv.retired, w.last_updated_at, w.last_id, w.delivered_through, w.planned_through, \
           extract(epoch FROM now() - w.delivered_through)::float8 AS lag, \
           coalesce(c.pending, 0) AS pending, coalesce(c.leased, 0) AS leased, coalesce(c.delivered, 0) AS delivered, \
           coalesce(c.failed, 0) AS failed, coalesce(c.dead, 0) AS dead, coalesce(c.row_sum, 0) AS row_sum, \
           coalesce(c.byte_sum, 0) AS byte_sum, c.last_error \
         FROM warehouse_destinations d \
         CROSS JOIN LATERAL unnest(d.enabled_tables) AS t(tbl) \
         CROSS JOIN LATERAL ( \
           SELECT v.ver, NOT bool_or(v.enabled) AS retired FROM ( \
             SELECT e::int AS ver, true AS enabled FROM jsonb_array_elements_text( \
               coalesce(d.schema_versions -> lower(t.tbl::text), jsonb_build_array(d.schema_version))) AS e \
             UNION ALL \
             SELECT ww.schema_version, false FROM warehouse_watermarks ww \
             WHERE ww.destination_id = d.id AND ww.\"table\" = t.tbl) v \
           GROUP BY v.ver) sv \
         LEFT JOIN warehouse_watermarks w ON w.destination_id = d.id AND w.\"table\" = t.tbl AND w.schema_version = sv.ver \
         LEFT JOIN LATERAL ( \
           SELECT count(*) FILTER (WHERE status = 'pending') AS pending, \
                  count(*) FILTER (WHERE status = 'leased') AS leased, \
                  count(*) FILTER (WHERE status = 'delivered') AS delivered, \
                  count(*) FILTER (WHERE status = 'failed') AS failed, \
                  count(*) FILTER (WHERE status = 'dead_letter') AS dead, \
                  sum(row_count) FILTER (WHERE status = 'delivered')::int8 AS row_sum, \
                  sum(bytes) FILTER (WHERE status = 'delivered')::int8 AS byte_sum, \
                  (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE status IN ('failed', 'dead_letter')))[1] AS last_error \
           FROM warehouse_deliveries x \
           WHERE x.destination_id = d.id AND x.\"table\" = t.tbl AND x.schema_version = sv.ver) c ON true \
         ORDER BY d.organization_id, d.name, t.tbl, sv.ver",
    )
    .fetch_all(control)
    .await?;
    let mut now = Utc::now();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        now = r.try_get("now")?;
        out.push(TableStatus {
            destination_id: r.try_get("id")?,
            destination: r.try_get("name")?,
            organization_id: r.try_get("organization_id")?,
            kind: r.try_get("kind")?,
            destination_status: r.try_get("dstatus")?,
            table: r.try_get("tbl")?,
            schema_version: r.try_get("ver")?,
            retired: r.try_get("retired")?,
            watermark_updated_at: r.try_get("last_updated_at")?,
            watermark_id: r.try_get("last_id")?,
            delivered_through: r.try_get("delivered_through")?,
            planned_through: r.try_get("planned_through")?,
            lag_seconds: r.try_get("lag")?,
            pending: r.try_get("pending")?,
            leased: r.try_get("leased")?,
            delivered: r.try_get("delivered")?,
            failed: r.try_get("failed")?,
            dead_letter: r.try_get("dead")?,
            rows_delivered: r.try_get("row_sum")?,
            bytes_delivered: r.try_get("byte_sum")?,
            last_error: r.try_get("last_error")?,
        });
    }
    Ok((now, out))
}
