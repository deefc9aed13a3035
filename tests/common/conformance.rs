//! The destination conformance suite: the same scenarios against every destination kind.
//!
//! A test file per kind starts its target (emulator, S3 server, second database), implements
//! [`Target`] and calls [`suite`]. Every scenario runs on its own throwaway cluster with
//! generated data, through the real planner, outbox and worker; the target is read back through
//! its own query path, never through tidemark.
//!
//! Scenarios:
//! 1. windows land and equal the source rows; a delivery whose worker died between load and
//!    completion is taken over without duplicates; an updated row shows its new version; a replayed *older*
//!    delivery adds nothing and moves no row backwards;
//! 2. refused credentials dead-letter at once (`destination_auth`, one attempt);
//! 3. an unreachable target is retried (`destination_transient`, every attempt used) and
//!    delivers once it is back;
//! 4. data the target rejects dead-letters at once with the target's own message.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tidemark::control::destinations::{Destination, DestinationKind};
use tidemark::control::outbox::{self, LeaseFilter};
use tidemark::deliver::{DeliveryContext, Fence};
use tidemark::extract::WindowQuery;
use tidemark::schema::Table;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Env, data_end, fast_options};

/// One destination under test.
#[async_trait]
pub trait Target: Send + Sync {
    fn kind(&self) -> DestinationKind;
    /// Config of a working destination on a fresh, empty namespace of the target.
    fn config(&self) -> serde_json::Value;
    /// The same target with credentials it refuses; `None` when the target cannot check
    /// credentials (the scenario is then reported as not covered, not passed).
    fn bad_auth_config(&self) -> Option<serde_json::Value>;
    /// A closed loopback port: every attempt fails as transient.
    fn unreachable_config(&self) -> serde_json::Value;
    /// The analyst table's rows (newest version per id) as (id, updated_at), read back
    /// through the target's own query path.
    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)>;
    /// Rows in the raw history table (every delivered version), where the kind keeps one.
    async fn raw_count(&self, table: Table) -> Option<u64>;
    /// Makes loading `table` fail as rejected data; `None` if the kind cannot reject data.
    async fn sabotage(&self, table: Table) -> Option<()>;
}

/// Window of the suite's destinations: six hours, so a day of data is a handful of deliveries
/// (emulators are slow per statement) and the scenarios still span several windows.
pub const WINDOW_SECONDS: i32 = 6 * 3600;

/// Runs every scenario; panics on the first failure with what differed.
pub async fn suite(target: &dyn Target) {
    let label = target.kind().label();
    eprintln!("conformance[{label}]: delivery, crash takeover, update, replay");
    deliveries_are_exact(target).await;
    match target.bad_auth_config() {
        Some(config) => {
            eprintln!("conformance[{label}]: refused credentials");
            refused_credentials(target, config).await;
        }
        None => eprintln!("conformance[{label}]: refused credentials NOT COVERED (target does not check them)"),
    }
    eprintln!("conformance[{label}]: unreachable target");
    unreachable_is_retried(target).await;
    eprintln!("conformance[{label}]: rejected data");
    rejected_data(target).await;
}

async fn source_rows(env: &Env, table: Table, org: Uuid) -> Vec<(Uuid, DateTime<Utc>)> {
    sqlx::query_as(&format!(
        "SELECT id, updated_at FROM {} WHERE organization_id = $1 ORDER BY id",
        table.name()
    ))
    .bind(org)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

async fn analyst_sorted(target: &dyn Target, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
    let mut rows = target.analyst_rows(table).await;
    rows.sort();
    rows
}

/// Equal as sorted lists (so a duplicate id fails), reported as what is missing and extra.
fn assert_same(actual: &[(Uuid, DateTime<Utc>)], expected: &[(Uuid, DateTime<Utc>)], what: &str) {
    if actual == expected {
        return;
    }
    let missing: Vec<_> = expected.iter().filter(|r| !actual.contains(r)).take(5).collect();
    let extra: Vec<_> = actual.iter().filter(|r| !expected.contains(r)).take(5).collect();
    panic!(
        "{what}: target has {} rows, source {}; missing (first 5) {missing:?}; extra (first 5) {extra:?}",
        actual.len(),
        expected.len()
    );
}

/// Status, attempts and last error of every delivery of a destination.
async fn deliveries(env: &Env, dest: &Destination) -> Vec<(Uuid, String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT id, status::text, attempts, last_error FROM warehouse_deliveries \
         WHERE destination_id = $1 ORDER BY watermark_start",
    )
    .bind(dest.id)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

/// Plans and drains until nothing is pending or waiting for a retry (backoff is at most a
/// second with [`fast_options`]).
pub async fn settle(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        env.run_until_idle(fast_options()).await;
        let open = env
            .count("SELECT count(*) FROM warehouse_deliveries WHERE status IN ('pending', 'failed', 'leased')")
            .await;
        if open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "deliveries did not settle in 300 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What a worker does up to the moment it has loaded a window, then nothing: as if the process
/// were killed between the load and the completion (the lease stays until it expires).
async fn load_and_die(env: &Env, dest: &Destination) {
    let lease = outbox::lease(&env.control, "doomed-worker", 60.0, &LeaseFilter::default())
        .await
        .unwrap()
        .expect("a delivery is due");
    let schema = env.registry.get(lease.table, lease.schema_version).unwrap();
    let destination = tidemark::deliver::build(dest.kind, &dest.config).unwrap();
    let query = WindowQuery {
        schema: &schema,
        organization_id: lease.organization_id,
        start: lease.window_start,
        end: lease.window_end,
    };
    let (batches, _stats) = tidemark::extract::extract(env.source.clone(), query, 1000);
    let ctx = DeliveryContext {
        delivery_id: lease.delivery_id,
        organization_id: lease.organization_id,
        schema: &schema,
        window_start: lease.window_start,
        window_end: lease.window_end,
        fence: Fence::new(env.control.clone(), lease.clone(), 60.0),
    };
    let landed = destination.deliver(&ctx, batches).await.unwrap();
    assert!(landed.rows > 0, "the dead worker's window had rows");
}

async fn deliveries_are_exact(target: &dyn Target) {
    let Some(env) = Env::start(600, 1).await else { return };
    let org = env.orgs[0];
    let table = Table::Events;
    let dest = env
        .add_destination(
            org,
            target.kind(),
            "conformance",
            target.config(),
            &[table],
            WINDOW_SECONDS,
            5,
        )
        .await;
    // The first half of the day goes by backfill, so rows of it can later change into the
    // second half, which no delivery has claimed yet (a trigger-set `updated_at` would land
    // in today's open window instead, which closes hours later).
    let (from, half) = (
        data_end() - chrono::Duration::days(1),
        data_end() - chrono::Duration::hours(12),
    );
    let clock = tidemark::plan::source_clock(&env.source).await.unwrap();
    let (planned, ..) = tidemark::plan::plan_range(
        &env.control,
        &env.source,
        &env.registry,
        &clock,
        &dest,
        table,
        from,
        half,
        WINDOW_SECONDS as i64,
    )
    .await
    .unwrap();
    assert!(planned >= 2, "half a day of data is two windows");

    // A worker loads a window into the target and dies before completing it: its lease stays.
    load_and_die(&env, &dest).await;
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'leased'")
            .await,
        1,
        "the dead worker left its delivery leased"
    );
    // The lease runs out; the next worker takes the delivery over and finishes the backfill.
    sqlx::query("UPDATE warehouse_deliveries SET lease_expires_at = now() WHERE status = 'leased'")
        .execute(&env.control)
        .await
        .unwrap();
    env.worker(fast_options())
        .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();

    let all = deliveries(&env, &dest).await;
    assert!(all.len() >= 2, "half a day of data is two windows: {all:?}");
    assert!(
        all.iter().all(|(_, s, _, _)| s == "delivered"),
        "every window delivered: {all:?}"
    );
    assert_eq!(
        all.iter().filter(|(_, _, attempts, _)| *attempts == 2).count(),
        1,
        "exactly the killed worker's delivery took a second attempt: {all:?}"
    );
    let first_half: Vec<_> = source_rows(&env, table, org)
        .await
        .into_iter()
        .filter(|(_, at)| *at < half)
        .collect();
    assert!(!first_half.is_empty());
    assert_same(
        &analyst_sorted(target, table).await,
        &first_half,
        "analyst table after the takeover",
    );
    if let Some(raw) = target.raw_count(table).await {
        assert_eq!(
            raw,
            first_half.len() as u64,
            "raw history after the takeover: no duplicates"
        );
    }

    // Three delivered rows change; their new versions fall in the second half of the day.
    let changed: Vec<Uuid> = first_half.iter().take(3).map(|(id, _)| *id).collect();
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET severity = severity % 5 + 1, updated_at = $2 + (random() * interval '5 hours') \
         WHERE id = ANY($1)",
    )
    .bind(&changed)
    .bind(half + chrono::Duration::minutes(30))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    settle(&env).await;
    let source = source_rows(&env, table, org).await;
    assert_same(
        &analyst_sorted(target, table).await,
        &source,
        "analyst table after the update",
    );
    if let Some(raw) = target.raw_count(table).await {
        assert_eq!(
            raw,
            source.len() as u64 + 3,
            "raw history keeps both versions of the 3 rows"
        );
    }

    // Replay the oldest delivery (it carries old versions of the changed rows): nothing is
    // added and no row moves backwards.
    let (oldest, ..) = deliveries(&env, &dest).await.remove(0);
    sqlx::query("UPDATE warehouse_deliveries SET status = 'dead_letter' WHERE id = $1")
        .bind(oldest)
        .execute(&env.control)
        .await
        .unwrap();
    assert_eq!(outbox::retry(&env.control, None, None, Some(oldest)).await.unwrap(), 1);
    settle(&env).await;
    assert!(
        deliveries(&env, &dest)
            .await
            .iter()
            .all(|(_, s, _, _)| s == "delivered")
    );
    assert_same(
        &analyst_sorted(target, table).await,
        &source,
        "analyst table after a replay",
    );
    if let Some(raw) = target.raw_count(table).await {
        // A replay re-extracts its window from the source as it is now, so a destination that
        // replaces a delivery's rows (an object rewritten under its key) may drop old
        // versions that have moved to later windows; one that appends with a (id, updated_at)
        // guard keeps them. Either way, nothing is duplicated and every current row is there.
        let n = source.len() as u64;
        assert!(
            (n..=n + 3).contains(&raw),
            "raw history after a replay: {raw} rows for {n} current + 3 old versions"
        );
    }
}

async fn refused_credentials(target: &dyn Target, config: serde_json::Value) {
    let Some(env) = Env::start(300, 1).await else { return };
    let dest = env
        .add_destination(
            env.orgs[0],
            target.kind(),
            "bad-auth",
            config,
            &[Table::Events],
            WINDOW_SECONDS,
            3,
        )
        .await;
    settle(&env).await;
    let all = deliveries(&env, &dest).await;
    assert!(!all.is_empty());
    for (id, status, attempts, error) in &all {
        assert_eq!(status, "dead_letter", "{id}: refused credentials are not retried");
        assert_eq!(*attempts, 1, "{id}: one attempt only");
        let error = error.as_deref().unwrap_or_default();
        assert!(error.starts_with("[destination_auth]"), "{id}: {error}");
    }
}

async fn unreachable_is_retried(target: &dyn Target) {
    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[1];
    let dest = env
        .add_destination(
            org,
            target.kind(),
            "unreachable",
            target.unreachable_config(),
            &[Table::Findings],
            WINDOW_SECONDS,
            3,
        )
        .await;
    settle(&env).await;
    let all = deliveries(&env, &dest).await;
    assert!(!all.is_empty());
    for (id, status, attempts, error) in &all {
        assert_eq!(status, "dead_letter", "{id}");
        assert_eq!(*attempts, 3, "{id}: a transient failure is retried until max_attempts");
        let error = error.as_deref().unwrap_or_default();
        assert!(error.starts_with("[destination_transient]"), "{id}: {error}");
    }

    // The target comes back (here: the operator fixes the endpoint) and `retry` delivers.
    sqlx::query("UPDATE warehouse_destinations SET config = $2 WHERE id = $1")
        .bind(dest.id)
        .bind(target.config())
        .execute(&env.control)
        .await
        .unwrap();
    assert_eq!(
        outbox::retry(&env.control, Some(dest.id), None, None).await.unwrap(),
        all.len() as u64
    );
    settle(&env).await;
    assert!(
        deliveries(&env, &dest)
            .await
            .iter()
            .all(|(_, s, _, _)| s == "delivered")
    );
    assert_same(
        &analyst_sorted(target, Table::Findings).await,
        &source_rows(&env, Table::Findings, org).await,
        "analyst table once the target is back",
    );
}

async fn rejected_data(target: &dyn Target) {
    let table = Table::AuditLog;
    if target.sabotage(table).await.is_none() {
        eprintln!(
            "conformance[{}]: rejected data NOT COVERED (the target accepts any bytes)",
            target.kind().label()
        );
        return;
    }
    let Some(env) = Env::start(300, 1).await else { return };
    let dest = env
        .add_destination(
            env.orgs[2],
            target.kind(),
            "rejected",
            target.config(),
            &[table],
            WINDOW_SECONDS,
            3,
        )
        .await;
    settle(&env).await;
    let all = deliveries(&env, &dest).await;
    assert!(!all.is_empty());
    for (id, status, attempts, error) in &all {
        assert_eq!(status, "dead_letter", "{id}: rejected data is not retried");
        assert_eq!(*attempts, 1, "{id}");
        let error = error.as_deref().unwrap_or_default();
        assert!(error.starts_with("[destination_rejected]"), "{id}: {error}");
        assert!(
            error.len() > "[destination_rejected] ".len() + 20,
            "{id}: carries the target's message: {error}"
        );
    }
}
