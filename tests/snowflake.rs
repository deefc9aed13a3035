//! SNOWFLAKE on the fakesnow emulator (real login/query REST protocol, PUT via a presigned
//! upload, COPY INTO, MERGE, executed on DuckDB), read back with the official Python connector
//! (`tests/py/snowflake_query.py`), never through tidemark's client.
//!
//! fakesnow accepts any credentials, so it runs behind `tests/py/fakesnow_auth.py`, a login gate
//! that checks passwords and verifies key-pair JWTs independently (PyJWT), answering with
//! Snowflake's error codes. See docs/destinations/snowflake.md for what this covers and what not.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int16Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use tidemark::control::destinations::DestinationKind;
use tidemark::deliver::snowflake::SnowflakeDestination;
use tidemark::deliver::{DeliveryContext, Destination, Fence};
use tidemark::error::ErrorKind;
use tidemark::schema::{ColumnType, Registry, Table, TableSchema};
use uuid::Uuid;

const ACCOUNT: &str = "testacct";
const USER: &str = "loader";
const PASSWORD_VAR: &str = "TIDEMARK_TEST_SF_PASSWORD";
const DATABASE: &str = "tidemark_test";
const SCHEMA: &str = "export";

/// fakesnow behind the login gate, on a free loopback port.
struct Fakesnow {
    child: Child,
    port: u16,
}

impl Fakesnow {
    /// Internal stages emulate Snowflake's default, client-side encryption (SNOWFLAKE_FULL).
    fn start() -> Option<Fakesnow> {
        Fakesnow::start_with("full")
    }

    /// `stage_encryption`: `full` (PUT hands out encryption material, uploads must be
    /// encrypted) or `sse` (uploads pass through plain); see tests/py/fakesnow_auth.py.
    fn start_with(stage_encryption: &str) -> Option<Fakesnow> {
        let py = match std::env::var("TIDEMARK_FAKESNOW") {
            Ok(p) if Path::new(&p).is_file() => p,
            _ => {
                skip("TIDEMARK_FAKESNOW (the fakesnow venv's python) is not set")?;
                unreachable!()
            }
        };
        python()?;
        // SAFETY: every test of this binary sets the same value.
        unsafe { std::env::set_var(PASSWORD_VAR, "correct horse battery staple") };
        let port = free_port();
        let child = Command::new(py)
            .arg(repo().join("tests/py/fakesnow_auth.py"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--account",
                ACCOUNT,
                "--user",
                USER,
            ])
            .args(["--password-env", PASSWORD_VAR, "--public-key"])
            .arg(repo().join("tests/fixtures/snowflake_test_key.pub"))
            .args(["--stage-encryption", stage_encryption])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fakesnow");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fakesnow did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let sf = Fakesnow { child, port };
        sf.query(&[
            &format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"),
            &format!("CREATE SCHEMA IF NOT EXISTS {DATABASE}.{SCHEMA}"),
        ]);
        Some(sf)
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The gate's counters: `{"logins": {...}, "uploads": {"decrypted", "refused", "plain"}}`.
    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/tidemark-test/stats", self.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs statements with the official Python connector; the last one's result.
    fn query(&self, sql: &[&str]) -> Value {
        let py = std::env::var("TIDEMARK_FAKESNOW").unwrap();
        let out = Command::new(py)
            .arg(repo().join("tests/py/snowflake_query.py"))
            .args(["--port", &self.port.to_string(), "--account", ACCOUNT, "--user", USER])
            .args([
                "--password-env",
                PASSWORD_VAR,
                "--database",
                DATABASE,
                "--schema",
                SCHEMA,
            ])
            .args(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "snowflake_query.py failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        serde_json::from_value(self.query(&[sql])["rows"].clone()).unwrap()
    }

    fn count(&self, sql: &str) -> u64 {
        self.rows(sql)[0][0].as_ref().unwrap().parse().unwrap()
    }

    fn config(&self) -> Value {
        json!({
            "account": ACCOUNT, "user": USER, "password": {"env": PASSWORD_VAR},
            "database": DATABASE, "schema": SCHEMA, "warehouse": "load_wh",
            "base_url": self.base_url(), "request_timeout_seconds": 30
        })
    }

    fn key_pair_config(&self, key: &str) -> Value {
        let mut c = self.config();
        let obj = c.as_object_mut().unwrap();
        obj.remove("password");
        obj.insert(
            "private_key".into(),
            json!({"file": repo().join("tests/fixtures").join(key)}),
        );
        c
    }
}

impl Drop for Fakesnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn analyst(table: Table) -> String {
    format!("{}_V1", table.name().to_uppercase())
}

fn raw(table: Table) -> String {
    format!("{}_V1_RAW", table.name().to_uppercase())
}

/// One column read back from Snowflake, in a comparable text form.
fn snowflake_expr(c: &tidemark::schema::Column) -> String {
    let name = format!("\"{}\"", c.name.to_uppercase());
    match c.ty {
        // The Python connector decodes a NULL TIMESTAMP_TZ from fakesnow as 1970-01-01, so
        // timestamps are read as epoch microseconds (exact, and NULL stays NULL).
        ColumnType::Timestamptz => format!("DATE_PART(EPOCH_MICROSECOND, {name})"),
        _ => name,
    }
}

/// The same column read from the source, in the same text form.
fn postgres_expr(c: &tidemark::schema::Column) -> String {
    let name = format!("\"{}\"", c.name);
    match c.ty {
        ColumnType::Timestamptz => format!("((extract(epoch from {name}) * 1000000)::bigint)::text"),
        // inet's output form ('10.0.0.1', not '10.0.0.1/32' as ::text gives); format() of NULL is ''.
        ColumnType::Inet => format!("CASE WHEN {name} IS NULL THEN NULL ELSE format('%s', {name}) END"),
        ColumnType::TextArray => format!("to_jsonb({name})::text"),
        _ => format!("{name}::text"),
    }
}

/// Canonical form of a cell for comparison: floats by bits, numerics without trailing zeros,
/// JSON structurally (sorted keys, numbers as parsed).
fn canon(ty: ColumnType, v: &Option<String>) -> Option<String> {
    let v = v.as_deref()?;
    Some(match ty {
        ColumnType::Float8 => {
            let f: f64 = v.parse().unwrap_or_else(|_| panic!("not a float: {v}"));
            if f.is_nan() {
                "NaN".into()
            } else {
                format!("{:#x}", f.to_bits())
            }
        }
        ColumnType::Numeric { .. } => {
            let t = if v.contains('.') {
                v.trim_end_matches('0').trim_end_matches('.')
            } else {
                v
            };
            if t == "-0" { "0".into() } else { t.to_string() }
        }
        ColumnType::Jsonb | ColumnType::TextArray => serde_json::from_str::<Value>(v)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {v}"))
            .to_string(),
        _ => v.to_string(),
    })
}

fn compare(schema: &TableSchema, expected: &[Vec<Option<String>>], got: &[Vec<Option<String>>], what: &str) {
    assert_eq!(expected.len(), got.len(), "{what}: row count");
    for (e, g) in expected.iter().zip(got) {
        for (i, c) in schema.columns.iter().enumerate() {
            assert_eq!(
                canon(c.ty, &e[i]),
                canon(c.ty, &g[i]),
                "{what}: column {} of id {:?}: expected {:?}, Snowflake has {:?}",
                c.name,
                e[0],
                e[i],
                g[i]
            );
        }
    }
}

fn analyst_rows(sf: &Fakesnow, schema: &TableSchema, filter: &str) -> Vec<Vec<Option<String>>> {
    let cols: Vec<String> = schema.columns.iter().map(snowflake_expr).collect();
    sf.rows(&format!(
        "SELECT {} FROM {DATABASE}.{SCHEMA}.{} {filter} ORDER BY \"ID\"",
        cols.join(", "),
        analyst(schema.table)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_lands_once_in_raw_and_analyst_tables_equal_to_the_source() {
    let Some(env) = Env::start(600, 2).await else { return };
    let Some(sf) = Fakesnow::start() else { return };
    let org = env.orgs[0];
    env.add_destination(
        org,
        DestinationKind::Snowflake,
        "sf",
        sf.config(),
        &Table::ALL,
        86_400,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    assert!(
        env.run_until_idle(fast_options()).await.is_empty(),
        "a second pass delivers nothing"
    );

    for table in Table::ALL {
        let schema = env.registry.get(table, 1).unwrap();
        let cols: Vec<String> = schema.columns.iter().map(postgres_expr).collect();
        let source: Vec<Vec<Option<String>>> = {
            let sql = format!(
                "SELECT ARRAY[{}] FROM \"{}\" WHERE \"{}\" = $1 ORDER BY \"id\"",
                cols.join(", "),
                table.name(),
                schema.organization_column
            );
            sqlx::query_scalar::<_, Vec<Option<String>>>(&sql)
                .bind(org)
                .fetch_all(&env.control)
                .await
                .unwrap()
        };
        assert!(!source.is_empty(), "{table}: no source rows");
        let got = analyst_rows(&sf, &schema, "");
        compare(&schema, &source, &got, &format!("{table} analyst table"));
        // The raw history holds each delivered version once (the generator writes one version).
        let raw_rows = sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.{}", raw(table)));
        assert_eq!(raw_rows, source.len() as u64, "{table}: raw rows");
        let latest = sf.count(&format!(
            "SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.{}_V1_LATEST",
            table.name().to_uppercase()
        ));
        assert_eq!(latest, source.len() as u64, "{table}: latest view rows");
    }

    // Receipts: per-file COPY status and rows loaded, the MERGE counts, the staged path.
    let receipts: Vec<(Value, i64)> = sqlx::query_as(
        "SELECT receipt, row_count FROM warehouse_deliveries WHERE status = 'delivered' AND \"table\" = 'EVENTS' AND row_count > 0",
    )
    .fetch_all(&env.control)
    .await
    .unwrap();
    assert!(!receipts.is_empty());
    for (r, rows) in receipts {
        let files = r["copy"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{r:#}");
        assert_eq!(files[0]["status"], "LOADED", "{r:#}");
        assert_eq!(files[0]["rows_loaded"], rows.to_string(), "{r:#}");
        assert_eq!(r["merge"]["counts"]["number_of_rows_inserted"], rows, "{r:#}");
        let path = r["staged"]["path"].as_str().unwrap();
        assert!(path.starts_with(&format!("events/v1/{org}/")), "{path}");
        assert!(path.ends_with(&format!("{}.parquet", r["provenance"]["delivery_id"].as_str().unwrap())));
        assert!(r["copy"]["query_id"].is_string(), "{r:#}");
        assert!(!r.to_string().contains("correct horse"), "no secret in a receipt");
    }
}

/// Builds a batch of `schema` from JSON rows (absent or null = NULL): numerics and timestamps as
/// strings (`"-12.34"`, RFC 3339), jsonb as its text, text[] as a JSON array.
fn batch(schema: &TableSchema, rows: &[Value]) -> RecordBatch {
    let arrays: Vec<ArrayRef> = schema
        .columns
        .iter()
        .map(|c| {
            let vals: Vec<&Value> = rows.iter().map(|r| r.get(&c.name).unwrap_or(&Value::Null)).collect();
            let a: ArrayRef = match c.ty {
                ColumnType::Uuid | ColumnType::Text | ColumnType::Inet | ColumnType::Jsonb => {
                    Arc::new(StringArray::from_iter(vals.iter().map(|v| v.as_str())))
                }
                ColumnType::Int2 => Arc::new(Int16Array::from_iter(vals.iter().map(|v| v.as_i64().map(|i| i as i16)))),
                ColumnType::Int4 => Arc::new(Int32Array::from_iter(vals.iter().map(|v| v.as_i64().map(|i| i as i32)))),
                ColumnType::Int8 => Arc::new(Int64Array::from_iter(vals.iter().map(|v| v.as_i64()))),
                ColumnType::Float8 => Arc::new(Float64Array::from_iter(vals.iter().map(|v| v.as_f64()))),
                ColumnType::Bool => Arc::new(BooleanArray::from_iter(vals.iter().map(|v| v.as_bool()))),
                ColumnType::Numeric { precision, scale } => Arc::new(
                    Decimal128Array::from_iter(vals.iter().map(|v| v.as_str().map(|s| decimal(s, scale as u32))))
                        .with_precision_and_scale(precision, scale)
                        .unwrap(),
                ),
                ColumnType::Timestamptz => Arc::new(
                    TimestampMicrosecondArray::from_iter(vals.iter().map(|v| {
                        v.as_str()
                            .map(|s| DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros())
                    }))
                    .with_timezone("UTC"),
                ),
                ColumnType::Date => Arc::new(Date32Array::from_iter(vals.iter().map(|v| {
                    v.as_str().map(|s| {
                        (chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
                            - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                        .num_days() as i32
                    })
                }))),
                ColumnType::TextArray => {
                    let mut b = ListBuilder::new(StringBuilder::new());
                    for v in &vals {
                        match v.as_array() {
                            Some(items) => {
                                for i in items {
                                    b.values().append_option(i.as_str());
                                }
                                b.append(true);
                            }
                            None => b.append(false),
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            a
        })
        .collect();
    RecordBatch::try_new(schema.arrow_schema(), arrays).unwrap()
}

fn decimal(s: &str, scale: u32) -> i128 {
    let neg = s.starts_with('-');
    let s = s.trim_start_matches('-');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<width$}", width = scale as usize);
    let v: i128 = format!("{int}{frac}").parse().unwrap();
    if neg { -v } else { v }
}

/// The expected read-back of a JSON test row, in the source's text form.
fn expected(schema: &TableSchema, rows: &[Value]) -> Vec<Vec<Option<String>>> {
    let mut sorted: Vec<&Value> = rows.iter().collect();
    sorted.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    sorted
        .iter()
        .map(|r| {
            schema
                .columns
                .iter()
                .map(|c| {
                    let v = r.get(&c.name).filter(|v| !v.is_null())?;
                    Some(match c.ty {
                        ColumnType::Timestamptz => DateTime::parse_from_rfc3339(v.as_str().unwrap())
                            .unwrap()
                            .timestamp_micros()
                            .to_string(),
                        ColumnType::TextArray => v.to_string(),
                        ColumnType::Bool => v.as_bool().unwrap().to_string(),
                        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 | ColumnType::Float8 => v.to_string(),
                        _ => v.as_str().unwrap().to_string(),
                    })
                })
                .collect()
        })
        .collect()
}

struct Direct {
    dest: SnowflakeDestination,
    registry: Registry,
}

impl Direct {
    fn new(config: &Value) -> Direct {
        Direct {
            dest: SnowflakeDestination::from_config(config).unwrap(),
            registry: Registry::embedded(),
        }
    }

    async fn deliver(&self, table: Table, delivery: Uuid, rows: &[Value]) -> tidemark::error::Result<Value> {
        let schema = self.registry.get(table, 1).unwrap();
        let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
        let ctx = DeliveryContext {
            delivery_id: delivery,
            organization_id: Uuid::nil(),
            schema: &schema,
            window_start: start,
            window_end: start + chrono::Duration::minutes(15),
            fence: Fence::unfenced(),
        };
        let b = batch(&schema, rows);
        let stream: tidemark::extract::BatchStream = Box::pin(futures::stream::iter(vec![Ok(b)]));
        let delivered = self.dest.deliver(&ctx, stream).await?;
        assert_eq!(delivered.rows, rows.len() as u64);
        Ok(delivered.receipt)
    }
}

impl Direct {
    /// Delivers rows with their `_op` (`U` or `D`), as the extraction does with delete capture.
    async fn deliver_ops(&self, table: Table, delivery: Uuid, rows: &[(Value, &str)]) -> Value {
        let schema = self.registry.get(table, 1).unwrap();
        let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
        let ctx = DeliveryContext {
            delivery_id: delivery,
            organization_id: Uuid::nil(),
            schema: &schema,
            window_start: start,
            window_end: start + chrono::Duration::minutes(15),
            fence: Fence::unfenced(),
        };
        let values: Vec<Value> = rows.iter().map(|(v, _)| v.clone()).collect();
        let b = batch(&schema, &values);
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(arrow_array::StringArray::from_iter_values(
            rows.iter().map(|(_, op)| *op),
        )));
        let b = RecordBatch::try_new(schema.export_arrow_schema(), columns).unwrap();
        let stream: tidemark::extract::BatchStream = Box::pin(futures::stream::iter(vec![Ok(b)]));
        self.dest.deliver(&ctx, stream).await.unwrap().receipt
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_leaves_the_analyst_table_and_an_older_version_never_resurrects_it() {
    let Some(sf) = Fakesnow::start() else { return };
    let d = Direct::new(&sf.config());
    let analyst_ids = |relation: &str| {
        sf.rows(&format!(
            "SELECT \"ID\", \"SOURCE\" FROM {DATABASE}.{SCHEMA}.{relation} ORDER BY \"ID\""
        ))
    };
    let row = |n: u8, source: &str| vec![Some(uuid(n)), Some(source.to_string())];
    d.deliver_ops(
        Table::Events,
        Uuid::new_v4(),
        &[
            (event(1, "2026-10-01T00:05:00Z"), "U"),
            (event(2, "2026-10-01T00:06:00Z"), "U"),
        ],
    )
    .await;
    // Id 1 deleted (its last values, updated_at = the delete's time).
    d.deliver_ops(
        Table::Events,
        Uuid::new_v4(),
        &[(event(1, "2026-10-01T00:10:00Z"), "D")],
    )
    .await;
    assert_eq!(analyst_ids("EVENTS_V1"), vec![row(2, "edr")]);
    assert_eq!(analyst_ids("EVENTS_V1_LATEST"), vec![row(2, "edr")]);
    // An older version of id 1 arrives late (a replayed window): id 1 stays deleted.
    let mut older = event(1, "2026-10-01T00:01:00Z");
    older["source"] = "stale".into();
    d.deliver_ops(Table::Events, Uuid::new_v4(), &[(older, "U")]).await;
    assert_eq!(analyst_ids("EVENTS_V1"), vec![row(2, "edr")], "no resurrection");
    assert_eq!(analyst_ids("EVENTS_V1_LATEST"), vec![row(2, "edr")]);
    // Id 2 deleted and re-inserted by one transaction: D and U tie on updated_at, the U wins.
    let mut again = event(2, "2026-10-01T00:12:00Z");
    again["source"] = "reinserted".into();
    d.deliver_ops(
        Table::Events,
        Uuid::new_v4(),
        &[(event(2, "2026-10-01T00:12:00Z"), "D"), (again, "U")],
    )
    .await;
    assert_eq!(analyst_ids("EVENTS_V1"), vec![row(2, "reinserted")]);
    assert_eq!(analyst_ids("EVENTS_V1_LATEST"), vec![row(2, "reinserted")]);
    // A newer version of id 1 (re-created later) comes back.
    let mut back = event(1, "2026-10-01T00:30:00Z");
    back["source"] = "back".into();
    d.deliver_ops(Table::Events, Uuid::new_v4(), &[(back, "U")]).await;
    assert_eq!(analyst_ids("EVENTS_V1"), vec![row(1, "back"), row(2, "reinserted")]);
    assert_eq!(
        analyst_ids("EVENTS_V1_LATEST"),
        vec![row(1, "back"), row(2, "reinserted")]
    );
    // The raw history keeps every version, the delete included.
    assert_eq!(
        sf.count(&format!(
            "SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1_RAW WHERE \"_OP\" = 'D'"
        )),
        2
    );
}

fn uuid(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

fn event(n: u8, updated_at: &str) -> Value {
    json!({
        "id": uuid(n), "organization_id": Uuid::nil().to_string(), "source": "edr", "event_type": "login",
        "severity": 3, "tags": ["a"], "payload": "{}", "occurred_at": updated_at,
        "created_at": updated_at, "updated_at": updated_at,
    })
}

/// Tables created for an earlier minor version of the major (here: `events` v1 without its
/// nullable `clock_skew_ms`) gain the new column before the first load; the old rows read NULL,
/// the new ones their value, in the raw and analyst tables and the redefined latest view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_an_older_minor_version_gain_its_new_columns() {
    let Some(sf) = Fakesnow::start() else { return };
    let mut older = (*Registry::embedded().get(Table::Events, 1).unwrap()).clone();
    older.columns.retain(|c| c.name != "clock_skew_ms");
    let create = tidemark::deliver::snowflake::ddl::create_statements(&older, Some((DATABASE, SCHEMA)));
    let mut setup: Vec<String> = create.clone();
    // A row loaded under the older minor version.
    setup.push(format!(
        "INSERT INTO {DATABASE}.{SCHEMA}.EVENTS_V1 (\"ID\", \"ORGANIZATION_ID\", \"SOURCE\", \"EVENT_TYPE\", \"SEVERITY\", \"TAGS\", \"PAYLOAD\", \"OCCURRED_AT\", \"CREATED_AT\", \"UPDATED_AT\", \"_TIDEMARK_DELIVERY_ID\", \"_TIDEMARK_LOADED_AT\") SELECT '{}', '{}', 'old', 'login', 1, ARRAY_CONSTRUCT('a'), PARSE_JSON('{{}}'), '2026-09-01T00:00:00Z', '2026-09-01T00:00:00Z', '2026-09-01T00:00:00Z', 'before', '2026-09-01T00:00:00Z'",
        uuid(9),
        Uuid::nil()
    ));
    sf.query(&setup.iter().map(String::as_str).collect::<Vec<_>>());
    let columns = |table: &str| -> Vec<String> {
        sf.rows(&format!("DESCRIBE TABLE {DATABASE}.{SCHEMA}.{table}"))
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()
    };
    assert!(!columns("EVENTS_V1").contains(&"CLOCK_SKEW_MS".to_string()));

    let d = Direct::new(&sf.config());
    let mut row = event(1, "2026-10-01T00:05:00Z");
    row["clock_skew_ms"] = json!(-42);
    d.deliver(Table::Events, Uuid::new_v4(), &[row]).await.unwrap();
    for table in ["EVENTS_V1_RAW", "EVENTS_V1"] {
        assert!(columns(table).contains(&"CLOCK_SKEW_MS".to_string()), "{table}");
    }
    let read = |relation: &str| {
        sf.rows(&format!(
            "SELECT \"ID\", \"CLOCK_SKEW_MS\" FROM {DATABASE}.{SCHEMA}.{relation} ORDER BY \"ID\""
        ))
    };
    assert_eq!(
        read("EVENTS_V1"),
        vec![vec![Some(uuid(1)), Some("-42".to_string())], vec![Some(uuid(9)), None]]
    );
    assert_eq!(
        read("EVENTS_V1_RAW"),
        vec![vec![Some(uuid(1)), Some("-42".to_string())]]
    );
    assert_eq!(
        read("EVENTS_V1_LATEST"),
        vec![vec![Some(uuid(1)), Some("-42".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_exactly() {
    let Some(sf) = Fakesnow::start() else { return };
    let d = Direct::new(&sf.config());
    let events = vec![
        json!({
            "id": uuid(1), "organization_id": Uuid::nil().to_string(), "source": "ünïcødé ✓ 日本語",
            "event_type": "it's \"quoted\", with\nnewline", "severity": -32768, "actor_ip": "2001:db8::ff00:42:8329",
            "identity_id": uuid(9), "tags": ["x", "", "with,comma", "with \"quote\""],
            "payload": "{\"n\": 12345678901234567890, \"f\": 0.1, \"deep\": {\"a\": [1, null, true, \"s\"]}, \"u\": \"é\"}",
            "risk_score": "-9999.99", "occurred_at": "1999-12-31T23:59:59.999999Z", "bytes_in": 9_223_372_036_854_775_807i64,
            "clock_skew_ms": -2_147_483_648i64, "created_at": "2026-10-01T00:00:00.000001Z",
            "updated_at": "2026-10-01T00:00:00.123456Z",
        }),
        json!({
            "id": uuid(2), "organization_id": Uuid::nil().to_string(), "source": "", "event_type": "x",
            "severity": 32767, "actor_ip": "10.0.0.0/8", "tags": [], "payload": "[]", "risk_score": "0.00",
            "occurred_at": "2026-10-01T00:14:59.999999Z", "bytes_in": -1, "clock_skew_ms": 2_147_483_647i64,
            "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:14:59.999999Z",
        }),
        json!({
            "id": uuid(3), "organization_id": Uuid::nil().to_string(), "source": "s", "event_type": "x",
            "severity": 0, "tags": ["only"], "payload": "null", "occurred_at": "2026-10-01T00:00:00Z",
            "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:00:00Z",
        }),
    ];
    d.deliver(Table::Events, Uuid::new_v4(), &events).await.unwrap();
    let schema = d.registry.get(Table::Events, 1).unwrap();
    compare(
        &schema,
        &expected(&schema, &events),
        &analyst_rows(&sf, &schema, ""),
        "events",
    );

    let scores = vec![
        json!({
            "id": uuid(1), "organization_id": Uuid::nil().to_string(), "asset_id": uuid(7), "framework": "cis",
            "control_id": "1.1", "control_title": "t", "score": "999.99", "score_delta": "-0.01", "passed": true,
            "weight": 0.1, "measured_on": "2026-02-28", "evidence": "{\"k\": \"v\"}",
            "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:00:01Z",
        }),
        json!({
            "id": uuid(2), "organization_id": Uuid::nil().to_string(), "framework": "nist", "control_id": "x",
            "control_title": "t", "score": "-999.99", "passed": false, "weight": -1.5e-300, "measured_on": "1970-01-01",
            "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:00:02Z",
        }),
    ];
    d.deliver(Table::BaselineScores, Uuid::new_v4(), &scores).await.unwrap();
    let schema = d.registry.get(Table::BaselineScores, 1).unwrap();
    compare(
        &schema,
        &expected(&schema, &scores),
        &analyst_rows(&sf, &schema, ""),
        "baseline_scores",
    );

    let siem = vec![json!({
        "id": uuid(1), "organization_id": Uuid::nil().to_string(), "target": "splunk", "endpoint": "https://x",
        "attempt": 1, "delivered": true, "batch_size": 10, "payload_bytes": 1, "ingest_cost_usd": "123456789012345.123456789",
        "latency_ms": 12.5, "response": "{\"ok\": true}", "next_retry_at": "2026-10-01T00:00:00.5Z",
        "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:00:00Z",
    })];
    d.deliver(Table::SiemDeliveries, Uuid::new_v4(), &siem).await.unwrap();
    let schema = d.registry.get(Table::SiemDeliveries, 1).unwrap();
    compare(
        &schema,
        &expected(&schema, &siem),
        &analyst_rows(&sf, &schema, ""),
        "siem_deliveries",
    );

    // The declared Snowflake types: numeric scale kept, TIMESTAMP_TZ, VARIANT, ARRAY, text for
    // uuid/inet (read from INFORMATION_SCHEMA through the connector).
    let types = sf.query(&[&format!(
        "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM {DATABASE}.INFORMATION_SCHEMA.COLUMNS \
         WHERE TABLE_NAME = 'EVENTS_V1' ORDER BY ORDINAL_POSITION"
    )]);
    let types: BTreeMap<String, (String, Option<String>, Option<String>)> = types["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_uppercase(),
                (
                    r[1].as_str().unwrap().to_string(),
                    r[2].as_str().map(str::to_string),
                    r[3].as_str().map(str::to_string),
                ),
            )
        })
        .collect();
    assert_eq!(
        types["RISK_SCORE"],
        ("NUMBER".into(), Some("6".into()), Some("2".into())),
        "{types:?}"
    );
    assert_eq!(types["SEVERITY"].0, "NUMBER", "{types:?}");
    assert_eq!(types["UPDATED_AT"].0, "TIMESTAMP_TZ", "{types:?}");
    assert_eq!(types["PAYLOAD"].0, "VARIANT", "{types:?}");
    // fakesnow stores ARRAY, OBJECT and VARIANT alike as DuckDB JSON and reports all three as
    // VARIANT here; that the column holds arrays is checked through ARRAY_SIZE and indexing below.
    assert!(["ARRAY", "VARIANT"].contains(&types["TAGS"].0.as_str()), "{types:?}");
    assert_eq!(types["ID"].0, "TEXT", "{types:?}");
    assert_eq!(types["ACTOR_IP"].0, "TEXT", "{types:?}");
    // VARIANT is queryable as JSON, ARRAY as an array.
    let r = sf.rows(&format!(
        "SELECT \"PAYLOAD\":deep.a[3]::VARCHAR, \"TAGS\"[2]::VARCHAR FROM {DATABASE}.{SCHEMA}.EVENTS_V1 WHERE \"ID\" = '{}'",
        uuid(1)
    ));
    assert_eq!(r, vec![vec![Some("s".to_string()), Some("with,comma".to_string())]]);
    let sizes = sf.rows(&format!(
        "SELECT ARRAY_SIZE(\"TAGS\") FROM {DATABASE}.{SCHEMA}.EVENTS_V1 ORDER BY \"ID\""
    ));
    let sizes: Vec<Option<String>> = sizes.into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(sizes, vec![Some("4".into()), Some("0".into()), Some("1".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_loaded_twice_leaves_one_copy_and_an_older_version_never_wins() {
    let Some(sf) = Fakesnow::start() else { return };
    let d = Direct::new(&sf.config());
    let first = Uuid::new_v4();
    let rows = vec![event(1, "2026-10-01T00:05:00Z"), event(2, "2026-10-01T00:06:00Z")];
    let r1 = d.deliver(Table::Events, first, &rows).await.unwrap();
    assert_eq!(r1["replaced_raw_rows"], 0);
    assert_eq!(r1["copy"]["files"][0]["status"], "LOADED");
    assert_eq!(r1["copy"]["files"][0]["rows_loaded"], "2");
    // The same delivery again (a retry after a crash between load and completion).
    let r2 = d.deliver(Table::Events, first, &rows).await.unwrap();
    assert_eq!(r2["replaced_raw_rows"], 2, "{r2:#}");
    assert_eq!(r2["copy"]["files"][0]["rows_loaded"], "2");
    assert_eq!(r1["staged"]["path"], r2["staged"]["path"], "deterministic stage path");
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1_RAW")),
        2
    );
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1")),
        2
    );

    // A newer version of id 1 in a later delivery wins; then an older one arrives late: kept out.
    let newer = event(1, "2026-10-01T00:20:00Z");
    d.deliver(Table::Events, Uuid::new_v4(), std::slice::from_ref(&newer))
        .await
        .unwrap();
    let mut older = event(1, "2026-10-01T00:01:00Z");
    older["source"] = "stale".into();
    d.deliver(Table::Events, Uuid::new_v4(), &[older]).await.unwrap();
    let r = sf.rows(&format!(
        "SELECT DATE_PART(EPOCH_MICROSECOND, \"UPDATED_AT\"), \"SOURCE\" FROM {DATABASE}.{SCHEMA}.EVENTS_V1 WHERE \"ID\" = '{}'",
        uuid(1)
    ));
    let want = DateTime::parse_from_rfc3339("2026-10-01T00:20:00Z")
        .unwrap()
        .timestamp_micros()
        .to_string();
    assert_eq!(r, vec![vec![Some(want.clone()), Some("edr".to_string())]]);
    // The raw history keeps every version; the latest view agrees with the analyst table.
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1_RAW")),
        4
    );
    let r = sf.rows(&format!(
        "SELECT DATE_PART(EPOCH_MICROSECOND, \"UPDATED_AT\") FROM {DATABASE}.{SCHEMA}.EVENTS_V1_LATEST WHERE \"ID\" = '{}'",
        uuid(1)
    ));
    assert_eq!(r, vec![vec![Some(want)]]);
}

/// Snowflake's default internal stage (SNOWFLAKE_FULL) takes only client-side encrypted files:
/// the gate issues encryption material with the PUT and decrypts each upload with the Python
/// connector's own code before fakesnow stores it; an SSE stage takes the file as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_stage_uploads_are_encrypted_for_full_stages_and_plain_for_sse_ones() {
    let rows = vec![event(1, "2026-10-01T00:05:00Z"), event(2, "2026-10-01T00:06:00Z")];
    for (mode, encrypted) in [("full", true), ("sse", false)] {
        let Some(sf) = Fakesnow::start_with(mode) else { return };
        let d = Direct::new(&sf.config());
        let receipt = d.deliver(Table::Events, Uuid::new_v4(), &rows).await.unwrap();
        assert_eq!(
            receipt["staged"]["client_side_encrypted"], encrypted,
            "{mode}: {receipt:#}"
        );
        assert_eq!(receipt["copy"]["files"][0]["rows_loaded"], "2", "{mode}: {receipt:#}");
        let stats = sf.stats().await;
        let uploads = &stats["uploads"];
        assert_eq!(uploads["refused"], 0, "{mode}: {stats}");
        assert_eq!(uploads["decrypted"], if encrypted { 1 } else { 0 }, "{mode}: {stats}");
        assert_eq!(uploads["plain"], if encrypted { 0 } else { 1 }, "{mode}: {stats}");
        // What COPY read is the plaintext Parquet: the rows are there, equal to the source.
        let got = sf.rows(&format!(
            "SELECT \"ID\", \"SOURCE\" FROM {DATABASE}.{SCHEMA}.EVENTS_V1 ORDER BY \"ID\""
        ));
        assert_eq!(
            got,
            vec![
                vec![Some(uuid(1)), Some("edr".to_string())],
                vec![Some(uuid(2)), Some("edr".to_string())]
            ],
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_key_pair_logins_are_checked_and_failures_classified() {
    let Some(sf) = Fakesnow::start() else { return };
    // Key-pair: the JWT verifies against the registered public key (checked by PyJWT in the gate).
    let jwt = SnowflakeDestination::from_config(&sf.key_pair_config("snowflake_test_key.p8")).unwrap();
    jwt.check().await.unwrap();
    let d = Direct::new(&sf.key_pair_config("snowflake_test_key.p8"));
    d.deliver(Table::Events, Uuid::new_v4(), &[event(5, "2026-10-01T00:00:00Z")])
        .await
        .unwrap();
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1")),
        1
    );
    // Another key: refused with Snowflake's JWT error, classified as authentication.
    let other = SnowflakeDestination::from_config(&sf.key_pair_config("snowflake_other_key.p8")).unwrap();
    let err = other.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationAuth, "{err}");
    assert!(err.to_string().contains("390144"), "{err}");
    // Password.
    SnowflakeDestination::from_config(&sf.config())
        .unwrap()
        .check()
        .await
        .unwrap();
    unsafe { std::env::set_var("TIDEMARK_TEST_SF_WRONG", "wrong") };
    let mut bad = sf.config();
    bad["password"] = json!({"env": "TIDEMARK_TEST_SF_WRONG"});
    let err = SnowflakeDestination::from_config(&bad)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationAuth, "{err}");
    assert!(err.to_string().contains("390100"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
    // Unreachable: transient.
    let mut down = sf.config();
    down["base_url"] = format!("http://127.0.0.1:{}", free_port()).into();
    let err = SnowflakeDestination::from_config(&down)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationTransient, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_refuses_the_data_is_rejected_with_snowflakes_message() {
    let Some(sf) = Fakesnow::start() else { return };
    // The customer's raw table has an incompatible type for ID.
    let schema = Registry::embedded().get(Table::Events, 1).unwrap();
    let ddl = tidemark::deliver::snowflake::ddl::create_statements(&schema, Some((DATABASE, SCHEMA)));
    let sabotaged = ddl[0].replace("\"ID\" VARCHAR(36) NOT NULL", "\"ID\" NUMBER(38,0) NOT NULL");
    assert_ne!(sabotaged, ddl[0]);
    sf.query(&[&sabotaged]);
    let d = Direct::new(&sf.config());
    let err = d
        .deliver(Table::Events, Uuid::new_v4(), &[event(1, "2026-10-01T00:00:00Z")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationRejected, "{err}");
    assert!(err.to_string().contains("COPY INTO"), "{err}");
    assert!(err.to_string().contains("EVENTS_V1_RAW"), "{err}");
    // Nothing of the failed attempt stays visible.
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1_RAW")),
        0
    );
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.EVENTS_V1")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_stage_mode_writes_the_file_to_the_customer_bucket() {
    let Some(sf) = Fakesnow::start() else { return };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("customer");
    // The external stage exists on the Snowflake side (created by the customer).
    sf.query(&[&format!(
        "CREATE STAGE IF NOT EXISTS {DATABASE}.{SCHEMA}.CUSTOMER_STAGE URL = 's3://customer/snowflake/'"
    )]);
    let mut config = sf.config();
    config["stage"] =
        json!({"external": {"name": "customer_stage", "object_store": moto.config("customer", "snowflake")}});
    let d = Direct::new(&config);
    let delivery = Uuid::new_v4();
    let result = d
        .deliver(Table::Events, delivery, &[event(1, "2026-10-01T00:00:00Z")])
        .await;
    // The Parquet file landed under the stage's location, at the deterministic path.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("customer")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = download(
        Arc::new(store),
        &object_store::path::Path::from("snowflake"),
        dir.path(),
    )
    .await;
    let want = format!(
        "snowflake/events/v1/{}/2026-10-01/events_20261001T000000Z_20261001T001500Z_{delivery}.parquet",
        Uuid::nil()
    );
    assert_eq!(keys, vec![want.clone()]);
    let file: PathBuf = dir.path().join(&want);
    let py = python().unwrap();
    let out = Command::new(py)
        .args([
            "-c",
            "import pyarrow.parquet as pq,sys; t=pq.read_table(sys.argv[1]); print(t.num_rows, t.column('_tidemark_delivery_id')[0])",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("1 {delivery}"));
    // fakesnow cannot run COPY … FILES = (…) from a named stage (HTTP 500, see emulators.md and
    // docs/destinations/snowflake.md), so the load itself fails here as a retryable error that
    // names the statement. The statement's text is covered by unit tests.
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DestinationTransient, "{err}");
    assert!(err.to_string().contains("COPY INTO"), "{err}");
}

/// The conformance target: one fakesnow, one database/schema shared by the scenarios (they use
/// different tables and organizations), read back with the Python connector.
struct SnowflakeTarget {
    sf: Fakesnow,
}

#[async_trait::async_trait]
impl common::conformance::Target for SnowflakeTarget {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Snowflake
    }

    fn config(&self) -> Value {
        self.sf.config()
    }

    fn bad_auth_config(&self) -> Option<Value> {
        // SAFETY: every test of this binary sets the same value.
        unsafe { std::env::set_var("TIDEMARK_TEST_SF_WRONG", "wrong") };
        let mut c = self.sf.config();
        c["password"] = json!({"env": "TIDEMARK_TEST_SF_WRONG"});
        Some(c)
    }

    fn unreachable_config(&self) -> Value {
        let mut c = self.sf.config();
        c["base_url"] = format!("http://127.0.0.1:{}", free_port()).into();
        c
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
        self.sf
            .rows(&format!(
                "SELECT \"ID\", DATE_PART(EPOCH_MICROSECOND, \"UPDATED_AT\") FROM {DATABASE}.{SCHEMA}.{}",
                analyst(table)
            ))
            .into_iter()
            .map(|r| {
                let id = r[0].as_deref().unwrap().parse().unwrap();
                let micros: i64 = r[1].as_deref().unwrap().parse().unwrap();
                (id, DateTime::from_timestamp_micros(micros).unwrap())
            })
            .collect()
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        Some(
            self.sf
                .count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.{}", raw(table))),
        )
    }

    async fn sabotage(&self, table: Table) -> Option<()> {
        // The customer's raw table declares ID as a number: COPY cannot convert the uuids.
        let schema = Registry::embedded().get(table, 1).unwrap();
        let ddl = tidemark::deliver::snowflake::ddl::create_statements(&schema, Some((DATABASE, SCHEMA)));
        let sabotaged = ddl[0].replace("\"ID\" VARCHAR(36) NOT NULL", "\"ID\" NUMBER(38,0) NOT NULL");
        assert_ne!(sabotaged, ddl[0]);
        self.sf.query(&[&sabotaged]);
        Some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_conforms() {
    let Some(sf) = Fakesnow::start() else { return };
    common::conformance::suite(&SnowflakeTarget { sf }).await;
}

/// Internal stages of AWS-hosted accounts hand out S3 stage info with temporary credentials
/// (fakesnow only emulates the GCS presigned form). The upload half is checked against moto
/// with stage info shaped like Snowflake's; that Snowflake accepts the object is not (see the
/// doc page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stage_info_uploads_with_its_temporary_credentials() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("sfc-stage");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("events_x.parquet");
    std::fs::write(&local, b"PAR1 not really parquet PAR1").unwrap();
    let info = json!({
        "locationType": "S3", "location": "sfc-stage/tidemark/stages/abc/", "region": "us-east-1",
        "endPoint": moto.endpoint(), "isClientSideEncrypted": false,
        "creds": {"AWS_KEY_ID": "test", "AWS_SECRET_KEY": "test", "AWS_TOKEN": "session-token"},
    });
    let url = tidemark::deliver::snowflake::upload_s3_stage(&info, &local, "ZGlnZXN0", None, true)
        .await
        .unwrap();
    assert_eq!(url, "s3://sfc-stage/tidemark/stages/abc/events_x.parquet");
    let out = Command::new(python().unwrap())
        .args([
            "-c",
            "import boto3,sys; o=boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').get_object(Bucket='sfc-stage', Key='tidemark/stages/abc/events_x.parquet'); print(o['Body'].read().decode(), o['Metadata'].get('sfc-digest'))",
            &moto.endpoint(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PAR1 not really parquet PAR1 ZGlnZXN0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client-side encrypted S3 internal stage (AWS accounts' default): the object on S3 is the
/// encrypted file with the drivers' metadata (`x-amz-key`, `x-amz-iv`, `x-amz-matdesc`,
/// `sfc-digest` of the plaintext); the Python connector's own `decrypt_stream` gets the
/// plaintext back from what moto stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stage_uploads_are_encrypted_with_the_puts_material() {
    use base64::Engine;
    use sha2::Digest;
    use tidemark::deliver::snowflake::encryption::EncryptionMaterial;
    let Some(moto) = Moto::start() else { return };
    let Ok(fakesnow_py) = std::env::var("TIDEMARK_FAKESNOW") else {
        skip("TIDEMARK_FAKESNOW (the venv with the Snowflake connector) is not set");
        return;
    };
    moto.create_bucket("sfc-stage");
    let dir = tempfile::tempdir().unwrap();
    let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let local = dir.path().join("plain").join("events_y.parquet");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, &plain).unwrap();
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&plain));
    let master = base64::engine::general_purpose::STANDARD.encode([42u8; 16]);
    let put = json!({"encryptionMaterial": {"queryStageMasterKey": master, "queryId": "01bf-put", "smkId": 8_112_233}});
    let material = EncryptionMaterial::from_put_response(&put).unwrap().unwrap();
    let encrypted = dir.path().join("events_y.parquet");
    let (meta, size) = material.encrypt_file(&local, &encrypted).unwrap();
    assert_eq!(size, 100_000 / 16 * 16 + 16);
    let info = json!({
        "locationType": "S3", "location": "sfc-stage/stages/enc/", "region": "us-east-1",
        "endPoint": moto.endpoint(), "isClientSideEncrypted": true,
        "creds": {"AWS_KEY_ID": "test", "AWS_SECRET_KEY": "test"},
    });
    tidemark::deliver::snowflake::upload_s3_stage(&info, &encrypted, &digest, Some(&meta), true)
        .await
        .unwrap();
    let out_path = dir.path().join("decrypted");
    let script = r#"
import io, sys, boto3
from snowflake.connector.constants import EncryptionMetadata
from snowflake.connector.encryption_util import SnowflakeEncryptionUtil
from snowflake.connector.storage_client import SnowflakeFileEncryptionMaterial
endpoint, master, out = sys.argv[1:4]
o = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").get_object(Bucket="sfc-stage", Key="stages/enc/events_y.parquet")
m = o["Metadata"]
meta = EncryptionMetadata(key=m["x-amz-key"], iv=m["x-amz-iv"], matdesc=m["x-amz-matdesc"])
material = SnowflakeFileEncryptionMaterial(query_stage_master_key=master, query_id="01bf-put", smk_id=8112233)
buf = io.BytesIO()
SnowflakeEncryptionUtil.decrypt_stream(meta, material, io.BytesIO(o["Body"].read()), buf)
open(out, "wb").write(buf.getvalue())
print(m["x-amz-matdesc"], m["sfc-digest"])
"#;
    let out = Command::new(fakesnow_py)
        .args(["-c", script, &moto.endpoint(), &master])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(r#"{{"queryId":"01bf-put","smkId":"8112233","keySize":"128"}} {digest}"#)
    );
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        plain,
        "the connector decrypts the plaintext back"
    );
}

/// The operator's path: `tidemark destination add --kind SNOWFLAKE` (config validated, the
/// probe logs in), then `tidemark run --until-idle`; verified by querying the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_add_and_run_deliver_through_the_cli() {
    let Some(env) = Env::start(300, 1).await else { return };
    let Some(sf) = Fakesnow::start() else { return };
    let org = env.orgs[1];
    let add = |config: &Value, name: &str| {
        env.cli()
            .env(PASSWORD_VAR, std::env::var(PASSWORD_VAR).unwrap())
            .args(["destination", "add", "--org", &org.to_string(), "--name", name])
            .args([
                "--kind",
                "SNOWFLAKE",
                "--tables",
                "findings",
                "--window",
                "6h",
                "--config",
            ])
            .arg(config.to_string())
            .output()
            .unwrap()
    };
    // A refused key is caught by the probe: exit 4, nothing registered, no key material echoed.
    let out = add(&sf.key_pair_config("snowflake_other_key.p8"), "bad");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("390144"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM warehouse_destinations").await, 0);

    let out = add(&sf.key_pair_config("snowflake_test_key.p8"), "warehouse");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One worker: fakesnow runs every session on one shared DuckDB, where two MERGEs into the
    // same table at once fail with a write-write conflict (HTTP 500). Snowflake itself queues
    // concurrent DML on a table behind its lock; the adapter would retry such a 500 anyway.
    let out = env
        .cli()
        .args(["run", "--until-idle", "--workers", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let source: i64 = sqlx::query_scalar("SELECT count(*) FROM findings WHERE organization_id = $1")
        .bind(org)
        .fetch_one(&env.control)
        .await
        .unwrap();
    assert!(source > 0);
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status <> 'delivered'")
            .await,
        0
    );
    assert_eq!(
        sf.count(&format!("SELECT COUNT(*) FROM {DATABASE}.{SCHEMA}.FINDINGS_V1")),
        source as u64
    );
}
