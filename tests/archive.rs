//! Cold storage on real parts: tombstoning removes only rows whose current version is proven
//! delivered, in all-or-nothing batches that never lose a concurrent update; overrides hold for
//! their organization only; recall reads the archived copies back from an S3 server or a
//! directory, verifies every row against its tombstone (a tampered or missing object is named),
//! and restores rows byte for byte.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int16Type;
use arrow_array::{ArrayRef, Int16Array, RecordBatch};
use bytes::Bytes;
use common::*;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tidemark::archive::hash::hot_row_hashes;
use tidemark::archive::proof::Scope;
use tidemark::archive::tombstone::{self, commit_batch, next_page};
use tidemark::control::destinations::DestinationKind;
use tidemark::control::outbox::LeaseFilter;
use tidemark::deliver::object::ObjectDestination;
use tidemark::encode::Format;
use tidemark::schema::Table;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn set_retention(env: &Env, org: Uuid, days: Option<i32>) {
    sqlx::query("UPDATE organizations SET data_retention_days = $2 WHERE id = $1")
        .bind(org)
        .bind(days)
        .execute(&env.control)
        .await
        .unwrap();
}

async fn rows_of(env: &Env, table: &str, org: Uuid) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE organization_id = $1"))
        .bind(org)
        .fetch_one(&env.control)
        .await
        .unwrap()
}

/// Rows of `org` whose current updated_at lies in a delivered window of an active destination.
async fn delivered_rows(env: &Env, org: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.organization_id = $1 AND EXISTS ( \
           SELECT 1 FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id \
           WHERE w.organization_id = $1 AND w.status = 'active' AND d.\"table\" = 'EVENTS' AND d.status = 'delivered' \
             AND d.watermark_start <= e.updated_at AND e.updated_at < d.watermark_end)",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap()
}

/// Delivers up to `n` windows of `table` (oldest first); the rest stay pending.
async fn deliver_windows(env: &Env, table: Table, n: usize) {
    env.plan().await;
    let w = env.worker(fast_options());
    let filter = LeaseFilter {
        table: Some(table),
        ..LeaseFilter::default()
    };
    for _ in 0..n {
        let o = w.run_one(&filter, &CancellationToken::new()).await.unwrap();
        let Some(o) = o else { break };
        assert_eq!(o.status, "delivered", "{o:?}");
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON on stdout: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

async fn tombstones(env: &Env) -> i64 {
    env.count("SELECT count(*) FROM cold_storage_archive").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_rows_stay_the_dry_run_deletes_nothing_and_archival_is_not_a_business_delete() {
    let Some(env) = Env::start(3_000, 2).await else {
        return;
    };
    let (a, b, c) = (env.orgs[0], env.orgs[1], env.orgs[2]);
    let out = tempfile::tempdir().unwrap();
    env.add_destination(
        a,
        DestinationKind::ParquetS3,
        "lake",
        serde_json::json!({"url": format!("file://{}", out.path().join("a").display())}),
        &[Table::Events],
        3600,
        3,
    )
    .await;
    // 10 of the ~48 hourly windows delivered, the rest planned but pending.
    deliver_windows(&env, Table::Events, 10).await;
    assert!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'pending'")
            .await
            > 10
    );
    // A dead-lettered window, too.
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'dead_letter' WHERE id = \
         (SELECT id FROM warehouse_deliveries WHERE status = 'pending' ORDER BY watermark_start LIMIT 1)",
    )
    .execute(&env.control)
    .await
    .unwrap();
    set_retention(&env, a, Some(7)).await;
    set_retention(&env, b, Some(7)).await; // no destination, no override: nothing may go
    set_retention(&env, c, None).await; // c: no retention at all (the generator gives some orgs one)

    // Delete capture (`tidemark source install-delete-capture`) honours tidemark.archival.
    let out = env
        .cli()
        .args(["source", "install-delete-capture", "--tables", "events", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let before: Vec<i64> = futures::future::join_all([a, b, c].map(|o| rows_of(&env, "events", o))).await;
    let provable = delivered_rows(&env, a).await;
    assert!(provable > 0 && provable < before[0], "{provable} of {}", before[0]);

    // Dry run: counts per org × table, nothing written.
    let out = env
        .cli()
        .args(["tombstone", "--json", "--table", "events"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["executed"], false);
    let scope = |r: &serde_json::Value, org: Uuid| {
        r["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["organization_id"] == org.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no scope for {org}: {r:#}"))
    };
    let sa = scope(&report, a);
    assert_eq!(sa["candidates"], before[0]);
    assert_eq!(sa["provable"], provable);
    assert!(sa["blocked"]["not_delivered"].as_i64().unwrap() > 0, "{sa:#}");
    assert!(sa["blocked"]["dead_letter"].as_i64().unwrap() > 0, "{sa:#}");
    assert_eq!(
        sa["blocked"]["not_delivered"].as_i64().unwrap() + sa["blocked"]["dead_letter"].as_i64().unwrap(),
        before[0] - provable
    );
    let sb = scope(&report, b);
    assert_eq!(sb["blocked"]["no_destination"], before[1]);
    assert!(
        !report["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["organization_id"] == c.to_string())
    );
    // Text form too.
    let out = env.cli().args(["tombstone", "--table", "events"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run") && text.contains("not_delivered"), "{text}");
    assert_eq!(tombstones(&env).await, 0);
    assert_eq!(env.count("SELECT count(*) FROM cold_storage_runs").await, 0);
    assert_eq!(rows_of(&env, "events", a).await, before[0]);

    // Execute, in small batches.
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--batch", "97"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["archived"], provable);
    assert_eq!(rows_of(&env, "events", a).await, before[0] - provable);
    assert_eq!(delivered_rows(&env, a).await, 0, "every proven row left");
    assert_eq!(tombstones(&env).await, provable);
    // Every tombstone names a delivered delivery covering the archived updated_at, of the
    // row's own organization and table.
    let bad = env
        .count(
            "SELECT count(*) FROM cold_storage_archive a LEFT JOIN warehouse_deliveries d ON d.id = a.delivery_id \
             LEFT JOIN warehouse_destinations w ON w.id = d.destination_id \
             WHERE d.id IS NULL OR d.status <> 'delivered' OR w.organization_id <> a.organization_id \
               OR d.\"table\" <> a.\"table\" OR NOT (d.watermark_start <= a.row_updated_at AND a.row_updated_at < d.watermark_end)",
        )
        .await;
    assert_eq!(bad, 0);
    // Undelivered rows are all still there: none of them has a tombstone.
    let remaining_undelivered = env
        .count(&format!(
            "SELECT count(*) FROM events e WHERE e.organization_id = '{a}' AND NOT EXISTS ( \
               SELECT 1 FROM warehouse_deliveries d WHERE d.\"table\" = 'EVENTS' AND d.status = 'delivered' \
                 AND d.watermark_start <= e.updated_at AND e.updated_at < d.watermark_end)"
        ))
        .await;
    assert_eq!(remaining_undelivered, before[0] - provable);
    // Other organizations untouched.
    assert_eq!(rows_of(&env, "events", b).await, before[1]);
    assert_eq!(rows_of(&env, "events", c).await, before[2]);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM cold_storage_archive WHERE organization_id <> '{a}'"
        ))
        .await,
        0
    );
    // Archival deletes were not captured as business deletes; a business delete is.
    assert_eq!(env.count("SELECT count(*) FROM tidemark_delete_log").await, 0);
    sqlx::query("DELETE FROM events WHERE id = (SELECT id FROM events WHERE organization_id = $1 LIMIT 1)")
        .bind(b)
        .execute(&env.control)
        .await
        .unwrap();
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM tidemark_delete_log WHERE table_name = 'events' AND organization_id = '{b}'"
        ))
        .await,
        1
    );
    // The run is recorded; a second pass finds nothing more to archive (idempotent).
    assert_eq!(
        env.count("SELECT count(*) FROM cold_storage_runs WHERE status = 'finished'")
            .await,
        1
    );
    let out = env.cli().args(["tombstone", "--execute", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_of(&out)["archived"], 0);
    assert_eq!(tombstones(&env).await, provable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_updated_after_its_delivery_stays_and_a_concurrent_update_is_not_lost() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let a = env.orgs[0];
    let out = tempfile::tempdir().unwrap();
    env.add_destination(
        a,
        DestinationKind::JsonlS3,
        "archive",
        serde_json::json!({"url": format!("file://{}", out.path().display())}),
        &[Table::Events],
        900,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    // Retention 0: everything before the pass's clock is a candidate, including rows updated
    // a moment ago, whose new version no delivery covers.
    set_retention(&env, a, Some(0)).await;
    let updated: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1 ORDER BY updated_at, id LIMIT 3")
            .bind(a)
            .fetch_all(&env.control)
            .await
            .unwrap();
    sqlx::query("UPDATE events SET severity = 9 WHERE id = ANY($1)")
        .bind(&updated)
        .execute(&env.control)
        .await
        .unwrap();

    // The pass, step by step through the library: read and hash a batch, then let the
    // application update one of its rows (committed) and hold another one locked in an open
    // transaction while the batch commits.
    let now = tombstone::source_now(&env.control).await.unwrap();
    let scope = Scope::load(&env.control, a, Table::Events, 0, now).await.unwrap();
    let total = rows_of(&env, "events", a).await as u64;
    let page = next_page(&env.control, &env.registry, &scope, None, 100_000, None, true)
        .await
        .unwrap();
    assert_eq!(page.tally.candidates, total);
    let blocked: u64 = page.tally.blocked.values().sum();
    assert_eq!(
        blocked, 3,
        "the three updated rows are candidates but not proven: {:?}",
        page.tally
    );
    let batch = page.batch.unwrap();
    assert_eq!(batch.rows.len() as u64, total - 3);
    assert!(batch.rows.iter().all(|r| !updated.contains(&r.id)));
    let (changed, locked) = (batch.rows[10].id, batch.rows[20].id);
    sqlx::query("UPDATE events SET severity = 7 WHERE id = $1")
        .bind(changed)
        .execute(&env.control)
        .await
        .unwrap();
    let mut app = env.control.begin().await.unwrap();
    sqlx::query("UPDATE events SET severity = 8 WHERE id = $1")
        .bind(locked)
        .execute(&mut *app)
        .await
        .unwrap();
    let run_id = Uuid::new_v4();
    let committing = {
        let pool = env.control.clone();
        let batch = batch.clone();
        tokio::spawn(async move { commit_batch(&pool, run_id, &batch).await })
    };
    // The archival DELETE reaches the locked row and waits for the application's transaction.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env
        .count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH del AS%'")
        .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the archival DELETE never waited for the row lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!committing.is_finished());
    app.commit().await.unwrap();
    let done = committing.await.unwrap().unwrap();
    assert_eq!(done.archived, total - 5);
    assert_eq!(done.skipped, 2);
    for (id, severity) in [(changed, 7i16), (locked, 8)] {
        let s: i16 = sqlx::query_scalar("SELECT severity FROM events WHERE id = $1")
            .bind(id)
            .fetch_one(&env.control)
            .await
            .unwrap_or_else(|_| panic!("row {id} updated during the pass was deleted"));
        assert_eq!(s, severity);
        let t = env
            .count(&format!(
                "SELECT count(*) FROM cold_storage_archive WHERE row_id = '{id}'"
            ))
            .await;
        assert_eq!(t, 0, "no tombstone for a row that stayed");
    }
    for id in &updated {
        let n = env
            .count(&format!("SELECT count(*) FROM events WHERE id = '{id}'"))
            .await;
        assert_eq!(n, 1, "a row updated after its delivery is not deleted");
    }
    assert_eq!(tombstones(&env).await as u64, total - 5);
    // The whole pass leaves exactly the rows whose current version is not delivered.
    let out = env.cli().args(["tombstone", "--execute", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1 ORDER BY id")
        .bind(a)
        .fetch_all(&env.control)
        .await
        .unwrap();
    let mut expected = [updated.clone(), vec![changed, locked]].concat();
    expected.sort();
    assert_eq!(left, expected);
}

/// Ids of `org`'s events whose current updated_at lies in a delivered window of an active
/// destination, with that updated_at.
async fn delivered_ids(env: &Env, org: Uuid) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as(
        "SELECT e.id, e.updated_at FROM events e WHERE e.organization_id = $1 AND EXISTS ( \
           SELECT 1 FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id \
           WHERE w.organization_id = $1 AND w.status = 'active' AND d.\"table\" = 'EVENTS' AND d.status = 'delivered' \
             AND d.watermark_start <= e.updated_at AND e.updated_at < d.watermark_end) \
         ORDER BY e.updated_at, e.id",
    )
    .bind(org)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_batches_archive_each_row_once_and_rows_updated_mid_pass_stay() {
    let Some(env) = Env::start(3_000, 1).await else {
        return;
    };
    let a = env.orgs[0];
    let out = tempfile::tempdir().unwrap();
    env.add_destination(
        a,
        DestinationKind::ParquetS3,
        "lake",
        serde_json::json!({"url": format!("file://{}", out.path().display())}),
        &[Table::Events],
        900,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    set_retention(&env, a, Some(0)).await;
    let total = rows_of(&env, "events", a).await;

    // Bounded with several batches in flight: exactly --limit rows leave.
    let out = env
        .cli()
        .args([
            "tombstone",
            "--execute",
            "--json",
            "--batch",
            "30",
            "--parallel",
            "4",
            "--limit",
            "100",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let limited = json_of(&out);
    assert_eq!(limited["archived"], 100);
    assert_eq!(limited["limit_reached"], true);
    assert_eq!(rows_of(&env, "events", a).await, total - 100);
    assert_eq!(tombstones(&env).await, 100);

    // A pass of small batches, four at once, while the application keeps updating rows, newest
    // first, so that updates meet the batches in flight at the pass's frontier.
    let proven = delivered_ids(&env, a).await;
    assert!(proven.len() > 300, "{} provable rows", proven.len());
    let proven_at: std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>> = proven.iter().copied().collect();
    let now = tombstone::source_now(&env.control).await.unwrap();
    let run_id = tombstone::start_run(&env.control, now, serde_json::json!({"test": true}))
        .await
        .unwrap();
    let options = tombstone::PassOptions {
        execute: true,
        organization: Some(a),
        table: Some(Table::Events),
        limit: None,
        batch: 40,
        parallel: 4,
    };
    let pass = {
        let (pool, registry) = (env.control.clone(), env.registry.clone());
        tokio::spawn(async move {
            tombstone::run_pass(
                &pool,
                &registry,
                &options,
                run_id,
                now,
                &CancellationToken::new(),
                &|_| {},
            )
            .await
        })
    };
    let mut updated = Vec::new();
    for (id, _) in proven.iter().rev().step_by(3) {
        if pass.is_finished() {
            break;
        }
        let n = sqlx::query("UPDATE events SET severity = 9 WHERE id = $1")
            .bind(id)
            .execute(&env.control)
            .await
            .unwrap()
            .rows_affected();
        if n == 1 {
            updated.push(*id);
        }
    }
    let report = pass.await.unwrap().unwrap();
    assert!(!updated.is_empty(), "no update landed before the pass ended");
    assert!(report.totals.archived > 0);

    // Every row updated before its batch deleted it stays, without a tombstone.
    let left: std::collections::HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM events WHERE organization_id = $1")
            .bind(a)
            .fetch_all(&env.control)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for id in &updated {
        assert!(
            left.contains(id),
            "row {id} was updated during the pass and was deleted"
        );
    }
    // Each row archived once, at the version that was proven, and gone from the hot table.
    let archived: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT row_id, row_updated_at FROM cold_storage_archive WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&env.control)
            .await
            .unwrap();
    assert_eq!(archived.len() as u64, report.totals.archived);
    assert_eq!(
        env.count("SELECT count(*) - count(DISTINCT row_id) FROM cold_storage_archive")
            .await,
        0,
        "a row archived twice"
    );
    for (id, at) in &archived {
        assert_eq!(
            proven_at.get(id),
            Some(at),
            "tombstone of {id} is not of its proven version"
        );
        assert!(
            !left.contains(id),
            "row {id} has a tombstone and is still in the hot table"
        );
    }
    // Every proven row that was not updated left.
    let updated: std::collections::HashSet<Uuid> = updated.into_iter().collect();
    for (id, _) in &proven {
        assert!(
            updated.contains(id) || !left.contains(id),
            "proven row {id}, never updated, stayed"
        );
    }
    assert_eq!(
        report.totals.archived + report.totals.skipped,
        report.totals.provable + report.totals.by_override
    );
    let recorded: i64 = sqlx::query_scalar("SELECT rows_archived FROM cold_storage_runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(recorded as u64, report.totals.archived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_batch_leaves_tombstones_and_deletes_together_or_neither() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let a = env.orgs[0];
    let out = tempfile::tempdir().unwrap();
    env.add_destination(
        a,
        DestinationKind::ParquetS3,
        "lake",
        serde_json::json!({"url": format!("file://{}", out.path().display())}),
        &[Table::Events],
        900,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    set_retention(&env, a, Some(7)).await;
    let before = rows_of(&env, "events", a).await;
    assert!(before > 150);

    // A real process, aborted (no unwinding, like kill -9) inside its third batch transaction,
    // after the DELETE and the tombstone INSERT ran and before COMMIT.
    let status = env
        .cli()
        .args(["tombstone", "--execute", "--batch", "50", "--table", "events"])
        .env("TIDEMARK_FAILPOINT", "abort-before-archive-commit:3")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the failpoint must kill the process");
    let after = rows_of(&env, "events", a).await;
    assert_eq!(before - after, 100, "two batches committed, the third rolled back");
    assert_eq!(tombstones(&env).await, 100);
    assert_eq!(
        env.count("SELECT count(*) FROM events e JOIN cold_storage_archive t ON t.row_id = e.id")
            .await,
        0,
        "no tombstone for a row still in the hot table"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM cold_storage_runs WHERE status = 'running'")
            .await,
        1,
        "the dead run is visible as never finished"
    );
    // Bounded: --limit stops the pass (here inside its first batch).
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--batch", "50", "--limit", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let limited = json_of(&out);
    assert_eq!(limited["archived"], 30);
    assert_eq!(limited["limit_reached"], true);
    assert_eq!(rows_of(&env, "events", a).await, before - 130);
    // Resumable: the next pass finishes the job, exactly once per row.
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--batch", "50"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["archived"], before - 130);
    assert_eq!(rows_of(&env, "events", a).await, 0);
    assert_eq!(tombstones(&env).await, before);
    assert_eq!(
        env.count("SELECT count(DISTINCT row_id) FROM cold_storage_archive")
            .await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_is_recorded_and_honoured_only_for_its_organization() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let (a, b) = (env.orgs[0], env.orgs[1]);
    set_retention(&env, a, Some(7)).await;
    set_retention(&env, b, Some(7)).await;
    let (ea, eb) = (rows_of(&env, "events", a).await, rows_of(&env, "events", b).await);
    let fa = rows_of(&env, "findings", a).await;

    let out = env
        .cli()
        .args([
            "archive",
            "override",
            "add",
            "--org",
            &a.to_string(),
            "--reason",
            "no destination configured; customer accepted deletion (ticket 42)",
            "--by",
            "alice@example.com",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let o = json_of(&out);
    let override_id = o["id"].as_str().unwrap().to_string();
    // A second active override for the same organization is refused.
    let out = env
        .cli()
        .args([
            "archive",
            "override",
            "add",
            "--org",
            &a.to_string(),
            "--reason",
            "x",
            "--by",
            "bob",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--table", "events"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["by_override"], ea);
    assert_eq!(rows_of(&env, "events", a).await, 0);
    assert_eq!(rows_of(&env, "events", b).await, eb, "the override is not b's");
    assert_eq!(rows_of(&env, "findings", a).await, fa, "--table events only");
    let recorded = env
        .count(&format!(
            "SELECT count(*) FROM cold_storage_archive WHERE organization_id = '{a}' AND override_id = '{override_id}' \
             AND override_reason LIKE 'no destination configured%' AND delivery_id IS NULL"
        ))
        .await;
    assert_eq!(recorded, ea);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM cold_storage_archive WHERE organization_id = '{b}'"
        ))
        .await,
        0
    );

    // Recall of an override row says why there is nothing to read.
    let id: Uuid = sqlx::query_scalar("SELECT row_id FROM cold_storage_archive LIMIT 1")
        .fetch_one(&env.control)
        .await
        .unwrap();
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "events",
            "--id",
            &id.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["error"].as_str().unwrap().contains("override"),
        "{records:?}"
    );

    // Revoked: nothing more goes (findings of a stay).
    let out = env
        .cli()
        .args([
            "archive",
            "override",
            "revoke",
            "--org",
            &a.to_string(),
            "--by",
            "carol",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.cli().args(["tombstone", "--execute", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_of(&out)["archived"], 0);
    assert_eq!(rows_of(&env, "findings", a).await, fa);
    let out = env
        .cli()
        .args(["archive", "override", "list", "--json"])
        .output()
        .unwrap();
    let list = json_of(&out);
    assert_eq!(list[0]["revoked_by"], "carol");
    assert_eq!(list[0]["created_by"], "alice@example.com");

    // The report names the override and counts its rows.
    let out = env
        .cli()
        .args([
            "archive",
            "report",
            "--org",
            &a.to_string(),
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert_eq!(r["rows"], ea);
    assert_eq!(r["runs"][0]["overrides"][0]["override_id"], override_id.as_str());
    assert_eq!(r["runs"][0]["overrides"][0]["rows"], ea);
    assert_eq!(r["runs"][0]["overrides"][0]["created_by"], "alice@example.com");
}

/// Rewrites a Parquet object with one value of one row changed.
async fn tamper_parquet(store: &std::sync::Arc<dyn object_store::ObjectStore>, key: &str, row_id: Uuid) {
    let path = Path::from(key);
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut batches = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let schema = b.schema();
        let ids = b.column(schema.index_of("id").unwrap()).as_string::<i32>();
        let sev_i = schema.index_of("severity").unwrap();
        let sev = b.column(sev_i).as_primitive::<Int16Type>();
        let changed: Int16Array = (0..b.num_rows())
            .map(|i| {
                let v = sev.value(i);
                Some(if ids.value(i) == row_id.to_string() { v + 1 } else { v })
            })
            .collect();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols[sev_i] = std::sync::Arc::new(changed);
        batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
    }
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batches[0].schema(), None).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    store.put(&path, Bytes::from(buf).into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_from_s3_verifies_names_tampered_and_missing_objects_and_restores_byte_for_byte() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cold");
    let a = env.orgs[0];
    let cfg = moto.config("cold", "exports");
    env.add_destination(
        a,
        DestinationKind::ParquetS3,
        "s3",
        cfg.clone(),
        &[Table::Events],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    set_retention(&env, a, Some(7)).await;
    let schema = env.registry.get(Table::Events, 1).unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1 ORDER BY updated_at, id")
        .bind(a)
        .fetch_all(&env.control)
        .await
        .unwrap();
    let original = hot_row_hashes(&env.control, &schema, a, &ids).await.unwrap();
    let full_before: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(e) FROM events e WHERE organization_id = $1 ORDER BY updated_at, id")
            .bind(a)
            .fetch_all(&env.control)
            .await
            .unwrap();
    let out = env.cli().args(["tombstone", "--execute", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["archived"], ids.len());
    // The tombstone hashes are the canonical hashes of the hot rows.
    let stored: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT row_id, row_sha256 FROM cold_storage_archive ORDER BY row_updated_at, row_id")
            .fetch_all(&env.control)
            .await
            .unwrap();
    assert_eq!(
        stored,
        original.iter().map(|h| (h.id, h.sha256.to_vec())).collect::<Vec<_>>()
    );

    // Recall everything: every row verified against its tombstone.
    let recall_all = |extra: &[&str]| {
        let mut c = env.cli();
        c.args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "events",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
        ])
        .args(extra);
        c.output().unwrap()
    };
    let out = recall_all(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), ids.len());
    assert!(records.iter().all(|r| r["verified"] == true));
    // The recalled row is the canonical line: same keys in published order, same values.
    let first = records.iter().find(|r| r["id"] == ids[0].to_string()).unwrap();
    let line = String::from_utf8(original[0].line.clone()).unwrap();
    assert_eq!(first["row"], serde_json::from_str::<serde_json::Value>(&line).unwrap());
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(&format!(",\"row\":{line}}}")), "row embedded verbatim");

    // Tamper with one object (one value of one row) and delete another.
    let keys: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT d.id, d.receipt->>'object_key' FROM warehouse_deliveries d ORDER BY d.watermark_start")
            .fetch_all(&env.control)
            .await
            .unwrap();
    let dest = ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &cfg).unwrap();
    let store = dest.store();
    let (tampered_delivery, tampered_key) = keys[0].clone();
    let victim: Uuid = sqlx::query_scalar("SELECT row_id FROM cold_storage_archive WHERE delivery_id = $1 LIMIT 1")
        .bind(tampered_delivery)
        .fetch_one(&env.control)
        .await
        .unwrap();
    tamper_parquet(&store, &tampered_key, victim).await;
    let (missing_delivery, missing_key) = keys[keys.len() - 1].clone();
    store.delete(&Path::from(missing_key.as_str())).await.unwrap();
    let missing_rows = env
        .count(&format!(
            "SELECT count(*) FROM cold_storage_archive WHERE delivery_id = '{missing_delivery}'"
        ))
        .await;

    let file = tempfile::NamedTempFile::new().unwrap();
    let out = recall_all(&["--out", file.path().to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = json_of(&out);
    assert_eq!(summary["failed"], 1 + missing_rows);
    assert_eq!(summary["verified"], ids.len() as i64 - 1 - missing_rows);
    let records = json_lines(&std::fs::read(file.path()).unwrap());
    assert_eq!(records.len(), ids.len(), "recall went on after the failures");
    let bad = records.iter().find(|r| r["id"] == victim.to_string()).unwrap();
    assert_eq!(bad["verified"], false);
    let msg = bad["error"].as_str().unwrap();
    assert!(msg.contains("hash mismatch"), "{msg}");
    assert!(msg.contains(&tampered_key), "names the object: {msg}");
    assert!(msg.contains(&victim.to_string()), "names the row: {msg}");
    assert_eq!(bad["object"], format!("s3://cold/{tampered_key}"));
    let gone: Vec<_> = records
        .iter()
        .filter(|r| r["delivery_id"] == missing_delivery.to_string())
        .collect();
    assert_eq!(gone.len() as i64, missing_rows);
    for r in gone {
        let msg = r["error"].as_str().unwrap();
        assert!(msg.contains("missing") && msg.contains(&missing_key), "{msg}");
    }
    // The other rows of the tampered object still verify.
    assert!(
        records
            .iter()
            .filter(|r| r["delivery_id"] == tampered_delivery.to_string() && r["id"] != victim.to_string())
            .all(|r| r["verified"] == true)
    );

    // Restore one good row: it comes back exactly as it was (every column, updated_at
    // included), and its canonical hash is the tombstone's. The tampered row is refused.
    let good = ids[ids.len() / 2];
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "events",
            "--id",
            &good.to_string(),
            "--restore",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = &json_lines(&out.stdout)[0];
    assert_eq!(rec["restored"], true, "{rec}");
    let back: serde_json::Value = sqlx::query_scalar("SELECT to_jsonb(e) FROM events e WHERE id = $1")
        .bind(good)
        .fetch_one(&env.control)
        .await
        .unwrap();
    let i = ids.iter().position(|x| *x == good).unwrap();
    assert_eq!(back, full_before[i]);
    let rehash = hot_row_hashes(&env.control, &schema, a, &[good]).await.unwrap();
    assert_eq!(rehash[0].sha256, original[i].sha256);
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "events",
            "--id",
            &victim.to_string(),
            "--restore",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        env.count(&format!("SELECT count(*) FROM events WHERE id = '{victim}'"))
            .await,
        0,
        "an unverified row is never restored"
    );
    // The tombstone stays, stamped restored.
    let restored = env
        .count(&format!(
            "SELECT count(*) FROM cold_storage_archive WHERE row_id = '{good}' AND restored_at IS NOT NULL"
        ))
        .await;
    assert_eq!(restored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_recall_restores_round_trip_and_the_report_proves_the_run() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let a = env.orgs[1];
    let dir = tempfile::tempdir().unwrap();
    env.add_destination(
        a,
        DestinationKind::JsonlS3,
        "jl",
        serde_json::json!({"url": format!("file://{}", dir.path().display())}),
        &[Table::Events, Table::AuditLog],
        900,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    set_retention(&env, a, Some(7)).await;
    let full_before: Vec<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT id, to_jsonb(e) FROM audit_log e WHERE organization_id = $1 ORDER BY updated_at, id")
            .bind(a)
            .fetch_all(&env.control)
            .await
            .unwrap();
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--limit", "100000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pass = json_of(&out);
    let run_id = pass["run_id"].as_str().unwrap().to_string();
    assert_eq!(rows_of(&env, "audit_log", a).await, 0);

    // Restore every audit_log row of the period: the table is back exactly as it was.
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "audit_log",
            "--from",
            "2026-01-01",
            "--to",
            "2027-01-01",
            "--restore",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), full_before.len());
    assert!(records.iter().all(|r| r["verified"] == true && r["restored"] == true));
    let full_after: Vec<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT id, to_jsonb(e) FROM audit_log e WHERE organization_id = $1 ORDER BY updated_at, id")
            .bind(a)
            .fetch_all(&env.control)
            .await
            .unwrap();
    assert_eq!(full_after, full_before);
    // A second restore does not duplicate anything.
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "audit_log",
            "--from",
            "2026-01-01",
            "--to",
            "2027-01-01",
            "--restore",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(json_lines(&out.stdout).iter().all(|r| r["restored"] == false));
    assert_eq!(rows_of(&env, "audit_log", a).await, full_before.len() as i64);

    // The evidence report of the run: counts per table, the deliveries with their object keys
    // and sha256 from the receipts, and a digest an auditor can recompute in SQL.
    let out = env
        .cli()
        .args([
            "archive",
            "report",
            "--org",
            &a.to_string(),
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    let run = &r["runs"][0];
    assert_eq!(run["run_id"], run_id.as_str());
    assert_eq!(run["status"], "finished");
    assert_eq!(run["partial"], false);
    assert_eq!(run["rows"], pass["archived"]);
    assert_eq!(run["restored"], full_before.len());
    let tables: Vec<&str> = run["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["events", "audit_log"]);
    let deliveries = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'")
        .await;
    assert_eq!(run["proofs"].as_array().unwrap().len() as i64, deliveries);
    let proof = &run["proofs"][0];
    let (key, sha): (String, String) =
        sqlx::query_as("SELECT receipt->>'object_key', receipt->>'sha256' FROM warehouse_deliveries WHERE id = $1")
            .bind(Uuid::parse_str(proof["delivery_id"].as_str().unwrap()).unwrap())
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(proof["object_key"], key.as_str());
    assert_eq!(proof["object_sha256"], sha.as_str());
    let on_disk = std::fs::read(dir.path().join(&key)).unwrap();
    assert_eq!(sha, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&on_disk)));
    let digest: String = sqlx::query_scalar(
        "SELECT encode(sha256(string_agg(row_sha256, ''::bytea ORDER BY row_sha256)), 'hex') \
         FROM cold_storage_archive WHERE organization_id = $1 AND run_id = $2::uuid",
    )
    .bind(a)
    .bind(&run_id)
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert_eq!(run["rows_sha256_digest"], digest.as_str());
    let out = env
        .cli()
        .args([
            "archive",
            "report",
            "--org",
            &a.to_string(),
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&run_id) && text.contains(&digest) && text.contains(&key),
        "{text}"
    );

    // Restored rows are candidates again, proven by the same deliveries: a new tombstone, same hash.
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--table", "audit_log"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_of(&out)["archived"], full_before.len());
    let same = env
        .count(
            "SELECT count(*) FROM cold_storage_archive n JOIN cold_storage_archive o \
               ON o.row_id = n.row_id AND o.restored_at IS NOT NULL AND n.restored_at IS NULL \
             WHERE n.row_sha256 = o.row_sha256 AND n.\"table\" = 'AUDIT_LOG'",
        )
        .await;
    assert_eq!(same, full_before.len() as i64);
}

#[test]
fn tombstoning_refuses_a_separate_source_database() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["tombstone", "--execute"])
        .env("TIDEMARK_DATABASE_URL", "postgres://u@127.0.0.1:1/control")
        .env("TIDEMARK_SOURCE_URL", "postgres://u@127.0.0.1:1/app")
        .env("TIDEMARK_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("same database"), "{err}");
}

/// boto3 against moto: `script` gets the endpoint as argv[1] and prints one JSON value.
fn boto3(moto: &Moto, script: &str, args: &[&str]) -> serde_json::Value {
    let py = python().expect("python");
    let prelude = "import boto3, sys, json, datetime, hashlib\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', \
        aws_secret_access_key='test', region_name='us-east-1')\n";
    let out = std::process::Command::new(py)
        .args(["-c", &format!("{prelude}{script}"), &moto.endpoint()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_objects_under_object_lock_survive_deletion_and_tampering_is_detected() {
    let Some(env) = Env::start(600, 1).await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    // Object Lock is enabled when the bucket is created (it turns versioning on), without a
    // default retention rule: with one, moto (like AWS) wants Content-MD5 or a declared SDK
    // checksum on every PUT, which object_store does not send. Retention is applied per object
    // version after delivery instead (docs/COLD_STORAGE.md, WORM).
    boto3(
        &moto,
        "s3.create_bucket(Bucket='worm', ObjectLockEnabledForBucket=True)\nprint(json.dumps(True))",
        &[],
    );
    let a = env.orgs[0];
    let cfg = moto.config("worm", "exports");
    env.add_destination(
        a,
        DestinationKind::JsonlS3,
        "worm",
        cfg.clone(),
        &[Table::Events],
        3600,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty() && outcomes.iter().all(|o| o.status == "delivered"));
    // The customer's retention job: COMPLIANCE retention on every delivered object version.
    let locked = boto3(
        &moto,
        "until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)\n\
         n = denied = 0\n\
         for v in s3.list_object_versions(Bucket='worm', Prefix='exports/')['Versions']:\n\
         \x20   s3.put_object_retention(Bucket='worm', Key=v['Key'], VersionId=v['VersionId'], \
                 Retention={'Mode': 'COMPLIANCE', 'RetainUntilDate': until})\n\
         \x20   n += 1\n\
         \x20   try:\n\
         \x20       s3.delete_object(Bucket='worm', Key=v['Key'], VersionId=v['VersionId'])\n\
         \x20   except Exception as e:\n\
         \x20       denied += 'AccessDenied' in str(e)\n\
         print(json.dumps({'locked': n, 'delete_denied': denied}))",
        &[],
    );
    assert_eq!(locked["locked"], outcomes.len());
    assert_eq!(
        locked["delete_denied"],
        outcomes.len(),
        "a locked version cannot be deleted"
    );

    set_retention(&env, a, Some(7)).await;
    let out = env.cli().args(["tombstone", "--execute", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let archived = json_of(&out)["archived"].as_i64().unwrap();
    assert_eq!(rows_of(&env, "events", a).await, 0);

    // Object Lock does not stop a new *version* under the same key: recall reads the current
    // version, so an overwrite is caught as a hash mismatch, and the locked original is still
    // there, byte for byte what the receipt hashed.
    let (key, receipt_sha): (String, String) = sqlx::query_as(
        "SELECT receipt->>'object_key', receipt->>'sha256' FROM warehouse_deliveries ORDER BY watermark_start LIMIT 1",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    let dest = ObjectDestination::from_config(DestinationKind::JsonlS3, Format::Jsonl, &cfg).unwrap();
    let path = Path::from(key.as_str());
    let original = dest.store().get(&path).await.unwrap().bytes().await.unwrap();
    let tampered = String::from_utf8(original.to_vec())
        .unwrap()
        .replacen("\"severity\":", "\"severity\":1", 1);
    dest.store().put(&path, Bytes::from(tampered).into()).await.unwrap();
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &a.to_string(),
            "--table",
            "events",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let records = json_lines(&out.stdout);
    assert_eq!(records.len() as i64, archived);
    let bad: Vec<_> = records.iter().filter(|r| r["verified"] == false).collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0]["error"].as_str().unwrap().contains(&key));
    let versions = boto3(
        &moto,
        "vs = [v for v in s3.list_object_versions(Bucket='worm', Prefix=sys.argv[2])['Versions']]\n\
         vs.sort(key=lambda v: v['LastModified'])\n\
         body = s3.get_object(Bucket='worm', Key=sys.argv[2], VersionId=vs[0]['VersionId'])['Body'].read()\n\
         print(json.dumps({'versions': len(vs), 'oldest_sha256': hashlib.sha256(body).hexdigest()}))",
        &[&key],
    );
    assert_eq!(versions["versions"], 2);
    assert_eq!(versions["oldest_sha256"], receipt_sha.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_recall_pages_through_more_tombstones_than_one_page_each_once() {
    let Some(env) = Env::start(25_000, 1).await else {
        return;
    };
    let (org, n): (Uuid, i64) = sqlx::query_as(
        "SELECT organization_id, count(*) FROM events GROUP BY organization_id ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert!(n > 10_000, "more rows than one recall page: {n}");
    // Every row of the organization on one instant: one window, one slice, ties everywhere.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET updated_at = '2026-10-31T12:00:00Z' WHERE organization_id = $1")
        .bind(org)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    env.add_destination(
        org,
        DestinationKind::JsonlS3,
        "jl",
        serde_json::json!({"url": format!("file://{}", dir.path().display())}),
        &[Table::Events],
        900,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    set_retention(&env, org, Some(7)).await;
    let out = env
        .cli()
        .args(["tombstone", "--execute", "--json", "--table", "events"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["archived"], n);
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = env
        .cli()
        .args([
            "archive",
            "recall",
            "--org",
            &org.to_string(),
            "--table",
            "events",
            "--from",
            "2026-10-01",
            "--to",
            "2026-12-01",
            "--out",
            file.path().to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["verified"], n);
    let records = json_lines(&std::fs::read(file.path()).unwrap());
    let ids: std::collections::HashSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(records.len() as i64, n);
    assert_eq!(ids.len() as i64, n, "every tombstone once");
}
