//! `POSTGRES_REPLICA` on real parts: the throwaway cluster's `app` database is the source and a
//! second database of the same cluster is the replica. What landed is read back on separate
//! connections with Postgres's own text output of each row (`t::text`) and compared with the
//! source's, row by row and value by value.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::conformance::{Target, suite};

use common::*;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tidemark::control::destinations::DestinationKind;
use tidemark::deliver::replica::ddl;
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::error::ErrorKind;
use tidemark::schema::Table;
use uuid::Uuid;

/// A fresh database `name` in the test cluster, and a replica config pointing at it through
/// an env reference (the URL is a secret).
async fn replica(env: &Env, name: &str, schema: &str) -> (String, serde_json::Value) {
    let url = env.pg.create_database(name).await.unwrap();
    // Unique per cluster: plain `cargo test` runs tests as threads of one process.
    let var = format!(
        "TIDEMARK_TEST_REPLICA_URL_{}_{}",
        env.pg.port(),
        name.to_ascii_uppercase()
    );
    // SAFETY: each test process sets its own variables before starting workers.
    unsafe { std::env::set_var(&var, &url) };
    (
        url,
        json!({"url": {"env": var}, "schema": schema, "connect_timeout_seconds": 5}),
    )
}

async fn connect(url: &str) -> PgConnection {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query("SET TIME ZONE 'UTC'").execute(&mut c).await.unwrap();
    c
}

/// Every row's text form, ordered by id.
async fn rows(url: &str, sql: &str, org: Option<Uuid>) -> Vec<(Uuid, String)> {
    let mut c = connect(url).await;
    let q = sqlx::query_as(sql);
    let q = match org {
        Some(o) => q.bind(o),
        None => q,
    };
    q.fetch_all(&mut c).await.unwrap()
}

async fn source_rows(env: &Env, table: Table, org: Uuid) -> Vec<(Uuid, String)> {
    rows(
        &env.url,
        &format!(
            "SELECT id, t::text FROM {} t WHERE organization_id = $1 ORDER BY id",
            table.name()
        ),
        Some(org),
    )
    .await
}

async fn replica_rows(url: &str, schema: &str, relation: &str) -> Vec<(Uuid, String)> {
    let cols = "t::text";
    rows(
        url,
        &format!("SELECT id, {cols} FROM \"{schema}\".\"{relation}\" t ORDER BY id"),
        None,
    )
    .await
}

/// `(column, type, not null)` of a relation, in order.
async fn columns(url: &str, relation: &str) -> Vec<(String, String, bool)> {
    let mut c = connect(url).await;
    sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(relation)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

async fn scalar_i64(url: &str, sql: &str) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
}

async fn receipt(env: &Env, delivery: Uuid) -> serde_json::Value {
    sqlx::query_scalar("SELECT receipt FROM warehouse_deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_one(&env.control)
        .await
        .unwrap()
}

/// `last_error` of a delivery: `[kind] message`.
async fn last_error(env: &Env, delivery: Uuid) -> String {
    sqlx::query_scalar("SELECT last_error FROM warehouse_deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_one(&env.control)
        .await
        .unwrap()
}

async fn replay(env: &Env, delivery: Uuid) {
    let n = sqlx::query(
        "UPDATE warehouse_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), \
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = $1 AND status = 'delivered'",
    )
    .bind(delivery)
    .execute(&env.control)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 1, "delivery {delivery} was delivered and is pending again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_lands_value_by_value_with_native_types() {
    let Some(env) = Env::start(3_000, 2).await else {
        return;
    };
    let org = env.orgs[0];
    let (url, config) = replica(&env, "replica", "tidemark").await;
    let dest = env
        .add_destination(org, DestinationKind::PostgresReplica, "pg", config, &Table::ALL, 900, 3)
        .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");

    for table in Table::ALL {
        let analyst = format!("{}_v1", table.name());
        // Native types, equal to the source's column by column.
        let src_cols = columns(&env.url, &format!("public.{}", table.name())).await;
        let dst_cols = columns(&url, &format!("tidemark.{analyst}")).await;
        assert_eq!(dst_cols, src_cols, "column types of {analyst}");
        // Every row, every value, through Postgres's own output functions on both sides.
        let source = source_rows(&env, table, org).await;
        assert!(!source.is_empty(), "{table} has rows for the org");
        assert_eq!(replica_rows(&url, "tidemark", &analyst).await, source, "{analyst}");
        assert_eq!(
            replica_rows(&url, "tidemark", &format!("{analyst}_latest")).await,
            source,
            "{analyst}_latest"
        );
        let raw = scalar_i64(&url, &format!("SELECT count(*) FROM tidemark.{analyst}_raw")).await;
        assert_eq!(raw as usize, source.len(), "{analyst}_raw has one version per row");
    }
    // One ledger row per delivery, each loaded once; receipts say what the replica did.
    let delivered = outcomes.len() as i64;
    assert_eq!(
        scalar_i64(
            &url,
            "SELECT count(*) FROM tidemark._tidemark_deliveries WHERE loads = 1"
        )
        .await,
        delivered
    );
    let first = outcomes.iter().find(|o| o.rows > 0).unwrap();
    let r = receipt(&env, first.delivery_id).await;
    assert_eq!(r["kind"], "POSTGRES_REPLICA");
    assert_eq!(r["copy_format"], "binary");
    assert_eq!(r["rows_copied"], first.rows);
    assert_eq!(r["inserted"], first.rows);
    assert_eq!(r["raw_inserted"], first.rows);
    assert_eq!(r["updated"], 0);
    assert_eq!(r["skipped_as_older"], 0);
    assert_eq!(r["ledger"]["status"], "first_load");
    assert_eq!(r["provenance"]["delivery_id"], first.delivery_id.to_string());
    assert!(r["target"].as_str().unwrap().ends_with("/replica"), "{r}");
    let text = r.to_string();
    assert!(!text.contains("postgres://"), "no URL in the receipt: {text}");
    // The destination never saw another organization's row.
    assert_eq!(
        scalar_i64(
            &url,
            &format!("SELECT count(*) FROM tidemark.events_v1 WHERE organization_id <> '{org}'")
        )
        .await,
        0
    );
    let _ = dest;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_older_window_never_moves_a_row_backwards() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let (url, config) = replica(&env, "replica", "tidemark").await;
    let dest = env
        .add_destination(
            org,
            DestinationKind::PostgresReplica,
            "pg",
            config,
            &[Table::Events],
            900,
            3,
        )
        .await;
    let first = env.run_until_idle(fast_options()).await;
    assert!(first.iter().all(|o| o.status == "delivered"), "{first:#?}");

    // The row, its old version and the delivery that carried it.
    let (id, old_severity, old_updated_at): (Uuid, i16, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT id, severity, updated_at FROM events WHERE organization_id = $1 ORDER BY updated_at, id LIMIT 1",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let old_delivery: Uuid = sqlx::query_scalar(
        "SELECT id FROM warehouse_deliveries WHERE destination_id = $1 AND watermark_start <= $2 AND watermark_end > $2",
    )
    .bind(dest.id)
    .bind(old_updated_at)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let old_text = replica_rows(&url, "tidemark", "events_v1")
        .await
        .into_iter()
        .find(|(i, _)| *i == id)
        .unwrap()
        .1;

    // A new version through the application's trigger (updated_at = now()), delivered in a
    // one-second window so it closes at once.
    sqlx::query("UPDATE events SET severity = (severity + 1) % 5 WHERE id = $1")
        .bind(id)
        .execute(&env.control)
        .await
        .unwrap();
    sqlx::query("UPDATE warehouse_destinations SET window_seconds = 1 WHERE id = $1")
        .bind(dest.id)
        .execute(&env.control)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = env.run_until_idle(fast_options()).await;
    assert_eq!(second.len(), 1, "{second:#?}");
    assert_eq!(second[0].status, "delivered");
    let r = receipt(&env, second[0].delivery_id).await;
    assert_eq!(
        (r["updated"].as_i64(), r["inserted"].as_i64()),
        (Some(1), Some(0)),
        "{r}"
    );
    let source_new = source_rows(&env, Table::Events, org).await;
    let new_text = source_new.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    assert_ne!(new_text, old_text);
    assert_eq!(replica_rows(&url, "tidemark", "events_v1").await, source_new);

    // The old window served again with the old version (restored in the source without the
    // trigger), replayed under its original delivery id: the replica keeps the new version.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET severity = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(old_severity)
        .bind(old_updated_at)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let raw_before = scalar_i64(&url, "SELECT count(*) FROM tidemark.events_v1_raw").await;
    assert_eq!(raw_before as usize, source_new.len() + 1, "two versions of the row");
    replay(&env, old_delivery).await;
    let third = env.run_until_idle(fast_options()).await;
    assert_eq!(third.len(), 1, "{third:#?}");
    assert_eq!(
        (third[0].delivery_id, third[0].status.as_str()),
        (old_delivery, "delivered")
    );
    let r = receipt(&env, old_delivery).await;
    assert_eq!(r["ledger"]["status"], "replay", "{r}");
    assert_eq!(r["ledger"]["loads"], 2, "{r}");
    assert_eq!(r["skipped_as_older"], 1, "{r}");
    assert_eq!(r["raw_inserted"], 0, "{r}");
    assert_eq!(r["inserted"], 0, "{r}");
    assert_eq!(r["updated"], 0, "{r}");
    assert_eq!(r["unchanged"].as_u64(), Some(third[0].rows - 1), "{r}");
    let replica_now = replica_rows(&url, "tidemark", "events_v1").await;
    let kept = &replica_now.iter().find(|(i, _)| *i == id).unwrap().1;
    assert_eq!(kept, &new_text, "the row kept its newer version");
    assert_eq!(replica_now, source_new, "nothing else moved either");
    assert_eq!(
        replica_rows(&url, "tidemark", "events_v1_latest").await,
        source_new,
        "the latest view agrees"
    );
    assert_eq!(
        scalar_i64(&url, "SELECT count(*) FROM tidemark.events_v1_raw").await,
        raw_before,
        "history gained nothing"
    );

    // Any other delivery replayed: the same, and every row counted as unchanged.
    let other = first
        .iter()
        .find(|o| o.delivery_id != old_delivery && o.rows > 1)
        .unwrap();
    replay(&env, other.delivery_id).await;
    let fourth = env.run_until_idle(fast_options()).await;
    assert_eq!(fourth.len(), 1);
    let r = receipt(&env, other.delivery_id).await;
    assert_eq!(r["ledger"]["status"], "replay");
    assert_eq!(r["unchanged"].as_u64(), Some(other.rows), "{r}");
    assert_eq!((r["inserted"].as_i64(), r["updated"].as_i64()), (Some(0), Some(0)));
    assert_eq!(replica_rows(&url, "tidemark", "events_v1").await, source_new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organization_gets_its_own_schema_and_only_its_rows() {
    let Some(env) = Env::start(2_000, 1).await else {
        return;
    };
    let (a, b) = (env.orgs[0], env.orgs[1]);
    let (url, cfg_a) = replica(&env, "shared", "org_a").await;
    let mut cfg_b = cfg_a.clone();
    cfg_b["schema"] = json!("org_b");
    let tables = [Table::Events, Table::AuditLog];
    env.add_destination(a, DestinationKind::PostgresReplica, "a", cfg_a.clone(), &tables, 900, 3)
        .await;
    env.add_destination(b, DestinationKind::PostgresReplica, "b", cfg_b, &tables, 900, 3)
        .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    for (org, schema) in [(a, "org_a"), (b, "org_b")] {
        for table in tables {
            let relation = format!("{}_v1", table.name());
            assert_eq!(
                replica_rows(&url, schema, &relation).await,
                source_rows(&env, table, org).await,
                "{schema}.{relation}"
            );
            let foreign = scalar_i64(
                &url,
                &format!("SELECT count(*) FROM \"{schema}\".\"{relation}_raw\" WHERE organization_id <> '{org}'"),
            )
            .await;
            assert_eq!(foreign, 0);
        }
    }
    // A destination of organization b pointed at organization a's schema is refused.
    let intruder = env
        .add_destination(
            b,
            DestinationKind::PostgresReplica,
            "b-into-a",
            cfg_a,
            &[Table::Events],
            900,
            1,
        )
        .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(
        outcomes
            .iter()
            .all(|o| o.destination_id == intruder.id && o.status == "dead_letter")
    );
    let err = last_error(&env, outcomes[0].delivery_id).await;
    assert!(err.starts_with("[config]"), "{err}");
    assert!(
        err.contains("already holds organization") && err.contains(&a.to_string()),
        "{err}"
    );
    assert_eq!(
        replica_rows(&url, "org_a", "events_v1").await,
        source_rows(&env, Table::Events, a).await,
        "org a's replica is untouched"
    );
}

/// Requires a password for `role` on loopback (the cluster is trust-only otherwise) and
/// creates the role with `password`, owning database `db`.
async fn password_role(pg: &EphemeralPostgres, role: &str, password: &str, db: &str) {
    let admin = pg.url("postgres");
    let mut c = connect(&admin).await;
    sqlx::raw_sql(&format!(
        "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'; ALTER DATABASE \"{db}\" OWNER TO \"{role}\""
    ))
    .execute(&mut c)
    .await
    .unwrap();
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}")).unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&mut c).await.unwrap();
    // The postmaster reloads asynchronously: wait until a wrong password is refused.
    let wrong = format!("postgres://{role}:not-{password}@127.0.0.1:{}/{db}", pg.port());
    for _ in 0..100 {
        if PgConnection::connect(&wrong).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pg_hba.conf reload did not take effect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_connection_errors_are_classified() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let build = |c: serde_json::Value| tidemark::deliver::build(DestinationKind::PostgresReplica, &c);
    let config_err = |c: serde_json::Value| match build(c) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    // Refused while building, before any connection.
    let e = config_err(json!({"url": "postgres://postgres@127.0.0.1/replica"}));
    assert!(e.to_string().contains("plaintext secrets are not accepted"), "{e}");
    let e = config_err(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_NOT_SET"}}));
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string().contains("env:TIDEMARK_TEST_REPLICA_NOT_SET is not set"),
        "{e}"
    );
    let (url, good) = replica(&env, "replica", "tidemark").await;
    for (field, value, says) in [
        ("schema", json!("pg_catalog"), "starts with pg_"),
        ("schema", json!(""), "is empty"),
        ("tables", json!(true), "unknown field `tables`"),
        ("connect_timeout_seconds", json!(0), "at least 1"),
    ] {
        let mut c = good.clone();
        c[field] = value;
        let e = config_err(c);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains(says), "{field}: {e}");
    }
    unsafe { std::env::set_var("TIDEMARK_TEST_REPLICA_MYSQL", "mysql://root:hunter2@127.0.0.1/x") };
    let e = config_err(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_MYSQL"}}));
    assert!(e.to_string().contains("unsupported scheme 'mysql'"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    // check() reaches the server: a good config passes and leaves nothing behind.
    build(good.clone()).unwrap().check().await.unwrap();
    assert_eq!(
        scalar_i64(&url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tidemark'").await,
        0,
        "check rolled back its probe"
    );
    // No such database: configuration.
    let missing = format!("postgres://postgres@127.0.0.1:{}/no_such_db", env.pg.port());
    unsafe { std::env::set_var("TIDEMARK_TEST_REPLICA_NODB", &missing) };
    let e = build(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_NODB"}}))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(
        e.to_string().contains("no_such_db") && e.to_string().contains("3D000"),
        "{e}"
    );
    // A wrong password (scram on loopback for this role): authentication, and no secret in the message.
    password_role(&env.pg, "replica_writer", "s3cret-pw", "replica").await;
    let port = env.pg.port();
    unsafe {
        std::env::set_var(
            "TIDEMARK_TEST_REPLICA_BADPW",
            format!("postgres://replica_writer:wrong-pw@127.0.0.1:{port}/replica"),
        );
        std::env::set_var(
            "TIDEMARK_TEST_REPLICA_GOODPW",
            format!("postgres://replica_writer:s3cret-pw@127.0.0.1:{port}/replica"),
        );
    }
    let e = build(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_BADPW"}}))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationAuth, "{e}");
    assert!(
        e.to_string().contains("28P01") && e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong-pw"), "{e}");
    build(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_GOODPW"}}))
        .unwrap()
        .check()
        .await
        .unwrap();
    // Nothing listening: transient, quickly.
    let closed = format!("postgres://postgres@127.0.0.1:{}/replica", free_port());
    unsafe { std::env::set_var("TIDEMARK_TEST_REPLICA_CLOSED", &closed) };
    let started = std::time::Instant::now();
    let e = build(json!({"url": {"env": "TIDEMARK_TEST_REPLICA_CLOSED"}, "connect_timeout_seconds": 2}))
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationTransient, "{e}");
    assert!(
        e.to_string().contains("cannot connect to the replica 127.0.0.1:"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // create_tables = false and no tables: every delivery is dead-lettered as configuration.
    let org = env.orgs[0];
    let mut strict = good.clone();
    strict["create_tables"] = json!(false);
    env.add_destination(
        org,
        DestinationKind::PostgresReplica,
        "strict",
        strict,
        &[Table::Findings],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "dead_letter"), "{outcomes:#?}");
    let err = last_error(&env, outcomes[0].delivery_id).await;
    assert!(
        err.starts_with("[config]") && err.contains("create_tables is false"),
        "{err}"
    );
    assert!(err.contains("findings_v1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_existing_table_of_other_types_is_refused_not_cast() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let (url, config) = replica(&env, "replica", "tidemark").await;
    // severity as text would take smallints silently through an assignment cast.
    let schema = env.registry.get(Table::Events, 1).unwrap();
    let ddl = ddl::create_statements(&schema, "tidemark", true).join(";\n");
    let sabotaged = ddl.replace("\"severity\" smallint", "\"severity\" text");
    assert_ne!(ddl, sabotaged);
    let mut c = connect(&url).await;
    sqlx::raw_sql(&sabotaged).execute(&mut c).await.unwrap();
    env.add_destination(
        org,
        DestinationKind::PostgresReplica,
        "pg",
        config,
        &[Table::Events],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "dead_letter"), "{outcomes:#?}");
    let err = last_error(&env, outcomes[0].delivery_id).await;
    assert!(err.starts_with("[destination_rejected]"), "{err}");
    assert!(
        err.contains("\"severity\" of type text") && err.contains("smallint"),
        "{err}"
    );
    assert_eq!(scalar_i64(&url, "SELECT count(*) FROM tidemark.events_v1").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_created_objects_work_with_only_dml_grants_and_the_view_follows_the_history_setting() {
    let Some(env) = Env::start(500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    let (url, mut config) = replica(&env, "replica", "pre").await;
    // The operator creates everything from the generated DDL; tidemark may not create.
    let schema = env.registry.get(Table::Identities, 1).unwrap();
    let mut statements = ddl::provisioning_statements(&schema, "pre", true);
    // Exactly the grants docs/destinations/postgres-replica.md lists for create_tables = false.
    statements.extend([
        "CREATE ROLE replica_dml LOGIN".to_string(),
        "GRANT USAGE ON SCHEMA pre TO replica_dml".to_string(),
        "GRANT SELECT, INSERT, UPDATE, DELETE ON pre.identities_v1 TO replica_dml".to_string(),
        "GRANT SELECT, INSERT, UPDATE ON pre.identities_v1_deleted, pre._tidemark_deliveries TO replica_dml"
            .to_string(),
        "GRANT SELECT, INSERT ON pre.identities_v1_raw, pre._tidemark_replica TO replica_dml".to_string(),
    ]);
    let mut c = connect(&url).await;
    sqlx::raw_sql(&statements.join(";\n")).execute(&mut c).await.unwrap();
    let dml_var = format!("TIDEMARK_TEST_REPLICA_DML_{}", env.pg.port());
    // SAFETY: a variable named after this test's cluster.
    unsafe {
        std::env::set_var(
            &dml_var,
            format!("postgres://replica_dml@127.0.0.1:{}/replica", env.pg.port()),
        )
    };
    let dml = json!({"url": {"env": dml_var}, "schema": "pre", "create_tables": false});
    let build = |c: &serde_json::Value| tidemark::deliver::build(DestinationKind::PostgresReplica, c).unwrap();
    build(&dml).check().await.unwrap();
    // The same role may not create: with create_tables it fails its check as refused access.
    let mut creating = dml.clone();
    creating["create_tables"] = json!(true);
    let e = build(&creating).check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DestinationAuth, "{e}");
    assert!(e.to_string().contains("42501"), "{e}");
    env.add_destination(
        org,
        DestinationKind::PostgresReplica,
        "pre",
        dml,
        &[Table::Identities],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let source = source_rows(&env, Table::Identities, org).await;
    assert_eq!(replica_rows(&url, "pre", "identities_v1").await, source);
    assert_eq!(replica_rows(&url, "pre", "identities_v1_latest").await, source);
    let view_sql = "SELECT pg_get_viewdef('pre.identities_v1_latest'::regclass)";
    let def: String = sqlx::query_scalar(view_sql).fetch_one(&mut c).await.unwrap();
    assert!(def.contains("identities_v1_raw"), "{def}");

    // Without history, the view is re-pointed at the analyst table (same rows).
    config["create_tables"] = json!(true);
    config["raw_history"] = json!(false);
    env.add_destination(
        org,
        DestinationKind::PostgresReplica,
        "nohist",
        config,
        &[Table::Identities],
        900,
        3,
    )
    .await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let def: String = sqlx::query_scalar(view_sql).fetch_one(&mut c).await.unwrap();
    assert!(
        !def.contains("identities_v1_raw") && def.contains("identities_v1"),
        "{def}"
    );
    assert_eq!(replica_rows(&url, "pre", "identities_v1_latest").await, source);
    for o in &outcomes {
        let r = receipt(&env, o.delivery_id).await;
        assert_eq!(
            r["unchanged"].as_u64(),
            Some(o.rows),
            "same rows again change nothing: {r}"
        );
        assert!(r["raw_table"].is_null(), "{r}");
    }
}

/// Load rate of one dense window (~50k events rows): printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_rate_of_a_dense_window() {
    let Some(env) = Env::start(100_000, 1).await else {
        return;
    };
    let (org, n): (Uuid, i64) = sqlx::query_as(
        "SELECT organization_id, count(*) FROM events GROUP BY organization_id ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(&env.control)
    .await
    .unwrap();
    // Every row of the organization in one window.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET updated_at = '2026-10-31T12:00:00Z' WHERE organization_id = $1")
        .bind(org)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (url, config) = replica(&env, "replica", "tidemark").await;
    env.add_destination(
        org,
        DestinationKind::PostgresReplica,
        "pg",
        config,
        &[Table::Events],
        900,
        3,
    )
    .await;
    // The same window to local Parquet in the same run: what extraction + encoding alone cost
    // on this machine at this moment (the machine is shared, so absolute figures vary).
    let (_dir, _, parquet) = env.local_parquet(org, &[Table::Events], 900, 3).await;
    let all = env.run_until_idle(fast_options()).await;
    assert_eq!(all.len(), 2);
    let (outcomes, baseline): (Vec<_>, Vec<_>) = all.into_iter().partition(|o| o.destination_id != parquet.id);
    assert_eq!(outcomes[0].rows as i64, n);
    let r = receipt(&env, outcomes[0].delivery_id).await;
    assert_eq!(r["inserted"].as_i64(), Some(n));
    eprintln!(
        "BASELINE: the same window as local Parquet: {:.2} s = {:.0} rows/s",
        baseline[0].seconds,
        n as f64 / baseline[0].seconds
    );
    assert_eq!(
        scalar_i64(&url, "SELECT count(*) FROM tidemark.events_v1").await,
        n,
        "all rows landed"
    );
    let secs = outcomes[0].seconds;
    eprintln!(
        "REPLICA LOAD: {n} events rows in one window, {secs:.2} s end to end (extract + binary COPY + history + upsert + commit) = {:.0} rows/s; {} bytes of COPY data; timings {}",
        n as f64 / secs,
        r["copy_bytes"],
        r["timings_ms"]
    );

    // The same window again with every row changed in place (same updated_at, other content,
    // as within one source transaction): every row conflicts and is rewritten.
    let mut tx = env.control.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET severity = (severity + 1) % 5 WHERE organization_id = $1")
        .bind(org)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    replay(&env, outcomes[0].delivery_id).await;
    let again = env.run_until_idle(fast_options()).await;
    let again: Vec<_> = again.into_iter().filter(|o| o.destination_id != parquet.id).collect();
    assert_eq!(again.len(), 1);
    let r = receipt(&env, again[0].delivery_id).await;
    assert_eq!(r["updated"].as_i64(), Some(n), "{r}");
    assert_eq!(r["raw_inserted"].as_i64(), Some(0), "{r}");
    assert_eq!(r["ledger"]["status"], "replay");
    let secs = again[0].seconds;
    eprintln!(
        "REPLICA LOAD (every row updated): {n} rows, {secs:.2} s end to end = {:.0} rows/s; timings {}",
        n as f64 / secs,
        r["timings_ms"]
    );
}

/// The conformance target: a replica cluster of its own (the suite starts a fresh source
/// cluster per scenario), one fresh schema per `config()` call.
struct ReplicaTarget {
    pg: EphemeralPostgres,
    url: String,
    url_var: String,
    bad_url_var: String,
    schemas: AtomicU32,
}

impl ReplicaTarget {
    async fn start() -> Option<ReplicaTarget> {
        if tidemark::ephemeral::find_bindir().is_err() {
            skip("no PostgreSQL server binaries")?;
        }
        let pg = EphemeralPostgres::start().unwrap();
        let url = pg.create_database("replica").await.unwrap();
        // A role that must give its password (scram), and is given a wrong one.
        password_role(&pg, "replica_writer", "right-pw", "replica").await;
        let url_var = format!("TIDEMARK_TEST_CONFORMANCE_REPLICA_{}", pg.port());
        let bad_url_var = format!("{url_var}_BAD");
        // SAFETY: variables named after this cluster's port, set before any worker starts.
        unsafe {
            std::env::set_var(&url_var, &url);
            std::env::set_var(
                &bad_url_var,
                format!("postgres://replica_writer:wrong-pw@127.0.0.1:{}/replica", pg.port()),
            );
        }
        Some(ReplicaTarget {
            pg,
            url,
            url_var,
            bad_url_var,
            schemas: AtomicU32::new(0),
        })
    }

    fn schema_name(n: u32) -> String {
        format!("conformance_{n:03}")
    }

    /// The newest schema holding `table`'s analyst table (each scenario uses its own).
    async fn schema_of(&self, table: Table) -> Option<String> {
        let mut c = connect(&self.url).await;
        sqlx::query_scalar(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname LIKE 'conformance\\_%' ORDER BY n.nspname DESC LIMIT 1",
        )
        .bind(format!("{}_v1", table.name()))
        .fetch_optional(&mut c)
        .await
        .unwrap()
    }
}

#[async_trait]
impl Target for ReplicaTarget {
    fn kind(&self) -> DestinationKind {
        DestinationKind::PostgresReplica
    }

    fn config(&self) -> serde_json::Value {
        let n = self.schemas.fetch_add(1, Ordering::SeqCst);
        json!({"url": {"env": self.url_var}, "schema": Self::schema_name(n), "connect_timeout_seconds": 5})
    }

    fn bad_auth_config(&self) -> Option<serde_json::Value> {
        Some(json!({"url": {"env": self.bad_url_var}, "schema": "conformance_bad_auth"}))
    }

    fn unreachable_config(&self) -> serde_json::Value {
        let var = format!("{}_CLOSED", self.url_var);
        // SAFETY: as above.
        unsafe { std::env::set_var(&var, format!("postgres://postgres@127.0.0.1:{}/replica", free_port())) };
        json!({"url": {"env": var}, "schema": "conformance_unreachable", "connect_timeout_seconds": 2})
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
        let Some(schema) = self.schema_of(table).await else {
            return Vec::new();
        };
        let mut c = connect(&self.url).await;
        sqlx::query_as(&format!(
            "SELECT id, updated_at FROM \"{schema}\".\"{}_v1\"",
            table.name()
        ))
        .fetch_all(&mut c)
        .await
        .unwrap()
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        let schema = self.schema_of(table).await?;
        let n = scalar_i64(
            &self.url,
            &format!("SELECT count(*) FROM \"{schema}\".\"{}_v1_raw\"", table.name()),
        )
        .await;
        Some(n as u64)
    }

    /// Pre-creates `table`'s analyst table, in the schema the next `config()` gives, with a
    /// constraint every row violates: the replica server itself rejects the load (23514) and
    /// its message reaches `last_error`. (A pre-created table with another column *type* is
    /// refused by tidemark's own column check before loading, with tidemark's message; that
    /// is tested in `a_pre_existing_table_of_other_types_is_refused_not_cast`.)
    async fn sabotage(&self, table: Table) -> Option<()> {
        let schema = Self::schema_name(self.schemas.load(Ordering::SeqCst));
        let published = tidemark::schema::Registry::embedded().get(table, 1).unwrap();
        let mut c = connect(&self.url).await;
        let mut statements = ddl::create_statements(&published, &schema, true);
        statements.push(format!(
            "ALTER TABLE \"{schema}\".\"{}_v1\" ADD CONSTRAINT no_rows_from_tidemark CHECK (id IS NULL)",
            table.name()
        ));
        // Through the Executor trait: `raw_sql(..).execute(..)` is not Send in an async-trait method.
        sqlx::Executor::execute(&mut c, sqlx::raw_sql(&statements.join(";\n")))
            .await
            .unwrap();
        Some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_conforms() {
    let Some(target) = ReplicaTarget::start().await else {
        return;
    };
    suite(&target).await;
    // What the suite cannot see from outside: the takeover and the replay were replays in the
    // replica's own ledger, and the sabotaged table received nothing.
    let events = target.schema_of(Table::Events).await.unwrap();
    let replays = scalar_i64(
        &target.url,
        &format!("SELECT sum(loads - 1)::int8 FROM \"{events}\"._tidemark_deliveries"),
    )
    .await;
    assert!(
        replays >= 2,
        "the takeover and the replay were recorded as replays: {replays}"
    );
    let audit = target.schema_of(Table::AuditLog).await.unwrap();
    assert_eq!(
        scalar_i64(&target.url, &format!("SELECT count(*) FROM \"{audit}\".audit_log_v1")).await,
        0
    );
    drop(target.pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_the_row_and_a_replayed_older_version_never_resurrects_it() {
    let Some(env) = Env::start(1_500, 1).await else {
        return;
    };
    let org = env.orgs[0];
    tidemark::capture::install(&env.source, &env.registry, &[Table::Events])
        .await
        .unwrap();
    let (url, config) = replica(&env, "replica", "tidemark").await;
    let dest = env
        .add_destination(
            org,
            DestinationKind::PostgresReplica,
            "pg",
            config,
            &[Table::Events],
            900,
            3,
        )
        .await;
    let first = env.run_until_idle(fast_options()).await;
    assert!(first.iter().all(|o| o.status == "delivered"), "{first:#?}");

    // X is deleted; Y is deleted and re-inserted by one transaction (a tie on updated_at).
    let DeleteScenario {
        x,
        x_updated_at,
        y,
        outcomes: second,
    } = env.delete_x_and_reinsert_y(org, dest.id).await;
    let x_delivery: Uuid = sqlx::query_scalar(
        "SELECT id FROM warehouse_deliveries WHERE destination_id = $1 AND watermark_start <= $2 AND watermark_end > $2",
    )
    .bind(dest.id)
    .bind(x_updated_at)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let source = source_rows(&env, Table::Events, org).await;
    assert!(!source.iter().any(|(i, _)| *i == x));
    assert!(source.iter().any(|(i, _)| *i == y));
    assert_eq!(
        replica_rows(&url, "tidemark", "events_v1").await,
        source,
        "X gone, Y kept"
    );
    assert_eq!(replica_rows(&url, "tidemark", "events_v1_latest").await, source);
    let receipts: Vec<serde_json::Value> =
        futures::future::join_all(second.iter().map(|o| receipt(&env, o.delivery_id))).await;
    let sum = |k: &str| receipts.iter().map(|r| r[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("delete_ids"), sum("deleted")), (1, 1), "{receipts:#?}");
    // The history keeps the delete; the deleted-ids ledger remembers it.
    assert_eq!(
        scalar_i64(
            &url,
            &format!("SELECT count(*) FROM tidemark.events_v1_raw WHERE id = '{x}' AND _op = 'D'")
        )
        .await,
        1
    );
    assert_eq!(
        scalar_i64(
            &url,
            &format!("SELECT count(*) FROM tidemark.events_v1_deleted WHERE id = '{x}'")
        )
        .await,
        1
    );

    // The window that carried X's last version, served again with that version (put back in
    // the source without triggers) and replayed: X stays deleted.
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
    replay(&env, x_delivery).await;
    let third = env.run_until_idle(fast_options()).await;
    assert_eq!(third.len(), 1, "{third:#?}");
    assert_eq!(third[0].status, "delivered");
    let r = receipt(&env, x_delivery).await;
    assert_eq!(r["skipped_as_deleted"], 1, "{r}");
    assert_eq!(
        (r["inserted"].as_i64(), r["updated"].as_i64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let replica_now = replica_rows(&url, "tidemark", "events_v1").await;
    assert!(
        !replica_now.iter().any(|(i, _)| *i == x),
        "the replay did not resurrect X"
    );
    assert_eq!(replica_now, source, "nothing else moved either");

    // A newer version of X (re-created by the application) does come back.
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
    sqlx::query("INSERT INTO events SELECT * FROM kept_events")
        .execute(&env.control)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let fourth = env.run_until_idle(fast_options()).await;
    assert!(fourth.iter().all(|o| o.status == "delivered"), "{fourth:#?}");
    let source = source_rows(&env, Table::Events, org).await;
    assert!(source.iter().any(|(i, _)| *i == x));
    assert_eq!(replica_rows(&url, "tidemark", "events_v1").await, source, "X is back");
    assert_eq!(replica_rows(&url, "tidemark", "events_v1_latest").await, source);
}
