//! DATABRICKS end to end against our local Databricks API server
//! (`tests/databricks_server/server.py`: Files API, SQL Statement Execution API and OAuth M2M
//! from Databricks' documentation, SQL on DuckDB; not Databricks itself). Every check reads
//! the warehouse back through the server's Statement Execution API with plain HTTP, never
//! through tidemark's client, and compares with the source rows in Postgres, value by value.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::conformance::{Target, suite};
use common::*;
use serde_json::{Value, json};
use sqlx::Row;
use tidemark::control::destinations::DestinationKind;
use tidemark::control::outbox::LeaseFilter;
use tidemark::deliver::Destination as _;
use tidemark::deliver::databricks::DatabricksDestination;
use tidemark::error::ErrorKind;
use tidemark::schema::{ColumnType, Table, TableSchema};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAREHOUSE: &str = "wh-tidemark";
const CATALOG: &str = "lake";
const SCHEMA: &str = "tidemark";
const PAT: &str = "dapi-local-test-token";
const CLIENT_ID: &str = "sp-tidemark";
const CLIENT_SECRET: &str = "sp-local-secret";

/// Our local Databricks API server on a free loopback port, with its own data directory.
struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
    http: reqwest::Client,
}

impl Server {
    fn start(extra: &[&str]) -> Option<Server> {
        let py = python()?;
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(py)
            .arg(repo().join("tests/databricks_server/server.py"))
            .arg("--data")
            .arg(data.path())
            .args(["--port", "0", "--warehouse", WAREHOUSE, "--token", PAT])
            .args(["--volume", &format!("{CATALOG}.{SCHEMA}.staging")])
            .args(["--oauth-client", &format!("{CLIENT_ID}:{CLIENT_SECRET}")])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the local Databricks server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not start: {line:?}"));
        // SAFETY of the test process environment: every test sets the same values.
        unsafe {
            std::env::set_var("TIDEMARK_TEST_DBX_TOKEN", PAT);
            std::env::set_var("TIDEMARK_TEST_DBX_SECRET", CLIENT_SECRET);
            std::env::set_var("TIDEMARK_TEST_DBX_WRONG", "dapi-wrong");
        }
        Some(Server {
            child,
            port,
            _data: data,
            http: reqwest::Client::new(),
        })
    }

    fn host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A working PAT configuration; `extra` keys are merged in.
    fn config(&self, extra: Value) -> Value {
        let mut v = json!({
            "host": self.host(), "allow_http": true, "warehouse_id": WAREHOUSE,
            "catalog": CATALOG, "schema": SCHEMA, "volume": "staging",
            "token": {"env": "TIDEMARK_TEST_DBX_TOKEN"}, "max_retries": 2,
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    fn oauth_config(&self) -> Value {
        self.config(
            json!({"token": null, "client_id": CLIENT_ID, "client_secret": {"env": "TIDEMARK_TEST_DBX_SECRET"}}),
        )
    }

    /// Runs one statement through the Statement Execution API; `Err` carries a FAILED
    /// statement's `error_code: message`.
    async fn try_sql(&self, statement: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut v: Value = self
            .http
            .post(format!("{}/api/2.0/sql/statements", self.host()))
            .bearer_auth(PAT)
            .json(&json!({"warehouse_id": WAREHOUSE, "statement": statement, "wait_timeout": "50s"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        while matches!(v["status"]["state"].as_str(), Some("PENDING" | "RUNNING")) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let url = format!(
                "{}/api/2.0/sql/statements/{}",
                self.host(),
                v["statement_id"].as_str().unwrap()
            );
            v = self
                .http
                .get(url)
                .bearer_auth(PAT)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        }
        match v["status"]["state"].as_str() {
            Some("SUCCEEDED") => Ok(serde_json::from_value(v["result"]["data_array"].clone()).unwrap_or_default()),
            _ => Err(format!(
                "{}: {}",
                v["status"]["error"]["error_code"], v["status"]["error"]["message"]
            )),
        }
    }

    async fn sql(&self, statement: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"))
    }

    async fn count(&self, object: &str) -> u64 {
        self.sql(&format!("SELECT count(*) FROM {CATALOG}.{SCHEMA}.{object}"))
            .await[0][0]
            .as_ref()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn hook(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}/_test/{path}", self.host()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn stats(&self) -> Value {
        let url = format!("{}/_test/stats", self.host());
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn staged_files(&self) -> Vec<String> {
        let url = format!(
            "{}/api/2.0/fs/directories/Volumes/{CATALOG}/{SCHEMA}/staging/tidemark/events/v1",
            self.host()
        );
        let v: Value = self
            .http
            .get(url)
            .bearer_auth(PAT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["contents"]
            .as_array()
            .map(|c| c.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// Postgres renders each column the way the Statement Execution API's JSON_ARRAY does for the
/// Databricks type it maps to (timestamps as UTC ISO 8601 with microseconds).
fn source_expr(name: &str, ty: ColumnType) -> String {
    let q = format!("\"{name}\"");
    match ty {
        ColumnType::Timestamptz => format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
        ColumnType::TextArray => format!("to_jsonb({q})::text"),
        // inet's output function (what `::text` is not: it always prints the mask).
        ColumnType::Inet => format!("CASE WHEN {q} IS NOT NULL THEN format('%s', {q}) END"),
        _ => format!("{q}::text"),
    }
}

/// Equal as the type's values: JSON documents and arrays as parsed JSON, float8 as numbers,
/// everything else (decimals with their scale, timestamps, uuids, inet) as exact text.
fn same(ty: ColumnType, a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match ty {
            ColumnType::Jsonb | ColumnType::TextArray => {
                serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok()
            }
            ColumnType::Float8 => a.parse::<f64>().ok() == b.parse::<f64>().ok(),
            _ => a == b,
        },
        (None, None) => true,
        _ => false,
    }
}

/// Compares the analyst table (and the latest view) with the source rows of `org`, column by
/// column; returns how many non-null values of each type were compared.
async fn compare_with_source(env: &Env, server: &Server, schema: &TableSchema, org: Uuid) -> BTreeMap<String, u64> {
    let table = schema.table.name();
    let exprs: Vec<String> = schema.columns.iter().map(|c| source_expr(&c.name, c.ty)).collect();
    let source: Vec<Vec<Option<String>>> = sqlx::query(&format!(
        "SELECT {} FROM {table} WHERE organization_id = $1 ORDER BY id",
        exprs.join(", ")
    ))
    .bind(org)
    .fetch_all(&env.control)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (0..schema.columns.len())
            .map(|i| r.get::<Option<String>, _>(i))
            .collect()
    })
    .collect();
    let cols: Vec<String> = schema.columns.iter().map(|c| format!("`{}`", c.name)).collect();
    let analyst = server
        .sql(&format!(
            "SELECT {} FROM {CATALOG}.{SCHEMA}.{table}_v1 ORDER BY id",
            cols.join(", ")
        ))
        .await;
    assert_eq!(analyst.len(), source.len(), "{table}: analyst rows vs source rows");
    let mut per_type = BTreeMap::new();
    let mut diffs = Vec::new();
    for (a, s) in analyst.iter().zip(&source) {
        for (i, c) in schema.columns.iter().enumerate() {
            if !same(c.ty, &a[i], &s[i]) {
                diffs.push(format!(
                    "{table}.{} id={:?}: warehouse {:?} source {:?}",
                    c.name, s[0], a[i], s[i]
                ));
            } else if a[i].is_some() {
                *per_type.entry(c.ty.to_string()).or_insert(0) += 1;
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    // By name: a column added for a newer minor version sits last in an altered table.
    let cols = tidemark::deliver::databricks::ddl::select_list(schema, "");
    let stale = server
        .sql(&format!(
            "SELECT count(*) FROM (SELECT {cols} FROM {CATALOG}.{SCHEMA}.{table}_v1 EXCEPT SELECT {cols} FROM {CATALOG}.{SCHEMA}.{table}_v1_latest)"
        ))
        .await;
    assert_eq!(
        stale[0][0].as_deref(),
        Some("0"),
        "{table}: latest view differs from the analyst table"
    );
    per_type
}

async fn receipts(env: &Env, table: Table) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT receipt FROM warehouse_deliveries WHERE \"table\" = $1::warehouse_table AND status = 'delivered' ORDER BY watermark_start",
    )
    .bind(table.db_label())
    .fetch_all(&env.control)
    .await
    .unwrap()
}

/// A DATABRICKS destination of `org` for `events`, 6-hour windows, 3 attempts.
async fn add_events_destination(env: &Env, org: Uuid, name: &str, config: Value) {
    env.add_destination(
        org,
        DestinationKind::Databricks,
        name,
        config,
        &[Table::Events],
        21_600,
        3,
    )
    .await;
}

/// Runs the worker until idle and checks that something was delivered and nothing failed.
async fn deliver_all(env: &Env) {
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|o| o.status == "delivered"),
        "{outcomes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_and_type_round_trips_through_copy_into_and_merge() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(1_500, 2).await else { return };
    let org = env.orgs[0];
    env.add_destination(
        org,
        DestinationKind::Databricks,
        "dbx",
        server.config(json!({})),
        &Table::ALL,
        21_600,
        3,
    )
    .await;
    deliver_all(&env).await;

    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    for table in Table::ALL {
        let schema = env.registry.get(table, 1).unwrap();
        for (ty, n) in compare_with_source(&env, &server, &schema, org).await {
            *per_type.entry(ty).or_insert(0) += n;
        }
        let source = env
            .count(&format!("SELECT count(*) FROM {table} WHERE organization_id = '{org}'"))
            .await as u64;
        assert!(source > 0, "{table}: no source rows");
        assert_eq!(server.count(&format!("{table}_v1_raw")).await, source, "{table} raw");
        // The receipts account for every row: COPY INTO inserted, MERGE inserted, ids recorded.
        let receipts = receipts(&env, table).await;
        let sum = |path: &[&str]| -> u64 {
            receipts
                .iter()
                .map(|r| path.iter().fold(r, |v, k| &v[*k]).as_u64().unwrap_or(0))
                .sum()
        };
        assert_eq!(
            sum(&["copy_into", "num_inserted_rows"]),
            source,
            "{table} COPY INTO counts"
        );
        assert_eq!(sum(&["merge", "num_inserted_rows"]), source, "{table} MERGE counts");
        assert_eq!(sum(&["rows"]), source);
        for r in receipts.iter().filter(|r| r["rows"].as_u64() > Some(0)) {
            assert!(r["copy_into"]["statement_id"].is_string() && r["merge"]["statement_id"].is_string());
            assert_eq!(r["staged_file_deleted"], true);
            assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
            let staged = r["staged_file"].as_str().unwrap();
            let delivery = r["provenance"]["delivery_id"].as_str().unwrap();
            assert_eq!(
                staged,
                format!("/Volumes/{CATALOG}/{SCHEMA}/staging/tidemark/{table}/v1/{delivery}.parquet")
            );
        }
    }
    // Every published type was compared on real values.
    for ty in [
        "uuid",
        "text",
        "int2",
        "int4",
        "int8",
        "float8",
        "bool",
        "numeric(6,2)",
        "numeric(24,9)",
        "timestamptz",
        "date",
        "jsonb",
        "inet",
        "text[]",
    ] {
        assert!(
            per_type.get(ty).copied().unwrap_or(0) > 0,
            "no {ty} value compared: {per_type:?}"
        );
    }
    assert!(
        server.staged_files().await.is_empty(),
        "staged files are deleted after loading"
    );
    // A second pass finds nothing new.
    assert!(env.run_until_idle(fast_options()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_adds_nothing_and_an_updated_row_shows_its_new_version() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(800, 2).await else { return };
    let org = env.orgs[0];
    let config = server.config(json!({"keep_staged_files": true}));
    add_events_destination(&env, org, "dbx", config).await;
    env.plan().await;
    // The first day only.
    let first_day = LeaseFilter {
        to: Some(data_end() - chrono::Duration::days(1)),
        ..LeaseFilter::default()
    };
    let worker = env.worker(fast_options());
    let first = worker
        .drain(&first_day, None, &CancellationToken::new(), &|_| {})
        .await
        .unwrap();
    assert!(!first.is_empty() && first.iter().all(|o| o.status == "delivered"));
    let raw_before = server.count("events_v1_raw").await;
    assert!(raw_before > 0);

    // A row delivered on day one is updated with a time in a window not delivered yet.
    let (id, old_updated_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "SELECT id, updated_at FROM events WHERE organization_id = $1 AND updated_at < $2 ORDER BY updated_at LIMIT 1",
    )
    .bind(org)
    .bind(data_end() - chrono::Duration::days(1))
    .fetch_one(&env.control)
    .await
    .unwrap();
    let new_updated_at = data_end() - chrono::Duration::hours(1);
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET severity = 4, event_type = 'it''s updated', updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(new_updated_at)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let rest = env.run_until_idle(fast_options()).await;
    assert!(
        !rest.is_empty() && rest.iter().all(|o| o.status == "delivered"),
        "{rest:#?}"
    );
    let schema = env.registry.get(Table::Events, 1).unwrap();
    compare_with_source(&env, &server, &schema, org).await;
    let versions = server
        .sql(&format!(
            "SELECT updated_at, event_type FROM {CATALOG}.{SCHEMA}.events_v1_raw WHERE id = '{id}' ORDER BY updated_at"
        ))
        .await;
    assert_eq!(versions.len(), 2, "both versions are in the raw history: {versions:?}");
    assert!(
        versions[0][0]
            .as_deref()
            .unwrap()
            .starts_with(&old_updated_at.format("%Y-%m-%dT%H:%M:%S").to_string())
    );
    assert_eq!(versions[1][1].as_deref(), Some("it's updated"));
    let raw = server.count("events_v1_raw").await;
    let analyst = server.count("events_v1").await;

    // Every delivery again, same ids: COPY INTO skips the files it loaded, MERGE changes nothing.
    let n = sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'pending', next_attempt_at = now(), receipt = NULL WHERE status = 'delivered' AND row_count > 0",
    )
    .execute(&env.control)
    .await
    .unwrap()
    .rows_affected();
    assert!(n > 1);
    let again = env.run_until_idle(fast_options()).await;
    assert_eq!(again.len() as u64, n);
    assert!(again.iter().all(|o| o.status == "delivered"), "{again:#?}");
    assert_eq!(server.count("events_v1_raw").await, raw);
    assert_eq!(server.count("events_v1").await, analyst);
    for r in receipts(&env, Table::Events)
        .await
        .iter()
        .filter(|r| r["rows"].as_u64() > Some(0))
    {
        assert_eq!(r["copy_into"]["num_inserted_rows"], 0, "{r:#}");
        assert_eq!(r["merge"]["num_affected_rows"], 0, "{r:#}");
    }
    compare_with_source(&env, &server, &schema, org).await;
    assert_eq!(
        server.staged_files().await.len() as u64,
        n,
        "keep_staged_files keeps them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pat_and_oauth_m2m_authenticate_and_bad_credentials_are_auth_errors() {
    let Some(server) = Server::start(&["--oauth-ttl", "2"]) else {
        return;
    };
    // PAT.
    DatabricksDestination::from_config(&server.config(json!({})))
        .unwrap()
        .check()
        .await
        .unwrap();
    // OAuth M2M: one token for many requests while it is fresh, a new one after half its life.
    let oauth = DatabricksDestination::from_config(&server.oauth_config()).unwrap();
    oauth.check().await.unwrap();
    oauth.check().await.unwrap();
    assert_eq!(stat(&server.stats().await, "oauth tokens issued"), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    oauth.check().await.unwrap();
    assert_eq!(stat(&server.stats().await, "oauth tokens issued"), 2);

    // A wrong PAT and a wrong client secret: DestinationAuth, the server's words, no secret.
    let wrong_pat = server.config(json!({"token": {"env": "TIDEMARK_TEST_DBX_WRONG"}}));
    let e = DatabricksDestination::from_config(&wrong_pat)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationAuth, "{e}");
    assert!(
        e.to_string()
            .contains("HTTP 403 PERMISSION_DENIED: Invalid access token"),
        "{e}"
    );
    assert!(!e.to_string().contains("dapi-wrong"));
    let wrong_secret = json!({"client_secret": {"env": "TIDEMARK_TEST_DBX_WRONG"}});
    let mut cfg = server.oauth_config();
    cfg["client_secret"] = wrong_secret["client_secret"].clone();
    let e = DatabricksDestination::from_config(&cfg)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationAuth, "{e}");
    assert!(e.to_string().contains("HTTP 401 invalid_client"), "{e}");
    assert!(!e.to_string().contains("dapi-wrong"));

    // Deliveries with OAuth land, with a bounded number of token requests.
    let Some(env) = Env::start(300, 1).await else { return };
    add_events_destination(&env, env.orgs[0], "dbx", server.oauth_config()).await;
    deliver_all(&env).await;
    let schema = env.registry.get(Table::Events, 1).unwrap();
    compare_with_source(&env, &server, &schema, env.orgs[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_unavailability_are_retried_and_long_statements_polled() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[0];
    // Slow statements, submitted with wait_timeout 0s: every one is polled to completion.
    server.hook("statement_delay", json!({"seconds": 0.4})).await;
    // Two 503s on statement submission and two 429s on uploads: retried inside one attempt.
    server
        .hook(
            "fail_next",
            json!({"count": 2, "status": 503, "path_prefix": "/api/2.0/sql/statements", "method": "POST"}),
        )
        .await;
    server
        .hook(
            "fail_next",
            json!({"count": 2, "status": 429, "path_prefix": "/api/2.0/fs/files", "method": "PUT"}),
        )
        .await;
    let config = server.config(json!({"wait_timeout_seconds": 0}));
    env.add_destination(
        org,
        DestinationKind::Databricks,
        "dbx",
        config,
        &[Table::Events],
        86_400,
        3,
    )
    .await;
    deliver_all(&env).await;
    let attempts = env
        .count("SELECT max(attempts)::bigint FROM warehouse_deliveries")
        .await;
    assert_eq!(attempts, 1, "retried inside the attempt");
    let stats = server.stats().await;
    assert!(stat(&stats, "GET /api/2.0/sql/statements/{id}") >= 3, "{stats}");
    compare_with_source(&env, &server, &env.registry.get(Table::Events, 1).unwrap(), org).await;

    // A statement that FAILS with TEMPORARILY_UNAVAILABLE, then an outage longer than the
    // client's retries: each fails its attempt as transient, and the worker retries it.
    server.hook("statement_delay", json!({"seconds": 0})).await;
    server.sql(&format!("CREATE SCHEMA {CATALOG}.other")).await;
    server.sql(&format!("CREATE VOLUME {CATALOG}.other.staging")).await;
    server
        .hook(
            "fail_statements",
            json!({"count": 1, "error_code": "TEMPORARILY_UNAVAILABLE", "message": "warehouse is starting"}),
        )
        .await;
    // max_retries 2: three 503s in a row outlast one attempt's retries.
    server
        .hook(
            "fail_next",
            json!({"count": 3, "status": 503, "path_prefix": "/api/2.0/fs/files"}),
        )
        .await;
    let config = server.config(json!({"schema": "other"}));
    env.add_destination(
        org,
        DestinationKind::Databricks,
        "dbx2",
        config,
        &[Table::AuditLog],
        86_400,
        5,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    let errors: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    assert_eq!(errors.len(), 2, "{outcomes:#?}");
    assert!(
        errors[0].contains("TEMPORARILY_UNAVAILABLE") && errors[0].contains("warehouse is starting"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("HTTP 503 TEMPORARILY_UNAVAILABLE") && errors[1].contains("attempts=3"),
        "{errors:?}"
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| o.error.is_some())
            .all(|o| o.status == "failed")
    );
    let (pending, retries): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status <> 'delivered'), sum(attempts - 1) FROM warehouse_deliveries WHERE \"table\" = 'AUDIT_LOG'",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert_eq!(
        (pending, retries),
        (0, 2),
        "every delivery landed, after exactly the two failed attempts"
    );
    let audit = env.registry.get(Table::AuditLog, 1).unwrap();
    let rows = server
        .sql(&format!("SELECT count(*) FROM {CATALOG}.other.audit_log_v1"))
        .await;
    let source = env
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE organization_id = '{org}'"
        ))
        .await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some(source.to_string().as_str()),
        "{}",
        audit.table
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_table_dead_letters_with_the_warehouse_message_and_check_names_config_errors() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(300, 1).await else { return };
    // Someone created the raw table with an INT id: COPY INTO cannot cast the uuids.
    let schema = env.registry.get(Table::Events, 1).unwrap();
    let raw = &tidemark::deliver::databricks::ddl::create_statements(CATALOG, SCHEMA, &schema)[0];
    server
        .sql(&raw.replace("`id` STRING NOT NULL", "`id` INT NOT NULL"))
        .await;
    env.add_destination(
        env.orgs[0],
        DestinationKind::Databricks,
        "dbx",
        server.config(json!({})),
        &[Table::Events],
        86_400,
        5,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    let dead: Vec<_> = outcomes.iter().filter(|o| o.status == "dead_letter").collect();
    assert!(!dead.is_empty(), "{outcomes:#?}");
    let (attempts, last_error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM warehouse_deliveries WHERE status = 'dead_letter' LIMIT 1")
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "rejected data is not retried");
    assert!(
        last_error.contains("COPY INTO lake.tidemark.events_v1_raw"),
        "{last_error}"
    );
    assert!(last_error.contains("[CAST_INVALID_INPUT]"), "{last_error}");

    // check(): a wrong warehouse id and a missing volume are configuration errors.
    let e = DatabricksDestination::from_config(&server.config(json!({"warehouse_id": "nope"})))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(
        e.to_string().contains("SQL warehouse nope") && e.to_string().contains("RESOURCE_DOES_NOT_EXIST"),
        "{e}"
    );
    let e = DatabricksDestination::from_config(&server.config(json!({"volume": "missing"})))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("/Volumes/lake/tidemark/missing"), "{e}");
    // A closed port: transient.
    let closed = free_port();
    let e = DatabricksDestination::from_config(
        &server.config(json!({"host": format!("http://127.0.0.1:{closed}"), "max_retries": 0})),
    )
    .unwrap()
    .check()
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationTransient, "{e}");
}

/// Tables created for an earlier minor version of the major (`events` v1 without its nullable
/// `clock_skew_ms`) gain the new column before the first load; then everything equals the
/// source, the new column included, and the redefined latest view has it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_an_older_minor_version_gain_its_new_columns() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(400, 1).await else { return };
    let org = env.orgs[0];
    let mut older = (*env.registry.get(Table::Events, 1).unwrap()).clone();
    older.columns.retain(|c| c.name != "clock_skew_ms");
    for sql in tidemark::deliver::databricks::ddl::create_statements(CATALOG, SCHEMA, &older) {
        server.sql(&sql).await;
    }
    let columns = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
        rows.into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()
    };
    let before = columns(
        server
            .sql(&format!("DESCRIBE TABLE {CATALOG}.{SCHEMA}.events_v1"))
            .await,
    );
    assert!(!before.contains(&"clock_skew_ms".to_string()), "{before:?}");
    add_events_destination(&env, org, "dbx", server.config(json!({}))).await;
    deliver_all(&env).await;
    for table in ["events_v1_raw", "events_v1", "events_v1_latest"] {
        let have = columns(server.sql(&format!("DESCRIBE TABLE {CATALOG}.{SCHEMA}.{table}")).await);
        assert!(have.contains(&"clock_skew_ms".to_string()), "{table}: {have:?}");
    }
    let schema = env.registry.get(Table::Events, 1).unwrap();
    compare_with_source(&env, &server, &schema, org).await;
    let non_null = server.count("events_v1 WHERE clock_skew_ms IS NOT NULL").await;
    assert!(non_null > 0, "the new column carries the source's values");
}

/// `external_location` staging: the window's Parquet goes to the customer's S3 (moto) with
/// tidemark's credentials, and COPY INTO reads it there as the warehouse reads an external
/// location (our server fetches it with its own storage credential). A path outside every
/// external location is refused like a missing READ FILES grant: an auth error, dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_location_staging_loads_from_the_customer_bucket() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("dbx-ext");
    let Some(server) = Server::start(&[
        "--external-location",
        "s3://dbx-ext/lake",
        "--s3-endpoint",
        &moto.endpoint(),
        "--s3-credential",
        "test:test",
    ]) else {
        return;
    };
    let Some(env) = Env::start(600, 1).await else { return };
    let org = env.orgs[0];
    let location = |prefix: &str| json!({"volume": null, "keep_staged_files": true, "external_location": moto.config("dbx-ext", prefix)});
    DatabricksDestination::from_config(&server.config(location("lake")))
        .unwrap()
        .check()
        .await
        .expect("check writes and deletes a probe in the external location");
    add_events_destination(&env, org, "dbx-ext", server.config(location("lake"))).await;
    deliver_all(&env).await;
    let schema = env.registry.get(Table::Events, 1).unwrap();
    compare_with_source(&env, &server, &schema, org).await;
    let receipts = receipts(&env, Table::Events).await;
    let loaded: Vec<&Value> = receipts.iter().filter(|r| r.get("staged_file").is_some()).collect();
    assert!(!loaded.is_empty(), "{receipts:#?}");
    for r in &loaded {
        assert_eq!(r["staging"], "external_location", "{r:#}");
        let staged = r["staged_file"].as_str().unwrap();
        assert!(staged.starts_with("s3://dbx-ext/lake/tidemark/events/v1/"), "{staged}");
    }
    // The files are in the customer's bucket (kept: keep_staged_files), read by another client.
    let out = Command::new(python().unwrap())
        .args([
            "-c",
            "import boto3,sys; c=boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1'); print('\\n'.join(sorted(o['Key'] for o in c.list_objects_v2(Bucket='dbx-ext', Prefix='lake/').get('Contents', []))))",
            &moto.endpoint(),
        ])
        .output()
        .unwrap();
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mut want: Vec<String> = loaded
        .iter()
        .map(|r| {
            r["staged_file"]
                .as_str()
                .unwrap()
                .trim_start_matches("s3://dbx-ext/")
                .to_string()
        })
        .collect();
    want.sort();
    assert_eq!(keys, want, "{}", String::from_utf8_lossy(&out.stderr));

    // Outside the external location: the warehouse may not read it.
    add_events_destination(&env, org, "dbx-outside", server.config(location("elsewhere"))).await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().any(|o| o.status == "dead_letter"), "{outcomes:#?}");
    let (attempts, last_error): (i32, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM warehouse_deliveries WHERE status = 'dead_letter' ORDER BY watermark_start LIMIT 1",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert_eq!(attempts, 1, "an authorisation failure is not retried: {last_error}");
    assert!(
        last_error.contains("INSUFFICIENT_PERMISSIONS")
            && last_error.contains("s3://dbx-ext/elsewhere/tidemark/events/v1"),
        "{last_error}"
    );
}

/// The conformance suite's view of our local Databricks server: a schema of its own, read
/// back through the Statement Execution API.
struct DatabricksTarget {
    server: Server,
}

const CONFORMANCE_SCHEMA: &str = "conformance";

#[async_trait::async_trait]
impl Target for DatabricksTarget {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Databricks
    }

    fn config(&self) -> Value {
        self.server.config(json!({"schema": CONFORMANCE_SCHEMA}))
    }

    fn bad_auth_config(&self) -> Option<Value> {
        let mut c = self.config();
        c["token"] = json!({"env": "TIDEMARK_TEST_DBX_WRONG"});
        Some(c)
    }

    fn unreachable_config(&self) -> Value {
        let mut c = self.config();
        c["host"] = format!("http://127.0.0.1:{}", free_port()).into();
        c["max_retries"] = 0.into();
        c
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
        let rows = self
            .server
            .sql(&format!(
                "SELECT id, updated_at FROM {CATALOG}.{CONFORMANCE_SCHEMA}.{}_v1",
                table.name()
            ))
            .await;
        rows.iter()
            .map(|r| {
                let id = r[0].as_deref().unwrap().parse().unwrap();
                let at = DateTime::parse_from_rfc3339(r[1].as_deref().unwrap()).unwrap();
                (id, at.with_timezone(&Utc))
            })
            .collect()
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        let n = self
            .server
            .sql(&format!(
                "SELECT count(*) FROM {CATALOG}.{CONFORMANCE_SCHEMA}.{}_v1_raw",
                table.name()
            ))
            .await;
        n[0][0].as_deref().map(|n| n.parse().unwrap())
    }

    /// The raw table exists with an INT `id`: COPY INTO cannot cast the uuids.
    async fn sabotage(&self, table: Table) -> Option<()> {
        let schema = tidemark::schema::Registry::embedded().get(table, 1).unwrap();
        let raw = &tidemark::deliver::databricks::ddl::create_statements(CATALOG, CONFORMANCE_SCHEMA, &schema)[0];
        self.server
            .sql(&raw.replace("`id` STRING NOT NULL", "`id` INT NOT NULL"))
            .await;
        Some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databricks_conforms() {
    let volume = format!("{CATALOG}.{CONFORMANCE_SCHEMA}.staging");
    let Some(server) = Server::start(&["--volume", &volume]) else {
        return;
    };
    suite(&DatabricksTarget { server }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_a_checked_destination_and_run_delivers_to_it() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[0].to_string();
    let add = |name: &str, config: Value| {
        env.cli()
            .args([
                "destination",
                "add",
                "--org",
                &org,
                "--kind",
                "DATABRICKS",
                "--name",
                name,
            ])
            .args([
                "--tables",
                "events,findings",
                "--window",
                "6h",
                "--config",
                &config.to_string(),
            ])
            .output()
            .unwrap()
    };
    // The probe authenticates: a refused token is exit 4 and writes nothing.
    let out = add(
        "bad",
        server.config(json!({"token": {"env": "TIDEMARK_TEST_DBX_WRONG"}})),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("Invalid access token") && !err.contains("dapi-wrong"),
        "{err}"
    );
    assert_eq!(env.count("SELECT count(*) FROM warehouse_destinations").await, 0);
    let out = add("dbx", server.config(json!({})));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.cli().args(["run", "--until-idle"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let open = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE status <> 'delivered'")
        .await;
    assert_eq!(open, 0);
    for table in [Table::Events, Table::Findings] {
        let schema = env.registry.get(table, 1).unwrap();
        compare_with_source(&env, &server, &schema, env.orgs[0]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_leaves_the_analyst_table_and_a_replayed_older_version_never_resurrects_it() {
    let Some(server) = Server::start(&[]) else { return };
    let Some(env) = Env::start(600, 1).await else { return };
    let org = env.orgs[0];
    tidemark::capture::install(&env.source, &env.registry, &[Table::Events])
        .await
        .unwrap();
    let dest = env
        .add_destination(
            org,
            DestinationKind::Databricks,
            "dbx",
            server.config(json!({})),
            &[Table::Events],
            900,
            3,
        )
        .await;
    let first = env.run_until_idle(fast_options()).await;
    assert!(first.iter().all(|o| o.status == "delivered"), "{first:#?}");
    let schema = env.registry.get(Table::Events, 1).unwrap();

    // X is deleted; Y is deleted and re-inserted by one transaction (a tie on updated_at).
    let DeleteScenario { x, x_updated_at, y, .. } = env.delete_x_and_reinsert_y(org, dest.id).await;
    let x_delivery: Uuid = sqlx::query_scalar(
        "SELECT id FROM warehouse_deliveries WHERE destination_id = $1 AND watermark_start <= $2 AND watermark_end > $2",
    )
    .bind(dest.id)
    .bind(x_updated_at)
    .fetch_one(&env.control)
    .await
    .unwrap();
    // Analyst table and latest view equal the source: X gone, Y kept.
    compare_with_source(&env, &server, &schema, org).await;
    let ops = server
        .sql(&format!(
            "SELECT `_op` FROM {CATALOG}.{SCHEMA}.events_v1_raw WHERE id = '{x}' ORDER BY updated_at"
        ))
        .await;
    assert_eq!(
        ops,
        [[Some("U".to_string())], [Some("D".to_string())]],
        "the raw history keeps the delete"
    );
    assert_eq!(
        server
            .sql(&format!(
                "SELECT count(*) FROM {CATALOG}.{SCHEMA}.events_v1 WHERE id IN ('{x}', '{y}')"
            ))
            .await[0][0]
            .as_deref(),
        Some("1")
    );

    // X's old window replayed (its old version back in the source without triggers): the
    // MERGE sees X's older U and leaves X deleted.
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
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'pending', next_attempt_at = now(), receipt = NULL WHERE id = $1",
    )
    .bind(x_delivery)
    .execute(&env.control)
    .await
    .unwrap();
    let third = env.run_until_idle(fast_options()).await;
    assert_eq!(third.len(), 1, "{third:#?}");
    assert_eq!(third[0].status, "delivered");
    let r: Value = sqlx::query_scalar("SELECT receipt FROM warehouse_deliveries WHERE id = $1")
        .bind(x_delivery)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert_eq!(r["merge"]["num_inserted_rows"], 0, "{r:#}");
    assert_eq!(
        server
            .sql(&format!(
                "SELECT count(*) FROM {CATALOG}.{SCHEMA}.events_v1 WHERE id = '{x}'"
            ))
            .await[0][0]
            .as_deref(),
        Some("0"),
        "the replay did not resurrect X"
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
    compare_with_source(&env, &server, &schema, org).await;
}
