//! Delete capture on real parts: `tidemark source install-delete-capture` puts a trigger on
//! the hot tables that logs business deletes (never archival ones), windows export them as
//! `_op = 'D'` rows, and every `latest` view drops deleted ids.

mod common;

use common::*;
use uuid::Uuid;

fn stdout_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_is_idempotent_logs_business_deletes_only_and_uninstalls() {
    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[0];

    let help = env
        .cli()
        .args(["source", "install-delete-capture", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("tidemark_delete_log") && help.contains("tidemark.archival") && help.contains("TRUNCATE"),
        "{help}"
    );

    for _ in 0..2 {
        let report = stdout_json(
            &env.cli()
                .args(["source", "install-delete-capture", "--json"])
                .output()
                .unwrap(),
        );
        assert_eq!(report["delete_log"], "\"public\".\"tidemark_delete_log\"", "{report:#}");
        let tables = report["tables"].as_array().unwrap();
        assert_eq!(tables.len(), 10);
        assert!(tables.iter().all(|t| t["captured"] == true), "{report:#}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM pg_trigger WHERE tgname = 'tidemark_delete_capture'")
            .await,
        10,
        "one trigger per hot table, not two after a second install"
    );

    // A business delete is logged with the row's last values and the transaction's now().
    let victim: (Uuid, String) =
        sqlx::query_as("SELECT id, status FROM findings WHERE organization_id = $1 ORDER BY id LIMIT 1")
            .bind(org)
            .fetch_one(&env.control)
            .await
            .unwrap();
    let mut tx = env.control.begin().await.unwrap();
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await.unwrap();
    sqlx::query("DELETE FROM findings WHERE id = $1")
        .bind(victim.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let logged: (String, Uuid, Uuid, chrono::DateTime<chrono::Utc>, serde_json::Value) =
        sqlx::query_as("SELECT table_name, id, organization_id, deleted_at, old_row FROM tidemark_delete_log")
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!((logged.0.as_str(), logged.1, logged.2), ("findings", victim.0, org));
    assert_eq!(logged.3, now, "deleted_at is the deleting transaction's now()");
    assert_eq!(logged.4["status"], victim.1.as_str());
    assert_eq!(logged.4["id"], victim.0.to_string());

    // Archival deletes (tidemark.archival = 'on') are not business deletes.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL tidemark.archival = 'on'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let archived =
        sqlx::query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE organization_id = $1 LIMIT 5)")
            .bind(org)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
    tx.commit().await.unwrap();
    assert_eq!(archived, 5);
    assert_eq!(env.count("SELECT count(*) FROM tidemark_delete_log").await, 1);

    // Uninstalling one table leaves the log; uninstalling all removes it.
    let report = stdout_json(
        &env.cli()
            .args([
                "source",
                "install-delete-capture",
                "--uninstall",
                "--tables",
                "events",
                "--json",
            ])
            .output()
            .unwrap(),
    );
    assert!(report["delete_log"].is_string(), "{report:#}");
    let events = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap();
    assert_eq!(events["captured"], false);
    sqlx::query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE organization_id = $1 LIMIT 1)")
        .bind(org)
        .execute(&env.control)
        .await
        .unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM tidemark_delete_log").await,
        1,
        "events no longer captured"
    );
    let report = stdout_json(
        &env.cli()
            .args(["source", "install-delete-capture", "--uninstall", "--json"])
            .output()
            .unwrap(),
    );
    assert!(report["delete_log"].is_null(), "{report:#}");
    assert_eq!(
        env.count("SELECT count(*) FROM pg_class WHERE relname = 'tidemark_delete_log'")
            .await,
        0
    );
    // Deleting still works without capture.
    sqlx::query("DELETE FROM findings WHERE organization_id = $1 AND id IN (SELECT id FROM findings LIMIT 1)")
        .bind(org)
        .execute(&env.control)
        .await
        .unwrap();
}

/// Rows of a Parquet object, as `(id, _op, status, title)`, in file order.
fn parquet_rows(path: &std::path::Path) -> (Vec<String>, Vec<(String, String, String, String)>) {
    use arrow_array::cast::AsArray;
    let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        names = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        let col = |n: &str| {
            batch
                .column(batch.schema().index_of(n).unwrap())
                .as_string::<i32>()
                .clone()
        };
        let (id, op, status, title) = (col("id"), col("_op"), col("status"), col("title"));
        for i in 0..batch.num_rows() {
            rows.push((
                id.value(i).to_string(),
                op.value(i).to_string(),
                status.value(i).to_string(),
                title.value(i).to_string(),
            ));
        }
    }
    (names, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_land_as_d_rows_and_leave_the_latest_views() {
    use chrono::{Duration, Utc};
    use tidemark::control::destinations::DestinationKind;
    use tidemark::schema::Table;

    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[0];
    let out = env
        .cli()
        .args(["source", "install-delete-capture", "--tables", "findings"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One-minute windows, so the window of the deletes below closes within a minute.
    let (_tmp, dir, _) = env.local_parquet(org, &[Table::Findings], 60, 3).await;
    let jsonl = _tmp.path().join("j");
    env.add_destination(
        org,
        DestinationKind::JsonlS3,
        "j",
        serde_json::json!({"url": format!("file://{}", jsonl.display())}),
        &[Table::Findings],
        60,
        3,
    )
    .await;
    env.run_until_idle(fast_options()).await;
    let history = files_under(&dir, "parquet");
    assert!(!history.is_empty());
    let history_jsonl = files_under(&jsonl, "jsonl");
    let total: i64 = env
        .count(&format!(
            "SELECT count(*) FROM findings WHERE organization_id = '{org}'"
        ))
        .await;

    let ids: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM findings WHERE organization_id = $1 ORDER BY id LIMIT 3")
            .bind(org)
            .fetch_all(&env.control)
            .await
            .unwrap();
    let (a, b, c) = (ids[0].0, ids[1].0, ids[2].0);
    // A is updated and B deleted by one transaction; C is deleted and re-inserted by another
    // (same now(): the D and the U rows of C tie on updated_at).
    let mut tx = env.control.begin().await.unwrap();
    let t1: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await.unwrap();
    sqlx::query("UPDATE findings SET status = 'triaged' WHERE id = $1")
        .bind(a)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM findings WHERE id = $1")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = env.control.begin().await.unwrap();
    let t2: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await.unwrap();
    sqlx::query("CREATE TEMP TABLE keep ON COMMIT DROP AS SELECT * FROM findings WHERE id = $1")
        .bind(c)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM findings WHERE id = $1")
        .bind(c)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO findings SELECT * FROM keep")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE findings SET title = 'reinserted' WHERE id = $1")
        .bind(c)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Wait for the windows of both transactions to close, then export them.
    let window_end = tidemark::plan::align_down(t1.max(t2), 60) + Duration::seconds(60);
    while Utc::now() < window_end + Duration::seconds(2) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:?}");
    let new: Vec<_> = files_under(&dir, "parquet")
        .into_iter()
        .filter(|p| !history.contains(p))
        .collect();
    assert!(!new.is_empty() && new.len() <= 2, "{new:?}");
    let mut rows = Vec::new();
    for p in &new {
        let (names, r) = parquet_rows(p);
        assert_eq!(names.last().map(String::as_str), Some("_op"), "{names:?}");
        rows.extend(r);
    }
    let (a, b, c) = (a.to_string(), b.to_string(), c.to_string());
    let find = |id: &str| {
        rows.iter()
            .filter(|r| r.0 == id)
            .map(|r| (r.1.as_str(), r.2.as_str(), r.3.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(find(&a), [("U", "triaged", find(&a)[0].2)], "{rows:?}");
    assert_eq!(
        find(&b),
        [("D", ids[1].1.as_str(), find(&b)[0].2)],
        "the deleted row's last values: {rows:?}"
    );
    let c_rows = find(&c);
    assert_eq!(c_rows.len(), 2, "{rows:?}");
    assert_eq!(
        (c_rows[0].0, c_rows[1].0, c_rows[1].2),
        ("D", "U", "reinserted"),
        "D before U on a tie: {rows:?}"
    );

    // The independent verifier, source rows and logged deletes against the files.
    let from = tidemark::plan::align_down(t1.min(t2), 60);
    let report = verify(&env, Table::Findings, org, from, window_end, "parquet", &new);
    assert_eq!(report["file_rows"], 4, "{report:#}");
    let new_jsonl: Vec<_> = files_under(&jsonl, "jsonl")
        .into_iter()
        .filter(|p| !history_jsonl.contains(p))
        .collect();
    let report = verify(&env, Table::Findings, org, from, window_end, "jsonl", &new_jsonl);
    assert_eq!(report["file_rows"], 4, "{report:#}");
    let lines = new_jsonl
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(
        lines.contains(&format!("{{\"id\":\"{b}\"")) && lines.contains(",\"_op\":\"D\"}"),
        "{lines}"
    );

    // `tidemark query`: B is in the history as a delete and gone from the latest views.
    let query = |sql: &str| -> Vec<serde_json::Value> {
        let out = env
            .cli()
            .arg("query")
            .arg("--dir")
            .arg(&dir)
            .args(["--format", "json", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let latest = query(&format!(
        "SELECT id, title FROM findings_v1_latest WHERE id IN ('{a}', '{b}', '{c}') ORDER BY id"
    ));
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(latest[0]["id"], a);
    assert_eq!(
        (latest[1]["id"].as_str(), latest[1]["title"].as_str()),
        (Some(c.as_str()), Some("reinserted"))
    );
    let n = query("SELECT count(*) AS n FROM findings");
    assert_eq!(n[0]["n"], total - 1, "every finding but the deleted one");
    let raw = query(&format!(
        "SELECT _op FROM findings_v1_raw WHERE id = '{b}' ORDER BY updated_at"
    ));
    assert_eq!(raw, [serde_json::json!({"_op": "U"}), serde_json::json!({"_op": "D"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_row_evaluates_derived_columns_of_v2() {
    use arrow_array::cast::AsArray;
    use chrono::{Duration, Utc};
    use futures::StreamExt;
    use tidemark::extract::{WindowQuery, extract_changes};
    use tidemark::schema::Table;

    let Some(env) = Env::start(300, 1).await else { return };
    let org = env.orgs[0];
    assert!(tidemark::capture::delete_log(&env.source).await.unwrap().is_none());
    tidemark::capture::install(&env.source, &env.registry, &[Table::Findings])
        .await
        .unwrap();
    let log = tidemark::capture::delete_log(&env.source)
        .await
        .unwrap()
        .expect("installed");
    let (id, severity): (Uuid, i16) =
        sqlx::query_as("DELETE FROM findings WHERE id = (SELECT id FROM findings WHERE organization_id = $1 AND severity = 3 ORDER BY id LIMIT 1) RETURNING id, severity")
            .bind(org)
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(severity, 3);
    let v2 = env.registry.get(Table::Findings, 2).unwrap();
    let now = Utc::now();
    let q = WindowQuery {
        schema: &v2,
        organization_id: org,
        start: now - Duration::hours(1),
        end: now + Duration::hours(1),
    };
    let (mut batches, _) = extract_changes(env.source.clone(), q, Some(&log), 100);
    let mut seen = Vec::new();
    while let Some(b) = batches.next().await {
        let b = b.unwrap();
        assert_eq!(b.schema().fields().last().unwrap().name(), "_op");
        let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
        for i in 0..b.num_rows() {
            seen.push((
                col("id").as_string::<i32>().value(i).to_string(),
                col("_op").as_string::<i32>().value(i).to_string(),
                col("severity").as_string::<i32>().value(i).to_string(),
            ));
        }
    }
    assert_eq!(seen, [(id.to_string(), "D".to_string(), "high".to_string())]);
}
