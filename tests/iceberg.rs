//! ICEBERG_S3 end to end: generated data in a throwaway Postgres → windows via the real outbox
//! and worker → Iceberg tables (SQL catalog on a database of the same throwaway cluster,
//! warehouse on moto S3 or a local directory) → read back by pyiceberg (its SqlCatalog on the
//! same database) and by DuckDB's `iceberg_scan`, and compared with the source value by value
//! (`verify_export.py` on what each reader returned). Then the shared conformance suite.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use common::conformance::{Target, suite};
use common::*;
use tidemark::control::destinations::{Destination, DestinationKind};
use tidemark::control::outbox;
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::schema::Table;
use uuid::Uuid;

/// The venv with pyiceberg and DuckDB's iceberg extension (`tests/py/iceberg-requirements.txt`).
fn iceberg_python() -> Option<PathBuf> {
    match std::env::var("TIDEMARK_ICEBERG_PYTHON") {
        Ok(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        _ => skip("TIDEMARK_ICEBERG_PYTHON (pyiceberg + DuckDB iceberg venv) is not set").map(|_| PathBuf::new()),
    }
}

/// Where the catalog and the warehouse of a test live, and how to read them back.
struct Lake {
    /// `postgres://…/catalog` on a throwaway cluster (by env reference in configs).
    catalog_url: String,
    warehouse: String,
    s3_endpoint: Option<String>,
    namespace: String,
    /// Keeps a local warehouse directory alive.
    _dir: Option<tempfile::TempDir>,
    /// DuckDB's extension directory, installed into once per lake.
    duckdb_ext: tempfile::TempDir,
}

impl Lake {
    /// A SQL catalog in a new database `db` of `pg`, warehouse on moto (bucket `bucket`) or,
    /// without moto, in a temporary directory.
    async fn new(pg: &EphemeralPostgres, db: &str, moto: Option<&Moto>, bucket: &str, namespace: &str) -> Lake {
        let catalog_url = pg.create_database(db).await.expect("catalog database");
        let (warehouse, s3_endpoint, dir) = match moto {
            Some(m) => {
                m.create_bucket(bucket);
                (format!("s3://{bucket}/wh"), Some(m.endpoint()), None)
            }
            None => {
                let d = tempfile::tempdir().unwrap();
                (format!("file://{}/wh", d.path().display()), None, Some(d))
            }
        };
        Lake {
            catalog_url,
            warehouse,
            s3_endpoint,
            namespace: namespace.to_string(),
            _dir: dir,
            duckdb_ext: tempfile::tempdir().unwrap(),
        }
    }

    /// A working destination config; the catalog URL goes by reference through `var`.
    fn config(&self, var: &str) -> serde_json::Value {
        // SAFETY of the test process environment: every test sets its own variable names.
        unsafe {
            std::env::set_var(var, &self.catalog_url);
            std::env::set_var("TIDEMARK_TEST_S3_KEY", "test");
            std::env::set_var("TIDEMARK_TEST_S3_SECRET", "test");
        }
        let mut c = serde_json::json!({
            "warehouse": self.warehouse,
            "namespace": self.namespace,
            "catalog": {"type": "sql", "url": {"env": var}},
        });
        if let Some(endpoint) = &self.s3_endpoint {
            for (k, v) in [
                ("endpoint", serde_json::json!(endpoint)),
                ("allow_http", serde_json::json!(true)),
                ("region", serde_json::json!("us-east-1")),
                ("access_key_id", serde_json::json!({"env": "TIDEMARK_TEST_S3_KEY"})),
                (
                    "secret_access_key",
                    serde_json::json!({"env": "TIDEMARK_TEST_S3_SECRET"}),
                ),
                ("max_retries", serde_json::json!(2)),
                ("request_timeout_seconds", serde_json::json!(10)),
            ] {
                c[k] = v;
            }
        }
        c
    }

    fn table_name(&self, table: Table) -> String {
        format!("{}.{}_v1", self.namespace, table.name())
    }

    /// `read_iceberg.py` for one table; with `dump`, the rows of `org` in `[from, to)` are
    /// written by each reader to `dump/{pyiceberg,duckdb}.parquet`.
    fn read(&self, table: Table, dump: Option<(&Path, Uuid, DateTime<Utc>, DateTime<Utc>)>) -> serde_json::Value {
        let mut c = Command::new(iceberg_python().expect("iceberg python"));
        c.arg(repo().join("tests/py/read_iceberg.py"))
            .args([
                "--catalog-uri",
                &self.catalog_url.replacen("postgres://", "postgresql+psycopg2://", 1),
            ])
            .args(["--catalog-name", "tidemark", "--warehouse", &self.warehouse])
            .args(["--table", &self.table_name(table)]);
        c.arg("--duckdb-ext-dir").arg(self.duckdb_ext.path());
        if let Some(e) = &self.s3_endpoint {
            c.args(["--s3-endpoint", e]);
        }
        if let Some((dir, org, from, to)) = dump {
            c.arg("--dump-dir").arg(dir).args([
                "--org",
                &org.to_string(),
                "--from",
                &from.to_rfc3339(),
                "--to",
                &to.to_rfc3339(),
            ]);
        }
        let out = c.output().expect("run read_iceberg.py");
        assert!(
            out.status.success(),
            "read_iceberg.py failed for {table}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("read_iceberg.py prints JSON")
    }

    /// Whether the table exists in the catalog (read through psql-free SQL on the catalog DB).
    async fn exists(&self, table: Table) -> bool {
        let pool = sqlx::PgPool::connect(&self.catalog_url).await.unwrap();
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'iceberg_tables'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if n == 0 {
            return false;
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM iceberg_tables WHERE catalog_name = 'tidemark' AND table_namespace = $1 AND table_name = $2",
        )
        .bind(&self.namespace)
        .bind(format!("{}_v1", table.name()))
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n == 1
    }
}

fn pairs(v: &serde_json::Value) -> Vec<(Uuid, DateTime<Utc>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().parse().unwrap(),
                DateTime::parse_from_rfc3339(r[1].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc),
            )
        })
        .collect()
}

async fn source_latest(env: &Env, table: Table, org: Uuid) -> Vec<(Uuid, DateTime<Utc>)> {
    sqlx::query_as(&format!(
        "SELECT id, updated_at FROM {} WHERE organization_id = $1 ORDER BY id",
        table.name()
    ))
    .bind(org)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

/// `verify_export.py` (the independent value-by-value check) on a reader's dump. Iceberg has
/// no 16-bit integer, so the schema it checks against says int4 where the published one says
/// int2 (the documented mapping); every other type is checked as published.
fn verify_dump(
    env: &Env,
    table: Table,
    org: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    file: &Path,
) -> serde_json::Value {
    let published: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(format!("schemas/{}/v1.json", table.name()))).unwrap(),
    )
    .unwrap();
    let mut iceberg = published.clone();
    for c in iceberg["columns"].as_array_mut().unwrap() {
        if c["type"] == "int2" {
            c["type"] = "int4".into();
        }
    }
    let schema = file.with_extension("schema.json");
    std::fs::write(&schema, iceberg.to_string()).unwrap();
    let out = Command::new(python().expect("python"))
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
        ])
        // ICEBERG_S3 does not receive the `_op` envelope column yet (docs/DELETES.md): its
        // table holds the exported row versions with the published columns only.
        .args(["--format", "parquet", "--current"])
        .arg(file)
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
        "verifier found differences for {table} in {}: {report:#}",
        file.display()
    );
    report
}

async fn receipts(env: &Env, dest: &Destination) -> Vec<(Uuid, String, serde_json::Value)> {
    sqlx::query_as(
        "SELECT id, status::text, coalesce(receipt, 'null'::jsonb) FROM warehouse_deliveries \
         WHERE destination_id = $1 ORDER BY \"table\", watermark_start",
    )
    .bind(dest.id)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

/// Windows of three tables (together every published type) land as one snapshot each; both
/// readers see exactly the source rows, value by value; schema field ids, partition spec and
/// file partitions are as specified; a retried delivery commits nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_land_once_and_read_back_on_s3() {
    let Some(env) = Env::start(6_000, 1).await else { return };
    let Some(_) = python() else { return };
    let Some(_) = iceberg_python() else { return };
    let Some(moto) = Moto::start() else { return };
    let lake = Lake::new(&env.pg, "catalog", Some(&moto), "lake", "analytics").await;
    let org = env.orgs[0];
    let tables = [Table::Events, Table::BaselineScores, Table::SiemDeliveries];
    let dest = env
        .add_destination(
            org,
            DestinationKind::IcebergS3,
            "iceberg",
            lake.config("TIDEMARK_TEST_ICEBERG_CATALOG"),
            &tables,
            3 * 3600,
            3,
        )
        .await;

    let started = std::time::Instant::now();
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let rows: u64 = outcomes.iter().map(|o| o.rows).sum();
    eprintln!(
        "delivered {} windows, {rows} rows in {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );

    let all = receipts(&env, &dest).await;
    let dump = tempfile::tempdir().unwrap();
    let (from, to) = (data_end() - Duration::days(2), data_end() + Duration::days(1));
    for table in tables {
        let read = lake.read(table, Some((dump.path(), org, from, to)));

        // Schema: published order → field ids 1..n; list elements next; required = not null.
        let published = env.registry.get(table, 1).unwrap();
        let schema = read["schema"].as_array().unwrap();
        assert_eq!(schema.len(), published.columns.len());
        let n = published.columns.len() as i64;
        let mut next_element = n;
        for (i, (f, c)) in schema.iter().zip(&published.columns).enumerate() {
            assert_eq!(f[0].as_i64().unwrap(), i as i64 + 1, "{table}.{}: {f}", c.name);
            assert_eq!(f[1], c.name.as_str());
            assert_eq!(f[3].as_bool().unwrap(), !c.nullable, "{table}.{}", c.name);
            if c.ty.to_string() == "text[]" {
                next_element += 1;
                assert_eq!(f[4].as_i64().unwrap(), next_element, "{table}.{} element", c.name);
            }
        }
        // Partition spec: organization_id identity, day(updated_at).
        let org_id = published.column_index("organization_id").unwrap() as i64 + 1;
        let upd_id = published.column_index("updated_at").unwrap() as i64 + 1;
        assert_eq!(
            read["partition_spec"],
            serde_json::json!([
                [org_id, 1000, "organization_id", "identity"],
                [upd_id, 1001, "updated_at_day", "day"]
            ]),
            "{table}"
        );

        // One snapshot per delivery of the table, carrying its delivery id; nothing else.
        let mut delivered: Vec<String> = all
            .iter()
            .filter(|(_, _, r)| r["table"] == lake.table_name(table).as_str())
            .map(|(id, status, r)| {
                assert_eq!(status, "delivered");
                assert_eq!(r["already_committed"], false);
                assert!(r["snapshot_id"].as_i64().is_some(), "{r}");
                id.to_string()
            })
            .collect();
        let mut snapshot_ids: Vec<String> = read["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["operation"], "append");
                s["summary"]["tidemark.delivery-id"].as_str().unwrap().to_string()
            })
            .collect();
        delivered.sort();
        snapshot_ids.sort();
        assert!(!delivered.is_empty(), "{table}: nothing delivered");
        assert_eq!(snapshot_ids, delivered, "{table}: one snapshot per delivery");

        // Every data file sits in the partition of its organization and day.
        let files = read["files"].as_array().unwrap();
        assert!(!files.is_empty());
        for f in files {
            assert_eq!(f["partition"]["organization_id"], org.to_string().as_str(), "{f}");
            let path = f["path"].as_str().unwrap();
            let day = f["partition"]["updated_at_day"].as_str().unwrap();
            assert!(
                path.contains(&format!("/organization_id={org}/updated_at_day={day}/")),
                "{path} is not under its partition {day}"
            );
            assert!(path.starts_with(&format!("{}/analytics/", lake.warehouse)), "{path}");
        }
        let records: u64 = files.iter().map(|f| f["records"].as_u64().unwrap()).sum();

        // Both readers see exactly the source rows (newest version per id), and, value by
        // value, exactly the source's rows of the organization.
        let source = source_latest(&env, table, org).await;
        assert_eq!(pairs(&read["pyiceberg"]["latest"]), source, "{table}: pyiceberg");
        assert_eq!(pairs(&read["duckdb"]["latest"]), source, "{table}: duckdb");
        assert_eq!(read["pyiceberg"]["total"].as_u64().unwrap(), source.len() as u64);
        assert_eq!(read["duckdb"]["total"].as_u64().unwrap(), source.len() as u64);
        assert_eq!(records, source.len() as u64);
        let p = verify_dump(&env, table, org, from, to, &dump.path().join("pyiceberg.parquet"));
        let d = verify_dump(&env, table, org, from, to, &dump.path().join("duckdb.parquet"));
        assert_eq!(p["source_rows"].as_u64().unwrap(), source.len() as u64);
        assert_eq!(d["file_rows"], p["file_rows"]);
        eprintln!(
            "{table}: {} rows, {} snapshots, {} data files; pyiceberg and DuckDB match the source",
            source.len(),
            snapshot_ids.len(),
            files.len()
        );
    }

    // A retried delivery (same id) finds its snapshot and commits nothing.
    let (retried, _, before) = all
        .iter()
        .find(|(_, _, r)| r["table"] == "analytics.events_v1")
        .unwrap()
        .clone();
    sqlx::query("UPDATE warehouse_deliveries SET status = 'dead_letter' WHERE id = $1")
        .bind(retried)
        .execute(&env.control)
        .await
        .unwrap();
    assert_eq!(outbox::retry(&env.control, None, None, Some(retried)).await.unwrap(), 1);
    let again = env.run_until_idle(fast_options()).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status, "delivered", "{again:?}");
    let (_, _, after) = receipts(&env, &dest)
        .await
        .into_iter()
        .find(|(id, _, _)| *id == retried)
        .unwrap();
    assert_eq!(after["already_committed"], true, "{after}");
    assert_eq!(after["snapshot_id"], before["snapshot_id"]);
    let read = lake.read(Table::Events, None);
    let snapshots = read["snapshots"].as_array().unwrap();
    assert_eq!(
        snapshots
            .iter()
            .filter(|s| s["summary"]["tidemark.delivery-id"] == retried.to_string().as_str())
            .count(),
        1,
        "the retry committed a second snapshot"
    );
    assert_eq!(
        read["pyiceberg"]["total"].as_u64().unwrap(),
        source_latest(&env, Table::Events, org).await.len() as u64
    );
}

/// A local warehouse directory works the same (file://), and `tidemark iceberg maintain`
/// expires old snapshots except those a retry could still need, removes their manifest lists,
/// and leaves the data as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_warehouse_and_maintenance() {
    let Some(env) = Env::start(1_000, 1).await else { return };
    let Some(_) = python() else { return };
    let Some(_) = iceberg_python() else { return };
    let lake = Lake::new(&env.pg, "catalog", None, "", "tidemark").await;
    let org = env.orgs[1];
    let dest = env
        .add_destination(
            org,
            DestinationKind::IcebergS3,
            "ice-local",
            lake.config("TIDEMARK_TEST_ICEBERG_LOCAL_CATALOG"),
            &[Table::Events],
            2 * 3600,
            3,
        )
        .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.len() >= 4, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let source = source_latest(&env, Table::Events, org).await;
    let read = lake.read(Table::Events, None);
    assert_eq!(pairs(&read["pyiceberg"]["latest"]), source);
    assert_eq!(pairs(&read["duckdb"]["latest"]), source);
    let snapshots = read["snapshots"].as_array().unwrap().len();
    assert_eq!(snapshots, outcomes.len());
    let manifest_lists = |dir: &Path| {
        files_under(dir, "avro")
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("snap-"))
            .count()
    };
    let table_dir = PathBuf::from(lake.warehouse.trim_start_matches("file://")).join("tidemark/events_v1");
    assert_eq!(manifest_lists(&table_dir), snapshots);

    // `tidemark query` on the destination: the current snapshot's files, found through the
    // catalog, with the same history table and `latest` view as every other kind.
    let query = |sql: &str| {
        let out = env
            .cli()
            .args(["query", "--destination", "ice-local", "--format", "json", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let delivered: u64 = outcomes.iter().map(|o| o.rows).sum();
    let counts = query("SELECT count(*) AS n FROM events_v1_raw");
    assert_eq!(counts[0]["n"], delivered, "every committed row, once");
    let latest =
        query("SELECT CAST(id AS VARCHAR) AS id, CAST(updated_at AS VARCHAR) AS u FROM events_v1_latest ORDER BY 1");
    let ids: Vec<String> = latest.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = source.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(ids, expected, "the latest view holds each source id once");
    let list = env
        .cli()
        .args(["query", "--destination", "ice-local", "--list", "--format", "json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"events_v1_latest\""));

    // One delivery is pretended to be still pending a retry: its snapshot must survive.
    let pending: Uuid = sqlx::query_scalar(
        "SELECT id FROM warehouse_deliveries WHERE destination_id = $1 ORDER BY watermark_start LIMIT 1",
    )
    .bind(dest.id)
    .fetch_one(&env.control)
    .await
    .unwrap();
    sqlx::query("UPDATE warehouse_deliveries SET status = 'failed' WHERE id = $1")
        .bind(pending)
        .execute(&env.control)
        .await
        .unwrap();

    let maintain = |dry: bool| {
        let mut c = env.cli();
        c.args([
            "iceberg",
            "maintain",
            "--destination",
            "ice-local",
            "--expire-older-than",
            "0s",
            "--json",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "tidemark.events_v1")
            .unwrap()
            .clone()
    };
    // Old metadata files: another writer (pyiceberg) keeps only one previous version in the
    // metadata log from now on, and every file so far is two hours old.
    let out = Command::new(iceberg_python().unwrap())
        .args([
            "-c",
            "import sys; from pyiceberg.catalog.sql import SqlCatalog\n\
             t = SqlCatalog('tidemark', uri=sys.argv[1], warehouse=sys.argv[2]).load_table('tidemark.events_v1')\n\
             t.transaction().set_properties({'write.metadata.previous-versions-max': '1'}).commit_transaction()",
            &lake.catalog_url.replacen("postgres://", "postgresql+psycopg2://", 1),
            &lake.warehouse,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata_files = || files_under(&table_dir.join("metadata"), "json");
    let before = metadata_files();
    for f in &before {
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }

    let dry = maintain(true);
    assert_eq!(
        dry["expired_snapshots"].as_array().unwrap().len(),
        snapshots - 2,
        "{dry}"
    );
    assert_eq!(
        lake.read(Table::Events, None)["snapshots"].as_array().unwrap().len(),
        snapshots,
        "dry run changed nothing"
    );

    let done = maintain(false);
    eprintln!("maintain: {done}");
    assert_eq!(
        done["expired_snapshots"].as_array().unwrap().len(),
        snapshots - 2,
        "{done}"
    );
    assert_eq!(done["kept_for_retry"][0][0], pending.to_string().as_str(), "{done}");
    assert_eq!(done["removed_manifest_lists"].as_u64().unwrap() as usize, snapshots - 2);
    // Left: the metadata written by the expiry, and the one before it (the metadata log keeps
    // one now); every older file went.
    assert_eq!(
        done["removed_metadata_files"].as_u64().unwrap() as usize,
        before.len() - 1,
        "{done}"
    );
    assert_eq!(metadata_files().len(), 2);
    assert_eq!(done["data_files"].as_u64().unwrap() as usize, outcomes.len());
    assert_eq!(done["records"].as_u64().unwrap() as usize, source.len());
    let read = lake.read(Table::Events, None);
    let left: Vec<_> = read["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["summary"]["tidemark.delivery-id"].clone())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "the current snapshot and the one kept for a retry: {left:?}"
    );
    assert!(left.contains(&pending.to_string().into()));
    assert_eq!(manifest_lists(&table_dir), 2);
    assert_eq!(
        pairs(&read["pyiceberg"]["latest"]),
        source,
        "data unchanged after expiry"
    );
    assert_eq!(pairs(&read["duckdb"]["latest"]), source, "data unchanged after expiry");

    // The kept snapshot still makes its retry a no-op.
    sqlx::query("UPDATE warehouse_deliveries SET status = 'dead_letter' WHERE id = $1")
        .bind(pending)
        .execute(&env.control)
        .await
        .unwrap();
    outbox::retry(&env.control, None, None, Some(pending)).await.unwrap();
    let again = env.run_until_idle(fast_options()).await;
    assert_eq!(again[0].status, "delivered");
    assert_eq!(
        lake.read(Table::Events, None)["pyiceberg"]["total"].as_u64().unwrap() as usize,
        source.len()
    );
}

/// Configuration mistakes are refused at once, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_problem() {
    let cases = [
        (
            serde_json::json!({"warehouse": "s3://b", "catalog": {"type": "sql", "url": "postgres://x"}}),
            "plaintext secrets are not accepted",
        ),
        (
            serde_json::json!({"warehouse": "gs://b", "catalog": {"type": "sql", "url": {"env": "X"}}}),
            "unsupported scheme 'gs'",
        ),
        (
            serde_json::json!({"warehouse": "s3://b", "catalog": {"type": "hive"}}),
            "unknown variant `hive`",
        ),
        (
            serde_json::json!({"warehouse": "s3://b", "catalog": {"type": "sql", "url": {"env": "X"}}, "bucket": "b"}),
            "unknown field `bucket`",
        ),
        (
            serde_json::json!({"warehouse": "s3://b", "namespace": "a.b", "catalog": {"type": "sql", "url": {"env": "X"}}}),
            "namespace 'a.b'",
        ),
    ];
    for (config, expected) in cases {
        let err = match tidemark::deliver::build(DestinationKind::IcebergS3, &config) {
            Err(e) => e,
            Ok(_) => panic!("{config} was accepted"),
        };
        assert_eq!(err.kind(), tidemark::error::ErrorKind::Config, "{err}");
        assert!(err.to_string().contains(expected), "{config}: {err}");
    }
    // A catalog URL that is not Postgres, or a Glue catalog in a build without it, fails on use.
    unsafe { std::env::set_var("TIDEMARK_TEST_ICEBERG_SQLITE", "sqlite:///tmp/x.db") };
    let d = tidemark::deliver::build(
        DestinationKind::IcebergS3,
        &serde_json::json!({"warehouse": "file:///tmp/tidemark-iceberg-config-test", "catalog": {"type": "sql", "url": {"env": "TIDEMARK_TEST_ICEBERG_SQLITE"}}}),
    )
    .unwrap();
    let err = d.check().await.unwrap_err();
    assert_eq!(err.kind(), tidemark::error::ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("Postgres driver only"), "{err}");
    assert!(!err.to_string().contains("/tmp/x.db"), "the URL is a secret: {err}");
    if !cfg!(feature = "iceberg-glue") {
        let d = tidemark::deliver::build(
            DestinationKind::IcebergS3,
            &serde_json::json!({"warehouse": "file:///tmp/tidemark-iceberg-config-test", "catalog": {"type": "glue"}}),
        )
        .unwrap();
        let err = d.check().await.unwrap_err();
        assert!(err.to_string().contains("--features iceberg-glue"), "{err}");
    }
    let _ = std::fs::remove_dir_all("/tmp/tidemark-iceberg-config-test");
}

// ---------------------------------------------------------------- conformance

struct IcebergTarget {
    pg: EphemeralPostgres,
    lake: Lake,
    _moto: Moto,
}

impl IcebergTarget {
    fn pyiceberg(&self, code: &str) {
        let out = Command::new(iceberg_python().expect("iceberg python"))
            .args(["-c", code])
            .env(
                "CATALOG_URI",
                self.lake
                    .catalog_url
                    .replacen("postgres://", "postgresql+psycopg2://", 1),
            )
            .env("WAREHOUSE", &self.lake.warehouse)
            .env("S3_ENDPOINT", self.lake.s3_endpoint.as_deref().unwrap_or_default())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[async_trait]
impl Target for IcebergTarget {
    fn kind(&self) -> DestinationKind {
        DestinationKind::IcebergS3
    }

    fn config(&self) -> serde_json::Value {
        self.lake.config("TIDEMARK_TEST_ICEBERG_CONFORMANCE")
    }

    /// The SQL catalog's database refuses an unknown role (moto would accept any S3 key).
    fn bad_auth_config(&self) -> Option<serde_json::Value> {
        unsafe {
            std::env::set_var(
                "TIDEMARK_TEST_ICEBERG_BAD_CATALOG",
                format!("postgres://no_such_role@127.0.0.1:{}/catalog", self.pg.port()),
            );
        }
        let mut c = self.config();
        c["catalog"]["url"] = serde_json::json!({"env": "TIDEMARK_TEST_ICEBERG_BAD_CATALOG"});
        Some(c)
    }

    fn unreachable_config(&self) -> serde_json::Value {
        unsafe {
            std::env::set_var(
                "TIDEMARK_TEST_ICEBERG_CLOSED_CATALOG",
                format!("postgres://postgres@127.0.0.1:{}/catalog", free_port()),
            );
        }
        let mut c = self.config();
        c["catalog"]["url"] = serde_json::json!({"env": "TIDEMARK_TEST_ICEBERG_CLOSED_CATALOG"});
        c
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
        if !self.lake.exists(table).await {
            return vec![];
        }
        let read = self.lake.read(table, None);
        let p = pairs(&read["pyiceberg"]["latest"]);
        assert_eq!(
            pairs(&read["duckdb"]["latest"]),
            p,
            "pyiceberg and DuckDB disagree on {table}"
        );
        p
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        if !self.lake.exists(table).await {
            return Some(0);
        }
        let read = self.lake.read(table, None);
        assert_eq!(read["duckdb"]["total"], read["pyiceberg"]["total"]);
        read["pyiceberg"]["total"].as_u64()
    }

    /// Another writer created the table with `id` as a 64-bit integer.
    async fn sabotage(&self, table: Table) -> Option<()> {
        self.pyiceberg(&format!(
            r#"
import os
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, LongType, TimestamptzType
props = {{"uri": os.environ["CATALOG_URI"], "warehouse": os.environ["WAREHOUSE"]}}
if os.environ["S3_ENDPOINT"]:
    props.update({{"s3.endpoint": os.environ["S3_ENDPOINT"], "s3.access-key-id": "test",
                  "s3.secret-access-key": "test", "s3.region": "us-east-1"}})
c = SqlCatalog("tidemark", **props)
c.create_namespace_if_not_exists("{ns}")
c.create_table("{ns}.{name}_v1", Schema(NestedField(1, "id", LongType(), required=True),
                                        NestedField(2, "updated_at", TimestamptzType(), required=True)))
"#,
            ns = self.lake.namespace,
            name = table.name()
        ));
        Some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_s3_conforms() {
    if tidemark::ephemeral::find_bindir().is_err() {
        skip("no PostgreSQL server binaries");
        return;
    }
    let Some(_) = python() else { return };
    let Some(_) = iceberg_python() else { return };
    let Some(moto) = Moto::start() else { return };
    let pg = EphemeralPostgres::start().expect("catalog cluster");
    let lake = Lake::new(&pg, "catalog", Some(&moto), "conformance", "conformance").await;
    let target = IcebergTarget { pg, lake, _moto: moto };
    suite(&target).await;
}

/// The AWS Glue catalog (feature `iceberg-glue`) against moto's Glue and S3 on one port.
/// `check()` reaches Glue and the warehouse; but iceberg-catalog-glue 0.10.1 cannot convert a
/// `timestamptz` column to a Glue column type (its `GlueSchemaBuilder` refuses it on create,
/// register and every commit), and every published table has one, so a delivery is rejected
/// at once with a message that says so, and nothing is left in Glue.
#[cfg(feature = "iceberg-glue")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_catalog_on_moto() {
    let Some(env) = Env::start(300, 1).await else { return };
    let Some(py) = python() else { return };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("glue-lake");
    let mut config = serde_json::json!({
        "warehouse": "s3://glue-lake/wh",
        "namespace": "glue_ns",
        "catalog": {"type": "glue", "endpoint": moto.endpoint()},
    });
    for (k, v) in moto.config("glue-lake", "").as_object().unwrap() {
        if k != "url" {
            config[k] = v.clone();
        }
    }
    tidemark::deliver::build(DestinationKind::IcebergS3, &config)
        .unwrap()
        .check()
        .await
        .expect("Glue and the warehouse are reachable");
    env.add_destination(
        env.orgs[0],
        DestinationKind::IcebergS3,
        "glue",
        config,
        &[Table::Events],
        6 * 3600,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    for o in &outcomes {
        assert_eq!(o.status, "dead_letter", "{o:?}");
        let e = o.error.as_deref().unwrap_or_default();
        assert!(
            e.contains("iceberg-catalog-glue 0.10.1 cannot store timestamptz columns"),
            "{e}"
        );
    }
    let out = Command::new(&py)
        .args([
            "-c",
            "import boto3, sys; g = boto3.client('glue', endpoint_url=sys.argv[1], aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1'); print(len(g.get_tables(DatabaseName='glue_ns')['TableList']))",
            &moto.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "no table was left in Glue"
    );
}
