//! The operator runbook's commands on real parts: rewinding a watermark (dry run, refusals,
//! re-delivery without duplicates), replacing a destination's configuration (credential
//! rotation) and probing a destination.

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use chrono::Duration;
use common::*;
use tidemark::schema::Table;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

/// Every Parquet object under `dir` with its size, by path relative to `dir`.
fn objects(dir: &std::path::Path) -> BTreeMap<String, u64> {
    files_under(dir, "parquet")
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p.strip_prefix(dir).unwrap().display().to_string(), len)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_redelivers_without_duplicates_and_refuses_what_is_unsafe() {
    let Some(env) = Env::start(4_000, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    let (_tmp, dir, d) = env.local_parquet(org, &[Table::Events], 3600, 3).await;
    env.run_until_idle(fast_options()).await;
    let delivered = "SELECT count(*) FROM warehouse_deliveries WHERE status = 'delivered'";
    let all = env.count(delivered).await;
    assert!(all > 10, "{all} windows delivered");
    let before = objects(&dir);
    assert_eq!(before.len() as i64, all, "one object per window");
    let from = data_end() - Duration::days(1);
    let in_range = env
        .count(&format!(
            "SELECT count(*) FROM warehouse_deliveries WHERE watermark_end > '{}'",
            from.to_rfc3339()
        ))
        .await;
    assert!(
        in_range > 0 && in_range < all,
        "{in_range} of {all} windows after {from}"
    );

    let from_arg = from.to_rfc3339();
    let rewind = |extra: &[&str]| {
        env.cli()
            .args(["destination", "rewind", "p", "--table", "events", "--from", &from_arg])
            .args(extra)
            .output()
            .unwrap()
    };
    // Dry run: reports, changes nothing.
    let out = rewind(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["rewind"]["executed"], false);
    assert_eq!(report["rewind"]["versions"][0]["requeued"], in_range);
    assert_eq!(env.count(delivered).await, all, "a dry run changes nothing");

    // A window of the range under a live lease refuses the rewind, and nothing changes.
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'leased', lease_owner = 'someone', lease_token = 1, \
           lease_expires_at = now() + interval '1 hour' \
         WHERE id = (SELECT id FROM warehouse_deliveries ORDER BY watermark_start DESC LIMIT 1)",
    )
    .execute(&env.control)
    .await
    .unwrap();
    let out = rewind(&["--execute"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("being delivered right now"), "{}", stderr(&out));
    assert_eq!(env.count(delivered).await, all - 1);
    sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'delivered', lease_expires_at = NULL WHERE status = 'leased'",
    )
    .execute(&env.control)
    .await
    .unwrap();

    // The rewind: the range goes back into the queue and the watermark moves back to it.
    let out = rewind(&["--execute"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("re-queued {in_range} delivered window(s)")),
        "{text}"
    );
    assert_eq!(env.count(delivered).await, all - in_range);
    let through: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT delivered_through FROM warehouse_watermarks WHERE destination_id = $1")
            .bind(d.id)
            .fetch_one(&env.control)
            .await
            .unwrap();
    let first: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(watermark_start) FROM warehouse_deliveries WHERE status = 'pending'")
            .fetch_one(&env.control)
            .await
            .unwrap();
    assert_eq!(through, first, "delivered_through is the first re-queued window");
    assert!(first <= from);

    // Re-delivery: the same objects (same keys), every row once.
    env.run_until_idle(fast_options()).await;
    assert_eq!(env.count(delivered).await, all);
    let after = objects(&dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "re-delivered windows reuse their keys"
    );
    let end = data_end() + Duration::days(30);
    verify(
        &env,
        Table::Events,
        org,
        data_end() - Duration::days(400),
        end,
        "parquet",
        &files_under(&dir, "parquet"),
    );

    // Cold storage relies on these windows once their rows are archived: then a rewind is
    // refused and nothing is re-queued.
    sqlx::query("UPDATE organizations SET data_retention_days = 1 WHERE id = $1")
        .bind(org)
        .execute(&env.control)
        .await
        .unwrap();
    let out = env
        .cli()
        .args([
            "tombstone",
            "--execute",
            "--json",
            "--org",
            &org.to_string(),
            "--table",
            "events",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let archived = env.count("SELECT count(*) FROM cold_storage_archive").await;
    assert!(archived > 0, "the pass archived rows");
    let out = rewind(&["--execute"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("prove archived rows"), "{}", stderr(&out));
    assert_eq!(env.count(delivered).await, all, "nothing re-queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_probes_before_replacing_and_check_reports_reachability() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let (tmp, _dir, d) = env.local_parquet(org, &[Table::Events], 900, 3).await;
    let stored = |env: &Env| {
        let pool = env.control.clone();
        async move {
            sqlx::query_scalar::<_, serde_json::Value>("SELECT config FROM warehouse_destinations")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let original = stored(&env).await;
    assert_eq!(original, d.config);

    // A configuration that does not parse, and one whose probe fails, change nothing.
    let out = env
        .cli()
        .args([
            "destination",
            "set-config",
            "p",
            "--config",
            r#"{"url": "file:///tmp/x", "bucket_typo": 1}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("bucket_typo"), "{}", stderr(&out));
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let bad = serde_json::json!({"url": format!("file://{}/under-a-file", file.display())}).to_string();
    let out = env
        .cli()
        .args(["destination", "set-config", "p", "--config", &bad])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("configuration unchanged"), "{}", stderr(&out));
    assert_eq!(stored(&env).await, original);

    // A good one is probed and stored; check reports the stored configuration reachable.
    let moved = tmp.path().join("moved");
    let good = serde_json::json!({"url": format!("file://{}", moved.display())});
    let out = env
        .cli()
        .args([
            "destination",
            "set-config",
            "p",
            "--json",
            "--config",
            &good.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["checked"], true);
    assert_eq!(stored(&env).await, good);
    let out = env
        .cli()
        .args(["destination", "check", "p", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["ok"], true);

    // The next delivery writes where the new configuration says.
    env.run_until_idle(fast_options()).await;
    assert!(
        !files_under(&moved, "parquet").is_empty(),
        "delivered under the new URL"
    );

    // A stored configuration that stopped working: check says so with a non-zero exit.
    sqlx::query("UPDATE warehouse_destinations SET config = $1")
        .bind(serde_json::json!({"url": format!("file://{}/under-a-file", file.display())}))
        .execute(&env.control)
        .await
        .unwrap();
    let out = env
        .cli()
        .args(["destination", "check", "p", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(json(&out)["ok"], false);
}
