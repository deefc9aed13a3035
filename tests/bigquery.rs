//! BIGQUERY against bqemulator (REST on loopback, DuckDB underneath), read back with Google's
//! own Python client (`tests/py/bq_read.py`) and compared with the source rows by the
//! independent verifier (`tests/py/verify_export.py`).
//!
//! The emulator does not check credentials: authentication is tested against a small local
//! OAuth2 token endpoint that really verifies the RS256 JWT tidemark signs (see
//! `TokenServer`). It also ignores the job id of media uploads (it mints its own), so the
//! "retry finds its load job" path cannot be shown here; the retry tests cover the query jobs
//! (whose ids it keeps) and the NOT EXISTS guard that holds even when every job id is lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use common::conformance::{Target, suite};
use common::*;
use serde_json::{Value, json};
use tidemark::control::destinations::DestinationKind;
use tidemark::deliver::{DeliveryContext, Fence};
use tidemark::extract::{self, WindowQuery};
use tidemark::schema::Table;
use tidemark::worker::WorkerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const PROJECT: &str = "test-project";

/// bqemulator on free loopback ports, from the venv `scripts/setup` made.
struct BqEmulator {
    child: Child,
    port: u16,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl BqEmulator {
    fn start() -> Option<BqEmulator> {
        let bin = match std::env::var("TIDEMARK_BQEMULATOR") {
            Ok(b) if Path::new(&b).is_file() => PathBuf::from(b),
            _ => {
                skip("TIDEMARK_BQEMULATOR is not set")?;
                unreachable!()
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let (port, grpc) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        let child = Command::new(&bin)
            .args(["start", "--rest-host", "127.0.0.1", "--rest-port", &port.to_string()])
            .args(["--grpc-host", "127.0.0.1", "--grpc-port", &grpc.to_string()])
            .args([
                "--project",
                PROJECT,
                "--log-format",
                "console",
                "--log-level",
                "warning",
            ])
            .env("BQEMU_GCS_LOCAL_ROOT", dir.path().join("gcs"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bqemulator");
        let emu = BqEmulator {
            child,
            port,
            bin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                    break;
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(emu._dir.path().join("emulator.log")).unwrap_or_default();
                panic!("bqemulator did not become healthy:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(emu)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn python(&self) -> PathBuf {
        self.bin.parent().unwrap().join("python")
    }

    fn reader(&self) -> Command {
        let mut c = Command::new(self.python());
        c.arg(repo().join("tests/py/bq_read.py"))
            .args(["--endpoint", &self.endpoint(), "--project", PROJECT]);
        c
    }

    /// Rows of a query through google-cloud-bigquery, every value as JSON.
    fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let out = self.reader().args(["query", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "query failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        serde_json::from_value(v["rows"].clone()).unwrap()
    }

    fn count(&self, sql: &str) -> u64 {
        self.query(sql)[0][0].as_str().unwrap().parse().unwrap()
    }

    /// The published columns of `dataset.table` as Parquet with the published Arrow types.
    fn export(&self, table: Table, bq_table: &str, out: &Path) -> Value {
        let schema = repo().join(format!("schemas/{}/v1.json", table.name()));
        let res = self
            .reader()
            .args(["export", "--schema"])
            .arg(&schema)
            .args(["--table", bq_table, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "export of {bq_table} failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        serde_json::from_slice(&res.stdout).unwrap()
    }

    /// A raw REST call, independent of tidemark's client.
    async fn rest(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}{path}", self.endpoint());
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn config(&self, dataset: &str) -> Value {
        // SAFETY of the test process environment: every test sets the same value.
        unsafe { std::env::set_var("TIDEMARK_TEST_BQ_TOKEN", "emulator-accepts-any-token") };
        json!({
            "project": PROJECT,
            "dataset": dataset,
            "base_url": self.endpoint(),
            "allow_http": true,
            "access_token": {"env": "TIDEMARK_TEST_BQ_TOKEN"},
            "request_timeout_seconds": 60,
            "job_timeout_seconds": 120,
        })
    }
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn verify_range() -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    (
        data_end() - ChronoDuration::days(3),
        data_end() + ChronoDuration::days(1),
    )
}

/// Exports the analyst table of `table` and has the independent verifier compare it with the
/// source rows of `org`.
fn verify_analyst(env: &Env, emu: &BqEmulator, dataset: &str, table: Table, org: Uuid, dir: &Path) -> Value {
    let out = dir.join(format!("{}.parquet", table.name()));
    let exported = emu.export(table, &format!("{dataset}.{}_v1", table.name()), &out);
    let (from, to) = verify_range();
    let report = verify_current(env, table, org, from, to, "parquet", &[out]);
    assert_eq!(report["file_rows"], exported["rows"]);
    exported
}

/// Sets values at the edges of each type on a few source rows of `org`, keeping their
/// `updated_at` (the reference schema's trigger would move it to now()).
async fn set_edge_values(env: &Env, org: Uuid) {
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let nth = |table: &str, n: i64| {
        format!("(SELECT id FROM {table} WHERE organization_id = '{org}' ORDER BY updated_at, id OFFSET {n} LIMIT 1)")
    };
    let updates = [
        format!(
            "UPDATE events SET severity = 32767, clock_skew_ms = -2147483648, bytes_in = 9223372036854775807, \
             risk_score = 9999.99, actor_ip = '2001:db8::1/64', tags = '{{}}', \
             payload = '{{\"a\": {{\"b\": [1, 2.5, {{\"c\": null}}]}}, \"u\": \"Zürich 東京 🚀 \\\"q\\\"\", \"n\": 12345678901234567, \"t\": true}}', \
             occurred_at = '1900-01-01 00:00:00.000001+00' WHERE id = {}",
            nth("events", 0)
        ),
        format!(
            "UPDATE events SET severity = -32768, risk_score = -9999.99, actor_ip = '10.0.0.0/8', \
             tags = ARRAY['a,b', '\"quoted\"', '東京', ''], payload = 'null', bytes_in = NULL WHERE id = {}",
            nth("events", 1)
        ),
        format!(
            "UPDATE events SET payload = '\"just a string\"' WHERE id = {}",
            nth("events", 2)
        ),
        format!(
            "UPDATE siem_deliveries SET latency_ms = 'NaN', ingest_cost_usd = 999999999999999.999999999, \
             response = '[]' WHERE id = {}",
            nth("siem_deliveries", 0)
        ),
        format!(
            "UPDATE siem_deliveries SET latency_ms = '-0', ingest_cost_usd = -0.000000001, response = NULL WHERE id = {}",
            nth("siem_deliveries", 1)
        ),
        format!(
            "UPDATE siem_deliveries SET latency_ms = 1.7976931348623157e308 WHERE id = {}",
            nth("siem_deliveries", 2)
        ),
        format!(
            "UPDATE assets SET first_seen = '9999-12-31', hostname = 'ünïcødé-ホスト-\u{1F680}', tags = '{{}}' WHERE id = {}",
            nth("assets", 0)
        ),
        format!(
            "UPDATE assets SET first_seen = '0001-01-01' WHERE id = {}",
            nth("assets", 1)
        ),
    ];
    for sql in updates {
        let n = sqlx::query(&sql).execute(&mut *tx).await.unwrap().rows_affected();
        assert_eq!(n, 1, "{sql}");
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_and_type_lands_in_raw_and_analyst_tables_equal_to_the_source() {
    let Some(env) = Env::start(1_500, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let Some(emu) = BqEmulator::start() else { return };
    let org = env.orgs[0];
    set_edge_values(&env, org).await;
    env.add_destination(
        org,
        DestinationKind::Bigquery,
        "bq",
        emu.config("tidemark"),
        &Table::ALL,
        86_400,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    assert!(env.run_until_idle(fast_options()).await.is_empty());

    let out = tempfile::tempdir().unwrap();
    for table in Table::ALL {
        let exported = verify_analyst(&env, &emu, "tidemark", table, org, out.path());
        let source = env
            .count(&format!(
                "SELECT count(*) FROM {} WHERE organization_id = '{org}'",
                table.name()
            ))
            .await as u64;
        assert_eq!(exported["rows"].as_u64().unwrap(), source, "{table}");
        // The raw table holds every delivered version: here each row once.
        let raw = emu.count(&format!("SELECT count(*) FROM `tidemark`.`{}_v1_raw`", table.name()));
        assert_eq!(raw, source, "{table} raw");
        let distinct = emu.count(&format!(
            "SELECT count(DISTINCT id) FROM `tidemark`.`{}_v1_latest`",
            table.name()
        ));
        assert_eq!(distinct, source, "{table} latest view");
        // Column types as BigQuery reports them.
        let types: std::collections::HashMap<String, String> = exported["table_schema"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(types["id"], "STRING");
        assert_eq!(types["updated_at"], "TIMESTAMP");
        assert_eq!(types["_tidemark_delivery_id"], "STRING");
        if table == Table::Events {
            assert_eq!(types["tags"], "STRING"); // REPEATED, see mode
            assert_eq!(types["risk_score"], "NUMERIC");
            assert_eq!(types["severity"], "INTEGER");
        }
    }
    // Edge values came back as such (the verifier compared them; spot-check a few in SQL).
    let rows = emu.query(
        "SELECT severity, bytes_in, risk_score, ARRAY_LENGTH(tags), TO_JSON_STRING(payload) FROM `tidemark`.`events_v1` \
         WHERE severity IN (32767, -32768) ORDER BY severity",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "-32768");
    assert_eq!(rows[0][3], "4");
    assert_eq!(rows[0][4], "null");
    assert_eq!(rows[1][1], "9223372036854775807");
    assert_eq!(rows[1][3], "0");

    // Receipts: job ids derived from the delivery, MERGE counts, the Parquet's hash.
    let receipts: Vec<(Uuid, Value)> =
        sqlx::query_as("SELECT id, receipt FROM warehouse_deliveries WHERE status = 'delivered' AND row_count > 0")
            .fetch_all(&env.control)
            .await
            .unwrap();
    assert!(!receipts.is_empty());
    for (id, r) in &receipts {
        let d = id.simple().to_string();
        assert_eq!(r["kind"], "BIGQUERY");
        assert_eq!(r["merge_job"]["job_id"], format!("tidemark_{d}_merge_0"), "{r:#}");
        assert_eq!(r["raw_insert_job"]["job_id"], format!("tidemark_{d}_raw_0"), "{r:#}");
        assert_eq!(r["raw_insert_job"]["dml_affected_rows"], r["rows"].to_string(), "{r:#}");
        assert_eq!(r["merge_job"]["reused"], false);
        assert_eq!(r["parquet_sha256"].as_str().unwrap().len(), 64);
        assert!(r["load_job"]["job_id"].is_string(), "{r:#}");
    }
    // No stage table is left behind.
    let (_, tables) = emu.rest(reqwest::Method::GET, "/datasets/tidemark/tables", None).await;
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tableReference"]["tableId"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 30, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with("_tidemark_stage")), "{names:?}");
}

/// Delivers one window of `table` with a fixed delivery id, outside the outbox.
async fn deliver_once(
    env: &Env,
    config: &Value,
    table: Table,
    org: Uuid,
    delivery_id: Uuid,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> tidemark::error::Result<tidemark::deliver::Delivered> {
    let dest = tidemark::deliver::build(DestinationKind::Bigquery, config).unwrap();
    let schema = env.registry.get(table, 1).unwrap();
    let query = WindowQuery {
        schema: &schema,
        organization_id: org,
        start,
        end,
    };
    let (batches, stats) = extract::extract(env.source.clone(), query, 500);
    let ctx = DeliveryContext {
        delivery_id,
        organization_id: org,
        schema: &schema,
        window_start: start,
        window_end: end,
        fence: Fence::unfenced(),
    };
    let done = dest.deliver(&ctx, batches).await;
    let stats = stats.await.unwrap();
    if let Ok(d) = &done {
        assert_eq!(d.rows, stats.rows);
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_finds_its_jobs_and_never_loads_twice() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let Some(emu) = BqEmulator::start() else { return };
    let org = env.orgs[0];
    let config = emu.config("retry");
    let (start, end) = (data_end() - ChronoDuration::days(2), data_end());
    let delivery = Uuid::new_v4();
    let d = delivery.simple().to_string();
    let counts = || {
        (
            emu.count("SELECT count(*) FROM `retry`.`events_v1_raw`"),
            emu.count("SELECT count(*) FROM `retry`.`events_v1`"),
        )
    };

    let first = deliver_once(&env, &config, Table::Events, org, delivery, start, end)
        .await
        .unwrap();
    assert!(first.rows > 100, "{}", first.rows);
    let after_first = counts();
    assert_eq!(after_first, (first.rows, first.rows));

    // 1. The worker died after the MERGE: the retry finds the MERGE job and loads nothing.
    let again = deliver_once(&env, &config, Table::Events, org, delivery, start, end)
        .await
        .unwrap();
    assert_eq!(again.receipt["merge_job"]["job_id"], format!("tidemark_{d}_merge_0"));
    assert_eq!(again.receipt["merge_job"]["reused"], true, "{:#}", again.receipt);
    assert!(again.receipt.get("load_job").is_none(), "{:#}", again.receipt);
    assert_eq!(again.rows, first.rows);
    assert_eq!(counts(), after_first);

    // 2. It died between the raw INSERT and the MERGE (the MERGE job is gone): the INSERT job
    //    is found and reused, the MERGE runs again and changes nothing.
    let (s, _) = emu
        .rest(
            reqwest::Method::DELETE,
            &format!("/jobs/tidemark_{d}_merge_0/delete"),
            None,
        )
        .await;
    assert!(s < 300, "jobs.delete: {s}");
    let again = deliver_once(&env, &config, Table::Events, org, delivery, start, end)
        .await
        .unwrap();
    assert_eq!(again.receipt["raw_insert_job"]["reused"], true, "{:#}", again.receipt);
    assert_eq!(again.receipt["merge_job"]["reused"], false);
    assert_eq!(
        again.receipt["merge_job"]["dml_affected_rows"], "0",
        "{:#}",
        again.receipt
    );
    assert_eq!(counts(), after_first);

    // 3. Every job id is lost: the window is loaded into the stage again, and the raw INSERT's
    //    NOT EXISTS guard keeps the raw table from a second copy.
    for step in ["merge", "raw"] {
        emu.rest(
            reqwest::Method::DELETE,
            &format!("/jobs/tidemark_{d}_{step}_0/delete"),
            None,
        )
        .await;
    }
    let again = deliver_once(&env, &config, Table::Events, org, delivery, start, end)
        .await
        .unwrap();
    assert_eq!(again.receipt["load_job"]["reused"], false, "{:#}", again.receipt);
    assert_eq!(
        again.receipt["raw_insert_job"]["dml_affected_rows"], "0",
        "{:#}",
        again.receipt
    );
    assert_eq!(
        again.receipt["merge_job"]["dml_affected_rows"], "0",
        "{:#}",
        again.receipt
    );
    assert_eq!(counts(), after_first);

    // 4. A failed job of a step is skipped: the next attempt uses the next id.
    emu.rest(
        reqwest::Method::DELETE,
        &format!("/jobs/tidemark_{d}_merge_0/delete"),
        None,
    )
    .await;
    emu.rest(
        reqwest::Method::POST,
        "/jobs",
        Some(json!({"jobReference": {"projectId": PROJECT, "jobId": format!("tidemark_{d}_merge_0")},
                    "configuration": {"query": {"query": "SELECT * FROM `retry`.`no_such_table`", "useLegacySql": false}}})),
    )
    .await;
    let again = deliver_once(&env, &config, Table::Events, org, delivery, start, end)
        .await
        .unwrap();
    assert_eq!(again.receipt["merge_job"]["job_id"], format!("tidemark_{d}_merge_1"));
    assert_eq!(counts(), after_first);

    // A second delivery of a later window with a newer version of a row: the analyst table
    // keeps one row per id, the newest; raw keeps both versions.
    let id: Uuid = sqlx::query_scalar(
        "UPDATE events SET severity = 5 WHERE id = (SELECT id FROM events WHERE organization_id = $1 ORDER BY updated_at LIMIT 1) RETURNING id",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let second = deliver_once(
        &env,
        &config,
        Table::Events,
        org,
        Uuid::new_v4(),
        end,
        now + ChronoDuration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(second.rows, 1);
    assert_eq!(counts(), (first.rows + 1, first.rows));
    let rows = emu.query(&format!(
        "SELECT severity, updated_at FROM `retry`.`events_v1` WHERE id = '{id}'"
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "5");
    let latest = emu.query(&format!(
        "SELECT severity FROM `retry`.`events_v1_latest` WHERE id = '{id}'"
    ));
    assert_eq!(latest, vec![vec![json!("5")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_lands_rows_through_insert_all() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let Some(emu) = BqEmulator::start() else { return };
    let org = env.orgs[0];
    let mut config = emu.config("streamed");
    config["mode"] = "stream".into();
    let tables = [Table::Events, Table::SiemDeliveries, Table::Assets];
    env.add_destination(org, DestinationKind::Bigquery, "bqs", config, &tables, 86_400, 3)
        .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let out = tempfile::tempdir().unwrap();
    for table in tables {
        verify_analyst(&env, &emu, "streamed", table, org, out.path());
        let raw = emu.count(&format!("SELECT count(*) FROM `streamed`.`{}_v1_raw`", table.name()));
        let source = env
            .count(&format!(
                "SELECT count(*) FROM {} WHERE organization_id = '{org}'",
                table.name()
            ))
            .await as u64;
        assert_eq!(raw, source);
    }
    let r: Value = sqlx::query_scalar("SELECT receipt FROM warehouse_deliveries WHERE row_count > 0 LIMIT 1")
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(r["mode"], "stream");
    assert!(r["streamed_rows"].as_u64().unwrap() > 0);
    assert!(r.get("load_job").is_none());
}

/// A minimal OAuth2 token endpoint (RFC 7523 JWT bearer grant) that verifies the assertion's
/// RS256 signature against one public key, its audience, issuer and scope, like Google's.
struct TokenServer {
    port: u16,
    exchanges: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const EMAIL: &str = "tidemark-loader@test-project.iam.gserviceaccount.com";

async fn token_server(public_pem: Vec<u8>) -> TokenServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let exchanges = Arc::new(AtomicUsize::new(0));
    let counter = exchanges.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let key = public_pem.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(&buf[head_end..head_end + len])
                        .into_owned()
                        .collect();
                let token_uri = format!("http://127.0.0.1:{port}/token");
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                validation.set_audience(&[token_uri]);
                validation.set_issuer(&[EMAIL]);
                let verdict = jsonwebtoken::DecodingKey::from_rsa_pem(&key).ok().and_then(|k| {
                    (form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:jwt-bearer"))
                        .then_some(())?;
                    let claims = jsonwebtoken::decode::<Value>(form.get("assertion")?, &k, &validation).ok()?;
                    (claims.claims["scope"] == "https://www.googleapis.com/auth/bigquery").then_some(())
                });
                let (status, body) = match verdict {
                    Some(()) => {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        (
                            "200 OK",
                            json!({"access_token": format!("ya29.test-{n}"), "expires_in": 3599, "token_type": "Bearer"}),
                        )
                    }
                    None => (
                        "400 Bad Request",
                        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
                    ),
                };
                let body = body.to_string();
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    TokenServer { port, exchanges, task }
}

/// Two RSA keys (PKCS#8 PEM, as in Google key files) and the first one's public key.
fn make_keys(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (good, other, public) = (dir.join("good.pem"), dir.join("other.pem"), dir.join("pub.pem"));
    for k in [&good, &other] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            k.to_str().unwrap(),
        ]);
    }
    openssl(&[
        "pkey",
        "-in",
        good.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (good, other, public)
}

fn openssl(args: &[&str]) {
    let st = Command::new("openssl").args(args).status().expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// Writes a service account key file signed by `private` (PEM path) for the token server.
fn key_file(dir: &Path, name: &str, private: &Path, token_port: u16) -> PathBuf {
    let pem = std::fs::read_to_string(private).unwrap();
    let key = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1234567890",
        "token_uri": format!("http://127.0.0.1:{token_port}/token"),
    });
    let path = dir.join(name);
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_key_is_exchanged_once_and_a_refused_key_is_an_auth_error() {
    if Command::new("openssl").arg("version").output().is_err() {
        skip("openssl (to make test keys) is not installed");
        return;
    }
    let Some(env) = Env::start(600, 1).await else {
        return;
    };
    let Some(emu) = BqEmulator::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (good, other, public) = make_keys(dir.path());
    let server = token_server(std::fs::read(&public).unwrap()).await;

    let with_key = |key: &Path| {
        let mut c = emu.config("keyed");
        c.as_object_mut().unwrap().remove("access_token");
        c["service_account_key"] = json!({"file": key});
        c
    };
    let good_key = key_file(dir.path(), "good.json", &good, server.port);
    let bad_key = key_file(dir.path(), "bad.json", &other, server.port);

    // Good key: every window delivered with one token exchange (cached).
    let (a, b) = (env.orgs[0], env.orgs[1]);
    env.add_destination(
        a,
        DestinationKind::Bigquery,
        "good",
        with_key(&good_key),
        &[Table::Events, Table::Assets],
        21_600,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.len() >= 4, "{outcomes:#?}");
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    assert_eq!(server.exchanges.load(Ordering::SeqCst), 1);

    // A key the token endpoint refuses: destination_auth, with the endpoint's own words and
    // nothing of the key.
    env.add_destination(
        b,
        DestinationKind::Bigquery,
        "bad",
        with_key(&bad_key),
        &[Table::Events],
        86_400,
        1,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    let errors: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.status::text, d.last_error FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id WHERE w.name = 'bad'",
    )
    .fetch_all(&env.control)
    .await
    .unwrap();
    assert!(!errors.is_empty());
    for (status, err) in &errors {
        assert_eq!(status, "dead_letter", "{err}");
        assert!(err.starts_with("[destination_auth]"), "{err}");
        assert!(err.contains("invalid_grant") && err.contains(EMAIL), "{err}");
        assert!(!err.contains("PRIVATE KEY") && !err.contains("eyJ"), "{err}");
    }
    assert_eq!(server.exchanges.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_config_transient_and_rejected() {
    let Some(env) = Env::start(600, 1).await else {
        return;
    };
    let Some(emu) = BqEmulator::start() else { return };
    let (a, b, c) = (env.orgs[0], env.orgs[1], env.orgs[2]);

    // create_tables false and no dataset: a configuration error naming the dataset.
    let mut cfg = emu.config("absent");
    cfg["create_tables"] = false.into();
    env.add_destination(
        a,
        DestinationKind::Bigquery,
        "nodataset",
        cfg,
        &[Table::Assets],
        86_400,
        3,
    )
    .await;
    // Unreachable: transient, retried.
    let mut cfg = emu.config("x");
    cfg["base_url"] = format!("http://127.0.0.1:{}", free_port()).into();
    env.add_destination(
        b,
        DestinationKind::Bigquery,
        "unreachable",
        cfg,
        &[Table::Assets],
        86_400,
        3,
    )
    .await;
    // An analyst table whose id column is INT64: BigQuery's MERGE refuses the rows.
    let (s, _) = emu
        .rest(
            reqwest::Method::POST,
            "/datasets",
            Some(json!({"datasetReference": {"projectId": PROJECT, "datasetId": "sabotaged"}})),
        )
        .await;
    assert_eq!(s, 200);
    emu.query("CREATE TABLE `test-project`.`sabotaged`.`assets_v1` (id INT64, updated_at TIMESTAMP)");
    env.add_destination(
        c,
        DestinationKind::Bigquery,
        "sabotaged",
        emu.config("sabotaged"),
        &[Table::Assets],
        86_400,
        3,
    )
    .await;

    // Backoff long enough that the unreachable destination is tried once in this drain.
    env.run_until_idle(WorkerOptions {
        retry_base: Duration::from_secs(600),
        retry_cap: Duration::from_secs(600),
        ..fast_options()
    })
    .await;
    let rows: Vec<(String, String, i32, String)> = sqlx::query_as(
        "SELECT w.name, d.status::text, d.attempts, d.last_error FROM warehouse_deliveries d \
         JOIN warehouse_destinations w ON w.id = d.destination_id ORDER BY w.name, d.watermark_start",
    )
    .fetch_all(&env.control)
    .await
    .unwrap();
    let of = |name: &str| rows.iter().filter(move |r| r.0 == name).collect::<Vec<_>>();
    assert!(!of("nodataset").is_empty());
    for (_, status, _, err) in of("nodataset") {
        assert_eq!(status, "dead_letter");
        assert!(
            err.starts_with("[config]") && err.contains("test-project:absent") && err.contains("create_tables"),
            "{err}"
        );
    }
    for (_, status, attempts, err) in of("unreachable") {
        assert_eq!(status, "failed", "{err}");
        assert_eq!(*attempts, 1);
        assert!(
            err.starts_with("[destination_transient]") && err.contains("datasets.get"),
            "{err}"
        );
    }
    for (_, status, _, err) in of("sabotaged") {
        assert_eq!(status, "dead_letter", "{err}");
        assert!(err.starts_with("[destination_rejected]"), "{err}");
        assert!(err.contains("MERGE") && err.contains("sabotaged.assets_v1"), "{err}");
    }
}

/// The shared conformance suite: BigQuery on bqemulator, authenticated with a service account
/// key against the verifying token endpoint (the refused-credentials scenario uses a key the
/// endpoint does not know).
struct BqTarget {
    emu: BqEmulator,
    tokens: TokenServer,
    good_key: PathBuf,
    bad_key: PathBuf,
    _dir: tempfile::TempDir,
}

const CONFORMANCE_DATASET: &str = "conformance";

impl BqTarget {
    fn with_key(&self, key: &Path) -> Value {
        let mut c = self.emu.config(CONFORMANCE_DATASET);
        c.as_object_mut().unwrap().remove("access_token");
        c["service_account_key"] = json!({"file": key});
        c
    }
}

#[async_trait::async_trait]
impl Target for BqTarget {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Bigquery
    }

    fn config(&self) -> Value {
        self.with_key(&self.good_key)
    }

    fn bad_auth_config(&self) -> Option<Value> {
        Some(self.with_key(&self.bad_key))
    }

    fn unreachable_config(&self) -> Value {
        let mut c = self.config();
        c["base_url"] = format!("http://127.0.0.1:{}", free_port()).into();
        c
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
        self.emu
            .query(&format!(
                "SELECT id, updated_at FROM `{CONFORMANCE_DATASET}`.`{}_v1`",
                table.name()
            ))
            .into_iter()
            .map(|r| {
                let id = r[0].as_str().unwrap().parse().unwrap();
                let at = chrono::DateTime::parse_from_rfc3339(r[1].as_str().unwrap()).unwrap();
                (id, at.with_timezone(&chrono::Utc))
            })
            .collect()
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        Some(self.emu.count(&format!(
            "SELECT count(*) FROM `{CONFORMANCE_DATASET}`.`{}_v1_raw`",
            table.name()
        )))
    }

    async fn sabotage(&self, table: Table) -> Option<()> {
        // A raw table whose id is INT64: the INSERT of the window's rows is refused.
        let (s, _) = self
            .emu
            .rest(
                reqwest::Method::POST,
                "/datasets",
                Some(json!({"datasetReference": {"projectId": PROJECT, "datasetId": CONFORMANCE_DATASET}})),
            )
            .await;
        assert!(s == 200 || s == 409, "datasets.insert: {s}");
        self.emu.query(&format!(
            "CREATE TABLE `{PROJECT}`.`{CONFORMANCE_DATASET}`.`{}_v1_raw` (id INT64, updated_at TIMESTAMP)",
            table.name()
        ));
        Some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_conforms() {
    if Command::new("openssl").arg("version").output().is_err() {
        skip("openssl (to make test keys) is not installed");
        return;
    }
    let Some(_) = python() else { return };
    let Some(emu) = BqEmulator::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (good, other, public) = make_keys(dir.path());
    let tokens = token_server(std::fs::read(&public).unwrap()).await;
    let target = BqTarget {
        good_key: key_file(dir.path(), "good.json", &good, tokens.port),
        bad_key: key_file(dir.path(), "bad.json", &other, tokens.port),
        emu,
        tokens,
        _dir: dir,
    };
    suite(&target).await;
    assert!(target.tokens.exchanges.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_with_the_cli_and_fed_by_tidemark_run() {
    let Some(env) = Env::start(600, 1).await else {
        return;
    };
    let Some(emu) = BqEmulator::start() else { return };
    let org = env.orgs[0];
    let cfg = emu.config("cli").to_string();
    let out = env
        .cli()
        .env("TIDEMARK_TEST_BQ_TOKEN", "emulator-accepts-any-token")
        .args(["destination", "add", "--org", &org.to_string(), "--name", "warehouse"])
        .args(["--kind", "BIGQUERY", "--tables", "events,identities", "--window", "6h"])
        .args(["--config", &cfg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env
        .cli()
        .env("TIDEMARK_TEST_BQ_TOKEN", "emulator-accepts-any-token")
        .args(["run", "--until-idle"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for table in [Table::Events, Table::Identities] {
        let source = env
            .count(&format!(
                "SELECT count(*) FROM {} WHERE organization_id = '{org}'",
                table.name()
            ))
            .await as u64;
        assert!(source > 0);
        let analyst = emu.count(&format!("SELECT count(*) FROM `cli`.`{}_v1`", table.name()));
        assert_eq!(analyst, source, "{table}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status <> 'delivered'")
            .await,
        0
    );

    // A config the adapter refuses is refused by `destination add`, naming the field.
    let out = env
        .cli()
        .args(["destination", "add", "--org", &org.to_string(), "--name", "plain"])
        .args(["--kind", "BIGQUERY", "--no-check", "--config"])
        .arg(json!({"project": PROJECT, "dataset": "cli", "access_token": "ya29.plaintext"}).to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plaintext secrets are not accepted"), "{err}");
    assert!(!err.contains("ya29.plaintext"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_leaves_the_analyst_table_and_an_older_version_never_resurrects_it() {
    let Some(env) = Env::start(600, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let Some(emu) = BqEmulator::start() else { return };
    let org = env.orgs[0];
    tidemark::capture::install(&env.source, &env.registry, &[Table::Events])
        .await
        .unwrap();
    let config = emu.config("tidemark");
    let dest = env
        .add_destination(
            org,
            DestinationKind::Bigquery,
            "bq",
            config.clone(),
            &[Table::Events],
            86_400,
            3,
        )
        .await;
    let first = env.run_until_idle(fast_options()).await;
    assert!(first.iter().all(|o| o.status == "delivered"), "{first:#?}");

    // X is deleted; Y is deleted and re-inserted by one transaction (a tie on updated_at).
    let DeleteScenario { x, x_updated_at, y, .. } = env.delete_x_and_reinsert_y(org, dest.id).await;
    let in_table = |relation: &str, id: Uuid| {
        emu.count(&format!(
            "SELECT count(*) FROM `tidemark`.`{relation}` WHERE id = '{id}'"
        ))
    };
    assert_eq!((in_table("events_v1", x), in_table("events_v1", y)), (0, 1));
    assert_eq!(
        (in_table("events_v1_latest", x), in_table("events_v1_latest", y)),
        (0, 1)
    );
    assert_eq!(
        emu.count(&format!(
            "SELECT count(*) FROM `tidemark`.`events_v1_raw` WHERE id = '{x}' AND `_op` = 'D'"
        )),
        1,
        "the raw history keeps the delete"
    );
    // The analyst table equals the source's current rows, value by value (up to now: Y's
    // re-insert is recent).
    let out = tempfile::tempdir().unwrap();
    let analyst_equals_source = || {
        let file = out.path().join("events.parquet");
        let exported = emu.export(Table::Events, "tidemark.events_v1", &file);
        let report = verify_current(
            &env,
            Table::Events,
            org,
            data_end() - ChronoDuration::days(3),
            chrono::Utc::now() + ChronoDuration::days(1),
            "parquet",
            &[file],
        );
        assert_eq!(report["file_rows"], exported["rows"]);
    };
    analyst_equals_source();

    // X's old version delivered again (its old window re-extracted under a new delivery id,
    // as a replay that lost its job ids would): X stays deleted.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events SELECT * FROM kept_events")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let start = tidemark::plan::align_down(x_updated_at, 3600);
    let replayed = deliver_once(
        &env,
        &config,
        Table::Events,
        org,
        Uuid::new_v4(),
        start,
        start + ChronoDuration::hours(1),
    )
    .await
    .unwrap();
    assert!(replayed.rows > 0);
    assert_eq!(
        (in_table("events_v1", x), in_table("events_v1_latest", x)),
        (0, 0),
        "no resurrection"
    );
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM events WHERE id = $1")
        .bind(x)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    analyst_equals_source();
}
