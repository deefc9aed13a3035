//! `tidemark archive report`: per run, what an organization had tombstoned, proven by which
//! deliveries (object keys and the objects' sha256 from their receipts) or overrides, with
//! counts per table and a digest over the run's row hashes.
//!
//! Digest rule: SHA-256 over the concatenation, in ascending byte order, of the 32-byte
//! `row_sha256` values of the organization's tombstones of the run archived within the report's
//! range. In SQL: `SELECT encode(sha256(string_agg(row_sha256, ''::bytea ORDER BY row_sha256)),
//! 'hex') FROM cold_storage_archive WHERE organization_id = … AND run_id = …`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::Result;

pub const DIGEST_RULE: &str = "sha256 over the concatenation, in ascending byte order, of the 32-byte row_sha256 values \
     of the organization's tombstones of the run archived within [from, to)";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub organization_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub tidemark_version: &'static str,
    pub digest_rule: &'static str,
    pub rows: u64,
    pub runs: Vec<RunEvidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunEvidence {
    pub run_id: Uuid,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished`, `failed`, or `running` (still running, or the process died).
    pub status: Option<String>,
    pub started_by: Option<String>,
    pub arguments: Option<serde_json::Value>,
    /// The source clock the retention cutoffs were computed against.
    pub source_now: Option<DateTime<Utc>>,
    /// The run started before `from` or ended after `to`: only its tombstones inside the range
    /// are counted here.
    pub partial: bool,
    pub first_archived_at: DateTime<Utc>,
    pub last_archived_at: DateTime<Utc>,
    pub rows: u64,
    /// Of those, put back by `archive recall --restore` since.
    pub restored: u64,
    pub tables: Vec<TableCount>,
    pub rows_sha256_digest: String,
    pub proofs: Vec<ProofUse>,
    pub overrides: Vec<OverrideUse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
    pub restored: u64,
    pub oldest_row_updated_at: DateTime<Utc>,
    pub newest_row_updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProofUse {
    pub delivery_id: Uuid,
    pub destination_id: Uuid,
    pub destination_name: String,
    pub kind: String,
    pub table: String,
    pub url: Option<String>,
    pub object_key: Option<String>,
    pub format: Option<String>,
    /// The object's sha256 and size as the destination reported them when it landed the object.
    pub object_sha256: Option<String>,
    pub object_bytes: Option<i64>,
    pub object_rows: Option<i64>,
    pub watermark_start: DateTime<Utc>,
    pub watermark_end: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Rows of this run proven by this delivery.
    pub rows_proven: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverrideUse {
    pub override_id: Uuid,
    pub reason: String,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub rows: u64,
}

pub async fn report(pool: &PgPool, organization_id: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Report> {
    const RANGE: &str = "a.organization_id = $1 AND a.archived_at >= $2 AND a.archived_at < $3";
    let generated_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let per_table = sqlx::query(&format!(
        "SELECT a.run_id, lower(a.\"table\"::text) AS table_name, count(*) AS n, count(a.restored_at) AS restored, \
           min(a.archived_at) AS first_at, max(a.archived_at) AS last_at, \
           min(a.row_updated_at) AS oldest, max(a.row_updated_at) AS newest \
         FROM cold_storage_archive a WHERE {RANGE} \
         GROUP BY a.run_id, a.\"table\" ORDER BY min(a.archived_at), a.run_id, a.\"table\""
    ))
    .bind(organization_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut runs: Vec<RunEvidence> = Vec::new();
    let mut index: BTreeMap<Uuid, usize> = BTreeMap::new();
    for r in &per_table {
        let run_id: Uuid = r.try_get("run_id")?;
        let n = r.try_get::<i64, _>("n")? as u64;
        let restored = r.try_get::<i64, _>("restored")? as u64;
        let first: DateTime<Utc> = r.try_get("first_at")?;
        let last: DateTime<Utc> = r.try_get("last_at")?;
        let i = *index.entry(run_id).or_insert_with(|| {
            runs.push(RunEvidence {
                run_id,
                started_at: None,
                finished_at: None,
                status: None,
                started_by: None,
                arguments: None,
                source_now: None,
                partial: false,
                first_archived_at: first,
                last_archived_at: last,
                rows: 0,
                restored: 0,
                tables: Vec::new(),
                rows_sha256_digest: String::new(),
                proofs: Vec::new(),
                overrides: Vec::new(),
            });
            runs.len() - 1
        });
        let run = &mut runs[i];
        run.rows += n;
        run.restored += restored;
        run.first_archived_at = run.first_archived_at.min(first);
        run.last_archived_at = run.last_archived_at.max(last);
        run.tables.push(TableCount {
            table: r.try_get("table_name")?,
            rows: n,
            restored,
            oldest_row_updated_at: r.try_get("oldest")?,
            newest_row_updated_at: r.try_get("newest")?,
        });
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.run_id).collect();
    for r in sqlx::query(
        "SELECT id, started_at, finished_at, status, started_by, arguments, source_now FROM cold_storage_runs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    {
        let id: Uuid = r.try_get("id")?;
        if let Some(&i) = index.get(&id) {
            let run = &mut runs[i];
            run.started_at = r.try_get("started_at")?;
            run.finished_at = r.try_get("finished_at")?;
            run.status = r.try_get("status")?;
            run.started_by = r.try_get("started_by")?;
            run.arguments = r.try_get("arguments")?;
            run.source_now = r.try_get("source_now")?;
            run.partial = run.started_at.is_some_and(|s| s < from) || run.finished_at.is_none_or(|f| f >= to);
        }
    }
    for r in sqlx::query(&format!(
        "SELECT a.run_id, count(*) AS n, p.delivery_id, p.destination_id, p.destination_name, p.kind::text AS kind, \
           lower(p.\"table\"::text) AS table_name, p.receipt, p.watermark_start, p.watermark_end, p.delivered_at \
         FROM cold_storage_archive a JOIN cold_storage_proofs p ON p.delivery_id = a.delivery_id \
         WHERE {RANGE} GROUP BY a.run_id, p.delivery_id ORDER BY a.run_id, p.\"table\", p.watermark_start, p.delivery_id"
    ))
    .bind(organization_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?
    {
        let run_id: Uuid = r.try_get("run_id")?;
        let receipt: serde_json::Value = r.try_get("receipt")?;
        let text = |k: &str| receipt.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let int = |k: &str| receipt.get(k).and_then(|v| v.as_i64());
        if let Some(&i) = index.get(&run_id) {
            runs[i].proofs.push(ProofUse {
                delivery_id: r.try_get("delivery_id")?,
                destination_id: r.try_get("destination_id")?,
                destination_name: r.try_get("destination_name")?,
                kind: r.try_get("kind")?,
                table: r.try_get("table_name")?,
                url: text("url"),
                object_key: text("object_key"),
                format: text("format"),
                object_sha256: text("sha256"),
                object_bytes: int("bytes"),
                object_rows: int("rows"),
                watermark_start: r.try_get("watermark_start")?,
                watermark_end: r.try_get("watermark_end")?,
                delivered_at: r.try_get("delivered_at")?,
                rows_proven: r.try_get::<i64, _>("n")? as u64,
            });
        }
    }
    for r in sqlx::query(&format!(
        "SELECT a.run_id, a.override_id, min(a.override_reason) AS reason, count(*) AS n, \
           o.created_by, o.created_at, o.revoked_at, o.revoked_by \
         FROM cold_storage_archive a LEFT JOIN cold_storage_overrides o ON o.id = a.override_id \
         WHERE {RANGE} AND a.override_id IS NOT NULL \
         GROUP BY a.run_id, a.override_id, o.id ORDER BY a.run_id, a.override_id"
    ))
    .bind(organization_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?
    {
        let run_id: Uuid = r.try_get("run_id")?;
        if let Some(&i) = index.get(&run_id) {
            runs[i].overrides.push(OverrideUse {
                override_id: r.try_get("override_id")?,
                reason: r.try_get::<Option<String>, _>("reason")?.unwrap_or_default(),
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
                revoked_by: r.try_get("revoked_by")?,
                rows: r.try_get::<i64, _>("n")? as u64,
            });
        }
    }
    // Digests, streamed in the database's byte order (bytea compares bytewise).
    let mut current: Option<(Uuid, Sha256)> = None;
    let mut digests: BTreeMap<Uuid, String> = BTreeMap::new();
    let sql = format!(
        "SELECT a.run_id, a.row_sha256 FROM cold_storage_archive a WHERE {RANGE} ORDER BY a.run_id, a.row_sha256"
    );
    let mut rows = sqlx::query_as::<_, (Uuid, Vec<u8>)>(&sql)
        .bind(organization_id)
        .bind(from)
        .bind(to)
        .fetch(pool);
    while let Some((run_id, sha)) = rows.try_next().await? {
        match &mut current {
            Some((id, h)) if *id == run_id => h.update(&sha),
            _ => {
                if let Some((id, h)) = current.take() {
                    digests.insert(id, hex::encode(h.finalize()));
                }
                let mut h = Sha256::new();
                h.update(&sha);
                current = Some((run_id, h));
            }
        }
    }
    if let Some((id, h)) = current.take() {
        digests.insert(id, hex::encode(h.finalize()));
    }
    for run in &mut runs {
        run.rows_sha256_digest = digests.remove(&run.run_id).unwrap_or_default();
    }
    Ok(Report {
        organization_id,
        from,
        to,
        generated_at,
        tidemark_version: env!("CARGO_PKG_VERSION"),
        digest_rule: DIGEST_RULE,
        rows: runs.iter().map(|r| r.rows).sum(),
        runs,
    })
}
