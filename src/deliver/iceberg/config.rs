//! Typed configuration of `ICEBERG_S3`.

use serde::Deserialize;

use crate::secret::SecretRef;

/// `ICEBERG_S3` configuration, e.g.
///
/// ```json
/// {"warehouse": "s3://lake/iceberg", "namespace": "tidemark",
///  "catalog": {"type": "sql", "url": {"env": "ICEBERG_CATALOG_URL"}},
///  "region": "eu-west-1",
///  "access_key_id": {"env": "AWS_ACCESS_KEY_ID"}, "secret_access_key": {"file": "/var/run/secrets/s3/secret"}}
/// ```
///
/// or `{"warehouse": "file:///var/lib/tidemark/lake", "catalog": {"type": "sql", "url": {"env": "…"}}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// Where table data and metadata live: `s3://bucket[/prefix]` or `file:///absolute/dir`.
    pub warehouse: String,
    /// Iceberg namespace of the tables (created when missing). Default `tidemark`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub catalog: CatalogConfig,
    /// S3-compatible endpoint (MinIO, moto, ...); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local test servers only).
    #[serde(default)]
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), the default with a custom endpoint.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<SecretRef>,
    #[serde(default)]
    pub secret_access_key: Option<SecretRef>,
    #[serde(default)]
    pub session_token: Option<SecretRef>,
    /// Per-request timeout of the object store in seconds (default 60).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
    /// Retries of one object-store request inside the client (default 3).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// Data files roll over above this size (default: the table's
    /// `write.target-file-size-bytes`, else 512 MiB).
    #[serde(default)]
    pub target_file_size_bytes: Option<usize>,
}

fn default_namespace() -> String {
    "tidemark".to_string()
}

/// Which Iceberg catalog tracks the tables' metadata pointers.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CatalogConfig {
    /// The JDBC/SQL catalog layout (`iceberg_tables`, `iceberg_namespace_properties`) in a
    /// Postgres database, shared with pyiceberg's `SqlCatalog` and Iceberg Java's `JdbcCatalog`.
    Sql {
        /// `postgres://user:password@host:port/db` — by reference: it carries a password.
        url: SecretRef,
        /// The `catalog_name` column; readers must use the same name. Default `tidemark`.
        #[serde(default = "default_catalog_name")]
        name: String,
        /// Connections of the catalog's pool (default 4).
        #[serde(default)]
        max_connections: Option<u32>,
    },
    /// An Iceberg REST catalog (Polaris, Lakekeeper, Nessie, Tabular-compatible servers, ...).
    Rest {
        uri: String,
        /// Catalog-side warehouse name or location, when the server wants one.
        #[serde(default)]
        warehouse: Option<String>,
        /// URL prefix of the catalog, when the server does not advertise it in `/v1/config`.
        #[serde(default)]
        prefix: Option<String>,
        /// A bearer token.
        #[serde(default)]
        token: Option<SecretRef>,
        /// OAuth2 client credentials `client_id:client_secret`.
        #[serde(default)]
        credential: Option<SecretRef>,
        #[serde(default)]
        oauth2_server_uri: Option<String>,
        #[serde(default)]
        scope: Option<String>,
    },
    /// AWS Glue Data Catalog (cargo feature `iceberg-glue`). Uses the S3 credentials above.
    Glue {
        /// Glue endpoint override (a Glue-compatible server); AWS when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// The AWS account id of the catalog, when not the caller's.
        #[serde(default)]
        catalog_id: Option<String>,
    },
}

fn default_catalog_name() -> String {
    "tidemark".to_string()
}

impl CatalogConfig {
    pub fn label(&self) -> &'static str {
        match self {
            CatalogConfig::Sql { .. } => "sql",
            CatalogConfig::Rest { .. } => "rest",
            CatalogConfig::Glue { .. } => "glue",
        }
    }
}
