//! The closed-window rule against a real open transaction: a transaction that began before a
//! window's end and commits after it still gets its rows delivered, because the window waits.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use sqlx::Connection;
use tidemark::control::outbox::LeaseFilter;
use tidemark::schema::Table;
use tokio_util::sync::CancellationToken;

fn insert_copy_sql(env: &Env, table: Table) -> String {
    let schema = env.registry.get(table, 1).unwrap();
    let middle: Vec<String> = schema.columns[1..schema.columns.len() - 1]
        .iter()
        .map(|c| format!("e.{}", c.name))
        .collect();
    format!(
        "INSERT INTO {t} SELECT md5(clock_timestamp()::text || random()::text)::uuid, {m}, now() \
         FROM (SELECT * FROM {t} WHERE organization_id = $1 LIMIT 1) e RETURNING id, updated_at",
        t = table.name(),
        m = middle.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_holds_its_window_open_and_nothing_is_skipped() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    // Two-second windows, no grace: the test does not have to wait 15 minutes.
    let (_out, dir, _) = env.local_parquet(org, &[Table::Assets], 2, 3).await;
    env.run_until_idle(fast_options()).await;
    let history = env.count("SELECT count(*) FROM warehouse_deliveries").await;

    // T1 begins, writes a row (updated_at = T1's start), and stays open.
    let mut t1_conn = sqlx::PgConnection::connect(&format!("{}?application_name=app-writer", env.url))
        .await
        .unwrap();
    let mut t1 = t1_conn.begin().await.unwrap();
    let (late_id, late_at): (uuid::Uuid, DateTime<Utc>) = sqlx::query_as(&insert_copy_sql(&env, Table::Assets))
        .bind(org)
        .fetch_one(&mut *t1)
        .await
        .unwrap();
    let t1_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *t1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // T2 begins a window later, commits at once: a plain timestamp cursor would now move past T1's row.
    let (_, early_at): (uuid::Uuid, DateTime<Utc>) = sqlx::query_as(&insert_copy_sql(&env, Table::Assets))
        .bind(org)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert!(early_at > late_at);
    // Both windows are over.
    tokio::time::sleep(Duration::from_millis(4_500)).await;

    let clock = tidemark::plan::source_clock(&env.source).await.unwrap();
    assert_eq!(
        clock.oldest.as_ref().map(|t| t.pid),
        Some(t1_pid),
        "the open transaction is seen"
    );
    env.plan().await;
    let planned_past_t1 = env
        .count(&format!(
            "SELECT count(*) FROM warehouse_deliveries WHERE watermark_end > '{}'",
            late_at.to_rfc3339()
        ))
        .await;
    assert_eq!(
        planned_past_t1, 0,
        "no window after T1's start may be planned while T1 is open"
    );
    let status = env.cli().args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        st["blocking_transaction"]["pid"].as_i64(),
        Some(t1_pid as i64),
        "{st:#}"
    );
    let text = String::from_utf8(env.cli().args(["status"]).output().unwrap().stdout).unwrap();
    assert!(
        text.contains(&format!("held open by source transaction pid {t1_pid}")),
        "{text}"
    );

    // T1 commits after its window ended; the window is planned now and the row delivered.
    t1.commit().await.unwrap();
    env.plan().await;
    let worker = env.worker(fast_options());
    let outcomes = worker
        .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    assert!(env.count("SELECT count(*) FROM warehouse_deliveries").await >= history + 2);
    let key: String = sqlx::query_scalar(
        "SELECT receipt->>'object_key' FROM warehouse_deliveries WHERE watermark_start <= $1 AND watermark_end > $1",
    )
    .bind(late_at)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let report = verify(
        &env,
        Table::Assets,
        org,
        tidemark::plan::align_down(late_at, 2),
        tidemark::plan::align_down(late_at, 2) + chrono::Duration::seconds(2),
        "parquet",
        &[dir.join(key)],
    );
    assert!(report["source_rows"].as_u64().unwrap() >= 1);
    // And overall: every row, the late one included, exactly once.
    let all = files_under(&dir.join("assets"), "parquet");
    verify(
        &env,
        Table::Assets,
        org,
        data_end() - chrono::Duration::days(3),
        Utc::now(),
        "parquet",
        &all,
    );
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM assets WHERE id = $1")
        .bind(late_id)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(found, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_freezes_the_horizon_until_it_is_resolved() {
    let Some(env) = Env::start(200, 1).await else { return };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    let (_out, dir, _) = env.local_parquet(org, &[Table::Identities], 2, 3).await;
    env.run_until_idle(fast_options()).await;
    let before = env.count("SELECT count(*) FROM warehouse_deliveries").await;

    // A two-phase transaction writes a row and is prepared: it leaves pg_stat_activity, but
    // its row (updated_at = its start) can still commit.
    let mut conn = sqlx::PgConnection::connect(&env.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let (_, at): (uuid::Uuid, DateTime<Utc>) = sqlx::query_as(&insert_copy_sql(&env, Table::Identities))
        .bind(org)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("PREPARE TRANSACTION 'tidemark-test'")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let clock = tidemark::plan::source_clock(&env.source).await.unwrap();
    assert!(clock.oldest.is_none(), "a prepared transaction is not a session");
    assert!(clock.prepared_since.is_some());
    env.plan().await;
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries").await,
        before,
        "no window closes"
    );

    sqlx::query("COMMIT PREPARED 'tidemark-test'")
        .execute(&mut conn)
        .await
        .unwrap();
    env.plan().await;
    let worker = env.worker(fast_options());
    worker
        .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();
    let key: String = sqlx::query_scalar(
        "SELECT receipt->>'object_key' FROM warehouse_deliveries WHERE watermark_start <= $1 AND watermark_end > $1",
    )
    .bind(at)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let start = tidemark::plan::align_down(at, 2);
    let report = verify(
        &env,
        Table::Identities,
        org,
        start,
        start + chrono::Duration::seconds(2),
        "parquet",
        &[dir.join(key)],
    );
    assert_eq!(report["source_rows"], 1);
}
