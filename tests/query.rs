//! `tidemark query` over a real export: the history table, the `latest` views and the output
//! formats, compared with the source rows.

mod common;

use chrono::Duration;
use common::*;
use tidemark::schema::Table;

fn query(env: &Env, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    env.cli()
        .arg("query")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sees_history_and_latest_versions() {
    let Some(env) = Env::start(900, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let (_out, dir, _) = env.local_parquet(org, &[Table::Events, Table::Findings], 3600, 3).await;
    // First half of the day, then three of its rows change into the second half, then the rest:
    // the export holds two versions of those three rows.
    let half = data_end() - Duration::hours(12);
    let status = env
        .cli()
        .args(["backfill", "--destination", "p", "--table", "events"])
        .args([
            "--from",
            &(data_end() - Duration::days(1)).to_rfc3339(),
            "--to",
            &half.to_rfc3339(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query(
        "UPDATE events SET severity = 5, updated_at = $2 WHERE id IN \
         (SELECT id FROM events WHERE organization_id = $1 AND updated_at < $3 ORDER BY id LIMIT 3)",
    )
    .bind(org)
    .bind(half + Duration::hours(1))
    .bind(half)
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 3);
    tx.commit().await.unwrap();
    env.run_until_idle(fast_options()).await;

    let n = env
        .count(&format!("SELECT count(*) FROM events WHERE organization_id = '{org}'"))
        .await;
    let counts = json_lines(&query(
        &env,
        &dir,
        &[
            "--format",
            "json",
            "SELECT (SELECT count(*) FROM events_v1_raw) AS raw, (SELECT count(*) FROM events_v1_latest) AS latest, \
             (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM events_v1) AS analyst, \
             (SELECT count(*) FROM audit_log) AS audit_log",
        ],
    ));
    assert_eq!(counts.len(), 1);
    let c = &counts[0];
    assert_eq!(c["raw"], n + 3, "history keeps both versions: {c}");
    assert_eq!(c["latest"], n, "{c}");
    assert_eq!(c["events"], n, "{c}");
    assert_eq!(c["analyst"], n, "{c}");
    assert_eq!(
        c["audit_log"], 0,
        "a table nothing was exported for is empty, not missing: {c}"
    );

    // The latest view holds exactly the source's current (id, updated_at, severity).
    let csv = query(
        &env,
        &dir,
        &[
            "--format",
            "csv",
            "SELECT id, severity FROM events WHERE severity = 5 ORDER BY id",
        ],
    );
    assert!(csv.status.success(), "{}", String::from_utf8_lossy(&csv.stderr));
    let text = String::from_utf8(csv.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,severity"));
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT id::text || ',' || severity FROM events WHERE organization_id = $1 AND severity = 5 ORDER BY id::text COLLATE \"C\"",
    )
    .bind(org)
    .fetch_all(&env.control)
    .await
    .unwrap();
    assert_eq!(lines.map(String::from).collect::<Vec<_>>(), expected);

    let latest = json_lines(&query(
        &env,
        &dir,
        &["--format", "json", "SELECT id, updated_at FROM events ORDER BY id"],
    ));
    let source: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, updated_at FROM events WHERE organization_id = $1 ORDER BY id::text COLLATE \"C\"")
            .bind(org)
            .fetch_all(&env.control)
            .await
            .unwrap();
    assert_eq!(latest.len(), source.len());
    for (row, (id, at)) in latest.iter().zip(&source) {
        assert_eq!(row["id"], id.to_string());
        let got = chrono::DateTime::parse_from_rfc3339(row["updated_at"].as_str().unwrap()).unwrap();
        assert_eq!(got, *at, "{id}");
    }

    // The table format, the relation list and a clear error for bad SQL.
    let table = query(&env, &dir, &["SELECT count(*) AS n FROM findings"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("| n"), "{text}");
    assert!(text.contains("(1 row)"), "{text}");
    let list = json_lines(&query(&env, &dir, &["--list", "--format", "json"]));
    for name in [
        "events_v1_raw",
        "events_v1_latest",
        "events_v1",
        "events",
        "baseline_scores",
    ] {
        assert!(list.iter().any(|r| r["name"] == name), "{name} registered: {list:?}");
    }
    let bad = query(&env, &dir, &["SELECT nope FROM events"]);
    assert_eq!(bad.status.code(), Some(3), "bad SQL is an input error");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("nope"), "{err}");
}
