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

impl ObjectStoreConfig {
    /// The JSON shape this was parsed from (it holds only references, never secrets), for
    /// adapters that embed an object store configuration and build it as a `PARQUET_S3` one.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), self.url.clone().into());
        if let Some(v) = &self.endpoint {
            m.insert("endpoint".into(), v.clone().into());
        }
        if let Some(v) = &self.region {
            m.insert("region".into(), v.clone().into());
        }
        m.insert("allow_http".into(), self.allow_http.into());
        if let Some(v) = self.path_style {
            m.insert("path_style".into(), v.into());
        }
        for (k, v) in [
            ("access_key_id", &self.access_key_id),
            ("secret_access_key", &self.secret_access_key),
            ("session_token", &self.session_token),
        ] {
            if let Some(r) = v {
                m.insert(
                    k.into(),
                    serde_json::to_value(r).expect("a secret reference serialises"),
                );
            }
        }
        if let Some(v) = self.request_timeout_seconds {
            m.insert("request_timeout_seconds".into(), v.into());
        }
        if let Some(v) = self.max_retries {
            m.insert("max_retries".into(), v.into());
        }
        serde_json::Value::Object(m)
    }
}
