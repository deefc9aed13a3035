//! ICEBERG_S3 backfill throughput beside PARQUET_S3 on the same data, both on local disk
//! (`file://`), through the real planner, outbox and worker. The Iceberg catalog is the SQL
//! catalog in a second database of the same throwaway cluster.
//!
//! ```sh
//! . ~/.cache/tidemark/env   # TIDEMARK_PG_BIN / TIDEMARK_PG_USER (scripts/setup)
//! cargo run --example iceberg_backfill -- [--rows 500000] [--days 3] [--window 900] [--workers 1]
//! ```
//!
//! Generates `--rows` events for one organization over `--days` days, plans every window, then
//! drains the PARQUET_S3 destination, the ICEBERG_S3 one, and PARQUET_S3 again (a second
//! destination on the same data, so a warm-cache advantage of whoever goes second shows up).
//! Prints rows/s, files and commits, and what the Iceberg table's metadata grew to.
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use tidemark::control::destinations::{self, DestinationKind, NewDestination};
use tidemark::control::outbox::LeaseFilter;
use tidemark::control::{self, APP_CONTROL, APP_EXTRACT};
use tidemark::deliver::iceberg::IcebergDestination;
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::reference::{self, GenerateSpec};
use tidemark::schema::{Registry, Table};
use tidemark::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: i64) -> i64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

fn du(dir: &std::path::Path, ext: &str) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ext) {
                n += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (n, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let rows = arg("--rows", 500_000);
    let days = arg("--days", 3) as i32;
    let window = arg("--window", 900) as i32;
    let workers = arg("--workers", 1) as usize;

    let pg = EphemeralPostgres::start().expect("start postgres");
    let url = pg.create_database("app").await.unwrap();
    let catalog_url = pg.create_database("catalog").await.unwrap();
    let pool = control::connect(&url, APP_CONTROL, 8).await.unwrap();
    let source = control::connect(&url, APP_EXTRACT, 8).await.unwrap();
    let t = Instant::now();
    reference::install(&pool).await.unwrap();
    reference::generate(
        &pool,
        &GenerateSpec {
            seed: 42,
            organizations: 1,
            rows,
            days,
            end: Utc::now() - Duration::days(1),
            only_events: false,
        },
    )
    .await
    .unwrap();
    control::migrate(&pool).await.unwrap();
    let (org, _) = reference::organizations(&pool).await.unwrap()[0].clone();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await.unwrap();
    println!(
        "generated {events} events over {days} days in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let out = tempfile::tempdir().unwrap();
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("TIDEMARK_BENCH_ICEBERG_CATALOG", &catalog_url) };
    let iceberg_config = serde_json::json!({
        "warehouse": format!("file://{}/iceberg", out.path().display()),
        "catalog": {"type": "sql", "url": {"env": "TIDEMARK_BENCH_ICEBERG_CATALOG"}},
    });
    let add = |name: &str, kind, config: serde_json::Value| {
        let pool = pool.clone();
        let name = name.to_string();
        async move {
            destinations::insert(
                &pool,
                &NewDestination {
                    organization_id: org,
                    kind,
                    name,
                    config,
                    enabled_tables: vec![Table::Events],
                    window_seconds: window,
                    grace_seconds: 0,
                    max_attempts: 3,
                    start_from: None,
                },
            )
            .await
            .unwrap()
        }
    };
    let parquet_dir = out.path().join("parquet");
    let runs = [
        add(
            "parquet",
            DestinationKind::ParquetS3,
            serde_json::json!({"url": format!("file://{}", parquet_dir.display())}),
        )
        .await,
        add("iceberg", DestinationKind::IcebergS3, iceberg_config.clone()).await,
        add(
            "parquet-again",
            DestinationKind::ParquetS3,
            serde_json::json!({"url": format!("file://{}/parquet-again", out.path().display())}),
        )
        .await,
    ];
    let registry = Arc::new(Registry::embedded());
    let (_, planned, errors) = tidemark::plan::plan_all(&pool, &source, &registry).await.unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    println!("planned {} destination × table entries", planned.len());

    for dest in &runs {
        let worker = Arc::new(Worker::new(
            pool.clone(),
            source.clone(),
            registry.clone(),
            WorkerOptions::default(),
        ));
        let filter = LeaseFilter {
            destination_id: Some(dest.id),
            ..LeaseFilter::default()
        };
        let t = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (worker, filter) = (worker.clone(), filter.clone());
                tokio::spawn(async move {
                    worker
                        .drain(&filter, None, &CancellationToken::new(), &|_| {})
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.extend(t.await.unwrap());
        }
        let secs = t.elapsed().as_secs_f64();
        let delivered = outcomes.iter().filter(|o| o.status == "delivered").count();
        let rows: u64 = outcomes.iter().map(|o| o.rows).sum();
        let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
        assert_eq!(delivered, outcomes.len(), "every delivery delivered");
        print!(
            "{:<14} {delivered:>4} deliveries  {rows:>8} rows  {:>7.1} MB  {secs:>7.1} s  {:>8.0} rows/s",
            dest.name,
            bytes as f64 / 1e6,
            rows as f64 / secs
        );
        if dest.kind == DestinationKind::IcebergS3 {
            let d = IcebergDestination::from_config(&dest.config).unwrap();
            let catalog = d.catalog().await.unwrap();
            let table = catalog
                .load_table(&d.table_ident(&registry.get(Table::Events, 1).unwrap()))
                .await
                .unwrap();
            let snapshots = table.metadata().snapshots().len();
            let summary = &table
                .metadata()
                .current_snapshot()
                .unwrap()
                .summary()
                .additional_properties;
            let total: u64 = summary
                .get("total-records")
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            assert_eq!(total, rows, "the table holds every delivered row once");
            let root = out.path().join("iceberg/tidemark/events_v1");
            let (meta_files, meta_bytes) = du(&root.join("metadata"), ".metadata.json");
            let (avro, avro_bytes) = du(&root.join("metadata"), ".avro");
            let last_meta = std::fs::metadata(table.metadata_location().unwrap().trim_start_matches("file://"))
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "  {snapshots} commits, {} data files; metadata: {meta_files} JSON files ({:.1} MB, current {:.0} kB), {avro} avro ({:.1} MB)",
                summary.get("total-data-files").map(String::as_str).unwrap_or("?"),
                meta_bytes as f64 / 1e6,
                last_meta as f64 / 1e3,
                avro_bytes as f64 / 1e6
            );
        } else {
            let dir = if dest.name == "parquet" {
                parquet_dir.clone()
            } else {
                out.path().join("parquet-again")
            };
            let (files, _) = du(&dir, ".parquet");
            println!("  {files} objects");
        }
    }
}
