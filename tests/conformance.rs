//! The destination conformance suite (`tests/common/conformance.rs`) against the object
//! destinations, PARQUET_S3 and JSONL_S3, on moto_server. The warehouse kinds run the same
//! suite from their own test files, next to their emulators.
//!
//! Not covered here, and why: moto does not check credentials or signatures (refused
//! credentials), and an object store accepts any bytes (rejected data). The suite says so in
//! its output instead of passing those scenarios.

mod common;

use std::process::Command;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::conformance::{Target, suite};
use common::*;
use tidemark::control::destinations::DestinationKind;
use tidemark::schema::Table;
use uuid::Uuid;

struct ObjectTarget {
    moto: Moto,
    kind: DestinationKind,
    bucket: String,
}

impl ObjectTarget {
    fn format(&self) -> &'static str {
        match self.kind {
            DestinationKind::JsonlS3 => "jsonl",
            _ => "parquet",
        }
    }

    fn read(&self, table: Table) -> serde_json::Value {
        let out = Command::new(python().expect("python"))
            .arg(repo().join("tests/py/read_objects.py"))
            .args(["--endpoint", &self.moto.endpoint(), "--bucket", &self.bucket])
            .args([
                "--prefix",
                &format!("lake/{}/", table.name()),
                "--format",
                self.format(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[async_trait]
impl Target for ObjectTarget {
    fn kind(&self) -> DestinationKind {
        self.kind
    }

    fn config(&self) -> serde_json::Value {
        self.moto.config(&self.bucket, "lake")
    }

    fn bad_auth_config(&self) -> Option<serde_json::Value> {
        None
    }

    fn unreachable_config(&self) -> serde_json::Value {
        let mut c = self.config();
        c["endpoint"] = format!("http://127.0.0.1:{}", free_port()).into();
        c
    }

    async fn analyst_rows(&self, table: Table) -> Vec<(Uuid, DateTime<Utc>)> {
        self.read(table)["latest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let id = r[0].as_str().unwrap().parse().unwrap();
                let at = DateTime::parse_from_rfc3339(r[1].as_str().unwrap()).unwrap();
                (id, at.with_timezone(&Utc))
            })
            .collect()
    }

    async fn raw_count(&self, table: Table) -> Option<u64> {
        self.read(table)["total"].as_u64()
    }

    async fn sabotage(&self, _table: Table) -> Option<()> {
        None
    }
}

async fn object_target(kind: DestinationKind) -> Option<ObjectTarget> {
    python()?;
    let moto = Moto::start()?;
    let bucket = format!("conformance-{}", kind.label().to_ascii_lowercase().replace('_', "-"));
    moto.create_bucket(&bucket);
    Some(ObjectTarget { moto, kind, bucket })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_s3_conforms() {
    let Some(target) = object_target(DestinationKind::ParquetS3).await else {
        return;
    };
    suite(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_s3_conforms() {
    let Some(target) = object_target(DestinationKind::JsonlS3).await else {
        return;
    };
    suite(&target).await;
}
