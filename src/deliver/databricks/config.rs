//! Typed configuration of the `DATABRICKS` destination.

use serde::Deserialize;

use crate::deliver::object::ObjectStoreConfig;
use crate::error::{Error, Result};
use crate::secret::SecretRef;

/// `DATABRICKS` configuration, e.g. with a personal access token:
/// `{"host": "https://dbc-1234.cloud.databricks.com", "warehouse_id": "abcdef0123456789",
///   "catalog": "security", "schema": "tidemark", "volume": "staging",
///   "token": {"env": "DATABRICKS_TOKEN"}}`
/// or with OAuth machine-to-machine (a service principal):
/// `{..., "client_id": "6f1c...", "client_secret": {"file": "/var/run/secrets/dbx/secret"}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabricksConfig {
    /// Workspace URL, `https://<workspace host>` (no path).
    pub host: String,
    /// SQL warehouse that runs COPY INTO and MERGE.
    pub warehouse_id: String,
    /// Unity Catalog catalog holding the tables and the staging volume.
    pub catalog: String,
    /// Schema inside `catalog`.
    pub schema: String,
    /// Unity Catalog volume in `catalog.schema` where window files are staged. Exactly one of
    /// `volume` and `external_location`.
    #[serde(default)]
    pub volume: Option<String>,
    /// Stage on an S3 path inside a Unity Catalog external location instead of a volume:
    /// tidemark writes each window's Parquet file to `<url>/<staging_dir>/...` with these
    /// credentials (the `PARQUET_S3` configuration shape), and the warehouse reads it through the
    /// external location covering `url` (the loading principal needs `READ FILES` on it).
    #[serde(default)]
    pub external_location: Option<Box<ObjectStoreConfig>>,
    /// Personal access token (or any bearer token), by reference.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// OAuth M2M: the service principal's application (client) id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth M2M: the service principal's OAuth secret, by reference.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// Directory inside the volume for staged files (default `tidemark`).
    #[serde(default)]
    pub staging_dir: Option<String>,
    /// Create missing tables and the latest view before the first delivery (default true).
    #[serde(default)]
    pub create_tables: Option<bool>,
    /// Keep staged files after a successful load (default false: they are deleted).
    #[serde(default)]
    pub keep_staged_files: Option<bool>,
    /// `wait_timeout` of each statement submission in seconds: 0 or 5..=50 (default 30); longer
    /// statements are polled.
    #[serde(default)]
    pub wait_timeout_seconds: Option<u32>,
    /// Give up on (and cancel) a statement after this many seconds (default 3600).
    #[serde(default)]
    pub statement_timeout_seconds: Option<u64>,
    /// Per-request timeout in seconds; an upload may take this long (default 600).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
    /// Retries of one request on 429/5xx/network errors before the delivery fails (default 3).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Allow a plain `http://` host (local test servers only).
    #[serde(default)]
    pub allow_http: bool,
}

/// How the destination authenticates.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    Token(SecretRef),
    OAuthM2m {
        client_id: String,
        client_secret: SecretRef,
    },
}

/// A Unity Catalog name used in a path (`/Volumes/<catalog>/<schema>/<volume>`) and in SQL:
/// non-empty, at most 255 characters, no `/`, `.`, whitespace or control characters.
fn check_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 255
        || value
            .chars()
            .any(|c| c == '/' || c == '.' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::config(format!(
            "invalid DATABRICKS {field} '{value}': a Unity Catalog name without '/', '.', spaces or control characters"
        )));
    }
    Ok(())
}

impl DatabricksConfig {
    pub fn parse(config: &serde_json::Value) -> Result<DatabricksConfig> {
        let cfg: DatabricksConfig = serde_json::from_value(config.clone())
            .map_err(|e| Error::config(format!("invalid DATABRICKS configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let url = url::Url::parse(&self.host).map_err(|e| {
            Error::config(format!(
                "invalid DATABRICKS host '{}': {e}; expected https://<workspace host>",
                self.host
            ))
        })?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Error::config(format!(
                    "DATABRICKS host '{}' is plain http; set \"allow_http\": true to permit it",
                    self.host
                )));
            }
            other => {
                return Err(Error::config(format!(
                    "invalid DATABRICKS host '{}': scheme '{other}'; expected https://<workspace host>",
                    self.host
                )));
            }
        }
        if url.host_str().is_none() || !url.path().trim_matches('/').is_empty() || url.query().is_some() {
            return Err(Error::config(format!(
                "invalid DATABRICKS host '{}': expected https://<workspace host> without a path",
                self.host
            )));
        }
        if self.warehouse_id.is_empty() || !self.warehouse_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::config(format!(
                "invalid DATABRICKS warehouse_id '{}': expected the warehouse's id (letters, digits, '-')",
                self.warehouse_id
            )));
        }
        check_name("catalog", &self.catalog)?;
        check_name("schema", &self.schema)?;
        match (&self.volume, &self.external_location) {
            (Some(volume), None) => check_name("volume", volume)?,
            (None, Some(location)) => {
                let url = url::Url::parse(&location.url).ok();
                if url.as_ref().map(|u| u.scheme()) != Some("s3") || url.as_ref().and_then(|u| u.host_str()).is_none() {
                    return Err(Error::config(format!(
                        "invalid DATABRICKS external_location url '{}': expected s3://bucket/prefix inside a Unity Catalog external location",
                        location.url
                    )));
                }
            }
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "DATABRICKS stages in a \"volume\" or an \"external_location\", not both",
                ));
            }
            (None, None) => {
                return Err(Error::config(
                    "DATABRICKS needs a staging place: \"volume\" (a Unity Catalog volume in catalog.schema) or \"external_location\" (an s3:// path with credentials)",
                ));
            }
        }
        if let Some(dir) = &self.staging_dir
            && (dir.is_empty() || dir.split('/').any(|p| p.is_empty() || p == "." || p == ".."))
        {
            return Err(Error::config(format!(
                "invalid DATABRICKS staging_dir '{dir}': a relative path like 'tidemark' or 'exports/tidemark'"
            )));
        }
        if let Some(w) = self.wait_timeout_seconds
            && w != 0
            && !(5..=50).contains(&w)
        {
            return Err(Error::config(format!(
                "invalid DATABRICKS wait_timeout_seconds {w}: the Statement Execution API accepts 0 or 5 to 50"
            )));
        }
        self.auth()?;
        Ok(())
    }

    /// Exactly one of `token` or `client_id` + `client_secret`.
    pub fn auth(&self) -> Result<AuthConfig> {
        match (&self.token, &self.client_id, &self.client_secret) {
            (Some(t), None, None) => Ok(AuthConfig::Token(t.clone())),
            (None, Some(id), Some(secret)) if !id.is_empty() => Ok(AuthConfig::OAuthM2m {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }),
            (None, None, None) => Err(Error::config(
                "DATABRICKS needs credentials: \"token\" (a personal access token reference) or \"client_id\" + \"client_secret\" (OAuth M2M)",
            )),
            _ => Err(Error::config(
                "DATABRICKS takes either \"token\" or \"client_id\" + \"client_secret\", not a mix",
            )),
        }
    }

    pub fn staging_dir(&self) -> &str {
        self.staging_dir.as_deref().unwrap_or("tidemark")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"host": "https://dbc-1.cloud.databricks.com", "warehouse_id": "abc123", "catalog": "sec",
               "schema": "tidemark", "volume": "staging", "token": {"env": "DBX_TOKEN"}})
    }

    fn err(v: serde_json::Value) -> String {
        let e = DatabricksConfig::parse(&v).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        e.to_string()
    }

    #[test]
    fn parses_pat_and_oauth_configs() {
        let cfg = DatabricksConfig::parse(&base()).unwrap();
        assert!(matches!(cfg.auth().unwrap(), AuthConfig::Token(_)));
        assert_eq!(cfg.staging_dir(), "tidemark");
        let mut v = base();
        v.as_object_mut().unwrap().remove("token");
        v["client_id"] = json!("sp-1");
        v["client_secret"] = json!({"file": "/run/secrets/dbx"});
        let cfg = DatabricksConfig::parse(&v).unwrap();
        assert!(matches!(cfg.auth().unwrap(), AuthConfig::OAuthM2m { .. }));
    }

    #[test]
    fn refuses_bad_configs_precisely() {
        let mut v = base();
        v["bucket"] = json!("x");
        assert!(err(v).contains("unknown field `bucket`"));
        let mut v = base();
        v["token"] = json!("dapi123");
        let e = err(v);
        assert!(
            e.contains("plaintext secrets are not accepted") && !e.contains("dapi123"),
            "{e}"
        );
        let mut v = base();
        v["host"] = json!("http://127.0.0.1:1");
        assert!(err(v).contains("allow_http"));
        let mut v = base();
        v["host"] = json!("https://dbc-1.cloud.databricks.com/sql");
        assert!(err(v).contains("without a path"));
        let mut v = base();
        v["volume"] = json!("a/b");
        assert!(err(v).contains("invalid DATABRICKS volume 'a/b'"));
        let mut v = base();
        v["wait_timeout_seconds"] = json!(3);
        assert!(err(v).contains("0 or 5 to 50"));
        let mut v = base();
        v["client_id"] = json!("sp");
        assert!(err(v).contains("not a mix"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("token");
        assert!(err(v).contains("needs credentials"));
        let mut v = base();
        v["staging_dir"] = json!("../up");
        assert!(err(v).contains("staging_dir"));
        let mut v = base();
        v["external_location"] = json!({"url": "s3://b/p"});
        assert!(err(v).contains("not both"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("volume");
        assert!(err(v.clone()).contains("needs a staging place"));
        v["external_location"] = json!({"url": "file:///tmp/x"});
        assert!(err(v.clone()).contains("expected s3://bucket/prefix"));
        v["external_location"] = json!({"url": "s3://bucket/staging", "region": "eu-west-1"});
        let cfg = DatabricksConfig::parse(&v).unwrap();
        assert_eq!(cfg.external_location.unwrap().url, "s3://bucket/staging");
    }
}
