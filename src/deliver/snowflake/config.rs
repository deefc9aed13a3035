//! Typed configuration of the `SNOWFLAKE` destination.

use serde::Deserialize;

use crate::deliver::object::ObjectStoreConfig;
use crate::secret::SecretRef;

/// `SNOWFLAKE` configuration, e.g.
/// `{"account": "myorg-myaccount", "user": "TIDEMARK", "private_key": {"file": "/var/run/secrets/sf/rsa_key.p8"},
///   "database": "ANALYTICS", "schema": "TIDEMARK", "warehouse": "LOAD_WH", "role": "TIDEMARK_LOADER"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier: `<org>-<account>` or an account locator (`xy12345`, optionally with
    /// region: `xy12345.eu-west-1`).
    pub account: String,
    /// Login name of the loading user.
    pub user: String,
    /// Password authentication. Exactly one of `password` and `private_key`.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Key-pair authentication: an unencrypted PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) RSA private key in PEM.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// Database holding the tables. Plain identifiers are upper-cased, as Snowflake resolves them
    /// unquoted; anything else is taken verbatim (case-sensitive).
    pub database: String,
    /// Schema holding the tables (same identifier rule as `database`).
    pub schema: String,
    /// Virtual warehouse for COPY and MERGE; the user's default when absent.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Role to use; the user's default when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// `https://<account>.snowflakecomputing.com` when absent (a private-link or test URL otherwise).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Where the window's Parquet file is staged: `"internal"` (default) or
    /// `{"internal": {"name": "MY_STAGE"}}` or `{"external": {...}}`.
    #[serde(default, deserialize_with = "stage_config")]
    pub stage: StageConfig,
    /// Create missing tables, the `_latest` view and the internal stage (default true).
    #[serde(default = "yes")]
    pub create_tables: bool,
    /// Per-request timeout in seconds (default 120; a COPY or MERGE answers within it or is polled).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// A named internal stage (default `TIDEMARK_STAGE` in the configured schema), filled by `PUT`.
    Internal {
        #[serde(default)]
        name: Option<String>,
    },
    /// An external stage on the customer's S3 bucket: tidemark writes the Parquet file to
    /// `object_store.url` with its own credentials, then runs `COPY … FROM @<stage> FILES=(…)`.
    /// The stage (and its storage integration) is created by the customer and must point at the
    /// same location as `object_store.url`.
    External {
        /// The existing external stage's name (same identifier rule as `database`), optionally
        /// qualified `DB.SCHEMA.STAGE`.
        name: String,
        /// Where the stage's URL points, with credentials to write there (the `PARQUET_S3`
        /// configuration shape).
        object_store: Box<ObjectStoreConfig>,
    },
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig::Internal { name: None }
    }
}

/// Accepts `"internal"` as a shorthand for `{"internal": {}}`.
fn stage_config<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StageConfig, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    if value.as_str() == Some("internal") {
        return Ok(StageConfig::default());
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}
