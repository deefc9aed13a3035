//! Typed configuration of the `BIGQUERY` destination.

use serde::Deserialize;

use super::ddl::JsonbAs;
use crate::error::{Error, Result};
use crate::secret::SecretRef;

pub const DEFAULT_BASE_URL: &str = "https://bigquery.googleapis.com";

/// How a window reaches the raw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Parquet file → load job (resumable media upload) into a per-delivery stage table, then
    /// INSERT into raw and MERGE into the analyst table. Exactly once.
    #[default]
    Load,
    /// `tabledata.insertAll` with an `insertId` per row into the raw table, then MERGE. Lower
    /// latency; a retried delivery may leave duplicate versions in the raw table (insertId
    /// de-duplication is best effort), never in the analyst table.
    Stream,
}

/// `BIGQUERY` configuration, e.g.
/// `{"project": "acme-analytics", "dataset": "tidemark", "location": "EU",
///   "service_account_key": {"file": "/var/run/secrets/bq/key.json"}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQueryConfig {
    /// Project that runs the jobs and holds the dataset.
    pub project: String,
    pub dataset: String,
    /// Dataset location for a dataset tidemark creates, and the location of its jobs.
    #[serde(default)]
    pub location: Option<String>,
    /// API root (default `https://bigquery.googleapis.com`); a local emulator in tests.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Allow a plain `http://` base URL (local test servers only).
    #[serde(default)]
    pub allow_http: bool,
    /// A service account's JSON key: tidemark signs an RS256 JWT with it and exchanges it at
    /// the key's `token_uri` for an access token (cached until shortly before it expires).
    #[serde(default)]
    pub service_account_key: Option<SecretRef>,
    /// Or a ready OAuth2 access token (e.g. written by a sidecar), read on every request.
    #[serde(default)]
    pub access_token: Option<SecretRef>,
    #[serde(default)]
    pub mode: Mode,
    /// Create the dataset and missing tables (default true). When false, a missing dataset or
    /// table is a configuration error.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// `json` (default) or `string`.
    #[serde(default)]
    pub jsonb_as: JsonbAs,
    /// Per-request timeout in seconds (default 120; uploads of large windows need more).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
    /// How long to wait for one job before failing the attempt as transient (default 1800).
    /// The job keeps running; the retry finds it by its id and waits again.
    #[serde(default)]
    pub job_timeout_seconds: Option<u64>,
}

fn default_true() -> bool {
    true
}

impl BigQueryConfig {
    pub fn parse(value: &serde_json::Value) -> Result<BigQueryConfig> {
        let cfg: BigQueryConfig = serde_json::from_value(value.clone())
            .map_err(|e| Error::config(format!("invalid BIGQUERY configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        // Project ids: lower-case letters, digits, hyphens; domain-scoped ones add `example.com:`.
        let project_ok = !self.project.is_empty()
            && self.project.len() <= 128
            && self
                .project
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'));
        if !project_ok {
            return Err(Error::config(format!(
                "invalid BIGQUERY project '{}': expected a project id (lower-case letters, digits, hyphens)",
                self.project
            )));
        }
        let dataset_ok = !self.dataset.is_empty()
            && self.dataset.len() <= 1024
            && self.dataset.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !dataset_ok {
            return Err(Error::config(format!(
                "invalid BIGQUERY dataset '{}': letters, digits and underscores only",
                self.dataset
            )));
        }
        if let Some(loc) = &self.location
            && (loc.is_empty() || !loc.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(Error::config(format!("invalid BIGQUERY location '{loc}'")));
        }
        match (&self.service_account_key, &self.access_token) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(Error::config(
                    "BIGQUERY needs exactly one of service_account_key or access_token (secret references)",
                ));
            }
        }
        let base = self.base_url();
        let url =
            url::Url::parse(base).map_err(|e| Error::config(format!("invalid BIGQUERY base_url '{base}': {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Error::config(format!(
                    "BIGQUERY base_url '{base}' is plain http; set \"allow_http\": true to permit it"
                )));
            }
            other => return Err(Error::config(format!("invalid BIGQUERY base_url scheme '{other}'"))),
        }
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let ok = serde_json::json!({"project": "p-1", "dataset": "ds", "access_token": {"env": "T"}});
        let cfg = BigQueryConfig::parse(&ok).unwrap();
        assert_eq!(cfg.mode, Mode::Load);
        assert!(cfg.create_tables);
        assert_eq!(cfg.base_url(), DEFAULT_BASE_URL);

        let mut both = ok.clone();
        both["service_account_key"] = serde_json::json!({"file": "/k.json"});
        let e = BigQueryConfig::parse(&both).unwrap_err();
        assert!(e.to_string().contains("exactly one of"), "{e}");

        let mut plain = ok.clone();
        plain["access_token"] = "ya29.secret".into();
        let e = BigQueryConfig::parse(&plain).unwrap_err();
        assert!(e.to_string().contains("plaintext secrets are not accepted"), "{e}");
        assert!(!e.to_string().contains("ya29.secret"), "{e}");

        let mut ds = ok.clone();
        ds["dataset"] = "a`b".into();
        assert!(BigQueryConfig::parse(&ds).unwrap_err().to_string().contains("dataset"));

        let mut http = ok.clone();
        http["base_url"] = "http://127.0.0.1:9050".into();
        assert!(
            BigQueryConfig::parse(&http)
                .unwrap_err()
                .to_string()
                .contains("allow_http")
        );
        http["allow_http"] = true.into();
        BigQueryConfig::parse(&http).unwrap();

        let mut unknown = ok;
        unknown["mode"] = "bulk".into();
        assert!(BigQueryConfig::parse(&unknown).is_err());
    }
}
