//! Test harness: real services only. A throwaway Postgres cluster per test (from the
//! installed binaries), moto_server for S3 when a test needs it, and the independent Python
//! verifier (`tests/py/verify_export.py`) for every exported file.
//!
//! Without the services (`scripts/setup` not run) tests print why and return early, unless
//! `TIDEMARK_REQUIRE_SERVICES=1` (set by the README's test command and CI), which turns a
//! missing service into a failure.

#![allow(dead_code)]

pub mod conformance;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use tidemark::control::destinations::{self, Destination, DestinationKind, NewDestination};
use tidemark::control::{self, APP_CONTROL, APP_EXTRACT, outbox::LeaseFilter};
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::reference::{self, GenerateSpec};
use tidemark::schema::{Registry, Table};
use tidemark::worker::{Outcome, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn require_services() -> bool {
    std::env::var("TIDEMARK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Returns `None` (and says why) when a service is missing and not required.
pub fn skip(why: &str) -> Option<()> {
    if require_services() {
        panic!("required test service missing: {why}");
    }
    eprintln!("SKIPPED: {why} (run scripts/setup, or use the README's test command)");
    None
}

pub fn python() -> Option<PathBuf> {
    match std::env::var("TIDEMARK_PYTHON") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => skip("TIDEMARK_PYTHON (the verifier's venv) is not set").map(|_| PathBuf::new()),
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixed end of generated data: far in the past, so every window of it is closed.
pub fn data_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

pub struct Env {
    pub pg: EphemeralPostgres,
    pub url: String,
    pub control: PgPool,
    pub source: PgPool,
    pub registry: Arc<Registry>,
    pub orgs: Vec<Uuid>,
}

impl Env {
    /// A fresh cluster with the reference schema, generated data and a migrated control plane.
    pub async fn start(rows: i64, days: i32) -> Option<Env> {
        if tidemark::ephemeral::find_bindir().is_err() {
            skip("no PostgreSQL server binaries")?;
        }
        let pg = EphemeralPostgres::start().expect("start postgres");
        let url = pg.create_database("app").await.expect("create db");
        let control = control::connect(&url, APP_CONTROL, 8).await.unwrap();
        let source = control::connect(&url, APP_EXTRACT, 8).await.unwrap();
        reference::install(&control).await.unwrap();
        reference::generate(
            &control,
            &GenerateSpec {
                seed: 7,
                organizations: 3,
                rows,
                days,
                end: data_end(),
                only_events: false,
            },
        )
        .await
        .unwrap();
        control::migrate(&control).await.unwrap();
        let orgs = reference::organizations(&control)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Some(Env {
            pg,
            url,
            control,
            source,
            registry: Arc::new(Registry::embedded()),
            orgs,
        })
    }

    pub async fn add_destination(
        &self,
        org: Uuid,
        kind: DestinationKind,
        name: &str,
        config: serde_json::Value,
        tables: &[Table],
        window_seconds: i32,
        max_attempts: i32,
    ) -> Destination {
        destinations::insert(
            &self.control,
            &NewDestination {
                organization_id: org,
                kind,
                name: name.into(),
                config,
                enabled_tables: tables.to_vec(),
                window_seconds,
                grace_seconds: 0,
                max_attempts,
                start_from: None,
            },
        )
        .await
        .unwrap()
    }

    /// A `PARQUET_S3` destination named "p" on a fresh local directory (kept alive by the
    /// returned `TempDir`); returns the directory and the destination.
    pub async fn local_parquet(
        &self,
        org: Uuid,
        tables: &[Table],
        window_seconds: i32,
        max_attempts: i32,
    ) -> (tempfile::TempDir, PathBuf, Destination) {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("p");
        let config = serde_json::json!({"url": format!("file://{}", dir.display())});
        let d = self
            .add_destination(
                org,
                DestinationKind::ParquetS3,
                "p",
                config,
                tables,
                window_seconds,
                max_attempts,
            )
            .await;
        (out, dir, d)
    }

    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker::new(
            self.control.clone(),
            self.source.clone(),
            self.registry.clone(),
            options,
        )
    }

    pub async fn plan(&self) -> Vec<tidemark::plan::PlannedTable> {
        let (_, planned, errors) = tidemark::plan::plan_all(&self.control, &self.source, &self.registry)
            .await
            .unwrap();
        assert!(errors.is_empty(), "planning errors: {errors:?}");
        planned
    }

    /// Plans, then delivers everything due with one worker.
    pub async fn run_until_idle(&self, options: WorkerOptions) -> Vec<Outcome> {
        self.plan().await;
        let w = self.worker(options);
        w.drain(&LeaseFilter::default(), None, &CancellationToken::new(), &|_| {})
            .await
            .unwrap()
    }

    /// The delete scenario every warehouse kind's delete test runs: X (the oldest event of
    /// `org`) is deleted, its last row kept in table `kept_events` so a test can replay it;
    /// Y (the newest) is deleted and re-inserted by one transaction (a tie on `updated_at`).
    /// The destination's window then shrinks to 1 s, so the deletes' windows close at once,
    /// and everything due is delivered (every outcome must be `delivered`).
    pub async fn delete_x_and_reinsert_y(&self, org: Uuid, destination_id: Uuid) -> DeleteScenario {
        let (x, x_updated_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
            "SELECT id, updated_at FROM events WHERE organization_id = $1 ORDER BY updated_at, id LIMIT 1",
        )
        .bind(org)
        .fetch_one(&self.control)
        .await
        .unwrap();
        let y: Uuid =
            sqlx::query_scalar("SELECT id FROM events WHERE organization_id = $1 ORDER BY updated_at DESC, id LIMIT 1")
                .bind(org)
                .fetch_one(&self.control)
                .await
                .unwrap();
        sqlx::raw_sql("CREATE TABLE kept_events AS SELECT * FROM events WHERE false")
            .execute(&self.control)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept_events SELECT * FROM events WHERE id = $1")
            .bind(x)
            .execute(&self.control)
            .await
            .unwrap();
        sqlx::query("DELETE FROM events WHERE id = $1")
            .bind(x)
            .execute(&self.control)
            .await
            .unwrap();
        let mut tx = self.control.begin().await.unwrap();
        for sql in [
            "CREATE TEMP TABLE y ON COMMIT DROP AS SELECT * FROM events WHERE id = $1",
            "DELETE FROM events WHERE id = $1",
        ] {
            sqlx::query(sql).bind(y).execute(&mut *tx).await.unwrap();
        }
        sqlx::query("INSERT INTO events SELECT * FROM y")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("UPDATE warehouse_destinations SET window_seconds = 1 WHERE id = $1")
            .bind(destination_id)
            .execute(&self.control)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let second = self.run_until_idle(fast_options()).await;
        assert!(
            !second.is_empty() && second.iter().all(|o| o.status == "delivered"),
            "{second:#?}"
        );
        DeleteScenario {
            x,
            x_updated_at,
            y,
            outcomes: second,
        }
    }

    /// `tidemark` CLI against this environment.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        c.env("TIDEMARK_DATABASE_URL", &self.url)
            .env_remove("TIDEMARK_SOURCE_URL")
            .env("TIDEMARK_LOG", "warn");
        c
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.control).await.unwrap()
    }
}

/// What [`Env::delete_x_and_reinsert_y`] did.
pub struct DeleteScenario {
    /// Deleted; its last row is in `kept_events`.
    pub x: Uuid,
    pub x_updated_at: DateTime<Utc>,
    /// Deleted and re-inserted in one transaction.
    pub y: Uuid,
    /// The run that delivered the deletes.
    pub outcomes: Vec<Outcome>,
}

pub fn fast_options() -> WorkerOptions {
    WorkerOptions {
        lease_ttl: Duration::from_secs(30),
        retry_base: Duration::from_millis(0),
        retry_cap: Duration::from_secs(1),
        ..WorkerOptions::default()
    }
}

/// Runs the independent verifier; panics with its report unless the files equal the source.
pub fn verify(
    env: &Env,
    table: Table,
    org: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: &str,
    files: &[PathBuf],
) -> serde_json::Value {
    verify_version(env, table, 1, org, from, to, format, files)
}

/// [`verify`] of files that hold current rows only (an analyst table read back): the
/// published columns without `_op`, no delete rows (`verify_export.py --current`).
pub fn verify_current(
    env: &Env,
    table: Table,
    org: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: &str,
    files: &[PathBuf],
) -> serde_json::Value {
    verify_with(env, table, 1, org, from, to, format, files, &["--current"])
}

/// [`verify`] against published schema `v<version>` of the table.
pub fn verify_version(
    env: &Env,
    table: Table,
    version: u32,
    org: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: &str,
    files: &[PathBuf],
) -> serde_json::Value {
    verify_with(env, table, version, org, from, to, format, files, &[])
}

#[allow(clippy::too_many_arguments)]
fn verify_with(
    env: &Env,
    table: Table,
    version: u32,
    org: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    format: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> serde_json::Value {
    let py = python().expect("python");
    let schema = repo().join(format!("schemas/{}/v{version}.json", table.name()));
    let out = Command::new(py)
        .arg(repo().join("tests/py/verify_export.py"))
        .args(["--dsn", &env.url, "--schema"])
        .arg(&schema)
        .args([
            "--org",
            &org.to_string(),
            "--from",
            &from.to_rfc3339(),
            "--to",
            &to.to_rfc3339(),
            "--format",
            format,
            "--duckdb",
        ])
        .args(extra)
        .args(files)
        .output()
        .expect("run verifier");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verifier printed no JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["ok"] == true,
        "verifier found differences for {table}: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// Every file under `dir` with extension `ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// moto_server on loopback: a real S3 protocol server (multipart, conditional puts).
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start_on(port: u16) -> Option<Moto> {
        let bin = match std::env::var("TIDEMARK_MOTO_SERVER") {
            Ok(b) if Path::new(&b).is_file() => b,
            _ => {
                skip("TIDEMARK_MOTO_SERVER is not set")?;
                unreachable!()
            }
        };
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, port })
    }

    pub fn start() -> Option<Moto> {
        Moto::start_on(free_port())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let py = python().expect("python");
        let status = Command::new(py)
            .args([
                "-c",
                "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket=sys.argv[2])",
                &self.endpoint(),
                bucket,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "create bucket");
    }

    /// Config of an S3 destination on this server; credentials by env reference.
    pub fn config(&self, bucket: &str, prefix: &str) -> serde_json::Value {
        // SAFETY of the test process environment: every test sets the same values.
        unsafe {
            std::env::set_var("TIDEMARK_TEST_S3_KEY", "test");
            std::env::set_var("TIDEMARK_TEST_S3_SECRET", "test");
        }
        serde_json::json!({
            "url": format!("s3://{bucket}/{prefix}"),
            "endpoint": self.endpoint(),
            "allow_http": true,
            "region": "us-east-1",
            "access_key_id": {"env": "TIDEMARK_TEST_S3_KEY"},
            "secret_access_key": {"env": "TIDEMARK_TEST_S3_SECRET"},
            "max_retries": 0,
            "request_timeout_seconds": 5
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Downloads every object under `prefix` of an object destination into `dir`, keeping keys.
pub async fn download(
    store: Arc<dyn object_store::ObjectStore>,
    prefix: &object_store::path::Path,
    dir: &Path,
) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let objects: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
    let mut keys = Vec::new();
    for meta in objects {
        let bytes = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
        let path = dir.join(meta.location.as_ref());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        keys.push(meta.location.to_string());
    }
    keys.sort();
    keys
}
