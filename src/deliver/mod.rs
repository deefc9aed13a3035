//! Destinations: where a window lands. One folder per destination kind, registered with one
//! line in [`REGISTRY`].
//!
//! Contract of [`Destination::deliver`]: at-least-once *attempts*, exactly-once *effect* per
//! delivery id. A retried delivery (same id) replaces what an earlier attempt wrote; it never
//! adds a second copy. Nothing becomes visible to readers before the destination calls
//! [`Fence::ensure`] and then commits in one step (object rename / multipart completion /
//! warehouse transaction). Adapters classify their errors into [`ErrorKind`]s; retries and
//! dead-lettering are decided by the worker, not here.

pub mod bigquery;
pub mod databricks;
pub mod ddl;
#[cfg(feature = "iceberg")]
pub mod iceberg;
pub mod object;
pub mod replica;
pub mod snowflake;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::control::destinations::DestinationKind;
use crate::control::outbox::{self, Lease};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::BatchStream;
use crate::schema::TableSchema;

/// Everything a destination knows about the window it is landing.
pub struct DeliveryContext<'a> {
    pub delivery_id: Uuid,
    pub organization_id: Uuid,
    pub schema: &'a TableSchema,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub fence: Fence,
}

/// Proof that the lease is still ours, checked right before a destination commits.
#[derive(Clone)]
pub struct Fence {
    inner: Option<(PgPool, Lease, f64)>,
}

impl Fence {
    pub fn new(control: PgPool, lease: Lease, ttl_seconds: f64) -> Fence {
        Fence {
            inner: Some((control, lease, ttl_seconds)),
        }
    }

    /// A fence that always holds: for tools that write outside the outbox (benchmarks, tests
    /// of encoders).
    pub fn unfenced() -> Fence {
        Fence { inner: None }
    }

    /// Extends the lease; `Fenced` if it was taken over.
    pub async fn ensure(&self) -> Result<()> {
        match &self.inner {
            Some((pool, lease, ttl)) => outbox::heartbeat(pool, lease, *ttl).await,
            None => Ok(()),
        }
    }
}

/// What a destination reports after landing a window; becomes the delivery's receipt.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub rows: u64,
    pub bytes: u64,
    pub receipt: serde_json::Value,
}

#[async_trait]
pub trait Destination: Send + Sync {
    fn kind(&self) -> DestinationKind;

    /// A cheap end-to-end check: reachable, credentials accepted, writable.
    async fn check(&self) -> Result<()>;

    /// Whether this destination lands changes ([`crate::extract::extract_changes`]: the `_op`
    /// column last, and delete rows `_op = 'D'` when the source captures deletes) rather than
    /// the published columns of current rows only. See docs/DELETES.md.
    fn exports_op(&self) -> bool {
        false
    }

    /// Lands one window's batches. See the module docs for the contract.
    async fn deliver(&self, ctx: &DeliveryContext<'_>, batches: BatchStream) -> Result<Delivered>;
}

type Builder = fn(&serde_json::Value) -> Result<Arc<dyn Destination>>;

/// The destination kinds this build can deliver to.
static REGISTRY: &[(DestinationKind, Builder)] = &[
    (DestinationKind::ParquetS3, object::build_parquet),
    (DestinationKind::JsonlS3, object::build_jsonl),
    (DestinationKind::Bigquery, bigquery::build),
    (DestinationKind::Databricks, databricks::build),
    (DestinationKind::PostgresReplica, replica::build),
    (DestinationKind::Snowflake, snowflake::build),
    #[cfg(feature = "iceberg")]
    (DestinationKind::IcebergS3, self::iceberg::build),
];

pub fn supported_kinds() -> Vec<DestinationKind> {
    REGISTRY.iter().map(|(k, _)| *k).collect()
}

/// Builds a destination from its kind and stored configuration. Configuration problems are
/// `ErrorKind::Config` and name the offending field.
pub fn build(kind: DestinationKind, config: &serde_json::Value) -> Result<Arc<dyn Destination>> {
    match REGISTRY.iter().find(|(k, _)| *k == kind) {
        Some((_, builder)) => builder(config),
        None => {
            let supported: Vec<_> = supported_kinds().iter().map(|k| k.label()).collect();
            Err(Error::new(
                ErrorKind::Config,
                format!(
                    "destination kind {kind} is not available in this build; supported: {}",
                    supported.join(", ")
                ),
            ))
        }
    }
}
