//! Planning: cut fixed, epoch-aligned windows `[start, end)` per destination × table, up to
//! the newest *closed* window, and record one delivery per non-empty window.
//!
//! A window is closed when `end + grace <= now()` on the source's clock **and** no transaction
//! that began before `end` is still open on the source. `updated_at` is set by trigger to
//! `now()`, the start time of the writing transaction, so only a transaction that began before
//! `end` can still commit rows into the window; once none is left, the window's rows are
//! final. Windows with no rows are skipped (an index skip-scan finds the non-empty ones): a
//! closed window can never gain rows later. With delete capture ([`crate::capture`]) a logged
//! delete makes a window non-empty too; its `deleted_at` is the deleting transaction's `now()`,
//! so the same closing argument covers it.
//!
//! Preconditions (checked where possible, see docs/WINDOWS.md): `updated_at` maintained by a
//! trigger with `now()`; the source is the primary; the source role can see every session in
//! `pg_stat_activity` (superuser or `pg_read_all_stats`).
//!
//! Must not touch: object stores or deliveries' state beyond inserting pending rows.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::control::destinations::Destination;
use crate::control::{APP_CONTROL, APP_EXTRACT, outbox};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Registry, Table, quote_ident};

/// Most windows recorded for one destination × table in one planning pass; the next pass
/// continues where this one stopped.
pub const MAX_WINDOWS_PER_PASS: i64 = 20_000;

/// `[start, start + window)` for each window start.
fn window_ranges(starts: &[DateTime<Utc>], window_seconds: i64) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    starts
        .iter()
        .map(|s| (*s, *s + Duration::seconds(window_seconds)))
        .collect()
}

/// Rounds down to a multiple of `window_seconds` since the Unix epoch.
pub fn align_down(t: DateTime<Utc>, window_seconds: i64) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(window_seconds) * window_seconds;
    Utc.timestamp_opt(secs, 0).single().expect("in range")
}

/// The oldest transaction on the source that can still write rows, if any.
#[derive(Debug, Clone, Serialize)]
pub struct BlockingTransaction {
    pub pid: i32,
    pub xact_start: DateTime<Utc>,
    pub application_name: String,
    pub state: String,
    pub usename: Option<String>,
    pub query: String,
}

/// What the source says about time: its clock, its oldest open transaction, and its oldest
/// prepared (two-phase) transaction.
#[derive(Debug, Clone, Serialize)]
pub struct SourceClock {
    pub now: DateTime<Utc>,
    pub oldest: Option<BlockingTransaction>,
    /// When the oldest prepared transaction was prepared. Its start time (what its rows'
    /// `updated_at` carry) is not recorded anywhere, so while one exists no window closes.
    pub prepared_since: Option<DateTime<Utc>>,
}

impl SourceClock {
    /// The end of the newest closed window for this window size and grace; `None` while a
    /// prepared transaction freezes every window.
    pub fn closed_through(&self, window_seconds: i64, grace_seconds: i64) -> Option<DateTime<Utc>> {
        if self.prepared_since.is_some() {
            return None;
        }
        let mut limit = self.now - Duration::seconds(grace_seconds);
        if let Some(tx) = &self.oldest {
            limit = limit.min(tx.xact_start);
        }
        Some(align_down(limit, window_seconds))
    }

    /// Why no window can close right now, for messages.
    pub fn frozen_reason(&self) -> Option<String> {
        self.prepared_since.map(|t| {
            format!(
                "a prepared (two-phase) transaction in the source database, prepared at {t}, holds every window open until it is committed or rolled back (see pg_prepared_xacts)"
            )
        })
    }
}

/// Reads the source clock and its oldest open transaction, refusing to guess when the role
/// cannot see other sessions.
pub async fn source_clock(source: &PgPool) -> Result<SourceClock> {
    let can_see: bool = sqlx::query_scalar(
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(source)
    .await
    .map_err(|e| Error::postgres("cannot read the source's roles", e))?;
    if !can_see {
        return Err(Error::config(
            "the source role cannot see other sessions' transactions; grant it pg_read_all_stats (or pg_monitor) so windows can be closed safely",
        ));
    }
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(source)
        .await
        .map_err(|e| Error::postgres("cannot read the source's recovery state", e))?;
    if standby {
        return Err(Error::config(
            "the source is a standby: its pg_stat_activity cannot see the primary's open transactions, so no window could be closed safely; point TIDEMARK_SOURCE_URL at the primary",
        ));
    }
    let row = sqlx::query(
        "SELECT clock_timestamp() AS now, a.pid, a.xact_start, coalesce(a.application_name, '') AS application_name, \
           coalesce(a.state, '') AS state, a.usename::text AS usename, left(coalesce(a.query, ''), 200) AS query \
         FROM (SELECT 1) one LEFT JOIN LATERAL ( \
           SELECT * FROM pg_stat_activity \
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL \
             AND backend_type NOT IN ('autovacuum launcher', 'autovacuum worker', 'walsender') \
             AND coalesce(application_name, '') NOT IN ($1, $2) \
           ORDER BY xact_start LIMIT 1) a ON true",
    )
    .bind(APP_CONTROL)
    .bind(APP_EXTRACT)
    .fetch_one(source)
    .await
    .map_err(|e| Error::postgres("cannot read the source's clock", e))?;
    // Prepared transactions are read after the sessions: one that prepares in between was
    // still a session at the first read.
    let prepared_since: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(prepared) FROM pg_prepared_xacts WHERE database = current_database()")
            .fetch_one(source)
            .await
            .map_err(|e| Error::postgres("cannot read the source's prepared transactions", e))?;
    let oldest = match row.try_get::<Option<i32>, _>("pid")? {
        Some(pid) => Some(BlockingTransaction {
            pid,
            xact_start: row.try_get("xact_start")?,
            application_name: row.try_get("application_name")?,
            state: row.try_get("state")?,
            usename: row.try_get("usename")?,
            query: row.try_get("query")?,
        }),
        None => None,
    };
    Ok(SourceClock {
        now: row.try_get("now")?,
        oldest,
        prepared_since,
    })
}

/// Planning result for one destination × table.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    pub destination_id: uuid::Uuid,
    pub destination: String,
    pub table: Table,
    pub schema_version: u32,
    pub from: Option<DateTime<Utc>>,
    pub through: DateTime<Utc>,
    pub new_windows: u64,
}

/// Start times of the non-empty windows of `table` for one organization in `[from, to)`,
/// found with a recursive index skip-scan (one index probe per non-empty window).
pub async fn nonempty_windows(
    source: &PgPool,
    table: Table,
    organization_column: &str,
    organization_id: uuid::Uuid,
    window_seconds: i64,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DateTime<Utc>>> {
    let t = quote_ident(table.name());
    let org = quote_ident(organization_column);
    // With delete capture, a window holding only deletes is not empty: the next non-empty
    // window starts at the earlier of the next row version and the next logged delete.
    let delete_log = crate::capture::delete_log(source).await?;
    let next = |from: &str| {
        let rows =
            format!("(SELECT min(updated_at) FROM {t} WHERE {org} = $2 AND updated_at >= {from} AND updated_at < $4)");
        match &delete_log {
            None => rows,
            Some(log) => format!(
                "least({rows}, (SELECT min(deleted_at) FROM {log} WHERE table_name = $6 AND organization_id = $2 \
                 AND deleted_at >= {from} AND deleted_at < $4))",
                log = log.qualified
            ),
        }
    };
    let sql = format!(
        "WITH RECURSIVE w(s) AS ( \
           SELECT date_bin(make_interval(secs => $1), {first}, 'epoch'::timestamptz) \
           UNION ALL \
           SELECT date_bin(make_interval(secs => $1), {following}, 'epoch'::timestamptz) \
           FROM w WHERE w.s IS NOT NULL) \
         SELECT s FROM w WHERE s IS NOT NULL LIMIT $5",
        first = next("$3"),
        following = next("w.s + make_interval(secs => $1)"),
    );
    let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(&sql)
        .bind(window_seconds as f64)
        .bind(organization_id)
        .bind(from.unwrap_or_else(|| Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap()))
        .bind(to)
        .bind(limit)
        .bind(table.name())
        .fetch_all(source)
        .await
        .map_err(|e| Error::postgres(format!("cannot scan source table {table} for windows"), e))?;
    Ok(starts)
}

/// Plans every closed window of one destination × table × schema version from its planned
/// horizon onwards. Each version has its own watermark and deliveries.
pub async fn plan_table(
    control: &PgPool,
    source: &PgPool,
    registry: &Registry,
    clock: &SourceClock,
    dest: &Destination,
    table: Table,
    version: u32,
) -> Result<PlannedTable> {
    let schema = registry.get(table, version)?;
    let window = dest.window_seconds as i64;
    let Some(through) = clock.closed_through(window, dest.grace_seconds as i64) else {
        return Ok(PlannedTable {
            destination_id: dest.id,
            destination: dest.name.clone(),
            table,
            schema_version: version,
            from: None,
            through: clock.now,
            new_windows: 0,
        });
    };
    let mut tx = control.begin().await?;
    // Serialises concurrent planners of the same destination × table × version.
    let planned = outbox::lock_watermark(&mut tx, dest.id, table, version).await?;
    let from = planned.or(dest.start_from.map(|s| align_down(s, window)));
    let mut result = PlannedTable {
        destination_id: dest.id,
        destination: dest.name.clone(),
        table,
        schema_version: version,
        from,
        through,
        new_windows: 0,
    };
    if from.is_some_and(|f| f >= through) {
        return Ok(result);
    }
    let starts = nonempty_windows(
        source,
        table,
        &schema.organization_column,
        dest.organization_id,
        window,
        from,
        through,
        MAX_WINDOWS_PER_PASS,
    )
    .await?;
    // Stopped early at the cap: only claim the horizon up to the last window found.
    let planned_to = if starts.len() as i64 >= MAX_WINDOWS_PER_PASS {
        *starts.last().expect("non-empty") + Duration::seconds(window)
    } else {
        through
    };
    let ranges = window_ranges(&starts, window);
    result.new_windows = outbox::insert_ranges(&mut tx, dest, table, version, &ranges).await?;
    sqlx::query(
        "UPDATE warehouse_watermarks SET planned_through = $3, updated_at = now() \
         WHERE destination_id = $1 AND \"table\" = $2::warehouse_table AND schema_version = $4",
    )
    .bind(dest.id)
    .bind(table.db_label())
    .bind(planned_to)
    .bind(version as i32)
    .execute(&mut *tx)
    .await?;
    outbox::advance_watermark(&mut tx, dest.id, table, version).await?;
    tx.commit().await?;
    result.through = planned_to;
    Ok(result)
}

/// Longest span one delivery may cover (the overlap check in `outbox::insert_ranges` and the
/// `CHECK` on `warehouse_deliveries` rely on it).
pub const MAX_DELIVERY_SECONDS: i64 = 86_400;

/// Plans explicit history `[from, to)` for backfill: only closed windows, idempotent. History is
/// cut into chunks of `chunk_seconds` (a multiple of the destination's window that divides a
/// day), one delivery each, so a year of small windows is a few hundred deliveries instead of
/// tens of thousands; a chunk that overlaps deliveries planned earlier (by `run`, or by a
/// backfill with another chunk size) falls back to the windows it does not overlap.
/// Every schema version the destination receives for `table` is planned, each on its own.
/// Returns (new deliveries, aligned from, clipped to).
pub async fn plan_range(
    control: &PgPool,
    source: &PgPool,
    registry: &Registry,
    clock: &SourceClock,
    dest: &Destination,
    table: Table,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    chunk_seconds: i64,
) -> Result<(u64, DateTime<Utc>, DateTime<Utc>)> {
    let versions = dest.versions(table);
    let schema = registry.get(table, versions[0])?;
    for v in &versions[1..] {
        registry.get(table, *v)?;
    }
    let window = dest.window_seconds as i64;
    if chunk_seconds < window || chunk_seconds % window != 0 || MAX_DELIVERY_SECONDS % chunk_seconds != 0 {
        return Err(Error::invalid(format!(
            "backfill chunk of {chunk_seconds}s must be a multiple of the destination's {window}s window and divide a day"
        )));
    }
    let closed = clock.closed_through(window, dest.grace_seconds as i64).ok_or_else(|| {
        Error::invalid(format!(
            "nothing can be backfilled now: {}",
            clock.frozen_reason().unwrap_or_default()
        ))
    })?;
    let from = align_down(from, window);
    let to = align_down(to, window).min(closed);
    if from >= to {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "nothing to backfill: the range [{from}, {to}) is empty once aligned to {window}s windows and clipped to the newest closed window"
            ),
        ));
    }
    let org_col = &schema.organization_column;
    let mut total = 0;
    let mut cursor = from;
    loop {
        let chunks = nonempty_windows(
            source,
            table,
            org_col,
            dest.organization_id,
            chunk_seconds,
            Some(cursor),
            to,
            MAX_WINDOWS_PER_PASS,
        )
        .await?;
        for &version in &versions {
            let mut tx = control.begin().await?;
            outbox::lock_watermark(&mut tx, dest.id, table, version).await?;
            for c in &chunks {
                let range = ((*c).max(from), (*c + Duration::seconds(chunk_seconds)).min(to));
                let n = outbox::insert_ranges(&mut tx, dest, table, version, &[range]).await?;
                if n == 0 && chunk_seconds > window {
                    // Overlaps earlier deliveries: plan its uncovered non-empty windows instead.
                    let starts = nonempty_windows(
                        source,
                        table,
                        org_col,
                        dest.organization_id,
                        window,
                        Some(range.0),
                        range.1,
                        MAX_WINDOWS_PER_PASS,
                    )
                    .await?;
                    let ranges = window_ranges(&starts, window);
                    total += outbox::insert_ranges(&mut tx, dest, table, version, &ranges).await?;
                }
                total += n;
            }
            tx.commit().await?;
        }
        if (chunks.len() as i64) < MAX_WINDOWS_PER_PASS {
            break;
        }
        cursor = *chunks.last().expect("non-empty") + Duration::seconds(chunk_seconds);
    }
    Ok((total, from, to))
}

/// Plans every active destination × enabled table × schema version it receives. A failure of
/// one is reported and the others are still planned.
pub async fn plan_all(
    control: &PgPool,
    source: &PgPool,
    registry: &Registry,
) -> Result<(SourceClock, Vec<PlannedTable>, Vec<Error>)> {
    let clock = source_clock(source).await?;
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for dest in crate::control::destinations::list(control).await? {
        if dest.status != "active" {
            continue;
        }
        for table in &dest.enabled_tables {
            for version in dest.versions(*table) {
                match plan_table(control, source, registry, &clock, &dest, *table, version).await {
                    Ok(p) => planned.push(p),
                    Err(e) => {
                        tracing::warn!(destination = %dest.name, table = %table, version, error = %e, "Planning failed.");
                        errors.push(
                            e.with_context("destination", &dest.name)
                                .with_context("table", table)
                                .with_context("schema_version", version),
                        );
                    }
                }
            }
        }
    }
    Ok((clock, planned, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_down_is_epoch_aligned() {
        let t = Utc.with_ymd_and_hms(2026, 11, 19, 10, 14, 59).unwrap();
        assert_eq!(
            align_down(t, 900),
            Utc.with_ymd_and_hms(2026, 11, 19, 10, 0, 0).unwrap()
        );
        let t = Utc.with_ymd_and_hms(2026, 11, 19, 10, 15, 0).unwrap();
        assert_eq!(align_down(t, 900), t);
    }

    #[test]
    fn an_old_open_transaction_holds_the_horizon() {
        let now = Utc.with_ymd_and_hms(2026, 11, 19, 12, 0, 30).unwrap();
        let mut clock = SourceClock {
            now,
            oldest: None,
            prepared_since: None,
        };
        assert_eq!(
            clock.closed_through(900, 60),
            Some(Utc.with_ymd_and_hms(2026, 11, 19, 11, 45, 0).unwrap())
        );
        clock.oldest = Some(BlockingTransaction {
            pid: 1,
            xact_start: Utc.with_ymd_and_hms(2026, 11, 19, 11, 20, 0).unwrap(),
            application_name: String::new(),
            state: "idle in transaction".into(),
            usename: None,
            query: String::new(),
        });
        assert_eq!(
            clock.closed_through(900, 60),
            Some(Utc.with_ymd_and_hms(2026, 11, 19, 11, 15, 0).unwrap())
        );
        clock.prepared_since = Some(now);
        assert_eq!(
            clock.closed_through(900, 60),
            None,
            "a prepared transaction freezes the horizon"
        );
        assert!(clock.frozen_reason().unwrap().contains("prepared"));
    }
}
