//! `SNOWFLAKE`: each window becomes one Parquet file, staged, `COPY`ed into the raw table and
//! `MERGE`d into the analyst table.
//!
//! Over the wire (our own client, [`client`]): login (password or key-pair JWT), then per
//! delivery, in one session:
//! 1. `CREATE … IF NOT EXISTS` the stage, raw and analyst tables and the `_LATEST` view (once
//!    per process and table, unless `create_tables` is false);
//! 2. stage the file: internal stage: `PUT file://<tmp>/<file> @<stage>/<dir>` and upload it
//!    where the returned `stageInfo` says (a presigned URL); external stage: write it to the
//!    customer's bucket with `object_store`;
//! 3. `BEGIN`; `DELETE FROM <raw> WHERE _TIDEMARK_DELIVERY_ID = '<id>'`; `COPY INTO <raw> …
//!    MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE FORCE = TRUE`; fence; `COMMIT`;
//! 4. fence; `MERGE INTO <analyst> USING (<this delivery's raw rows, newest per id>) …` keeping
//!    the newest `UPDATED_AT` (one statement, atomic on its own).
//!
//! Layout: stage path `<table>/v<major>/<org>/<YYYY-MM-DD>/<table>_<start>_<end>_<delivery>.parquet`;
//! tables and view as in [`ddl`].
//!
//! Exactly once per delivery id: the raw rows carry the delivery id, and step 3 deletes an
//! earlier attempt's rows in the same transaction that loads the new ones (`FORCE = TRUE`, so
//! Snowflake's 64-day load metadata can neither skip a reload that is needed after the delete
//! nor load the same file twice: the delete makes the reload exact). Step 4 is idempotent: it
//! only ever moves an analyst row to a version at least as new, so replaying it changes nothing.
//! An attempt that dies between 3 and 4 is completed by the next one, which repeats both.

pub mod auth;
pub mod client;
mod config;
pub mod ddl;
pub mod encryption;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use parquet::arrow::AsyncArrowWriter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub use config::{SnowflakeConfig, StageConfig};

use self::client::{Client, Credential, QueryError, QueryResult, Session, sql_error};
use self::ddl::{DELIVERY_ID_COLUMN, LOADED_AT_COLUMN, TableNames, ident};
use self::encryption::{EncryptionMaterial, EncryptionMetadata};
use super::object::ObjectDestination;
use super::{Delivered, DeliveryContext, Destination};
use crate::control::destinations::DestinationKind;
use crate::encode::{FileProvenance, Format};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::BatchStream;
use crate::schema::{OP_COLUMN, OP_DELETE, OP_UPSERT, Table, TableSchema};

const DEFAULT_STAGE: &str = "TIDEMARK_STAGE";

enum Staging {
    /// Fully qualified, quoted stage name.
    Internal { stage: String },
    External {
        stage: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        url: String,
    },
}

pub struct SnowflakeDestination {
    client: Client,
    account: String,
    /// Resolved (as Snowflake resolves them) database and schema names, for messages and queries.
    database: String,
    schema: String,
    /// The configured names, for [`TableNames::new`] and [`ddl::create_statements`].
    location: (String, String),
    staging: Staging,
    create_tables: bool,
    /// Tables (and the internal stage) already ensured by this process.
    ensured: Mutex<HashSet<(Table, u32)>>,
    /// Serialises the DDL of concurrent workers of this process: one CREATE per object, not
    /// a race of identical ones (which fakesnow answers with HTTP 500, and which costs real
    /// Snowflake a warehouse query each).
    setup: tokio::sync::Mutex<()>,
}

pub fn build(config: &Value) -> Result<Arc<dyn Destination>> {
    Ok(Arc::new(SnowflakeDestination::from_config(config)?))
}

impl SnowflakeDestination {
    pub fn from_config(config: &Value) -> Result<SnowflakeDestination> {
        let cfg: SnowflakeConfig = serde_json::from_value(config.clone())
            .map_err(|e| Error::config(format!("invalid SNOWFLAKE configuration: {e}")))?;
        if cfg.account.trim().is_empty() || cfg.user.trim().is_empty() {
            return Err(Error::config(
                "SNOWFLAKE configuration needs a non-empty account and user",
            ));
        }
        if !cfg
            .account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(Error::config(format!(
                "invalid SNOWFLAKE account '{}': expected <org>-<account> or an account locator",
                cfg.account
            )));
        }
        let credential = match (&cfg.password, &cfg.private_key) {
            (Some(p), None) => Credential::Password(p.resolve()?),
            (None, Some(k)) => Credential::KeyPair(auth::KeyPair::from_pem(&k.resolve()?, &k.to_string())?),
            _ => {
                return Err(Error::config(
                    "SNOWFLAKE configuration needs exactly one of password or private_key (as a reference)",
                ));
            }
        };
        let base = match &cfg.base_url {
            Some(u) => {
                let parsed =
                    url::Url::parse(u).map_err(|e| Error::config(format!("invalid SNOWFLAKE base_url '{u}': {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(Error::config(format!(
                        "invalid SNOWFLAKE base_url '{u}': expected https://host[:port]"
                    )));
                }
                u.clone()
            }
            None => format!("https://{}.snowflakecomputing.com", cfg.account.to_ascii_lowercase()),
        };
        let database = ddl::resolve_config_ident(&cfg.database);
        let schema = ddl::resolve_config_ident(&cfg.schema);
        let staging = match &cfg.stage {
            StageConfig::Internal { name } => Staging::Internal {
                stage: ddl::config_path(name.as_deref().unwrap_or(DEFAULT_STAGE), &cfg.database, &cfg.schema),
            },
            StageConfig::External { name, object_store } => {
                let value = object_store.to_json();
                let dest = ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &value)
                    .map_err(|e| Error::config(format!("SNOWFLAKE external stage: {}", e.message())))?;
                if !object_store.url.starts_with("s3://") {
                    return Err(Error::config(format!(
                        "SNOWFLAKE external stage url '{}' must be s3://bucket/prefix (the stage's URL)",
                        object_store.url
                    )));
                }
                Staging::External {
                    stage: ddl::config_path(name, &cfg.database, &cfg.schema),
                    store: dest.store(),
                    prefix: dest.prefix().clone(),
                    url: object_store.url.clone(),
                }
            }
        };
        let client = Client::new(
            base,
            cfg.account.clone(),
            cfg.user.clone(),
            credential,
            database.clone(),
            schema.clone(),
            cfg.warehouse.as_deref().map(ddl::resolve_config_ident),
            cfg.role.as_deref().map(ddl::resolve_config_ident),
            Duration::from_secs(cfg.request_timeout_seconds.unwrap_or(120)),
        )?;
        Ok(SnowflakeDestination {
            client,
            account: cfg.account,
            database,
            schema,
            location: (cfg.database.clone(), cfg.schema.clone()),
            staging,
            create_tables: cfg.create_tables,
            ensured: Mutex::new(HashSet::new()),
            setup: tokio::sync::Mutex::new(()),
        })
    }

    fn names(&self, schema: &TableSchema) -> TableNames {
        TableNames::new(schema, Some((&self.location.0, &self.location.1)))
    }

    /// `<table>/v<major>/<org>/<YYYY-MM-DD>` and `<table>_<start>_<end>_<delivery>.parquet`.
    /// Only `[A-Za-z0-9_./-]`, so the path needs no quoting inside `@stage/…`.
    pub fn stage_path(ctx: &DeliveryContext<'_>) -> (String, String) {
        let stamp = |t: chrono::DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        let table = ctx.schema.table.name();
        let dir = format!(
            "{table}/v{}/{}/{}",
            ctx.schema.version,
            ctx.organization_id,
            ctx.window_start.format("%Y-%m-%d")
        );
        let file = format!(
            "{table}_{}_{}_{}.parquet",
            stamp(ctx.window_start),
            stamp(ctx.window_end),
            ctx.delivery_id
        );
        (dir, file)
    }

    async fn run(&self, session: &Session<'_>, sql: &str, what: &str) -> Result<QueryResult> {
        session.query(sql).await.map_err(|e| e.into_error(what))
    }

    /// Creates the stage, tables and view once per process (idempotent statements).
    async fn ensure_objects(&self, session: &Session<'_>, schema: &TableSchema) -> Result<()> {
        let key = (schema.table, schema.version);
        if !self.create_tables || self.ensured.lock().expect("poisoned").contains(&key) {
            return Ok(());
        }
        let _setup = self.setup.lock().await;
        if self.ensured.lock().expect("poisoned").contains(&key) {
            return Ok(());
        }
        if let Staging::Internal { stage } = &self.staging {
            // Snowflake's default encryption (SNOWFLAKE_FULL, client-side): PUT encrypts, see
            // [`encryption`]. A stage the customer made with SNOWFLAKE_SSE works as well.
            let sql = format!(
                "CREATE STAGE IF NOT EXISTS {stage} FILE_FORMAT = (TYPE = PARQUET) COMMENT = 'tidemark staging'"
            );
            self.run(session, &sql, &format!("creating stage {stage}")).await?;
        }
        let statements = ddl::create_statements(schema, Some((&self.location.0, &self.location.1)));
        // Tables first, then any missing columns, then the view (which names every column).
        for sql in &statements[..2] {
            self.run(
                session,
                sql,
                &format!("creating the tables of {} v{}", schema.table, schema.version),
            )
            .await?;
        }
        let names = self.names(schema);
        super::ddl::widen_then_create_view(
            [(&names.raw, true), (&names.analyst, false)],
            &statements[2],
            |table, raw, have| ddl::add_column_statements(schema, table, raw, have),
            |sql, what| {
                Box::pin(async move {
                    let result = self.run(session, &sql, &what).await?;
                    let id = result.query_id.clone().unwrap_or_default();
                    Ok((super::ddl::first_column(result.rows), id))
                })
            },
        )
        .await?;
        self.ensured.lock().expect("poisoned").insert(key);
        Ok(())
    }

    /// Uploads the file to the internal stage through PUT and returns the COPY source.
    async fn stage_internal(
        &self,
        session: &Session<'_>,
        stage: &str,
        dir: &str,
        local: &Path,
        sha256_b64: &str,
    ) -> Result<(String, Value)> {
        let local_str = local.display().to_string().replace('\'', "\\'");
        let sql = format!(
            "PUT 'file://{local_str}' @{stage}/{dir} AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE OVERWRITE = TRUE"
        );
        let what = format!("PUT to stage {stage}/{dir}");
        let put = self.run(session, &sql, &what).await?;
        let info = put.data.get("stageInfo").cloned().unwrap_or(Value::Null);
        // SNOWFLAKE_FULL stages (the default) answer with encryption material: the file is
        // encrypted here and Snowflake decrypts it when COPY reads it ([`encryption`]).
        let material = match EncryptionMaterial::from_put_response(&put.data)? {
            Some(m) => Some(m),
            None => EncryptionMaterial::from_put_response(&info)?,
        };
        let (upload, encryption, _encrypted_dir) = match material {
            None => (local.to_path_buf(), None, None),
            Some(material) => {
                // Same file name, so the object keeps the name COPY is told.
                let dir = tempfile::Builder::new()
                    .prefix("tidemark-sfc-")
                    .tempdir()
                    .map_err(|e| {
                        Error::unexpected("cannot create a directory for the encrypted file").with_source(e)
                    })?;
                let dst = dir.path().join(local.file_name().unwrap_or_default());
                let (src, out) = (local.to_path_buf(), dst.clone());
                let (meta, _) = tokio::task::spawn_blocking(move || material.encrypt_file(&src, &out))
                    .await
                    .map_err(|e| Error::unexpected(format!("{what}: the encryption task failed: {e}")))??;
                (dst, Some(meta), Some(dir))
            }
        };
        let location_type = info.get("locationType").and_then(Value::as_str).unwrap_or("");
        match (location_type, info.get("presignedUrl").and_then(Value::as_str)) {
            ("GCS", Some(url)) if !url.is_empty() => {
                self.client
                    .upload_presigned(url, &upload, sha256_b64, encryption.as_ref())
                    .await
                    .map_err(|e| Error::new(e.kind(), format!("{what}: {e}")))?;
            }
            ("S3", _) => {
                let allow_http = self.client.base_url().starts_with("http://");
                upload_s3_stage(&info, &upload, sha256_b64, encryption.as_ref(), allow_http)
                    .await
                    .map_err(|e| Error::new(e.kind(), format!("{what}: {e}")))?;
            }
            (other, _) => {
                return Err(Error::config(format!(
                    "{what}: the stage is backed by {} storage without a presigned URL; tidemark uploads to internal stages \
                     through presigned URLs (GCS) or S3 credentials (AWS). On Azure accounts use an external stage \
                     (\"stage\": {{\"external\": …}})",
                    if other.is_empty() { "unknown" } else { other }
                )));
            }
        }
        let file = local.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let receipt = json!({
            "mode": "internal",
            "stage": stage,
            "path": format!("{dir}/{file}"),
            "location_type": location_type,
            "client_side_encrypted": encryption.is_some(),
        });
        Ok((format!("@{stage}/{dir}/{file}"), receipt))
    }

    /// Writes the file to the customer's bucket (the external stage's location).
    async fn stage_external(
        &self,
        store: &Arc<dyn ObjectStore>,
        prefix: &ObjectPath,
        url: &str,
        dir: &str,
        local: &Path,
    ) -> Result<Value> {
        let file = local.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let key = ObjectPath::from_iter(
            prefix
                .parts()
                .map(|p| p.as_ref().to_string())
                .chain(dir.split('/').map(str::to_string))
                .chain([file.to_string()]),
        );
        super::object::upload_file(
            store,
            &key,
            local,
            object_store::Attributes::new(),
            &format!("writing {key} to the external stage location {url}"),
        )
        .await?;
        Ok(json!({"mode": "external", "object_key": key.to_string(), "url": url}))
    }

    async fn load(
        &self,
        session: &Session<'_>,
        ctx: &DeliveryContext<'_>,
        local: &Path,
        rows: u64,
        sha256_b64: &str,
    ) -> Result<Value> {
        let names = self.names(ctx.schema);
        self.ensure_objects(session, ctx.schema).await?;
        let (dir, file) = Self::stage_path(ctx);
        let (copy_source, staged) = match &self.staging {
            Staging::Internal { stage } => self.stage_internal(session, stage, &dir, local, sha256_b64).await?,
            Staging::External {
                stage,
                store,
                prefix,
                url,
            } => {
                let staged = self.stage_external(store, prefix, url, &dir, local).await?;
                (format!("@{stage}/{dir}/ FILES = ('{file}')"), staged)
            }
        };
        let delivery = ctx.delivery_id.to_string();
        let purge = matches!(self.staging, Staging::Internal { .. });
        let copy_sql = copy_statement(&names.raw, &copy_source, purge);

        // Step 3: replace this delivery's raw rows in one transaction.
        self.run(session, "BEGIN", "starting the load transaction").await?;
        let loaded: Result<(u64, QueryResult)> = async {
            let deleted = self
                .run(
                    session,
                    &format!(
                        "DELETE FROM {} WHERE {} = '{delivery}'",
                        names.raw,
                        ident(DELIVERY_ID_COLUMN)
                    ),
                    &format!("removing an earlier attempt's rows from {}", names.raw),
                )
                .await?;
            let deleted = deleted
                .rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let copy = match session.query(&copy_sql).await {
                Ok(r) => r,
                Err(QueryError::Sql(e)) => {
                    // Whatever the code, a COPY that fails on the table or the data is
                    // rejected, unless it is an auth/session/transient condition.
                    let kind = match client::classify(&e) {
                        ErrorKind::Unexpected => ErrorKind::DestinationRejected,
                        k => k,
                    };
                    return Err(sql_error(
                        &format!("COPY INTO {} from {copy_source}", names.raw),
                        &e,
                        kind,
                    ));
                }
                Err(other) => return Err(other.into_error(&format!("COPY INTO {}", names.raw))),
            };
            check_copy(&copy, rows, &names.raw, &copy_source)?;
            ctx.fence.ensure().await?;
            self.run(session, "COMMIT", &format!("committing the load into {}", names.raw))
                .await?;
            Ok((deleted, copy))
        }
        .await;
        let (deleted, copy) = match loaded {
            Ok(v) => v,
            Err(e) => {
                let _ = session.query("ROLLBACK").await;
                return Err(e);
            }
        };

        // Step 4: upsert the analyst table (atomic on its own, idempotent on replay).
        ctx.fence.ensure().await?;
        let merge_sql = merge_statement(ctx.schema, &names, &delivery);
        let merge = match session.query(&merge_sql).await {
            Ok(r) => r,
            Err(QueryError::Sql(e)) => {
                let kind = match client::classify(&e) {
                    ErrorKind::Unexpected => ErrorKind::DestinationRejected,
                    k => k,
                };
                return Err(sql_error(&format!("MERGE INTO {}", names.analyst), &e, kind));
            }
            Err(other) => return Err(other.into_error(&format!("MERGE INTO {}", names.analyst))),
        };

        let copy_files: Vec<Value> = copy
            .rows
            .iter()
            .map(|r| {
                let obj: serde_json::Map<String, Value> = copy
                    .columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| {
                        (
                            c.to_ascii_lowercase(),
                            v.clone().map(Value::String).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                Value::Object(obj)
            })
            .collect();
        let merge_counts: serde_json::Map<String, Value> = merge
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = merge.rows.first().and_then(|r| r.get(i).cloned().flatten());
                (
                    c.to_ascii_lowercase().replace(' ', "_"),
                    v.and_then(|v| v.parse::<u64>().ok())
                        .map(Value::from)
                        .unwrap_or(Value::Null),
                )
            })
            .collect();
        Ok(json!({
            "staged": staged,
            "raw_table": names.raw,
            "analyst_table": names.analyst,
            "replaced_raw_rows": deleted,
            "copy": {"query_id": copy.query_id, "files": copy_files},
            "merge": {"query_id": merge.query_id, "counts": merge_counts},
        }))
    }
}

/// Uploads a staged file to the S3 location of a PUT's `stageInfo` (`locationType` S3) with the
/// temporary credentials it carries (`creds.AWS_KEY_ID`, `AWS_SECRET_KEY`, `AWS_TOKEN`), as
/// the drivers do for server-side-encrypted stages: key `<location><file>`, metadata
/// `sfc-digest` = base64 SHA-256 of the (plaintext) file; for a client-side encrypted stage,
/// `local` is the encrypted file and `encryption` its wrapped key, IV and material descriptor
/// (`x-amz-key`, `x-amz-iv`, `x-amz-matdesc`). `allow_http` only for loopback test servers.
pub async fn upload_s3_stage(
    info: &Value,
    local: &Path,
    sha256_b64: &str,
    encryption: Option<&EncryptionMetadata>,
    allow_http: bool,
) -> Result<String> {
    let field = |k: &str| info.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let cred = |k: &str| {
        info.get("creds")
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let location = field("location").ok_or_else(|| Error::unexpected("S3 stage info without a location"))?;
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let (Some(key_id), Some(secret)) = (cred("AWS_KEY_ID"), cred("AWS_SECRET_KEY")) else {
        return Err(Error::unexpected("S3 stage info without temporary credentials"));
    };
    let region = field("region").unwrap_or("us-east-1");
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret)
        .with_allow_http(allow_http)
        .with_client_options(object_store::ClientOptions::new().with_allow_http(allow_http));
    if let Some(token) = cred("AWS_TOKEN") {
        b = b.with_token(token);
    }
    let endpoint = match field("endPoint") {
        Some(e) if e.contains("://") => Some(e.to_string()),
        Some(e) => Some(format!("https://{e}")),
        None if info.get("useS3RegionalUrl").and_then(Value::as_bool) == Some(true) => {
            Some(format!("https://s3.{region}.amazonaws.com"))
        }
        None => None,
    };
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        b.build()
            .map_err(|e| Error::config(format!("unusable S3 stage info: {e}")))?,
    );
    let file = local.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let key = ObjectPath::from(format!("{}/{file}", prefix.trim_end_matches('/')).trim_start_matches('/'));
    let mut attributes = object_store::Attributes::new();
    attributes.insert(
        object_store::Attribute::Metadata("sfc-digest".into()),
        sha256_b64.to_string().into(),
    );
    if let Some(e) = encryption {
        for (k, v) in [
            ("x-amz-key", &e.key),
            ("x-amz-iv", &e.iv),
            ("x-amz-matdesc", &e.matdesc),
        ] {
            attributes.insert(object_store::Attribute::Metadata(k.into()), v.clone().into());
        }
    }
    super::object::upload_file(
        &store,
        &key,
        local,
        attributes,
        &format!("uploading to s3://{bucket}/{key}"),
    )
    .await?;
    Ok(format!("s3://{bucket}/{key}"))
}

fn copy_statement(raw: &str, source: &str, purge: bool) -> String {
    format!(
        "COPY INTO {raw} FROM {source} FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE \
         ON_ERROR = ABORT_STATEMENT FORCE = TRUE{}",
        if purge { " PURGE = TRUE" } else { "" }
    )
}

/// The MERGE of one delivery's raw rows into the analyst table: per id the delivery's newest
/// version (the `U` on an `UPDATED_AT` tie: a delete and a re-insert in one transaction leave
/// the row); a `D` deletes the analyst row unless that row is newer; a `U` updates a row not
/// newer than it, and inserts one only when no delete in the raw history is newer (a replayed
/// older version never resurrects a deleted row).
pub fn merge_statement(schema: &TableSchema, names: &TableNames, delivery: &str) -> String {
    let mut cols: Vec<String> = schema.columns.iter().map(|c| ident(&c.name)).collect();
    cols.push(ident(DELIVERY_ID_COLUMN));
    cols.push(ident(LOADED_AT_COLUMN));
    let id = ident("id");
    let updated = ident("updated_at");
    let set: Vec<String> = cols
        .iter()
        .filter(|c| **c != id)
        .map(|c| format!("{c} = src.{c}"))
        .collect();
    let values: Vec<String> = cols.iter().map(|c| format!("src.{c}")).collect();
    format!(
        "MERGE INTO {analyst} AS tgt USING (\n  SELECT v.*, d.{deleted_at} FROM (\n    SELECT {select}, {op} AS {op_name}\n    FROM {raw} WHERE {did} = '{delivery}'\n    \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY {updated} DESC, {op} DESC) = 1\n  ) AS v\n  \
         LEFT JOIN (\n    SELECT {id}, MAX({updated}) AS {deleted_at} FROM {raw}\n    \
         WHERE {op_name} = '{OP_DELETE}' AND {id} IN (SELECT {id} FROM {raw} WHERE {did} = '{delivery}')\n    GROUP BY {id}\n  ) AS d ON d.{id} = v.{id}\n\
         ) AS src ON tgt.{id} = src.{id}\n\
         WHEN MATCHED AND src.{op_name} = '{OP_DELETE}' AND src.{updated} >= tgt.{updated} THEN DELETE\n\
         WHEN MATCHED AND src.{op_name} = '{OP_UPSERT}' AND src.{updated} >= tgt.{updated} THEN UPDATE SET {set}\n\
         WHEN NOT MATCHED AND src.{op_name} = '{OP_UPSERT}' AND (src.{deleted_at} IS NULL OR src.{deleted_at} <= src.{updated}) \
         THEN INSERT ({cols}) VALUES ({values})",
        analyst = names.analyst,
        select = ddl::analyst_select_list(schema).join(", "),
        raw = names.raw,
        did = ident(DELIVERY_ID_COLUMN),
        set = set.join(", "),
        cols = cols.join(", "),
        values = values.join(", "),
        op = ddl::op_expression(),
        op_name = ident(OP_COLUMN),
        deleted_at = ident("_tidemark_deleted_at"),
    )
}

/// Every COPY result row must say LOADED, and the rows loaded must be the rows written.
fn check_copy(copy: &QueryResult, rows: u64, raw: &str, source: &str) -> Result<()> {
    if copy.rows.is_empty() || copy.cell(0, "status").is_none() {
        let status = copy
            .rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        return Err(Error::new(
            ErrorKind::DestinationRejected,
            format!("COPY INTO {raw} from {source} loaded no file: {status}"),
        ));
    }
    let mut loaded = 0u64;
    for i in 0..copy.rows.len() {
        let status = copy.cell(i, "status").unwrap_or("");
        if !status.eq_ignore_ascii_case("LOADED") {
            return Err(Error::new(
                ErrorKind::DestinationRejected,
                format!(
                    "COPY INTO {raw}: file {} has status {status}: {}",
                    copy.cell(i, "file").unwrap_or("?"),
                    copy.cell(i, "first_error").unwrap_or("(no error reported)")
                ),
            ));
        }
        loaded += copy
            .cell(i, "rows_loaded")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    if loaded != rows {
        return Err(Error::new(
            ErrorKind::DestinationRejected,
            format!("COPY INTO {raw} loaded {loaded} rows from {source}, but the file holds {rows}"),
        ));
    }
    Ok(())
}

/// The Parquet schema of a staged file: the published columns, `_op`, then the provenance
/// columns.
fn staged_schema(schema: &TableSchema) -> Arc<Schema> {
    let published = schema.export_arrow_schema();
    let mut fields: Vec<Field> = published.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DELIVERY_ID_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(
        LOADED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new_with_metadata(fields, published.metadata().clone()))
}

/// Encodes the window to `path`; returns rows, bytes and the base64 SHA-256 of the file.
async fn write_file(ctx: &DeliveryContext<'_>, batches: &mut BatchStream, path: &Path) -> Result<(u64, u64, String)> {
    let provenance = FileProvenance {
        table: ctx.schema.table.name().to_string(),
        schema_version: ctx.schema.version,
        organization_id: ctx.organization_id,
        window_start: ctx.window_start,
        window_end: ctx.window_end,
        delivery_id: ctx.delivery_id,
    };
    let props = crate::encode::parquet::writer_properties(&provenance, ctx.schema);
    let schema = staged_schema(ctx.schema);
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::unexpected(format!("cannot create {}", path.display())).with_source(e))?;
    let mut writer = AsyncArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let export = ctx.schema.export_arrow_schema();
    let delivery = ctx.delivery_id.to_string();
    let loaded_at = Utc::now().timestamp_micros();
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = crate::extract::with_op_column(batch?, &export)?;
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        rows += n as u64;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            &delivery, n,
        ))));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(loaded_at, n)).with_timezone("UTC"),
        ));
        let staged = RecordBatch::try_new(schema.clone(), columns)?;
        writer.write(&staged).await?;
    }
    writer.close().await?;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::unexpected(format!("cannot reopen {}", path.display())).with_source(e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::unexpected(format!("cannot read {}", path.display())).with_source(e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((
        rows,
        bytes,
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize()),
    ))
}

#[async_trait]
impl Destination for SnowflakeDestination {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Snowflake
    }

    /// Deletes land in the raw table as `_OP = 'D'` rows; the MERGE applies them.
    fn exports_op(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<()> {
        let session = self.client.login().await?;
        let sql = format!(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = '{}'",
            self.schema.replace('\'', "''")
        );
        let result = self
            .run(
                &session,
                &sql,
                &format!("checking access to {}.{}", self.database, self.schema),
            )
            .await;
        session.close().await;
        result.map(|_| ())
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>, mut batches: BatchStream) -> Result<Delivered> {
        let (_, file) = Self::stage_path(ctx);
        let dir = tempfile::tempdir().map_err(|e| {
            Error::unexpected("cannot create a temporary directory for the Parquet file").with_source(e)
        })?;
        let local: PathBuf = dir.path().join(&file);
        let (rows, bytes, sha256) = write_file(ctx, &mut batches, &local).await?;
        let provenance = json!({
            "table": ctx.schema.table.name(),
            "schema_version": ctx.schema.version,
            "organization_id": ctx.organization_id,
            "window_start": ctx.window_start,
            "window_end": ctx.window_end,
            "delivery_id": ctx.delivery_id,
        });
        if rows == 0 {
            // Nothing to load: no session, no warehouse time.
            return Ok(Delivered {
                rows: 0,
                bytes: 0,
                receipt: json!({"kind": "SNOWFLAKE", "account": self.account, "rows": 0,
                    "skipped": "empty window: nothing staged or loaded", "provenance": provenance}),
            });
        }
        let session = self.client.login().await?;
        let result = self.load(&session, ctx, &local, rows, &sha256).await;
        session.close().await;
        let mut receipt = result?;
        let obj = receipt.as_object_mut().expect("receipt is an object");
        obj.insert("kind".into(), "SNOWFLAKE".into());
        obj.insert("account".into(), self.account.clone().into());
        obj.insert("file".into(), file.into());
        obj.insert("rows".into(), rows.into());
        obj.insert("bytes".into(), bytes.into());
        obj.insert("sha256_base64".into(), sha256.into());
        obj.insert("provenance".into(), provenance);
        Ok(Delivered { rows, bytes, receipt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Registry;

    fn cfg(extra: Value) -> Value {
        let mut base = json!({"account": "myorg-acct", "user": "loader", "password": {"env": "TIDEMARK_SF_UNIT_PW"},
            "database": "analytics", "schema": "tidemark"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn config_is_validated_precisely() {
        // SAFETY: unit tests set only this variable, to the same value.
        unsafe { std::env::set_var("TIDEMARK_SF_UNIT_PW", "pw") };
        assert!(SnowflakeDestination::from_config(&cfg(json!({}))).is_ok());
        let err = SnowflakeDestination::from_config(&cfg(json!({"password": "plain"})))
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("plaintext secrets are not accepted"), "{err}");
        let err = SnowflakeDestination::from_config(&cfg(json!({"warehose": "x"})))
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown field `warehose`"), "{err}");
        let err = SnowflakeDestination::from_config(&cfg(json!({"private_key": {"env": "X"}})))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("exactly one of password or private_key"),
            "{err}"
        );
        let err = SnowflakeDestination::from_config(&cfg(json!({"base_url": "ftp://x"})))
            .err()
            .unwrap();
        assert!(err.to_string().contains("base_url"), "{err}");
        let ok = SnowflakeDestination::from_config(&cfg(json!({"stage": "internal"}))).unwrap();
        assert!(
            matches!(&ok.staging, Staging::Internal { stage } if stage == "\"ANALYTICS\".\"TIDEMARK\".\"TIDEMARK_STAGE\"")
        );
        assert_eq!(ok.client.base_url(), "https://myorg-acct.snowflakecomputing.com");
        let err = SnowflakeDestination::from_config(&cfg(
            json!({"stage": {"external": {"name": "ext", "object_store": {"url": "file:///tmp/x"}}}}),
        ))
        .err()
        .unwrap();
        assert!(err.to_string().contains("s3://"), "{err}");
    }

    #[test]
    fn merge_keeps_the_newest_version_and_reads_only_this_delivery() {
        let reg = Registry::embedded();
        let s = reg.get(Table::Findings, 1).unwrap();
        let names = TableNames::new(&s, Some(("db", "sch")));
        let sql = merge_statement(&s, &names, "d-1");
        assert!(sql.contains("WHERE \"_TIDEMARK_DELIVERY_ID\" = 'd-1'"), "{sql}");
        assert!(
            sql.contains("WHEN MATCHED AND src.\"_OP\" = 'U' AND src.\"UPDATED_AT\" >= tgt.\"UPDATED_AT\" THEN UPDATE"),
            "{sql}"
        );
        assert!(
            sql.contains("WHEN MATCHED AND src.\"_OP\" = 'D' AND src.\"UPDATED_AT\" >= tgt.\"UPDATED_AT\" THEN DELETE"),
            "{sql}"
        );
        assert!(
            sql.contains("WHEN NOT MATCHED AND src.\"_OP\" = 'U' AND (src.\"_TIDEMARK_DELETED_AT\" IS NULL OR src.\"_TIDEMARK_DELETED_AT\" <= src.\"UPDATED_AT\")"),
            "an older version never resurrects a deleted id: {sql}"
        );
        assert!(sql.contains("PARSE_JSON(\"DETAILS\") AS \"DETAILS\""), "{sql}");
        assert!(!sql.contains("SET \"ID\" ="), "{sql}");
        let copy = copy_statement(&names.raw, "@\"S\"/d/ FILES = ('f.parquet')", false);
        assert!(copy.contains("MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"), "{copy}");
        assert!(copy.contains("FILES = ('f.parquet')"), "{copy}");
        assert!(!copy.contains("PURGE"), "{copy}");
    }
}
