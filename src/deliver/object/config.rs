//! Typed configuration of the object-store destinations.

use serde::Deserialize;

use crate::secret::SecretRef;

/// `PARQUET_S3` / `JSONL_S3` configuration, e.g.
/// `{"url": "s3://bucket/exports", "region": "eu-west-1",
///   "access_key_id": {"env": "AWS_ACCESS_KEY_ID"}, "secret_access_key": {"file": "/var/run/secrets/s3/secret"}}`
/// or `{"url": "file:///var/lib/tidemark/export"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket[/prefix]` or `file:///absolute/dir`.
    pub url: String,
    /// S3-compatible endpoint (MinIO, moto, ...); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local test servers only).
    #[serde(default)]
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), needed by most S3-compatible servers.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<SecretRef>,
    #[serde(default)]
    pub secret_access_key: Option<SecretRef>,
    #[serde(default)]
    pub session_token: Option<SecretRef>,
    /// Per-request timeout in seconds (default 60).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
    /// Retries of one request inside the client before the delivery fails (default 3).
    #[serde(default)]
    pub max_retries: Option<usize>,
}
