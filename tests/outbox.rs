//! The outbox under failure: a worker killed between landing an object and completing it, a
//! worker whose lease was taken over, two `run` processes at once, an unreachable destination.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use common::*;
use tidemark::control::destinations::DestinationKind;
use tidemark::control::outbox::{self, Completion, LeaseFilter};
use tidemark::deliver::object::ObjectDestination;
use tidemark::deliver::{DeliveryContext, Destination, Fence};
use tidemark::encode::Format;
use tidemark::error::ErrorKind;
use tidemark::schema::Table;
use tidemark::worker::WorkerOptions;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_writing_the_object_is_completed_by_the_next_without_duplicates() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    let (_out, dir, _) = env.local_parquet(org, &[Table::Events], 900, 5).await;

    // A real process, killed (SIGABRT, no cleanup) right after its first object landed.
    let status = env
        .cli()
        .args(["run", "--workers", "1", "--lease", "3s"])
        .env("TIDEMARK_FAILPOINT", "abort-after-deliver:1")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the failpoint must kill the process");
    let leased = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'leased'")
        .await;
    assert_eq!(leased, 1, "the dead worker's delivery is still leased");
    let objects_before = files_under(&dir, "parquet").len();
    assert_eq!(objects_before, 1, "the dead worker's object landed");

    // The lease expires; the next run takes it over and completes everything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = env
        .cli()
        .args(["run", "--until-idle", "--workers", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let (attempts, token): (i32, i64) =
        sqlx::query_as("SELECT attempts, lease_token FROM warehouse_deliveries WHERE attempts > 1")
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(attempts, 2, "taken over exactly once");
    assert!(token > 1);
    let deliveries = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'")
        .await;
    assert_eq!(env.count("SELECT count(*) FROM warehouse_deliveries").await, deliveries);
    let files = files_under(&dir, "parquet");
    assert_eq!(files.len() as i64, deliveries, "no duplicate object");
    // No duplicate row either: the verifier rejects an id seen twice.
    verify(
        &env,
        Table::Events,
        org,
        data_end() - ChronoDuration::days(2),
        data_end(),
        "parquet",
        &files,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_over_can_neither_commit_nor_advance() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("p");
    let config = serde_json::json!({"url": format!("file://{}", dir.display())});
    env.add_destination(
        org,
        DestinationKind::ParquetS3,
        "p",
        config.clone(),
        &[Table::Events],
        900,
        5,
    )
    .await;
    env.plan().await;
    let filter = LeaseFilter::default();
    let old = outbox::lease(&env.control, "worker-a", 0.5, &filter)
        .await
        .unwrap()
        .expect("a due delivery");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let new = outbox::lease(&env.control, "worker-b", 30.0, &filter)
        .await
        .unwrap()
        .expect("the expired lease is taken over");
    assert_eq!(new.delivery_id, old.delivery_id);
    assert!(new.token > old.token);

    // The old worker cannot heartbeat, complete, fail, or land its object.
    assert_eq!(
        outbox::heartbeat(&env.control, &old, 30.0).await.unwrap_err().kind(),
        ErrorKind::Fenced
    );
    let done = Completion {
        rows: 1,
        bytes: 1,
        last_cursor: None,
        receipt: serde_json::json!({"stale": true}),
    };
    assert_eq!(
        outbox::complete(&env.control, &old, &done).await.unwrap_err().kind(),
        ErrorKind::Fenced
    );
    let err = tidemark::Error::new(ErrorKind::DestinationTransient, "x");
    assert_eq!(
        outbox::fail(&env.control, &old, &err, Duration::ZERO)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Fenced
    );
    let dest = ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &config).unwrap();
    let schema = env.registry.get(Table::Events, 1).unwrap();
    let ctx = DeliveryContext {
        delivery_id: old.delivery_id,
        organization_id: org,
        schema: &schema,
        window_start: old.window_start,
        window_end: old.window_end,
        fence: Fence::new(env.control.clone(), old.clone(), 30.0),
    };
    let (batches, _) = tidemark::extract::extract(
        env.source.clone(),
        tidemark::extract::WindowQuery {
            schema: &schema,
            organization_id: org,
            start: old.window_start,
            end: old.window_end,
        },
        1024,
    );
    let e = dest.deliver(&ctx, batches).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert!(
        files_under(&dir, "parquet").is_empty(),
        "a fenced worker leaves no object"
    );
    let wm = env
        .count("SELECT count(*) FROM warehouse_watermarks WHERE last_updated_at IS NOT NULL")
        .await;
    assert_eq!(wm, 0, "nothing advanced");
    let status: String = sqlx::query_scalar("SELECT status::text FROM warehouse_deliveries WHERE id = $1")
        .bind(old.delivery_id)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(status, "leased");

    // The new owner completes normally.
    outbox::complete(
        &env.control,
        &new,
        &Completion {
            rows: 0,
            bytes: 0,
            last_cursor: None,
            receipt: serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    let status: String = sqlx::query_scalar("SELECT status::text FROM warehouse_deliveries WHERE id = $1")
        .bind(old.delivery_id)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(status, "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_run_processes_at_once_deliver_each_window_once() {
    let Some(env) = Env::start(2_000, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[2];
    let (_out, dir, _) = env.local_parquet(org, &Table::ALL, 900, 5).await;
    let spawn = || {
        env.cli()
            .args(["run", "--until-idle", "--workers", "3", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let delivered = |o: &std::process::Output| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["delivered"]
            .as_u64()
            .unwrap()
    };
    let total = env.count("SELECT count(*) FROM warehouse_deliveries").await as u64;
    assert_eq!(
        delivered(&a) + delivered(&b),
        total,
        "every delivery run by exactly one process"
    );
    assert!(
        delivered(&a) > 0 && delivered(&b) > 0,
        "both processes took work: {} / {}",
        delivered(&a),
        delivered(&b)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status <> 'delivered' OR attempts <> 1")
            .await,
        0
    );
    for table in Table::ALL {
        let files = files_under(&dir.join(table.name()), "parquet");
        verify(
            &env,
            table,
            org,
            data_end() - ChronoDuration::days(2),
            data_end(),
            "parquet",
            &files,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_destination_backs_off_dead_letters_and_recovers_with_retry() {
    let Some(env) = Env::start(300, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    let port = free_port();
    // Nothing listens on `port` yet.
    let moto_like = serde_json::json!({
        "url": "s3://later/x", "endpoint": format!("http://127.0.0.1:{port}"), "allow_http": true,
        "access_key_id": {"env": "TIDEMARK_TEST_S3_KEY"}, "secret_access_key": {"env": "TIDEMARK_TEST_S3_SECRET"},
        "max_retries": 0, "request_timeout_seconds": 2
    });
    unsafe {
        std::env::set_var("TIDEMARK_TEST_S3_KEY", "test");
        std::env::set_var("TIDEMARK_TEST_S3_SECRET", "test");
    }
    env.add_destination(
        org,
        DestinationKind::ParquetS3,
        "far",
        moto_like,
        &[Table::Identities],
        86_400,
        3,
    )
    .await;
    env.plan().await;
    let deliveries = env.count("SELECT count(*) FROM warehouse_deliveries").await;
    assert!(deliveries >= 1);

    // First failure: `failed`, scheduled with backoff in [0.5, 1) × base.
    let options = WorkerOptions {
        retry_base: Duration::from_secs(2),
        retry_cap: Duration::from_secs(60),
        ..fast_options()
    };
    let worker = env.worker(options);
    let outcomes = worker
        .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.status == "failed"), "{outcomes:#?}");
    let (min_wait, max_wait): (f64, f64) = sqlx::query_as(
        "SELECT min(extract(epoch FROM next_attempt_at - updated_at))::float8, max(extract(epoch FROM next_attempt_at - updated_at))::float8 FROM warehouse_deliveries",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert!(
        min_wait >= 0.99 && max_wait <= 2.01,
        "backoff {min_wait}..{max_wait}s for base 2s"
    );
    let error: String = sqlx::query_scalar("SELECT last_error FROM warehouse_deliveries LIMIT 1")
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert!(error.contains("destination_transient"), "{error}");
    // Not due yet: a drain right now does nothing.
    assert!(
        worker
            .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
            .await
            .unwrap()
            .is_empty()
    );

    // Attempts 2 and 3 (backoff 2–4 s, then dead letter).
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        worker
            .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
            .await
            .unwrap();
        if env
            .count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'dead_letter'")
            .await
            == deliveries
        {
            break;
        }
    }
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'dead_letter' AND attempts = 3")
            .await,
        deliveries
    );
    let status = env.cli().args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["tables"][0]["dead_letter"].as_i64().unwrap(), deliveries);
    assert!(
        st["tables"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("destination_transient")
    );

    // The destination comes up; `retry` re-queues, `run` delivers.
    let Some(moto) = Moto::start_on(port) else {
        return;
    };
    moto.create_bucket("later");
    let out = env.cli().args(["retry"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("re-queued {deliveries}")));
    let status = env.cli().args(["run", "--until-idle"]).status().unwrap();
    assert!(status.success());
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'")
            .await,
        deliveries
    );
    let dest = ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &moto.config("later", "x"))
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    download(dest.store(), dest.prefix(), local.path()).await;
    let files = files_under(local.path(), "parquet");
    assert_eq!(files.len() as i64, deliveries);
    verify(
        &env,
        Table::Identities,
        org,
        data_end() - ChronoDuration::days(2),
        data_end(),
        "parquet",
        &files,
    );
}
