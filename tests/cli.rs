//! The command line as operators use it: precise errors and exit codes for bad input (and
//! nothing written), backfill with interruption and re-run, status and schema views.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use tidemark::schema::Table;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    c.env_remove("TIDEMARK_DATABASE_URL")
        .env_remove("TIDEMARK_SOURCE_URL")
        .env("TIDEMARK_LOG", "warn");
    c
}

/// `backfill --destination D --table T --from F --to T` plus `extra`.
fn backfill_args<'a>(
    destination: &'a str,
    table: &'a str,
    from: &'a str,
    to: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "backfill",
        "--destination",
        destination,
        "--table",
        table,
        "--from",
        from,
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    args
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn help_explains_every_command() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "migrate",
        "destination",
        "plan",
        "run",
        "worker",
        "backfill",
        "status",
        "retry",
        "schema",
        "demo",
        "Exit codes",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
    let out = bin().args(["schema", "show", "events", "--json"]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["table"], "events");
}

#[test]
fn without_a_database_url_the_error_says_what_to_set() {
    let out = bin().args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("TIDEMARK_DATABASE_URL"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_exits_4_naming_the_target() {
    let port = free_port();
    let out = bin()
        .args(["status"])
        .env(
            "TIDEMARK_DATABASE_URL",
            format!("postgres://u:secretpw@127.0.0.1:{port}/nowhere"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}/nowhere")), "{err}");
    assert!(!err.contains("secretpw"), "the password must never be printed: {err}");
}

#[test]
fn an_invalid_schema_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for t in Table::ALL {
        let d = dir.path().join(t.name());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(repo().join(format!("schemas/{}/v1.json", t.name())), d.join("v1.json")).unwrap();
    }
    let broken = dir.path().join("findings/v1.json");
    let text = std::fs::read_to_string(&broken)
        .unwrap()
        .replacen("\"uuid\"", "\"uuid4\"", 1);
    std::fs::write(&broken, text).unwrap();
    let out = bin()
        .args(["schema", "list"])
        .arg("--schemas-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("findings/v1.json") && err.contains("uuid4"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_destinations_are_refused_precisely_and_nothing_is_written() {
    let Some(env) = Env::start(100, 1).await else {
        return;
    };
    let org = env.orgs[0].to_string();
    let dir = tempfile::tempdir().unwrap();
    let good_url = format!("file://{}", dir.path().display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--kind".into(), "PARQUET_GCS".into(), "--config".into(), format!("{{\"url\":\"{good_url}\"}}")], "unknown destination kind 'PARQUET_GCS'"),
        (
            vec!["--kind".into(), "ICEBERG_S3".into(), "--config".into(), "{}".into()],
            if cfg!(feature = "iceberg") {
                "invalid ICEBERG_S3 configuration: missing field `warehouse`"
            } else {
                "ICEBERG_S3 is not available in this build"
            },
        ),
        (vec!["--kind".into(), "SNOWFLAKE".into(), "--config".into(), "{}".into()], "invalid SNOWFLAKE configuration: missing field `account`"),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--tables".into(), "events,alerts".into(), "--config".into(), format!("{{\"url\":\"{good_url}\"}}")], "unknown table 'alerts'"),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), "{\"url\": ".into()], "is not valid JSON"),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), format!("{{\"url\":\"{good_url}\",\"bucket\":\"x\"}}")], "unknown field `bucket`"),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), "{\"url\":\"s3:///prefix\"}".into()], "no bucket"),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), "{\"url\":\"ftp://host/x\"}".into()], "unsupported scheme 'ftp'"),
        (
            vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), "{\"url\":\"s3://b/p\",\"access_key_id\":{\"env\":\"TIDEMARK_NO_SUCH_VAR\"},\"secret_access_key\":{\"env\":\"TIDEMARK_NO_SUCH_VAR\"}}".into()],
            "env:TIDEMARK_NO_SUCH_VAR is not set",
        ),
        (
            vec!["--kind".into(), "PARQUET_S3".into(), "--config".into(), "{\"url\":\"s3://b/p\",\"access_key_id\":\"AKIAPLAINTEXT\",\"secret_access_key\":{\"env\":\"X\"}}".into()],
            "plaintext secrets are not accepted",
        ),
        (vec!["--kind".into(), "PARQUET_S3".into(), "--window".into(), "7m".into(), "--config".into(), format!("{{\"url\":\"{good_url}\"}}")], "must be at least 60s and divide a day"),
    ];
    for (args, expected) in cases {
        let out = env
            .cli()
            .args(["destination", "add", "--org", &org, "--name", "x"])
            .args(&args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected '{expected}' in: {err}");
        assert!(!err.contains("AKIAPLAINTEXT"), "a secret was echoed: {err}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_destinations").await,
        0,
        "nothing written"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");

    // An unreachable S3 endpoint fails the probe with exit 4.
    let port = free_port();
    unsafe { std::env::set_var("TIDEMARK_TEST_S3_KEY", "k") };
    let cfg = format!(
        "{{\"url\":\"s3://b/p\",\"endpoint\":\"http://127.0.0.1:{port}\",\"allow_http\":true,\"max_retries\":0,\"request_timeout_seconds\":2,\"access_key_id\":{{\"env\":\"TIDEMARK_TEST_S3_KEY\"}},\"secret_access_key\":{{\"env\":\"TIDEMARK_TEST_S3_KEY\"}}}}"
    );
    let out = env
        .cli()
        .args([
            "destination",
            "add",
            "--org",
            &org,
            "--name",
            "x",
            "--kind",
            "PARQUET_S3",
            "--config",
            &cfg,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("destination check failed"), "{}", stderr(&out));
    assert_eq!(env.count("SELECT count(*) FROM warehouse_destinations").await, 0);

    // The same with a good config works, and is listed.
    let out = env
        .cli()
        .args([
            "destination",
            "add",
            "--org",
            &org,
            "--name",
            "ok",
            "--kind",
            "parquet_s3",
            "--tables",
            "events,findings",
            "--config",
            &format!("{{\"url\":\"{good_url}\"}}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli().args(["destination", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["enabled_tables"], serde_json::json!(["events", "findings"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_can_be_interrupted_and_rerun() {
    let Some(env) = Env::start(3_000, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{{\"url\":\"file://{}\"}}", dir.path().display());
    // Only new data by default: history is the backfill's job.
    let out = env
        .cli()
        .args([
            "destination",
            "add",
            "--org",
            &org.to_string(),
            "--name",
            "hist",
            "--kind",
            "PARQUET_S3",
            "--tables",
            "events",
            "--start-from",
            "now",
            "--config",
            &cfg,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli().args(["run", "--until-idle"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries").await,
        0,
        "start-from now plans no history"
    );

    let from = (data_end() - chrono::Duration::days(2)).to_rfc3339();
    let to = data_end().to_rfc3339();
    // Killed after its 5th window.
    let out = env
        .cli()
        .args(backfill_args(
            "hist",
            "events",
            &from,
            &to,
            &["--workers", "1", "--chunk", "15m"],
        ))
        .env("TIDEMARK_FAILPOINT", "abort-after-deliver:5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!out.success());
    let delivered = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'")
        .await;
    assert_eq!(delivered, 4);
    let total = env.count("SELECT count(*) FROM warehouse_deliveries").await;
    assert!(total > 20, "{total} deliveries");
    // Re-run: short leases so the dead process's delivery is taken over quickly.
    env.count("SELECT count(*) FROM (SELECT pg_sleep(0)) s").await;
    sqlx::query("UPDATE warehouse_deliveries SET lease_expires_at = now() WHERE status = 'leased'")
        .execute(&env.control)
        .await
        .unwrap();
    let out = env
        .cli()
        .args(backfill_args(
            "hist",
            "events",
            &from,
            &to,
            &["--chunk", "15m", "--json"],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["remaining"], 0);
    assert_eq!(report["deliveries"].as_i64().unwrap(), total);
    assert_eq!(
        env.count("SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'")
            .await,
        total
    );
    let files = files_under(&dir.path().join("events"), "parquet");
    assert_eq!(files.len() as i64, total);
    verify(
        &env,
        Table::Events,
        org,
        data_end() - chrono::Duration::days(2),
        data_end(),
        "parquet",
        &files,
    );
    // A third run, even with another chunk size, has nothing left to do: chunks that overlap
    // delivered windows are never planned.
    let out = env
        .cli()
        .args(backfill_args(
            "hist",
            "events",
            &from,
            &to,
            &["--chunk", "6h", "--json"],
        ))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["delivered"], 0);
    assert_eq!(env.count("SELECT count(*) FROM warehouse_deliveries").await, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_in_the_source_dead_letters_with_a_precise_message() {
    let Some(env) = Env::start(300, 1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({"url": format!("file://{}", dir.path().display())});
    env.add_destination(
        env.orgs[0],
        tidemark::control::destinations::DestinationKind::ParquetS3,
        "p",
        cfg,
        &[Table::Findings],
        86_400,
        3,
    )
    .await;
    let schema = env.registry.get(Table::Findings, 1).unwrap();
    let victim = schema
        .columns
        .iter()
        .find(|c| c.ty == tidemark::schema::ColumnType::Text)
        .unwrap()
        .name
        .clone();
    sqlx::query(&format!(
        "ALTER TABLE findings RENAME COLUMN {victim} TO {victim}_renamed"
    ))
    .execute(&env.control)
    .await
    .unwrap();
    let out = env.cli().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status::text, last_error FROM warehouse_deliveries LIMIT 1")
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(status, "dead_letter");
    assert!(error.contains(&format!("column {victim} is missing")), "{error}");
    assert!(files_under(dir.path(), "parquet").is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_schemas_match_the_reference_application() {
    let Some(env) = Env::start(10, 1).await else {
        return;
    };
    for table in Table::ALL {
        let schema = env.registry.get(table, 1).unwrap();
        tidemark::source::check_table(&env.source, &schema)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let columns: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(table.name())
        .fetch_all(&env.control)
        .await
        .unwrap();
        let published: Vec<(String, String, bool)> = schema
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.postgres_type(), c.nullable))
            .collect();
        assert_eq!(
            columns, published,
            "{table}: reference table and published schema differ (names, order, types or nullability)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_chunks_and_regular_windows_never_overlap() {
    let Some(env) = Env::start(3_000, 2).await else { return };
    let Some(_) = python() else { return };
    let org = env.orgs[1];
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{{\"url\":\"file://{}\"}}", dir.path().display());
    // `run` covers everything from the middle of the data on; backfill chunks of 6 h cover
    // the whole range, overlapping the windows `run` already planned.
    let middle = (data_end() - chrono::Duration::hours(20)).to_rfc3339();
    let out = env
        .cli()
        .args([
            "destination",
            "add",
            "--org",
            &org.to_string(),
            "--name",
            "mix",
            "--kind",
            "PARQUET_S3",
        ])
        .args(["--tables", "audit_log", "--start-from", &middle, "--config", &cfg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.cli().args(["run", "--until-idle"]).status().unwrap().success());
    assert!(env.count("SELECT count(*) FROM warehouse_deliveries").await > 0);
    let (from, to) = (
        (data_end() - chrono::Duration::days(2)).to_rfc3339(),
        data_end().to_rfc3339(),
    );
    let out = env
        .cli()
        .args([
            "backfill",
            "--destination",
            "mix",
            "--table",
            "audit_log",
            "--from",
            &from,
            "--to",
            &to,
        ])
        .args(["--chunk", "6h", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let chunks = env
        .count("SELECT count(*) FROM warehouse_deliveries WHERE watermark_end - watermark_start = interval '6 hours'")
        .await;
    assert!(chunks > 0, "history before `run`'s start is planned as 6 h chunks");
    let overlapping = env
        .count(
            "SELECT count(*) FROM warehouse_deliveries a JOIN warehouse_deliveries b ON a.id < b.id \
             AND a.watermark_start < b.watermark_end AND b.watermark_start < a.watermark_end",
        )
        .await;
    assert_eq!(overlapping, 0, "no two deliveries cover the same instant");
    let files = files_under(&dir.path().join("audit_log"), "parquet");
    assert_eq!(
        files.len() as i64,
        env.count("SELECT count(*) FROM warehouse_deliveries").await
    );
    // Every row exactly once across chunk files and window files.
    verify(
        &env,
        Table::AuditLog,
        org,
        data_end() - chrono::Duration::days(2),
        data_end(),
        "parquet",
        &files,
    );
}

#[test]
fn demo_refuses_a_window_that_does_not_divide_a_day_before_doing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = bin()
        .args([
            "demo",
            "--window",
            "7000",
            "--all-orgs",
            "--formats",
            "parquet",
            "--dir",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--window 7000s must be at least 60s and divide a day"),
        "{}",
        stderr(&out)
    );
    assert!(!out_dir.exists(), "nothing is created before the arguments are checked");
    let out = bin().args(["demo", "--formats", "csv"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown format is a usage error: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_only_events_writes_the_same_events_and_nothing_else() {
    // A full run (Env::start) and an --only-events run into a second database of the same
    // cluster, same seed and shape: events must be byte-identical, the other tables empty.
    let Some(env) = Env::start(2_000, 1).await else {
        return;
    };
    let other = env.pg.create_database("only_events").await.unwrap();
    let end = data_end().to_rfc3339();
    let run = |args: &[&str]| {
        let o = env
            .cli()
            .env("TIDEMARK_DATABASE_URL", &other)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "tidemark {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["reference", "install"]);
    let said = run(&[
        "reference",
        "generate",
        "--seed",
        "7",
        "--orgs",
        "3",
        "--rows",
        "2000",
        "--days",
        "1",
        "--end",
        &end,
        "--only-events",
    ]);
    assert!(said.contains("no rows in the other tables"), "{said}");
    let pool = tidemark::control::connect(&other, tidemark::control::APP_CONTROL, 2)
        .await
        .unwrap();
    let digest = "SELECT count(*)::text || ':' || md5(string_agg(e::text, '|' ORDER BY id)) FROM events e";
    let full: String = sqlx::query_scalar(digest).fetch_one(&env.control).await.unwrap();
    let only: String = sqlx::query_scalar(digest).fetch_one(&pool).await.unwrap();
    assert!(full.starts_with("2000:"), "{full}");
    assert_eq!(only, full, "--only-events must write the very same events rows");
    for table in Table::ALL.into_iter().filter(|t| *t != Table::Events) {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", table.name()))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} must be empty with --only-events");
        let full_n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", table.name()))
            .fetch_one(&env.control)
            .await
            .unwrap();
        assert!(full_n > 0, "{table} is generated without --only-events");
    }
}
