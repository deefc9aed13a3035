//! Delete capture on real parts: `tidemark source install-delete-capture` puts a trigger on
//! the hot tables that logs business deletes (never archival ones), windows export them as
//! the next steps export them (see docs/DELETES.md).

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
