//! End to end on real parts: generated reference data in a throwaway Postgres → plan → lease →
//! binary COPY → Parquet / JSONL on a local directory and on an S3 server → re-read by an
//! independent reader (pyarrow + DuckDB) and compared with the source rows, value by value.

mod common;

use chrono::Duration;
use common::*;
use tidemark::control::destinations::DestinationKind;
use tidemark::deliver::object::ObjectDestination;
use tidemark::encode::Format;
use tidemark::schema::Table;
use tidemark::worker::WorkerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_lands_exactly_once_as_parquet_and_jsonl() {
    let Some(env) = Env::start(3_000, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let out = tempfile::tempdir().unwrap();
    let org = env.orgs[0];
    let parquet = out.path().join("parquet");
    let jsonl = out.path().join("jsonl");
    env.add_destination(
        org,
        DestinationKind::ParquetS3,
        "lake",
        serde_json::json!({"url": format!("file://{}", parquet.display())}),
        &Table::ALL,
        900,
        3,
    )
    .await;
    env.add_destination(
        org,
        DestinationKind::JsonlS3,
        "archive",
        serde_json::json!({"url": format!("file://{}", jsonl.display())}),
        &Table::ALL,
        900,
        3,
    )
    .await;

    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let deliveries = env.count("SELECT count(*) FROM warehouse_deliveries").await;
    assert_eq!(outcomes.len() as i64, deliveries);
    // A second pass finds nothing new: planning is idempotent.
    assert!(env.run_until_idle(fast_options()).await.is_empty());
    assert_eq!(env.count("SELECT count(*) FROM warehouse_deliveries").await, deliveries);

    let from = data_end() - Duration::days(3);
    let to = data_end() + Duration::days(1);
    for table in Table::ALL {
        let pq = files_under(&parquet.join(table.name()), "parquet");
        let jl = files_under(&jsonl.join(table.name()), "jsonl");
        let planned = env.count(&format!("SELECT count(*) FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id WHERE w.name = 'lake' AND d.\"table\" = '{}'", table.db_label())).await;
        assert_eq!(pq.len() as i64, planned, "one parquet object per delivery of {table}");
        assert_eq!(jl.len() as i64, planned, "one jsonl object per delivery of {table}");
        assert!(!pq.is_empty(), "{table} exported nothing");
        let report = verify(&env, table, org, from, to, "parquet", &pq);
        assert!(report["source_rows"].as_u64().unwrap() > 0);
        let kv = &report["files"][0]["key_value_metadata"];
        assert_eq!(kv["tidemark.table"], table.name());
        assert_eq!(kv["tidemark.schema_version"], "1");
        assert_eq!(kv["tidemark.organization_id"], org.to_string());
        verify(&env, table, org, from, to, "jsonl", &jl);
    }

    // Object keys follow <table>/v1/org_id=<org>/date=<day>/<table>_<start>_<end>_<delivery>.<ext>.
    let (key, id): (String, uuid::Uuid) = sqlx::query_as(
        "SELECT receipt->>'object_key', id FROM warehouse_deliveries WHERE \"table\" = 'EVENTS' AND receipt->>'format' = 'parquet' ORDER BY watermark_start LIMIT 1",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    let re = format!("events/v1/org_id={org}/date=");
    assert!(key.starts_with(&re), "{key}");
    assert!(key.ends_with(&format!("_{id}.parquet")), "{key}");
    assert!(parquet.join(&key).is_file());

    // Watermarks advanced to the last delivered row of each table.
    let behind = env
        .count("SELECT count(*) FROM warehouse_watermarks WHERE last_updated_at IS NULL OR delivered_through IS NULL")
        .await;
    assert_eq!(behind, 0);
    let (wm_at, wm_id): (chrono::DateTime<chrono::Utc>, uuid::Uuid) = sqlx::query_as(
        "SELECT w.last_updated_at, w.last_id FROM warehouse_watermarks w JOIN warehouse_destinations d ON d.id = w.destination_id WHERE d.name = 'lake' AND w.\"table\" = 'EVENTS'",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    let (src_at, src_id): (chrono::DateTime<chrono::Utc>, uuid::Uuid) = sqlx::query_as(
        "SELECT updated_at, id FROM events WHERE organization_id = $1 ORDER BY updated_at DESC, id DESC LIMIT 1",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap();
    assert_eq!((wm_at, wm_id), (src_at, src_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_never_receives_another_organizations_rows() {
    let Some(env) = Env::start(2_000, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (env.orgs[0], env.orgs[1]);
    for (org, name) in [(a, "a"), (b, "b")] {
        let dir = out.path().join(name);
        env.add_destination(
            org,
            DestinationKind::ParquetS3,
            name,
            serde_json::json!({"url": format!("file://{}", dir.display())}),
            &[Table::Events, Table::AuditLog],
            900,
            3,
        )
        .await;
    }
    env.run_until_idle(fast_options()).await;
    let from = data_end() - Duration::days(2);
    for (org, name) in [(a, "a"), (b, "b")] {
        for table in [Table::Events, Table::AuditLog] {
            let files = files_under(&out.path().join(name).join(table.name()), "parquet");
            // The verifier fails on any row whose organization_id is not `org`, and on any
            // missing or extra id.
            verify(&env, table, org, from, data_end(), "parquet", &files);
        }
    }
    let foreign = env
        .count("SELECT count(*) FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id WHERE d.organization_id <> w.organization_id")
        .await;
    assert_eq!(foreign, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_a_timestamp_across_batch_and_window_edges_land_once_in_their_window() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    // A hand-made pile-up: 500 rows with one updated_at exactly on a window boundary, 300
    // rows one microsecond before it, in the generated table.
    let boundary = data_end() - Duration::hours(3);
    let schema = env.registry.get(Table::Events, 1).unwrap();
    let middle: Vec<String> = schema.columns[1..schema.columns.len() - 1]
        .iter()
        .map(|c| format!("e.{}", c.name))
        .collect();
    for (ts, n) in [(boundary, 500), (boundary - Duration::microseconds(1), 300)] {
        let mut tx = env.control.begin().await.unwrap();
        // Keep the chosen updated_at: the trigger would set now().
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        let sql = format!(
            "INSERT INTO events SELECT md5('tie' || $2::text || i)::uuid, {}, $2 \
             FROM (SELECT * FROM events WHERE organization_id = $3 LIMIT 1) e, generate_series(1, $1) i",
            middle.join(", ")
        );
        sqlx::query(&sql)
            .bind(n)
            .bind(ts)
            .bind(org)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let (_out, dir, _) = env.local_parquet(org, &[Table::Events], 900, 3).await;
    // Tiny batches: a tie group spans many batches.
    let outcomes = env
        .run_until_idle(WorkerOptions {
            batch_rows: 7,
            ..fast_options()
        })
        .await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    // Verify the two windows around the boundary separately: each file holds exactly the rows
    // of its own [start, end).
    for (start, end) in [
        (boundary - Duration::minutes(15), boundary),
        (boundary, boundary + Duration::minutes(15)),
    ] {
        let (key,): (String,) = sqlx::query_as("SELECT receipt->>'object_key' FROM warehouse_deliveries WHERE watermark_start = $1 AND \"table\" = 'EVENTS'")
            .bind(start)
            .fetch_one(&env.control)
            .await
            .unwrap();
        let report = verify(&env, Table::Events, org, start, end, "parquet", &[dir.join(key)]);
        assert!(report["source_rows"].as_u64().unwrap() >= 300);
    }
    let all = files_under(&dir.join("events"), "parquet");
    verify(
        &env,
        Table::Events,
        org,
        data_end() - Duration::days(2),
        data_end(),
        "parquet",
        &all,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_jsonl_land_on_an_s3_server() {
    let Some(env) = Env::start(1_000, 1).await else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("exports");
    let org = env.orgs[1];
    let pq_cfg = moto.config("exports", "tidemark/parquet");
    let jl_cfg = moto.config("exports", "tidemark/jsonl");
    env.add_destination(
        org,
        DestinationKind::ParquetS3,
        "s3-parquet",
        pq_cfg.clone(),
        &[Table::Events, Table::Findings],
        900,
        3,
    )
    .await;
    env.add_destination(
        org,
        DestinationKind::JsonlS3,
        "s3-jsonl",
        jl_cfg.clone(),
        &[Table::Events],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");

    let local = tempfile::tempdir().unwrap();
    for (kind, format, cfg, tables) in [
        (
            DestinationKind::ParquetS3,
            Format::Parquet,
            pq_cfg,
            vec![Table::Events, Table::Findings],
        ),
        (DestinationKind::JsonlS3, Format::Jsonl, jl_cfg, vec![Table::Events]),
    ] {
        let dest = ObjectDestination::from_config(kind, format, &cfg).unwrap();
        let keys = download(dest.store(), dest.prefix(), local.path()).await;
        assert!(keys.iter().all(|k| k.contains(&format!("org_id={org}"))));
        for table in tables {
            let files = files_under(
                &local.path().join(dest.prefix().as_ref()).join(table.name()),
                format.extension(),
            );
            let deliveries = env
                .count(&format!("SELECT count(*) FROM warehouse_deliveries d JOIN warehouse_destinations w ON w.id = d.destination_id WHERE w.kind = '{kind}' AND d.\"table\" = '{}'", table.db_label()))
                .await;
            assert_eq!(files.len() as i64, deliveries);
            verify(
                &env,
                table,
                org,
                data_end() - Duration::days(2),
                data_end(),
                format.extension(),
                &files,
            );
        }
    }
}
