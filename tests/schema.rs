//! Schema evolution: `tidemark schema check|release` on the repository's schemas and on broken
//! copies of them, and the dual-write window on real parts: a destination receiving findings v1
//! and v2 for every window (each verified by the independent reader, and v2's derived columns
//! checked against v1's values), retiring v1, adding v2 later, and migration 0003 on a control
//! plane that already holds deliveries.

mod common;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int16Type};
use chrono::{DateTime, Utc};
use common::*;
use tidemark::control::destinations::{self, DestinationKind};
use tidemark::control::{self, APP_CONTROL, APP_EXTRACT};
use tidemark::ephemeral::EphemeralPostgres;
use tidemark::reference::{self, GenerateSpec};
use tidemark::schema::{Registry, Table};
use uuid::Uuid;

/// The binary under test. `TIDEMARK_TEST_BIN` overrides it: a copy taken right after the build,
/// for machines where several checkouts share one target directory.
fn exe() -> String {
    std::env::var("TIDEMARK_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tidemark").to_string())
}

/// `env.cli()` with [`exe`].
fn cli(env: &Env) -> Command {
    let base = env.cli();
    let mut c = Command::new(exe());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn bin() -> Command {
    let mut c = Command::new(exe());
    c.env_remove("TIDEMARK_DATABASE_URL")
        .env_remove("TIDEMARK_SCHEMAS_DIR")
        .env("TIDEMARK_LOG", "warn");
    c
}

fn copy_schemas() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("schemas");
    std::fs::copy(src.join("RELEASED.json"), dir.path().join("RELEASED.json")).unwrap();
    for t in std::fs::read_dir(&src).unwrap().flatten().filter(|e| e.path().is_dir()) {
        let d = dir.path().join(t.file_name());
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(t.path()).unwrap().flatten() {
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
    }
    dir
}

fn check(dir: &Path) -> (Option<i32>, serde_json::Value, String) {
    let out = bin()
        .args(["schema", "check", "--json", "--schemas-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let text = bin()
        .args(["schema", "check", "--schemas-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&text.stdout).to_string(),
    )
}

fn edit(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn kinds(report: &serde_json::Value) -> Vec<(String, String)> {
    report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["column"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// What CI runs: the repository's schema files against its release lock.
#[test]
fn the_repository_schemas_pass_the_release_check() {
    let out = bin()
        .args(["schema", "check", "--json", "--schemas-dir"])
        .arg(repo().join("schemas"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    assert!(report["files_checked"].as_u64().unwrap() >= 11, "{report:#}");
    // findings v2 is part of the release, and the binary embeds it.
    let lock = std::fs::read_to_string(repo().join("schemas/RELEASED.json")).unwrap();
    assert!(lock.contains("\"findings/v2.json\""));
    let out = bin()
        .args(["schema", "show", "findings", "--version", "2", "--json"])
        .output()
        .unwrap();
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v2["version"], 2);
    assert!(
        v2["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "risk_score")
    );
}

#[test]
fn breaking_edits_are_refused_per_violation_and_additive_ones_released() {
    let dir = copy_schemas();
    let v1 = dir.path().join("findings/v1.json");
    let pristine = std::fs::read_to_string(&v1).unwrap();

    // Retype a column and drop another: two violations, exit 3, each naming file, column, fix.
    edit(&v1, |s| {
        let cols = s["columns"].as_array_mut().unwrap();
        cols.iter_mut().find(|c| c["name"] == "severity").unwrap()["type"] = "text".into();
        cols.retain(|c| c["name"] != "cvss");
    });
    let (code, report, text) = check(dir.path());
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(
        kinds(&report),
        vec![
            ("column_removed".into(), "cvss".into()),
            ("column_retyped".into(), "severity".into())
        ]
    );
    let retyped = &report["violations"][1]["message"].as_str().unwrap();
    assert!(
        retyped.contains("findings/v1.json: column severity: type changed from int2 to text"),
        "{retyped}"
    );
    assert!(
        retyped.contains("make it ") && retyped.contains("findings/v2.json"),
        "{retyped}"
    );
    assert!(
        text.contains("violation [column_removed]") && text.contains("refused:"),
        "{text}"
    );

    // Tightened nullability, a new required column, a changed primary key.
    std::fs::write(&v1, &pristine).unwrap();
    edit(&v1, |s| {
        let cols = s["columns"].as_array_mut().unwrap();
        cols.iter_mut().find(|c| c["name"] == "resolved_at").unwrap()["nullable"] = false.into();
        cols.push(serde_json::json!({"name": "owner", "type": "text", "nullable": false, "description": "x"}));
    });
    let (code, report, _) = check(dir.path());
    assert_eq!(code, Some(3));
    assert_eq!(
        kinds(&report),
        vec![
            ("new_column_not_nullable".into(), "owner".into()),
            ("nullability_tightened".into(), "resolved_at".into())
        ]
    );

    // A released major removed; a retype in the released v2 (its expression too).
    std::fs::write(&v1, &pristine).unwrap();
    let v2 = dir.path().join("findings/v2.json");
    let v2_text = std::fs::read_to_string(&v2).unwrap();
    edit(&v2, |s| {
        let c = s["columns"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == "risk_score")
            .unwrap();
        c["type"] = "float8".into();
    });
    std::fs::remove_file(dir.path().join("events/v1.json")).unwrap();
    let (code, report, _) = check(dir.path());
    assert_eq!(code, Some(3));
    assert_eq!(
        kinds(&report),
        vec![
            ("released_file_removed".into(), "".into()),
            ("column_retyped".into(), "risk_score".into())
        ]
    );
    assert!(
        report["violations"][1]["message"]
            .as_str()
            .unwrap()
            .contains("findings/v3.json")
    );
    std::fs::write(&v2, &v2_text).unwrap();
    std::fs::copy(repo().join("schemas/events/v1.json"), dir.path().join("events/v1.json")).unwrap();

    // Additive: a nullable column at the end passes, is listed as unreleased, and `schema
    // release` records it; removing it afterwards is refused.
    edit(&v1, |s| {
        s["columns"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "triage_note", "type": "text", "nullable": true, "description": "x"}));
    });
    let (code, report, _) = check(dir.path());
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["unreleased"][0]["added_columns"][0], "triage_note");
    let out = bin()
        .args(["schema", "release", "--schemas-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("released: wrote"));
    std::fs::write(&v1, &pristine).unwrap();
    let (code, report, _) = check(dir.path());
    assert_eq!(code, Some(3));
    assert_eq!(kinds(&report), vec![("column_removed".into(), "triage_note".into())]);
    // ... and `release` refuses too, leaving the lock alone.
    let lock_before = std::fs::read_to_string(dir.path().join("RELEASED.json")).unwrap();
    let out = bin()
        .args(["schema", "release", "--schemas-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("RELEASED.json")).unwrap(),
        lock_before
    );

    // --against a directory of schema files (e.g. the last tag's) instead of the lock.
    let out = bin()
        .args(["schema", "check", "--schemas-dir"])
        .arg(dir.path())
        .arg("--against")
        .arg(repo().join("schemas"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

// ---------------------------------------------------------------------------------------------
// Dual-write on real parts.
// ---------------------------------------------------------------------------------------------

/// Deliveries of a destination's table: (schema version, start, end, object key).
async fn deliveries(env: &Env, dest: Uuid) -> Vec<(i32, DateTime<Utc>, DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT schema_version, watermark_start, watermark_end, coalesce(receipt->>'object_key', '') FROM warehouse_deliveries \
         WHERE destination_id = $1 AND status = 'delivered' ORDER BY schema_version, watermark_start",
    )
    .bind(dest)
    .fetch_all(&env.control)
    .await
    .unwrap()
}

fn windows(d: &[(i32, DateTime<Utc>, DateTime<Utc>, String)], version: i32) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    d.iter().filter(|x| x.0 == version).map(|x| (x.1, x.2)).collect()
}

/// Watermark rows of a destination's findings: version → (delivered_through, last_updated_at, last_id).
async fn watermarks(
    env: &Env,
    dest: Uuid,
) -> BTreeMap<i32, (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<Uuid>)> {
    let rows: Vec<(i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<Uuid>)> = sqlx::query_as(
        "SELECT schema_version, delivered_through, last_updated_at, last_id FROM warehouse_watermarks \
         WHERE destination_id = $1 AND \"table\" = 'FINDINGS'",
    )
    .bind(dest)
    .fetch_all(&env.control)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.0, (r.1, r.2, r.3))).collect()
}

/// `tidemark query --dir <dir> --format json <sql>`: the rows as JSON objects.
fn query(env: &Env, dir: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = cli(env)
        .args(["query", "--format", "json", "--dir"])
        .arg(dir)
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn set_versions(env: &Env, dest: &str, args: &[&str]) -> String {
    let out = cli(env)
        .args(["destination", "set-schema-versions", dest])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The findings rows in Parquet files: id → the given column values, read with arrow.
fn read_parquet(files: &[PathBuf]) -> Vec<arrow_array::RecordBatch> {
    let mut out = Vec::new();
    for f in files {
        let bytes = bytes::Bytes::from(std::fs::read(f).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// Checks v2's derived columns against v1's values of the same rows, with the rule written out
/// here independently of the schema file's SQL: severity 0..4 → label, and
/// risk = min(100, 6·cvss (or 15·severity) + 7.5·severity + 10·escalated), in hundredths.
fn v2_agrees_with_v1(v1_files: &[PathBuf], v2_files: &[PathBuf]) -> usize {
    let mut v1: BTreeMap<String, (i16, Option<i128>, bool)> = BTreeMap::new();
    for b in read_parquet(v1_files) {
        let id = b.column_by_name("id").unwrap().as_string::<i32>();
        let sev = b.column_by_name("severity").unwrap().as_primitive::<Int16Type>();
        let cvss = b.column_by_name("cvss").unwrap().as_primitive::<Decimal128Type>();
        let esc = b.column_by_name("escalated").unwrap().as_boolean();
        for i in 0..b.num_rows() {
            let c = (!arrow_array::Array::is_null(cvss, i)).then(|| cvss.value(i));
            v1.insert(id.value(i).to_string(), (sev.value(i), c, esc.value(i)));
        }
    }
    let labels = ["informational", "low", "medium", "high", "critical"];
    let mut seen = 0;
    for b in read_parquet(v2_files) {
        let id = b.column_by_name("id").unwrap().as_string::<i32>();
        let sev = b.column_by_name("severity").unwrap().as_string::<i32>();
        let risk = b.column_by_name("risk_score").unwrap().as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            let (s, cvss_tenths, escalated) = v1[id.value(i)];
            let expected_label = labels.get(s as usize).copied().unwrap_or("unknown");
            assert_eq!(sev.value(i), expected_label, "severity label of {}", id.value(i));
            let s = i128::from(s.clamp(0, 4));
            let base = cvss_tenths.map(|c| c * 60).unwrap_or(s * 1500);
            let expected = (base + s * 750 + if escalated { 1000 } else { 0 }).clamp(0, 10_000);
            assert_eq!(risk.value(i), expected, "risk_score (hundredths) of {}", id.value(i));
            seen += 1;
        }
    }
    assert_eq!(seen, v1.len(), "v1 and v2 hold the same rows");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_delivers_v1_and_v2_for_every_window_and_retiring_v1_stops_it() {
    let Some(env) = Env::start(1_500, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[0];
    // 2-second windows, so that new rows close a window within seconds for the retirement part;
    // history from the last 4 hours only, to keep the number of windows small.
    let (_out, dir, dest) = env.local_parquet(org, &[Table::Findings, Table::Events], 2, 3).await;
    sqlx::query("UPDATE warehouse_destinations SET start_from = $2 WHERE id = $1")
        .bind(dest.id)
        .bind(data_end() - chrono::Duration::hours(4))
        .execute(&env.control)
        .await
        .unwrap();
    let said = set_versions(&env, "p", &["--versions", "1,2"]);
    assert!(said.contains("p findings: v1 -> v1+v2"), "{said}");
    assert!(said.contains("p events: unchanged (v1), no v1+v2 published"), "{said}");

    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    let d = deliveries(&env, dest.id).await;
    let findings: Vec<_> = d.iter().filter(|x| x.3.starts_with("findings/")).cloned().collect();
    let (w1, w2) = (windows(&findings, 1), windows(&findings, 2));
    assert!(!w1.is_empty());
    assert_eq!(w1, w2, "every window is delivered in both versions");
    for (v, _, _, key) in &findings {
        assert!(key.starts_with(&format!("findings/v{v}/org_id={org}/")), "{key}");
    }
    assert!(
        d.iter().filter(|x| x.3.starts_with("events/")).all(|x| x.0 == 1),
        "events has no v2: v1 only"
    );

    // Each version verified by the independent reader against its own published schema.
    let (from, to) = (w1[0].0, w1.last().unwrap().1);
    let v1_files = files_under(&dir.join("findings/v1"), "parquet");
    let v2_files = files_under(&dir.join("findings/v2"), "parquet");
    assert_eq!((v1_files.len(), v2_files.len()), (w1.len(), w2.len()));
    let r1 = verify_version(&env, Table::Findings, 1, org, from, to, "parquet", &v1_files);
    let r2 = verify_version(&env, Table::Findings, 2, org, from, to, "parquet", &v2_files);
    assert_eq!(r1["source_rows"], r2["source_rows"]);
    assert_eq!(r2["files"][0]["key_value_metadata"]["tidemark.schema_version"], "2");
    assert!(v2_agrees_with_v1(&v1_files, &v2_files) > 0);
    // The local query path sees both majors; the plain name is the newest one exported.
    let counts = query(
        &env,
        &dir,
        "SELECT (SELECT count(*) FROM findings_v1) AS v1, (SELECT count(*) FROM findings_v2) AS v2, \
         (SELECT count(*) FROM findings WHERE risk_score IS NOT NULL) AS plain",
    );
    assert_eq!(counts[0]["v1"], r1["source_rows"], "{counts:?}");
    assert_eq!(counts[0]["v2"], r1["source_rows"]);
    assert_eq!(counts[0]["plain"], r1["source_rows"]);

    // Both watermarks reached the newest source row, independently.
    let (src_at, src_id): (DateTime<Utc>, Uuid) = sqlx::query_as(
        "SELECT updated_at, id FROM findings WHERE organization_id = $1 ORDER BY updated_at DESC, id DESC LIMIT 1",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap();
    let wm = watermarks(&env, dest.id).await;
    assert_eq!(wm.len(), 2);
    for (v, (_, at, id)) in &wm {
        assert_eq!((*at, *id), (Some(src_at), Some(src_id)), "v{v} watermark");
    }

    // Retire v1.
    let said = set_versions(&env, "p", &["--versions", "2", "--tables", "findings"]);
    assert!(said.contains("v1 retired: no new windows"), "{said}");
    let status = cli(&env).args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let rows: Vec<(String, i64, bool)> = st["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["schema_version"].as_i64().unwrap(),
                t["retired"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("events".into(), 1, false),
            ("findings".into(), 1, true),
            ("findings".into(), 2, false)
        ]
    );

    // New findings rows (the trigger stamps now()): once their window closes, only v2 gets them.
    let finding: Uuid = sqlx::query_scalar(
        "UPDATE findings SET status = 'resolved', resolved_at = now() \
         WHERE id = (SELECT id FROM findings WHERE organization_id = $1 ORDER BY id LIMIT 1) RETURNING id",
    )
    .bind(org)
    .fetch_one(&env.control)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(4_100)).await;
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(!outcomes.is_empty() && outcomes.iter().all(|o| o.status == "delivered"));
    assert!(
        outcomes
            .iter()
            .filter(|o| o.table == "findings")
            .all(|o| o.schema_version == 2),
        "{outcomes:#?}"
    );
    let after = deliveries(&env, dest.id).await;
    let f_after: Vec<_> = after.iter().filter(|x| x.3.starts_with("findings/")).cloned().collect();
    assert_eq!(windows(&f_after, 1), w1, "no v1 window after retirement");
    assert_eq!(windows(&f_after, 2).len(), w2.len() + 1, "one new v2 window");
    let wm_after = watermarks(&env, dest.id).await;
    assert_eq!(wm_after[&1], wm[&1], "v1 watermark left as it was");
    let (_, at, id) = wm_after[&2];
    assert_eq!(id, Some(finding), "v2 watermark advanced to the updated row");
    assert!(at > wm[&2].1);
    // The new v2 window holds the row with its new status, verified.
    let (s, e, key) = f_after
        .iter()
        .filter(|x| x.0 == 2)
        .map(|x| (x.1, x.2, x.3.clone()))
        .next_back()
        .unwrap();
    let r = verify_version(&env, Table::Findings, 2, org, s, e, "parquet", &[dir.join(key)]);
    assert_eq!(r["source_rows"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_added_later_starts_from_the_destination_start_or_from_a_given_instant() {
    let Some(env) = Env::start(2_000, 2).await else {
        return;
    };
    let Some(_) = python() else { return };
    let org = env.orgs[1];
    let (_out, dir, dest) = env.local_parquet(org, &[Table::Findings], 900, 3).await;
    env.run_until_idle(fast_options()).await;
    let v1 = windows(&deliveries(&env, dest.id).await, 1);
    assert!(v1.len() > 10);
    // A v1-only export: the plain name `findings` answers from v1, although v2 is published.
    let rows = query(&env, &dir, "SELECT count(*) AS n, min(severity) AS s FROM findings");
    assert!(
        rows[0]["n"].as_i64().unwrap() > 0 && rows[0]["s"].is_number(),
        "{rows:?}"
    );

    // Added later with the default `--from start`: v2 is planned from the destination's start
    // (its whole history), not from v1's watermark.
    let said = set_versions(&env, "p", &["--versions", "1,2"]);
    assert!(said.contains("from the destination's start"), "{said}");
    let outcomes = env.run_until_idle(fast_options()).await;
    assert_eq!(outcomes.len(), v1.len(), "only v2 windows are new");
    assert!(
        outcomes
            .iter()
            .all(|o| o.schema_version == 2 && o.status == "delivered")
    );
    let d = deliveries(&env, dest.id).await;
    assert_eq!(windows(&d, 2), v1);
    let v2_files = files_under(&dir.join("findings/v2"), "parquet");
    verify_version(
        &env,
        Table::Findings,
        2,
        org,
        v1[0].0,
        v1.last().unwrap().1,
        "parquet",
        &v2_files,
    );

    // A second destination adds v2 `--from` an instant in the middle of the history: nothing
    // before it is planned for v2 ...
    let out2 = tempfile::tempdir().unwrap();
    let q = env
        .add_destination(
            org,
            DestinationKind::ParquetS3,
            "q",
            serde_json::json!({"url": format!("file://{}", out2.path().display())}),
            &[Table::Findings],
            900,
            3,
        )
        .await;
    env.run_until_idle(fast_options()).await;
    let middle = v1[v1.len() / 2].0 + chrono::Duration::seconds(60);
    set_versions(&env, "q", &["--versions", "1,2", "--from", &middle.to_rfc3339()]);
    env.run_until_idle(fast_options()).await;
    let q2 = windows(&deliveries(&env, q.id).await, 2);
    let expected: Vec<_> = v1.iter().copied().filter(|w| w.0 >= v1[v1.len() / 2].0).collect();
    assert_eq!(q2, expected, "v2 starts at the window holding --from");
    let wm = watermarks(&env, q.id).await;
    assert_eq!(wm[&2].0, wm[&1].0, "both versions delivered through the same horizon");

    // ... and a backfill of the earlier range plans v2 only (v1 is already there).
    let out = cli(&env)
        .args([
            "backfill",
            "--destination",
            "q",
            "--table",
            "findings",
            "--json",
            "--from",
        ])
        .arg(v1[0].0.to_rfc3339())
        .arg("--to")
        .arg(v1[v1.len() / 2].0.to_rfc3339())
        .args(["--chunk", "15m", "--retry-base", "0s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = deliveries(&env, q.id).await;
    assert_eq!(windows(&d, 2), v1, "v2 history completed by the backfill");
    assert_eq!(windows(&d, 1), v1, "v1 untouched");
}

// ---------------------------------------------------------------------------------------------
// Migration 0003 on existing data.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0003_keeps_existing_deliveries_and_watermarks_as_version_1() {
    if tidemark::ephemeral::find_bindir().is_err() {
        skip("no PostgreSQL server binaries");
        return;
    }
    let Some(_) = python() else { return };
    let pg = EphemeralPostgres::start().expect("start postgres");
    let url = pg.create_database("app").await.expect("create db");
    let pool = control::connect(&url, APP_CONTROL, 8).await.unwrap();
    let source = control::connect(&url, APP_EXTRACT, 8).await.unwrap();
    reference::install(&pool).await.unwrap();
    reference::generate(
        &pool,
        &GenerateSpec {
            seed: 7,
            organizations: 3,
            rows: 1_000,
            days: 1,
            end: data_end(),
            only_events: false,
        },
    )
    .await
    .unwrap();
    // The control plane of the previous release: migrations 0001 and 0002 only.
    let mut old = sqlx::migrate::Migrator::new(repo().join("migrations")).await.unwrap();
    assert!(old.migrations.iter().any(|m| m.version == 3));
    old.migrations = Cow::Owned(old.migrations.iter().filter(|m| m.version < 3).cloned().collect());
    old.run(&pool).await.unwrap();
    let org = reference::organizations(&pool).await.unwrap()[0].0;
    let out = tempfile::tempdir().unwrap();
    let dest_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO warehouse_destinations (id, organization_id, kind, name, config, enabled_tables, grace_seconds, max_attempts) \
         VALUES ($1, $2, 'PARQUET_S3', 'old', $3, '{FINDINGS}', 0, 3)",
    )
    .bind(dest_id)
    .bind(org)
    .bind(serde_json::json!({"url": format!("file://{}", out.path().display())}))
    .execute(&pool)
    .await
    .unwrap();
    // What the previous release left: its first non-empty window delivered, the second pending,
    // the planned horizon after the second.
    let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT DISTINCT date_bin('15 minutes', updated_at, 'epoch') s FROM findings WHERE organization_id = $1 ORDER BY s LIMIT 2",
    )
    .bind(org)
    .fetch_all(&pool)
    .await
    .unwrap();
    let w = chrono::Duration::minutes(15);
    let (done, pending) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, start, status) in [(done, starts[0], "delivered"), (pending, starts[1], "pending")] {
        sqlx::query(
            "INSERT INTO warehouse_deliveries (id, destination_id, organization_id, \"table\", schema_version, watermark_start, \
               watermark_end, status, max_attempts, receipt, delivered_at) \
             VALUES ($1, $2, $3, 'FINDINGS', 1, $4, $5, $6::warehouse_delivery_status, 3, \
               CASE WHEN $6 = 'delivered' THEN '{\"object_key\": \"old\"}'::jsonb END, CASE WHEN $6 = 'delivered' THEN now() END)",
        )
        .bind(id)
        .bind(dest_id)
        .bind(org)
        .bind(start)
        .bind(start + w)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO warehouse_watermarks (destination_id, \"table\", planned_through, delivered_through) VALUES ($1, 'FINDINGS', $2, $3)",
    )
    .bind(dest_id)
    .bind(starts[1] + w)
    .bind(starts[1])
    .execute(&pool)
    .await
    .unwrap();

    let applied = control::migrate(&pool).await.unwrap();
    assert_eq!(applied, vec!["0003 schema versions".to_string()]);
    let rows: Vec<(Uuid, i32, String)> =
        sqlx::query_as("SELECT id, schema_version, status::text FROM warehouse_deliveries ORDER BY watermark_start")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(done, 1, "delivered".into()), (pending, 1, "pending".into())]
    );
    let d = destinations::get(&pool, dest_id).await.unwrap();
    assert_eq!(d.versions(Table::Findings), vec![1]);
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN ('warehouse_deliveries'::regclass, 'warehouse_watermarks'::regclass) \
           AND contype IN ('u', 'p') ORDER BY conname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![
            "PRIMARY KEY (id)",
            "UNIQUE (destination_id, \"table\", watermark_start, watermark_end, schema_version)",
            "PRIMARY KEY (destination_id, \"table\", schema_version)",
        ]
    );

    // The new code carries on: the pending window is delivered, the delivered one is not
    // planned again, the rest is planned after the old horizon, every window once.
    let env = Env {
        pg,
        url,
        control: pool,
        source,
        registry: Arc::new(Registry::embedded()),
        orgs: vec![org],
    };
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"), "{outcomes:#?}");
    assert!(outcomes.iter().any(|o| o.delivery_id == pending));
    assert!(outcomes.iter().all(|o| o.delivery_id != done));
    let all = deliveries(&env, dest_id).await;
    let starts_after: BTreeSet<_> = all.iter().map(|x| x.1).collect();
    assert_eq!(starts_after.len(), all.len(), "one delivery per window");
    assert!(all.iter().all(|x| x.0 == 1));
    let files = files_under(out.path(), "parquet");
    // Everything from the second window on is in the new files (the first was "delivered" by
    // the old release into a key that does not exist here).
    verify(&env, Table::Findings, org, starts[1], data_end(), "parquet", &files);
}

// ---------------------------------------------------------------------------------------------
// Cold storage during and after a dual-write window; source drift of a derived column.
// ---------------------------------------------------------------------------------------------

fn recall(env: &Env, org: Uuid, restore: bool) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut c = cli(env);
    c.args(["archive", "recall", "--org", &org.to_string(), "--table", "findings"])
        .args(["--from", "2000-01-01", "--to", "2100-01-01"]);
    if restore {
        c.arg("--restore");
    }
    let out = c.output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_prefer_v1_proofs_and_v2_only_rows_are_recalled_but_not_restored() {
    let Some(env) = Env::start(1_500, 2).await else {
        return;
    };
    let (a, b) = (env.orgs[0], env.orgs[1]);
    let (_oa, _, da) = env.local_parquet(a, &[Table::Findings], 3600, 3).await;
    let out_b = tempfile::tempdir().unwrap();
    let db = env
        .add_destination(
            b,
            DestinationKind::ParquetS3,
            "p",
            serde_json::json!({"url": format!("file://{}", out_b.path().display())}),
            &[Table::Findings],
            3600,
            3,
        )
        .await;
    // a in a dual-write window, b on v2 only from the start.
    set_versions(&env, &da.id.to_string(), &["--versions", "1,2"]);
    set_versions(&env, &db.id.to_string(), &["--versions", "2"]);
    let outcomes = env.run_until_idle(fast_options()).await;
    assert!(outcomes.iter().all(|o| o.status == "delivered"));
    let before_b: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(f) FROM findings f WHERE organization_id = $1 ORDER BY id")
            .bind(b)
            .fetch_all(&env.control)
            .await
            .unwrap();
    sqlx::query("UPDATE organizations SET data_retention_days = 1 WHERE id = ANY($1)")
        .bind(vec![a, b])
        .execute(&env.control)
        .await
        .unwrap();
    let out = cli(&env)
        .args(["tombstone", "--execute", "--json", "--table", "findings"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let versions: Vec<(Uuid, i32, i64)> = sqlx::query_as(
        "SELECT organization_id, schema_version, count(*) FROM cold_storage_archive GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&env.control)
    .await
    .unwrap();
    let mut expected = vec![(a, 1, 0i64), (b, 2, before_b.len() as i64)];
    expected[0].2 = versions.iter().find(|v| v.0 == a).map(|v| v.2).unwrap_or(0);
    assert!(expected[0].2 > 0);
    expected.sort();
    assert_eq!(versions, expected, "a's rows proven by v1 deliveries, b's by v2");

    // a: recalled from the v1 objects and restored.
    let (code, recs) = recall(&env, a, true);
    assert_eq!(code, Some(0), "{recs:?}");
    assert!(recs.iter().all(|r| r["verified"] == true && r["restored"] == true));
    // b: every row recalled from the v2 objects and verified against its tombstone (the hash of
    // the v2 encoding, derived columns included), but not restored: v2 cannot be written back.
    let (code, recs) = recall(&env, b, false);
    assert_eq!(code, Some(0), "{recs:?}");
    assert_eq!(recs.len(), before_b.len());
    assert!(recs.iter().all(|r| r["verified"] == true));
    assert!(recs[0]["row"]["risk_score"].is_string() && recs[0]["row"]["severity"].is_string());
    let (code, recs) = recall(&env, b, true);
    assert_eq!(code, Some(5));
    let err = recs[0]["error"].as_str().unwrap();
    assert!(
        err.contains("findings v2") && err.contains("severity, risk_score"),
        "{err}"
    );
    assert_eq!(recs[0]["restored"], false);
    assert_eq!(
        env.count(&format!("SELECT count(*) FROM findings WHERE organization_id = '{b}'"))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_column_whose_source_column_is_gone_is_schema_drift() {
    let Some(env) = Env::start(10, 1).await else {
        return;
    };
    let v2 = env.registry.get(Table::Findings, 2).unwrap();
    tidemark::source::check_table(&env.source, &v2).await.unwrap();
    sqlx::query("ALTER TABLE findings RENAME COLUMN cvss TO cvss_base")
        .execute(&env.control)
        .await
        .unwrap();
    let err = tidemark::source::check_table(&env.source, &v2).await.unwrap_err();
    assert_eq!(err.kind(), tidemark::ErrorKind::Schema);
    let msg = err.to_string();
    assert!(
        msg.contains("column cvss is missing")
            && msg.contains("derived column risk_score cannot be computed from the source")
            && msg.contains("\"cvss\" does not exist"),
        "{msg}"
    );
}
