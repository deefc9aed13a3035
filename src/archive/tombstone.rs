//! The tombstoning pass: per organization with `data_retention_days` and per table, rows with
//! `updated_at < source now − retention` are candidates; the proven ones leave the hot table in
//! one transaction per batch that also writes their tombstones.
//!
//! One batch ([`next_page`] then [`commit_batch`]):
//! 1. the next `batch` candidate keys `(updated_at, id)` after the previous page, in that order
//!    (an index-only walk of `(organization_id, updated_at, id)`);
//! 2. the deliveries intersecting the page, and the proof rule for every key ([`super::proof`]);
//! 3. with `--execute`: the proven rows, read by binary COPY with the export's select list,
//!    hashed canonically ([`super::hash`]) and proven again on what the COPY returned;
//! 4. one transaction: `SET LOCAL tidemark.archival = 'on'`; the proving destinations locked
//!    `FOR KEY SHARE` (no removal meanwhile) and still active, an override locked `FOR SHARE`
//!    (no revocation meanwhile) and still active; the proofs snapshotted; then
//!    `WITH del AS (DELETE … USING unnest(ids, proven updated_at, hashes, …) WHERE t.id = u.id
//!    AND t.updated_at = u.updated_at RETURNING u.*) INSERT INTO cold_storage_archive … FROM
//!    del`: exactly the rows deleted get tombstones, and a row updated since its hash was read
//!    no longer matches and stays.
//!
//! Steps 1–2 run in order, page after page; steps 3–4 of a page run in a task of their own,
//! up to [`PassOptions::parallel`] at once, each on its own connections and in its own
//! transaction, while the walk goes on (pages are disjoint key ranges, so no two batches hold
//! the same row). Blocked rows stay and are counted by reason. The walk moves past them, so a
//! pass reads each candidate key once; the next pass starts from the oldest row again and
//! finds what is left.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::hash::{CanonicalEncoder, RowHash, copy_rows, copy_statement, micros_to_utc, sha256, ts_literal};
use super::proof::{Blocked, Coverage, Proof, Scope, Verdict};
use super::{ARCHIVAL_SETTING, failpoint_before_archive_commit};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Registry, Table, quote_ident};

pub const DEFAULT_BATCH: usize = 10_000;

/// Batches read, hashed and committed at once within a scope by default, each by its own task
/// on its own connections (see [`PassOptions::parallel`]).
pub const DEFAULT_PARALLEL: usize = 2;

/// What one pass does.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Delete (otherwise a dry run: read and count only, write nothing).
    pub execute: bool,
    pub organization: Option<Uuid>,
    pub table: Option<Table>,
    /// At most this many rows archived (with `execute`) or found provable (dry run) per pass.
    pub limit: Option<u64>,
    /// Candidate rows per batch (and per transaction).
    pub batch: usize,
    /// Batches of a scope in flight at once (read, hashed and committed by their own tasks,
    /// each in its own transaction). The key walk hands out disjoint pages in key order, so no
    /// two batches ever hold the same row. 1 still reads the next page's keys while a batch
    /// is archived.
    pub parallel: usize,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            execute: false,
            organization: None,
            table: None,
            limit: None,
            batch: DEFAULT_BATCH,
            parallel: DEFAULT_PARALLEL,
        }
    }
}

/// Counts of one organization × table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Candidate rows examined (older than the cutoff).
    pub candidates: u64,
    /// Proven by a delivered copy.
    pub provable: u64,
    /// Proven by the organization's override only.
    pub by_override: u64,
    /// Blocked rows by reason (`not_planned`, `not_delivered`, ...).
    pub blocked: BTreeMap<Blocked, u64>,
    /// Deleted with a tombstone (execute only).
    pub archived: u64,
    /// Proven but not archived: updated or deleted since the proof, or the proof was withdrawn
    /// (destination removed or no longer active, override revoked) before the batch committed.
    pub skipped: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.candidates += other.candidates;
        self.provable += other.provable;
        self.by_override += other.by_override;
        for (k, v) in &other.blocked {
            *self.blocked.entry(*k).or_default() += v;
        }
        self.archived += other.archived;
        self.skipped += other.skipped;
    }

    pub fn blocked_total(&self) -> u64 {
        self.blocked.values().sum()
    }
}

/// One organization × table of a pass.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeReport {
    pub organization_id: Uuid,
    pub table: Table,
    pub retention_days: i32,
    pub cutoff: DateTime<Utc>,
    #[serde(flatten)]
    pub tally: Tally,
    /// Why rows are blocked, one line per reason present.
    pub blocked_reasons: BTreeMap<Blocked, &'static str>,
    /// The scope failed (e.g. schema drift); the pass went on with the others.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub run_id: Uuid,
    pub executed: bool,
    pub source_now: DateTime<Utc>,
    pub limit: Option<u64>,
    pub limit_reached: bool,
    pub interrupted: bool,
    pub scopes: Vec<ScopeReport>,
    #[serde(flatten)]
    pub totals: Tally,
    pub seconds: f64,
    pub notes: Vec<String>,
}

impl PassReport {
    pub fn failed(&self) -> bool {
        self.scopes.iter().any(|s| s.error.is_some())
    }
}

/// A candidate key.
pub type Key = (DateTime<Utc>, Uuid);

/// A proven row, read and hashed, ready to be archived.
#[derive(Debug, Clone)]
pub struct PreparedRow {
    pub id: Uuid,
    pub updated_at: DateTime<Utc>,
    pub sha256: RowHash,
    pub proof: Proof,
    pub schema_version: i32,
}

/// The rows of one batch to archive in one transaction.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    pub organization_id: Uuid,
    pub table: Table,
    /// The hot table's organization column (from the published schema).
    pub organization_column: String,
    pub rows: Vec<PreparedRow>,
}

/// One page of candidates, classified (and with `execute`, read and hashed).
#[derive(Debug, Clone)]
pub struct Page {
    pub tally: Tally,
    /// Where the next page starts (exclusive); `None` when the scope is exhausted.
    pub next: Option<Key>,
    /// Stopped early because `max_proven` rows were found.
    pub limit_reached: bool,
    pub batch: Option<PreparedBatch>,
}

/// Fails precisely when `tidemark migrate` has not created the cold-storage tables.
pub async fn ensure_cold_storage(pool: &PgPool) -> Result<()> {
    crate::control::ensure_migrated(pool).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('cold_storage_archive') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::config(
            "the cold-storage tables are missing in this database; run `tidemark migrate` first",
        ))
    }
}

/// Organizations with a retention, `(id, data_retention_days)`, from the source's
/// `organizations` table.
pub async fn organizations_with_retention(pool: &PgPool, only: Option<Uuid>) -> Result<Vec<(Uuid, i32)>> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('organizations') \
           AND attname = 'data_retention_days' AND NOT attisdropped)",
    )
    .fetch_one(pool)
    .await?;
    if !has_table {
        return Err(Error::config(
            "the source has no organizations.data_retention_days column; tombstoning reads each organization's \
             retention from it (see docs/COLD_STORAGE.md)",
        ));
    }
    Ok(sqlx::query_as(
        "SELECT id, data_retention_days FROM organizations \
         WHERE data_retention_days IS NOT NULL AND ($1::uuid IS NULL OR id = $1) ORDER BY id",
    )
    .bind(only)
    .fetch_all(pool)
    .await?)
}

/// Records the start of an executing pass; returns its run id.
pub async fn start_run(pool: &PgPool, source_now: DateTime<Utc>, arguments: serde_json::Value) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO cold_storage_runs (id, started_by, arguments, source_now) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(super::process_label())
        .bind(arguments)
        .bind(source_now)
        .execute(pool)
        .await?;
    Ok(id)
}

pub async fn finish_run(pool: &PgPool, run_id: Uuid, error: Option<&str>) -> Result<()> {
    sqlx::query(
        "UPDATE cold_storage_runs SET finished_at = now(), status = CASE WHEN $2::text IS NULL THEN 'finished' ELSE 'failed' END, \
           error = $2 WHERE id = $1",
    )
    .bind(run_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// The source clock: cutoffs are computed against it, not against this machine's clock.
pub async fn source_now(pool: &PgPool) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// Classifies the next page of candidates after `after`; with `execute`, also reads and hashes
/// the proven rows. `max_proven` stops the page once that many rows are proven.
pub async fn next_page(
    pool: &PgPool,
    registry: &Registry,
    scope: &Scope,
    after: Option<Key>,
    batch: usize,
    max_proven: Option<u64>,
    execute: bool,
) -> Result<Page> {
    let c = classify_page(pool, registry, scope, after, batch, max_proven).await?;
    let batch = if execute && !c.proven.is_empty() {
        Some(c.read(pool, registry, scope).await?)
    } else {
        None
    };
    Ok(Page {
        tally: c.tally,
        next: c.next,
        limit_reached: c.limit_reached,
        batch,
    })
}

/// One page of candidate keys, classified by the proof rule; nothing read yet.
struct Classified {
    tally: Tally,
    next: Option<Key>,
    limit_reached: bool,
    /// The proven keys, in key order.
    proven: Vec<Key>,
    /// Candidate keys from the first to the last proven one (see [`read_proven`]).
    span_rows: usize,
    coverage: Coverage,
}

impl Classified {
    /// Reads and hashes the proven rows (binary COPY, proven again on what it returned).
    async fn read(&self, pool: &PgPool, registry: &Registry, scope: &Scope) -> Result<PreparedBatch> {
        let t = std::time::Instant::now();
        let batch = read_proven(pool, registry, scope, &self.coverage, &self.proven, self.span_rows).await?;
        tracing::debug!(
            rows = self.proven.len(),
            read_ms = t.elapsed().as_secs_f64() * 1e3,
            "Read and hashed proven rows."
        );
        Ok(batch)
    }
}

/// The key walk and the proof rule for the next page after `after` (see [`next_page`]).
async fn classify_page(
    pool: &PgPool,
    registry: &Registry,
    scope: &Scope,
    after: Option<Key>,
    batch: usize,
    max_proven: Option<u64>,
) -> Result<Classified> {
    let schema = registry_latest(registry, scope.table)?;
    // Two statements, not one with `$3 IS NULL OR …`: a generic plan of the latter could not
    // start the index walk at the previous page's key, and would step over every row deleted
    // so far on every page.
    let sql = format!(
        "SELECT updated_at, id FROM {table} WHERE {org} = $1 AND updated_at < $2 {after} \
         ORDER BY updated_at, id LIMIT $3",
        table = quote_ident(scope.table.name()),
        org = quote_ident(&schema.organization_column),
        after = if after.is_some() {
            "AND (updated_at, id) > ($4, $5)"
        } else {
            ""
        },
    );
    let mut query = sqlx::query_as(&sql)
        .bind(scope.organization_id)
        .bind(scope.cutoff)
        .bind(batch.max(1) as i64);
    if let Some((t, id)) = after {
        query = query.bind(t).bind(id);
    }
    let keys: Vec<Key> = query
        .fetch_all(pool)
        .await
        .map_err(|e| Error::postgres(format!("cannot list candidate rows of {}", scope.table), e))?;
    let mut page = Classified {
        tally: Tally::default(),
        next: None,
        limit_reached: false,
        proven: Vec::new(),
        span_rows: 0,
        coverage: Coverage::none(scope),
    };
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(page);
    };
    if scope.anything_provable() {
        page.coverage = Coverage::load(pool, scope, first.0, last.0).await?;
    }
    let coverage = &page.coverage;
    let mut proven: Vec<Key> = Vec::with_capacity(keys.len());
    // Position of the first and last proven key in the page: the COPY reads that span.
    let mut span: Option<(usize, usize)> = None;
    let mut examined = 0usize;
    for (i, key) in keys.iter().enumerate() {
        if max_proven.is_some_and(|m| proven.len() as u64 >= m) {
            page.limit_reached = true;
            break;
        }
        examined += 1;
        page.tally.candidates += 1;
        match coverage.classify(scope, key.0.timestamp_micros()) {
            Verdict::Proven(proof) => {
                match proof {
                    Proof::Delivery { .. } => page.tally.provable += 1,
                    Proof::Override { .. } => page.tally.by_override += 1,
                }
                proven.push(*key);
                span = Some((span.map_or(i, |s| s.0), i));
            }
            Verdict::Blocked(b) => *page.tally.blocked.entry(b).or_default() += 1,
        }
    }
    page.next = if page.limit_reached || keys.len() >= batch.max(1) {
        examined.checked_sub(1).map(|i| keys[i]).or(after)
    } else {
        None
    };
    page.span_rows = span.map_or(0, |(a, b)| b - a + 1);
    page.proven = proven;
    Ok(page)
}

/// The version rows proven by an override are hashed with: the newest one that can be restored.
fn registry_latest(registry: &Registry, table: Table) -> Result<std::sync::Arc<crate::schema::TableSchema>> {
    registry.latest_restorable(table)
}

/// Reads the proven rows by binary COPY (one per schema version involved), proves each again on
/// the `updated_at` the COPY returned, and hashes it. `span_rows` is how many candidate keys
/// the key walk saw from the first to the last proven key: the COPY reads at most that many
/// (`LIMIT`), which also keeps the planner on the ordered index scan (statistics that still
/// count the rows deleted so far would otherwise tempt it into scanning and sorting the table).
async fn read_proven(
    pool: &PgPool,
    registry: &Registry,
    scope: &Scope,
    coverage: &Coverage,
    proven: &[Key],
    span_rows: usize,
) -> Result<PreparedBatch> {
    let wanted: HashSet<Uuid> = proven.iter().map(|k| k.1).collect();
    let (lo, hi) = (proven[0], proven[proven.len() - 1]);
    let latest = registry_latest(registry, scope.table)?.version as i32;
    let mut versions = BTreeSet::new();
    for k in proven {
        versions.insert(match coverage.classify(scope, k.0.timestamp_micros()) {
            Verdict::Proven(Proof::Delivery { schema_version, .. }) => schema_version,
            _ => latest,
        });
    }
    let mut rows = Vec::with_capacity(proven.len());
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Error::postgres("cannot get a source connection", e))?;
    let mut buf = Vec::new();
    for version in versions {
        let schema = registry.get(scope.table, version as u32)?;
        let predicate = format!(
            "updated_at < {cutoff} AND (updated_at, id) >= ({lo_t}, '{lo_id}'::uuid) AND (updated_at, id) <= ({hi_t}, '{hi_id}'::uuid)",
            cutoff = ts_literal(scope.cutoff),
            lo_t = ts_literal(lo.0),
            lo_id = lo.1,
            hi_t = ts_literal(hi.0),
            hi_id = hi.1,
        );
        let statement = copy_statement(&schema, scope.organization_id, &predicate, Some(span_rows.max(1)));
        let t = std::time::Instant::now();
        let batches = copy_rows(&mut conn, &statement, &schema, scope.organization_id).await?;
        tracing::debug!(
            copy_ms = t.elapsed().as_secs_f64() * 1e3,
            "COPY of proven rows decoded."
        );
        let encoder = CanonicalEncoder::new(&schema);
        for batch in &batches {
            encoder.for_each_row(batch, &mut buf, |_, id, micros, line| {
                if !wanted.contains(&id) {
                    return Ok(());
                }
                let (proof, row_version) = match coverage.classify(scope, micros) {
                    Verdict::Proven(p @ Proof::Delivery { schema_version, .. }) => (p, schema_version),
                    Verdict::Proven(p @ Proof::Override { .. }) => (p, latest),
                    Verdict::Blocked(_) => return Ok(()),
                };
                if row_version != version {
                    return Ok(());
                }
                rows.push(PreparedRow {
                    id,
                    updated_at: micros_to_utc(micros)?,
                    sha256: sha256(line),
                    proof,
                    schema_version: version,
                });
                Ok(())
            })?;
        }
    }
    Ok(PreparedBatch {
        organization_id: scope.organization_id,
        table: scope.table,
        organization_column: registry_latest(registry, scope.table)?.organization_column.clone(),
        rows,
    })
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Committed {
    pub archived: u64,
    /// Prepared rows that stayed (updated or deleted meanwhile, proof withdrawn).
    pub skipped: u64,
}

/// Archives a prepared batch in one transaction: exactly the rows still at their proven
/// `updated_at` are deleted, and exactly those get tombstones.
pub async fn commit_batch(pool: &PgPool, run_id: Uuid, batch: &PreparedBatch) -> Result<Committed> {
    if batch.rows.is_empty() {
        return Ok(Committed::default());
    }
    let mut tx = pool.begin().await?;
    // Transaction-local: mark the deletes as archival (for delete-capture triggers), and keep
    // the DELETE on its per-row index probes; statistics that still count the rows deleted so
    // far can otherwise tempt the planner into joining against a scan of the whole table.
    sqlx::query(
        "SELECT set_config($1, 'on', true), set_config('enable_seqscan', 'off', true), \
           set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
    )
    .bind(ARCHIVAL_SETTING)
    .execute(&mut *tx)
    .await?;
    // Proofs must still hold when the deletes commit: destinations not removed (KEY SHARE
    // blocks DELETE) and active; the override not revoked (SHARE blocks the UPDATE).
    let destinations: Vec<Uuid> = batch
        .rows
        .iter()
        .filter_map(|r| match &r.proof {
            Proof::Delivery { destination_id, .. } => Some(*destination_id),
            Proof::Override { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let active: HashSet<Uuid> = if destinations.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM warehouse_destinations WHERE id = ANY($1) AND status = 'active' ORDER BY id FOR KEY SHARE",
        )
        .bind(&destinations)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
    // Every proving delivery must still be delivered: `destination rewind` may have put it
    // back in the queue since the batch was prepared. FOR SHARE holds off a rewind (its
    // UPDATE) until this transaction ends; the rewind also waits on the destination lock.
    let proving: Vec<Uuid> = batch
        .rows
        .iter()
        .filter_map(|r| match &r.proof {
            Proof::Delivery { delivery_id, .. } => Some(*delivery_id),
            Proof::Override { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let delivered: HashSet<Uuid> = if proving.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM warehouse_deliveries WHERE id = ANY($1) AND status = 'delivered' ORDER BY id FOR SHARE",
        )
        .bind(&proving)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
    let override_ = batch.rows.iter().find_map(|r| match &r.proof {
        Proof::Override { override_id, reason } => Some((*override_id, reason.clone())),
        Proof::Delivery { .. } => None,
    });
    let override_holds = match &override_ {
        Some((id, _)) => sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM cold_storage_overrides WHERE id = $1 AND revoked_at IS NULL FOR SHARE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some(),
        None => false,
    };
    let mut ids = Vec::with_capacity(batch.rows.len());
    let mut updated = Vec::with_capacity(batch.rows.len());
    let mut hashes: Vec<Vec<u8>> = Vec::with_capacity(batch.rows.len());
    let mut deliveries: Vec<Option<Uuid>> = Vec::with_capacity(batch.rows.len());
    let mut by_override = Vec::with_capacity(batch.rows.len());
    let mut versions = Vec::with_capacity(batch.rows.len());
    let mut proof_ids = BTreeSet::new();
    for r in &batch.rows {
        match &r.proof {
            Proof::Delivery {
                delivery_id,
                destination_id,
                ..
            } => {
                if !active.contains(destination_id) || !delivered.contains(delivery_id) {
                    continue;
                }
                proof_ids.insert(*delivery_id);
                deliveries.push(Some(*delivery_id));
                by_override.push(false);
            }
            Proof::Override { override_id, .. } => {
                if !override_holds || Some(*override_id) != override_.as_ref().map(|o| o.0) {
                    continue;
                }
                deliveries.push(None);
                by_override.push(true);
            }
        }
        ids.push(r.id);
        updated.push(r.updated_at);
        hashes.push(r.sha256.to_vec());
        versions.push(r.schema_version);
    }
    let mut committed = Committed {
        archived: 0,
        skipped: (batch.rows.len() - ids.len()) as u64,
    };
    if ids.is_empty() {
        tx.rollback().await?;
        return Ok(committed);
    }
    if !proof_ids.is_empty() {
        let proof_ids: Vec<Uuid> = proof_ids.into_iter().collect();
        sqlx::query(
            "INSERT INTO cold_storage_proofs (delivery_id, destination_id, organization_id, \"table\", schema_version, kind, \
               destination_name, destination_config, watermark_start, watermark_end, delivered_at, row_count, receipt) \
             SELECT d.id, d.destination_id, d.organization_id, d.\"table\", d.schema_version, w.kind, w.name, w.config, \
               d.watermark_start, d.watermark_end, d.delivered_at, d.row_count, d.receipt \
             FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id \
             WHERE d.id = ANY($1) AND d.status = 'delivered' \
             ORDER BY d.id \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(&proof_ids)
        .execute(&mut *tx)
        .await?;
    }
    // The tombstone columns ride along in the DELETE's RETURNING (from the USING side), so
    // exactly the deleted rows are inserted, without a join. The DELETE probes the hot table in
    // key order (the arrays are in `(updated_at, id)` order); the tombstones go in in row id
    // order, so the primary key `(row_id, archived_at)` is filled leaf by leaf instead of at
    // random (fewer pages touched and dirtied per batch; a 10,000-row sort is cheap).
    let sql = format!(
        "WITH del AS ( \
           DELETE FROM {table} t \
           USING unnest($1::uuid[], $2::timestamptz[], $3::bytea[], $4::uuid[], $5::bool[], $6::int[]) \
             AS u(id, updated_at, sha, delivery_id, by_override, schema_version) \
           WHERE t.id = u.id AND t.updated_at = u.updated_at AND t.{org} = $7 \
           RETURNING u.id, u.updated_at, u.sha, u.delivery_id, u.by_override, u.schema_version) \
         INSERT INTO cold_storage_archive (organization_id, \"table\", row_id, row_updated_at, row_sha256, schema_version, \
           delivery_id, override_id, override_reason, run_id, archived_at) \
         SELECT $7, $8::warehouse_table, del.id, del.updated_at, del.sha, del.schema_version, del.delivery_id, \
           CASE WHEN del.by_override THEN $9::uuid END, CASE WHEN del.by_override THEN $10::text END, $11, now() \
         FROM del ORDER BY del.id",
        table = quote_ident(batch.table.name()),
        org = quote_ident(&batch.organization_column),
    );
    let t = std::time::Instant::now();
    let archived = sqlx::query(&sql)
        .bind(&ids)
        .bind(&updated)
        .bind(&hashes)
        .bind(&deliveries)
        .bind(&by_override)
        .bind(&versions)
        .bind(batch.organization_id)
        .bind(batch.table.db_label())
        .bind(override_.as_ref().map(|o| o.0))
        .bind(override_.as_ref().map(|o| o.1.as_str()))
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::postgres(format!("archiving a batch of {} failed", batch.table), e))?
        .rows_affected();
    sqlx::query("UPDATE cold_storage_runs SET rows_archived = rows_archived + $2 WHERE id = $1")
        .bind(run_id)
        .bind(archived as i64)
        .execute(&mut *tx)
        .await?;
    let statement_ms = t.elapsed().as_secs_f64() * 1e3;
    failpoint_before_archive_commit();
    tx.commit().await?;
    tracing::debug!(
        rows = archived,
        statement_ms,
        total_ms = t.elapsed().as_secs_f64() * 1e3,
        "Archived a batch."
    );
    committed.archived = archived;
    committed.skipped += ids.len() as u64 - archived;
    Ok(committed)
}

/// One whole pass over every organization with a retention (or the one asked for) and every
/// table (or the one asked for). `run_id` names the run (recorded in `cold_storage_runs` by
/// the caller with [`start_run`] when executing).
pub async fn run_pass(
    pool: &PgPool,
    registry: &Registry,
    options: &PassOptions,
    run_id: Uuid,
    source_now: DateTime<Utc>,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&ScopeReport) + Sync),
) -> Result<PassReport> {
    let started = std::time::Instant::now();
    let mut report = PassReport {
        run_id,
        executed: options.execute,
        source_now,
        limit: options.limit,
        limit_reached: false,
        interrupted: false,
        scopes: Vec::new(),
        totals: Tally::default(),
        seconds: 0.0,
        notes: Vec::new(),
    };
    let orgs = organizations_with_retention(pool, options.organization).await?;
    if let Some(org) = options.organization
        && orgs.is_empty()
    {
        report.notes.push(format!(
            "organization {org} has no data_retention_days (or does not exist): nothing is a candidate"
        ));
    }
    let tables: Vec<Table> = match options.table {
        Some(t) => vec![t],
        None => Table::ALL.to_vec(),
    };
    let mut remaining = options.limit;
    'outer: for (org, retention) in orgs {
        if retention < 0 {
            report.notes.push(format!(
                "organization {org} has a negative data_retention_days ({retention}); skipped"
            ));
            continue;
        }
        for &table in &tables {
            if cancel.is_cancelled() {
                report.interrupted = true;
                break 'outer;
            }
            if remaining == Some(0) {
                report.limit_reached = true;
                break 'outer;
            }
            let scope = Scope::load(pool, org, table, retention, source_now).await?;
            let mut sr = ScopeReport {
                organization_id: org,
                table,
                retention_days: retention,
                cutoff: scope.cutoff,
                tally: Tally::default(),
                blocked_reasons: BTreeMap::new(),
                error: None,
            };
            let result = run_scope(pool, registry, options, run_id, &scope, &mut remaining, cancel, &mut sr).await;
            match result {
                Ok(limit_reached) => report.limit_reached |= limit_reached,
                Err(e) if matches!(e.kind(), ErrorKind::Schema | ErrorKind::DataInvalid) => {
                    tracing::error!(organization = %org, %table, error = %e, "Tombstoning this table failed; going on with the others.");
                    sr.error = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
            for b in sr.tally.blocked.keys() {
                sr.blocked_reasons.insert(*b, b.explain());
            }
            report.totals.add(&sr.tally);
            if sr.tally.candidates > 0 || sr.error.is_some() {
                progress(&sr);
                report.scopes.push(sr);
            }
            if cancel.is_cancelled() {
                report.interrupted = true;
                break 'outer;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_scope(
    pool: &PgPool,
    registry: &Registry,
    options: &PassOptions,
    run_id: Uuid,
    scope: &Scope,
    remaining: &mut Option<u64>,
    cancel: &CancellationToken,
    sr: &mut ScopeReport,
) -> Result<bool> {
    if options.execute && scope.anything_provable() {
        for schema in registry.iter().filter(|s| s.table == scope.table) {
            crate::source::check_table(pool, schema).await?;
        }
    }
    // The key walk and the proof rule run here, page after page; each page with proven rows
    // goes to a task of its own that reads and hashes them and commits its batch, with up to
    // `parallel` such tasks at once (on their own connections, in their own transactions).
    // Pages are disjoint key ranges, so no two tasks ever touch the same row. Rows of a page
    // in flight are reserved against --limit until its task reports.
    let parallel = options.parallel.max(1);
    let shared = std::sync::Arc::new((registry.clone(), scope.clone()));
    let mut after = None;
    let mut inflight: FuturesUnordered<tokio::task::JoinHandle<Done>> = FuturesUnordered::new();
    let result: Result<bool> = async {
        loop {
            let page = classify_page(pool, registry, scope, after, options.batch, *remaining).await?;
            sr.tally.add(&page.tally);
            let proven = page.tally.provable + page.tally.by_override;
            let (limit_reached, next) = (page.limit_reached, page.next);
            if options.execute && !page.proven.is_empty() {
                while inflight.len() >= parallel {
                    settle(inflight.next().await, remaining, sr)?;
                }
                if let Some(r) = remaining.as_mut() {
                    *r = r.saturating_sub(proven);
                }
                let (pool, shared) = (pool.clone(), shared.clone());
                inflight.push(tokio::spawn(async move {
                    let (registry, scope) = &*shared;
                    let outcome = async {
                        let batch = page.read(&pool, registry, scope).await?;
                        let committed = commit_batch(&pool, run_id, &batch).await?;
                        Ok((batch.rows.len() as u64, committed))
                    }
                    .await;
                    Done { proven, outcome }
                }));
            } else if !options.execute
                && let Some(r) = remaining.as_mut()
            {
                *r = r.saturating_sub(proven);
            }
            if limit_reached || *remaining == Some(0) {
                return Ok(true);
            }
            match next {
                Some(next) if !cancel.is_cancelled() => after = Some(next),
                _ => return Ok(false),
            }
        }
    }
    .await;
    // Whatever happened, every batch in flight commits or not as a whole; account for each.
    let mut failed = None;
    while let Some(done) = inflight.next().await {
        if let Err(e) = settle(Some(done), remaining, sr) {
            failed.get_or_insert(e);
        }
    }
    let limit_reached = result?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(limit_reached || *remaining == Some(0))
}

/// What the task of one page reports: how many of its keys were proven (and reserved), and
/// how many rows it read and what its commit did.
struct Done {
    proven: u64,
    outcome: Result<(u64, Committed)>,
}

fn settle(
    done: Option<std::result::Result<Done, tokio::task::JoinError>>,
    remaining: &mut Option<u64>,
    sr: &mut ScopeReport,
) -> Result<()> {
    let Some(done) = done else {
        return Ok(());
    };
    let done = done.map_err(|e| Error::unexpected(format!("a batch task failed: {e}")))?;
    let archived = match done.outcome {
        Ok((read, committed)) => {
            // Proven in the key walk but gone or changed by the time the COPY read them, or
            // read but changed or no longer proven when the batch committed.
            sr.tally.archived += committed.archived;
            sr.tally.skipped += done.proven - read + committed.skipped;
            committed.archived
        }
        Err(e) => {
            if let Some(r) = remaining.as_mut() {
                *r += done.proven;
            }
            return Err(e);
        }
    };
    if let Some(r) = remaining.as_mut() {
        *r += done.proven - archived;
    }
    Ok(())
}

/// Row counts of the hot table for an organization (for reports and tests).
pub async fn count_rows(pool: &PgPool, table: Table, organization_id: Uuid) -> Result<i64> {
    let row = sqlx::query(&format!(
        "SELECT count(*) AS n FROM {} WHERE organization_id = $1",
        quote_ident(table.name())
    ))
    .bind(organization_id)
    .fetch_one(pool)
    .await?;
    Ok(row.try_get("n")?)
}
