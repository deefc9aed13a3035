//! Cold-storage benchmark on a throwaway Postgres (fsync off, like the tests): tombstoning
//! throughput against a plain `DELETE` of the same rows, and recall of one row by id from a
//! large archive.
//!
//! ```sh
//! . ~/.cache/tidemark/env   # TIDEMARK_PG_BIN / TIDEMARK_PG_USER (scripts/setup)
//! CARGO_TARGET_DIR=~/.cache/tidemark/target-release cargo run --release --example tombstone_bench -- \
//!     [--rows 600000] [--pad-archive 10000000] [--window 3600] [--batch 10000] [--recalls 20] \
//!     [--parallel 2] [--reps 1]
//! ```
//!
//! `--batch` and `--parallel` take comma-separated lists (`--parallel 1,2,3`): every
//! combination runs `--reps` times, interleaved (rep 1 of each, then rep 2 of each, with the
//! order rotated every rep), `events` restored from a pristine copy before each run; the
//! medians are printed at the end.
//!
//! 1. Generates `--rows` events (one organization, 30 days) and exports them as Parquet to a
//!    local directory in `--window` windows (one object per window).
//! 2. Copies `events` into `events_plain` (same columns and indexes; `events` has no DELETE
//!    trigger either), vacuums both and turns autovacuum off for the tables the timed phases
//!    write, so no phase pays for cleaning up after another.
//! 3. Times `DELETE FROM events_plain WHERE organization_id = … AND updated_at < cutoff` (one
//!    statement), and the same rows deleted in `--batch` batches by id (`DELETE … WHERE id =
//!    ANY($1)`), the shape a production purge would have.
//! 4. Times the tombstoning dry run and then `--execute` on `events` (same rows: all of them are
//!    proven): key walk, proof, binary COPY, canonical hash, DELETE + tombstone INSERT per batch,
//!    for every `--batch` × `--parallel` combination and repetition.
//! 5. Pads `cold_storage_archive` with synthetic tombstones of another organization up to
//!    `--pad-archive` rows, then times `--recalls` recalls of one random row by id (library call:
//!    tombstone lookup, Parquet read with row-group pruning and an id row filter, re-hash).
//!
//! Each timed phase starts after a CHECKPOINT and ends with one (timed), so it pays for writing
//! out the pages it dirtied and for nothing else. Besides wall time it prints the CPU seconds of
//! each phase (this process plus the processes
//! of its own Postgres cluster, from /proc): on a shared machine that figure moves far less
//! than wall time does.
use std::time::Instant;

use chrono::{Duration, Utc};
use tidemark::archive::proof::Scope;
use tidemark::archive::recall::{RecallRequest, Selector, recall};
use tidemark::archive::tombstone::{PassOptions, run_pass, source_now};
use tidemark::control::destinations::{self, DestinationKind, NewDestination};
use tidemark::control::outbox::LeaseFilter;
use tidemark::control::{self, APP_CONTROL, APP_EXTRACT};
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::reference::{self, GenerateSpec};
use tidemark::schema::{Registry, Table};
use tidemark::worker::{Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn list_arg(name: &str, default: &str) -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    let raw = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or(default);
    raw.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes numbers separated by commas"))
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(name: &str, default: i64) -> i64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let rows = arg("--rows", 600_000);
    let pad = arg("--pad-archive", 10_000_000);
    let window = arg("--window", 3600) as i32;
    let batches = list_arg("--batch", "10000");
    let batch = batches[0];
    let parallels = list_arg("--parallel", "2");
    let reps = arg("--reps", 1).max(1) as usize;
    let recalls = arg("--recalls", 20) as usize;

    let pg = EphemeralPostgres::start().expect("start postgres");
    let url = pg.create_database("app").await.unwrap();
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
            days: 30,
            end: Utc::now() - Duration::days(2),
            only_events: false,
        },
    )
    .await
    .unwrap();
    control::migrate(&pool).await.unwrap();
    let org = reference::organizations(&pool).await.unwrap()[0].0;
    eprintln!("generated {rows} events in {:.1}s", t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    destinations::insert(
        &pool,
        &NewDestination {
            organization_id: org,
            kind: DestinationKind::ParquetS3,
            name: "lake".into(),
            config: serde_json::json!({"url": format!("file://{}", dir.path().display())}),
            enabled_tables: vec![Table::Events],
            window_seconds: window,
            grace_seconds: 0,
            max_attempts: 3,
            start_from: None,
        },
    )
    .await
    .unwrap();
    let registry = std::sync::Arc::new(Registry::embedded());
    let t = Instant::now();
    tidemark::plan::plan_all(&pool, &source, &registry).await.unwrap();
    let worker = Worker::new(pool.clone(), source.clone(), registry.clone(), WorkerOptions::default());
    let outcomes = worker
        .drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    eprintln!(
        "exported {} windows in {:.1}s",
        outcomes.len(),
        t.elapsed().as_secs_f64()
    );

    sqlx::raw_sql(
        "CREATE TABLE events_plain (LIKE events INCLUDING ALL); INSERT INTO events_plain SELECT * FROM events; \
         CREATE TABLE events_pristine AS SELECT * FROM events",
    )
    .execute(&pool)
    .await
    .unwrap();
    vacuum(&pool, &["events", "events_plain", "warehouse_deliveries"]).await;
    // No autovacuum in the middle of a timed phase (it would clean up after the previous one).
    sqlx::raw_sql(
        "ALTER TABLE events SET (autovacuum_enabled = off); ALTER TABLE events_plain SET (autovacuum_enabled = off); \
         ALTER TABLE cold_storage_archive SET (autovacuum_enabled = off)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE organizations SET data_retention_days = 1")
        .execute(&pool)
        .await
        .unwrap();
    let now = source_now(&pool).await.unwrap();
    let cutoff = Scope::load(&pool, org, Table::Events, 1, now).await.unwrap().cutoff;

    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let postmaster: u32 = std::fs::read_to_string(format!("/proc/{backend}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|r| r.1.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);

    // Baseline 1: one DELETE statement.
    checkpoint(&pool).await;
    let c0 = cpu(postmaster);
    let t = Instant::now();
    let plain = sqlx::query("DELETE FROM events_plain WHERE organization_id = $1 AND updated_at < $2")
        .bind(org)
        .bind(cutoff)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    checkpoint(&pool).await;
    let plain_s = t.elapsed().as_secs_f64();
    let c1 = cpu(postmaster);
    let plain_cpu = (c1.0 - c0.0) + (c1.1 - c0.1);
    // Baseline 2: the same rows again, deleted in batches by id.
    sqlx::query("INSERT INTO events_plain SELECT * FROM events")
        .execute(&pool)
        .await
        .unwrap();
    vacuum(&pool, &["events_plain"]).await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events_plain ORDER BY updated_at, id")
        .fetch_all(&pool)
        .await
        .unwrap();
    checkpoint(&pool).await;
    let c0 = cpu(postmaster);
    let t = Instant::now();
    for chunk in ids.chunks(batch) {
        sqlx::query("DELETE FROM events_plain WHERE id = ANY($1)")
            .bind(chunk)
            .execute(&pool)
            .await
            .unwrap();
    }
    checkpoint(&pool).await;
    let batched_s = t.elapsed().as_secs_f64();
    let c1 = cpu(postmaster);
    let batched_cpu = (c1.0 - c0.0) + (c1.1 - c0.1);

    let options = PassOptions {
        execute: false,
        organization: Some(org),
        table: Some(Table::Events),
        limit: None,
        batch,
        parallel: parallels[0],
    };
    let t = Instant::now();
    let dry = run_pass(
        &pool,
        &registry,
        &options,
        Uuid::new_v4(),
        now,
        &CancellationToken::new(),
        &|_| {},
    )
    .await
    .unwrap();
    let dry_s = t.elapsed().as_secs_f64();
    assert_eq!(dry.totals.provable, plain);

    println!("rows                                   {plain}");
    println!(
        "plain DELETE, one statement            {plain_s:.2} s  {:>9.0} rows/s",
        plain as f64 / plain_s
    );
    println!(
        "plain DELETE, batches of {batch:<6} by id  {batched_s:.2} s  {:>9.0} rows/s",
        plain as f64 / batched_s
    );
    println!(
        "tombstone dry run                      {dry_s:.2} s  {:>9.0} rows/s",
        plain as f64 / dry_s
    );

    let mut configs: Vec<(usize, usize)> = Vec::new();
    for &b in &batches {
        for &p in &parallels {
            configs.push((b, p));
        }
    }
    // (wall s, tidemark CPU s, postgres CPU s) per configuration.
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); configs.len()];
    let mut first = true;
    for rep in 0..reps {
        for k in 0..configs.len() {
            let c = (k + rep) % configs.len();
            let (b, p) = configs[c];
            if !first {
                restore(&pool).await;
            }
            first = false;
            let options = PassOptions {
                execute: true,
                batch: b,
                parallel: p,
                ..options.clone()
            };
            let run_id = tidemark::archive::tombstone::start_run(&pool, now, serde_json::json!({"bench": true}))
                .await
                .unwrap();
            checkpoint(&pool).await;
            let (own0, pg0) = cpu(postmaster);
            let t = Instant::now();
            let done = run_pass(
                &pool,
                &registry,
                &options,
                run_id,
                now,
                &CancellationToken::new(),
                &|_| {},
            )
            .await
            .unwrap();
            checkpoint(&pool).await;
            let tomb_s = t.elapsed().as_secs_f64();
            let (own1, pg1) = cpu(postmaster);
            assert_eq!(done.totals.archived, plain);
            let tombstones: i64 = sqlx::query_scalar("SELECT count(DISTINCT row_id) FROM cold_storage_archive")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(tombstones as u64, plain, "one tombstone per row");
            let (own, pg) = (own1 - own0, pg1 - pg0);
            results[c].push((tomb_s, own, pg));
            println!(
                "tombstone --execute batch {b:<6} parallel {p}  rep {}  {tomb_s:.2} s  {:>9.0} rows/s  CPU {:.2} s \
                 (tidemark {own:.2}, postgres {pg:.2}) = {:.0} rows per CPU-second; {:.1}x one DELETE, \
                 {:.1}x batched DELETE; load average {}",
                rep + 1,
                plain as f64 / tomb_s,
                own + pg,
                plain as f64 / (own + pg),
                tomb_s / plain_s,
                tomb_s / batched_s,
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
            );
        }
    }
    println!(
        "CPU seconds (tidemark + its Postgres cluster): one DELETE {plain_cpu:.2}, batched DELETE {batched_cpu:.2}"
    );
    for (c, (b, p)) in configs.iter().enumerate() {
        let r = &results[c];
        let wall: Vec<f64> = r.iter().map(|x| x.0).collect();
        let own: Vec<f64> = r.iter().map(|x| x.1).collect();
        let pg: Vec<f64> = r.iter().map(|x| x.2).collect();
        let total: Vec<f64> = r.iter().map(|x| x.1 + x.2).collect();
        println!(
            "median of {} runs: batch {b:<6} parallel {p}  {:.2} s  {:>9.0} rows/s (runs: {})  CPU {:.2} s (tidemark {:.2}, \
             postgres {:.2}) = {:.0} rows per CPU-second",
            r.len(),
            median(&wall),
            plain as f64 / median(&wall),
            wall.iter()
                .map(|w| format!("{:.0}", plain as f64 / w))
                .collect::<Vec<_>>()
                .join(", "),
            median(&total),
            median(&own),
            median(&pg),
            plain as f64 / median(&total),
        );
    }

    // Recall of one row by id from a padded archive.
    let t = Instant::now();
    if pad > plain as i64 {
        let extra = pad - plain as i64;
        sqlx::raw_sql(&format!(
            "ALTER TABLE cold_storage_archive DROP CONSTRAINT cold_storage_archive_pkey; \
             DROP INDEX cold_storage_archive_brin; \
             INSERT INTO cold_storage_archive (organization_id, \"table\", row_id, row_updated_at, row_sha256, schema_version, \
               delivery_id, run_id, archived_at) \
             SELECT '00000000-0000-0000-0000-00000000beef'::uuid, 'EVENTS', md5('pad' || i)::uuid, \
               now() - (i || ' seconds')::interval, sha256(int8send(i)), 1, md5('d' || (i / 5000))::uuid, \
               '00000000-0000-0000-0000-00000000cafe'::uuid, now() \
             FROM generate_series(1, {extra}) i; \
             ALTER TABLE cold_storage_archive ADD PRIMARY KEY (organization_id, \"table\", row_id, archived_at); \
             CREATE INDEX cold_storage_archive_brin ON cold_storage_archive \
               USING brin (organization_id, row_updated_at, archived_at) WITH (autosummarize = on)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        vacuum(&pool, &["cold_storage_archive"]).await;
    }
    let archive_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cold_storage_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!(
        "archive padded to {archive_rows} tombstones in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let picks: Vec<Uuid> = sqlx::query_scalar(
        "SELECT row_id FROM cold_storage_archive WHERE organization_id = $1 ORDER BY md5(row_id::text) LIMIT $2",
    )
    .bind(org)
    .bind(recalls as i64)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut times = Vec::new();
    for id in picks {
        let request = RecallRequest {
            organization_id: org,
            table: Table::Events,
            selector: Selector::Id(id),
            restore: false,
        };
        let t = Instant::now();
        let mut verified = 0;
        let summary = recall(&pool, &registry, &request, &mut |r| {
            verified += usize::from(r.verified);
            Ok(())
        })
        .await
        .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!((summary.tombstones, verified), (1, 1));
    }
    times.sort_by(f64::total_cmp);
    let objects: Vec<u64> = walk(dir.path());
    println!(
        "recall one row by id                   median {:.1} ms, max {:.1} ms over {} recalls; archive {archive_rows} tombstones, \
         objects {} of {:.0} rows / {:.0} kB on average",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len(),
        objects.len(),
        plain as f64 / objects.len().max(1) as f64,
        objects.iter().sum::<u64>() as f64 / objects.len().max(1) as f64 / 1e3
    );
}

/// CPU seconds used so far by this process and by the processes of our Postgres cluster (the
/// postmaster and its children; other clusters on the machine are not counted), from utime +
/// stime in /proc at the usual 100 ticks per second: a figure that noisy neighbours distort far
/// less than wall time.
fn cpu(postmaster: u32) -> (f64, f64) {
    // (ppid, utime + stime) of a /proc/<pid>/stat line.
    fn ticks(stat: &str) -> Option<(u32, f64)> {
        let rest = stat.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((
            f.get(1)?.parse().ok()?,
            f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?,
        ))
    }
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| ticks(&s))
        .map(|t| t.1)
        .unwrap_or(0.0);
    let mut pg = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid: Option<u32> = e.file_name().to_str().and_then(|n| n.parse().ok());
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some((ppid, t)) = ticks(&stat)
            && (ppid == postmaster || pid == Some(postmaster))
        {
            pg += t;
        }
    }
    (own / 100.0, pg / 100.0)
}

/// Puts `events` back as it was before the first pass (same rows and `updated_at`, the touch
/// trigger off while copying; a fresh heap and indexes, vacuumed and analyzed) and empties the
/// archive, for the next timed pass.
async fn restore(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "TRUNCATE cold_storage_archive, cold_storage_proofs; TRUNCATE events; \
         ALTER TABLE events DISABLE TRIGGER USER; INSERT INTO events SELECT * FROM events_pristine; \
         ALTER TABLE events ENABLE TRIGGER USER",
    )
    .execute(pool)
    .await
    .unwrap();
    vacuum(pool, &["events", "cold_storage_archive"]).await;
}

/// Each timed phase starts clean and pays for writing out its own dirty pages.
async fn checkpoint(pool: &sqlx::PgPool) {
    sqlx::raw_sql("CHECKPOINT").execute(pool).await.unwrap();
}

async fn vacuum(pool: &sqlx::PgPool, tables: &[&str]) {
    for t in tables {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {t}"))
            .execute(pool)
            .await
            .unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            sizes.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            sizes.push(e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    sizes
}
