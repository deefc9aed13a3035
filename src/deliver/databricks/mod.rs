//! `DATABRICKS`: each window becomes one Parquet file staged in a Unity Catalog volume, loaded
//! with `COPY INTO` into the raw history table and merged into the analyst table, all over
//! Databricks' REST APIs (Files API, SQL Statement Execution API on a SQL warehouse).
//!
//! Per delivery:
//! 1. the first time a worker sees a table version: `CREATE TABLE IF NOT EXISTS` raw and analyst
//!    tables and `CREATE VIEW IF NOT EXISTS` the latest view ([`ddl`]), unless `create_tables`
//!    is false;
//! 2. encode the batches to Parquet in a local temporary file (streamed, never the whole window
//!    in memory), then stage it at `<root>/<table>/v<major>/<delivery id>.parquet` (the path
//!    depends only on the delivery, so a retry overwrites). `<root>` is a volume directory,
//!    `/Volumes/<catalog>/<schema>/<volume>/<staging_dir>`, written with the Files API (`PUT
//!    /api/2.0/fs/files/...?overwrite=true`), or with `external_location` an S3 path
//!    `s3://<bucket>/<prefix>/<staging_dir>` inside a Unity Catalog external location, written
//!    with `object_store` and read by the warehouse through the location's storage credential;
//! 3. fence check, then `COPY INTO <catalog>.<schema>.<table>_v<major>_raw ... FILES =
//!    ('<delivery id>.parquet')`, which stamps `_tidemark_delivery_id` and `_tidemark_loaded_at`.
//!    COPY INTO remembers the files it loaded into a table and skips them on a later run, even
//!    if they changed: a retried delivery loads nothing twice;
//! 4. fence check, then `MERGE INTO <table>_v<major>` from this delivery's raw rows on `id`,
//!    updating only when the delivered `updated_at` is newer: a replay changes nothing;
//! 5. delete the staged file (unless `keep_staged_files`).
//!
//! The receipt carries the staged path, size, SHA-256, the statement ids and what COPY INTO and
//! MERGE reported (`num_inserted_rows`, `num_updated_rows`, ...). An empty window stages and loads
//! nothing.

mod client;
mod config;
pub mod ddl;

use std::collections::HashSet;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use parquet::arrow::async_writer::{AsyncArrowWriter, AsyncFileWriter};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use client::statement_kind;
use client::{Client, UploadBody};
pub use config::DatabricksConfig;
use ddl::TableNames;

use super::{Delivered, DeliveryContext, Destination};
use crate::control::destinations::DestinationKind;
use crate::encode::FileProvenance;
use crate::error::{Error, Result};
use crate::extract::BatchStream;
use crate::schema::{Table, TableSchema};

/// Where window files are staged.
enum Staging {
    /// `/Volumes/<catalog>/<schema>/<volume>/<staging_dir>`, through the Files API.
    Volume { root: String },
    /// `s3://<bucket>/<prefix>/<staging_dir>` in an external location, through `object_store`
    /// (`prefix` is the object key of `root`).
    External {
        root: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

pub struct DatabricksDestination {
    cfg: DatabricksConfig,
    client: Client,
    staging: Staging,
    /// Table versions whose objects this process has created (or found).
    created: tokio::sync::Mutex<HashSet<(Table, u32)>>,
}

pub fn build(config: &serde_json::Value) -> Result<Arc<dyn Destination>> {
    Ok(Arc::new(DatabricksDestination::from_config(config)?))
}

impl DatabricksDestination {
    pub fn from_config(config: &serde_json::Value) -> Result<DatabricksDestination> {
        let cfg = DatabricksConfig::parse(config)?;
        let client = Client::new(&cfg)?;
        let staging = match (&cfg.volume, &cfg.external_location) {
            (Some(volume), _) => Staging::Volume {
                root: format!("/Volumes/{}/{}/{volume}/{}", cfg.catalog, cfg.schema, cfg.staging_dir()),
            },
            (None, Some(location)) => {
                let dest = crate::deliver::object::ObjectDestination::from_config(
                    DestinationKind::ParquetS3,
                    crate::encode::Format::Parquet,
                    &location.to_json(),
                )
                .map_err(|e| Error::config(format!("DATABRICKS external_location: {}", e.message())))?;
                let prefix = ObjectPath::from_iter(
                    dest.prefix()
                        .parts()
                        .map(|p| p.as_ref().to_string())
                        .chain(cfg.staging_dir().split('/').map(str::to_string)),
                );
                Staging::External {
                    root: format!("{}/{}", location.url.trim_end_matches('/'), cfg.staging_dir()),
                    store: dest.store(),
                    prefix,
                }
            }
            (None, None) => unreachable!("DatabricksConfig::parse checks the staging place"),
        };
        Ok(DatabricksDestination {
            cfg,
            client,
            staging,
            created: tokio::sync::Mutex::new(HashSet::new()),
        })
    }

    /// `/Volumes/<catalog>/<schema>/<volume>/<staging_dir>` or `s3://<bucket>/<prefix>/<staging_dir>`.
    fn staging_root(&self) -> &str {
        match &self.staging {
            Staging::Volume { root } | Staging::External { root, .. } => root,
        }
    }

    /// The object key of a staged file `<table>/v<major>/<file>` under an external location.
    fn object_key(prefix: &ObjectPath, schema: &TableSchema, file: &str) -> ObjectPath {
        ObjectPath::from_iter(prefix.parts().map(|p| p.as_ref().to_string()).chain([
            schema.table.name().to_string(),
            format!("v{}", schema.version),
            file.to_string(),
        ]))
    }

    /// Writes a staged file (a window's Parquet, or a probe).
    async fn stage(&self, schema: &TableSchema, file: &str, local: &std::path::Path, bytes: u64) -> Result<()> {
        let staged = format!("{}/{file}", self.staging_directory(schema));
        match &self.staging {
            Staging::Volume { .. } => {
                self.client
                    .upload(&staged, UploadBody::File(local.to_path_buf(), bytes))
                    .await
            }
            Staging::External { store, prefix, .. } => {
                let key = Self::object_key(prefix, schema, file);
                crate::deliver::object::upload_file(
                    store,
                    &key,
                    local,
                    object_store::Attributes::new(),
                    &format!("staging {staged} in the external location"),
                )
                .await
            }
        }
    }

    /// Removes a staged file.
    async fn unstage(&self, schema: &TableSchema, file: &str) -> Result<()> {
        let staged = format!("{}/{file}", self.staging_directory(schema));
        match &self.staging {
            Staging::Volume { .. } => self.client.delete(&staged).await,
            Staging::External { store, prefix, .. } => store
                .delete(&Self::object_key(prefix, schema, file))
                .await
                .map_err(|e| crate::deliver::object::classify(&format!("deleting the staged {staged}"), e)),
        }
    }

    /// The volume directory of a table version's staged files.
    pub fn staging_directory(&self, schema: &TableSchema) -> String {
        format!("{}/{}/v{}", self.staging_root(), schema.table.name(), schema.version)
    }

    /// Runs the CREATE statements of a table version once per process. Returns their
    /// statement ids (empty when already done or disabled).
    async fn ensure_tables(&self, schema: &TableSchema) -> Result<Vec<String>> {
        if !self.cfg.create_tables.unwrap_or(true) {
            return Ok(Vec::new());
        }
        let mut created = self.created.lock().await;
        if created.contains(&(schema.table, schema.version)) {
            return Ok(Vec::new());
        }
        let names = TableNames::new(&self.cfg.catalog, &self.cfg.schema, schema);
        let objects = [&names.raw, &names.analyst];
        let mut ids = Vec::new();
        let statements = ddl::create_statements(&self.cfg.catalog, &self.cfg.schema, schema);
        // The tables, then any columns they lack, then the view (which names every column).
        for (sql, object) in statements[..2].iter().zip(objects) {
            let done = self.client.execute(sql, &format!("creating {object}")).await?;
            ids.push(done.statement_id);
        }
        let client = &self.client;
        let widened = crate::deliver::ddl::widen_then_create_view(
            [(&names.raw, true), (&names.analyst, false)],
            &statements[2],
            |table, raw, have| ddl::add_column_statements(schema, table, raw, have),
            |sql, what| {
                Box::pin(async move {
                    let done = client.execute(&sql, &what).await?;
                    Ok((crate::deliver::ddl::first_column(done.rows), done.statement_id))
                })
            },
        )
        .await?;
        ids.extend(widened);
        created.insert((schema.table, schema.version));
        Ok(ids)
    }
}

/// A local file that hashes and counts what the Parquet writer puts in it.
struct HashingFile {
    file: tokio::io::BufWriter<tokio::fs::File>,
    sha256: Sha256,
    bytes: u64,
}

fn io_error(e: std::io::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(
        Error::unexpected("writing the local staging file failed").with_source(e),
    ))
}

impl AsyncFileWriter for HashingFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.sha256.update(&bs);
            self.bytes += bs.len() as u64;
            self.file.write_all(&bs).await.map_err(io_error)
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move { self.file.flush().await.map_err(io_error) })
    }
}

/// Encodes the window into `path`; returns (rows, bytes, sha256 hex).
async fn write_parquet(
    ctx: &DeliveryContext<'_>,
    provenance: &FileProvenance,
    path: &std::path::Path,
    mut batches: BatchStream,
) -> Result<(u64, u64, String)> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::unexpected(format!("cannot create staging file {}", path.display())).with_source(e))?;
    let sink = HashingFile {
        file: tokio::io::BufWriter::with_capacity(1 << 20, file),
        sha256: Sha256::new(),
        bytes: 0,
    };
    let props = crate::encode::parquet::writer_properties(provenance, ctx.schema);
    let export = ctx.schema.export_arrow_schema();
    let mut writer = AsyncArrowWriter::try_new(sink, export.clone(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = crate::extract::with_op_column(batch?, &export)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    writer.finish().await?;
    let sink = writer.into_inner();
    Ok((rows, sink.bytes, hex::encode(sink.sha256.finalize())))
}

#[async_trait]
impl Destination for DatabricksDestination {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Databricks
    }

    /// Deletes land in the raw table as `_op = 'D'` rows; the MERGE applies them.
    fn exports_op(&self) -> bool {
        true
    }

    /// The warehouse exists (looked up, not started), and the staging volume or external
    /// location takes a write and a delete.
    async fn check(&self) -> Result<()> {
        self.client.warehouse_state().await?;
        let id = uuid::Uuid::new_v4();
        match &self.staging {
            Staging::Volume { root } => {
                let probe = format!("{root}/_check/{id}");
                self.client
                    .upload(&probe, UploadBody::Bytes(Bytes::from_static(b"ok")))
                    .await?;
                self.client.delete(&probe).await
            }
            Staging::External { root, store, prefix } => {
                let key = ObjectPath::from_iter(
                    prefix
                        .parts()
                        .map(|p| p.as_ref().to_string())
                        .chain(["_check".into(), id.to_string()]),
                );
                let what = format!("writing a probe to the external location {root}");
                store
                    .put(&key, Bytes::from_static(b"ok").into())
                    .await
                    .map_err(|e| crate::deliver::object::classify(&what, e))?;
                store
                    .delete(&key)
                    .await
                    .map_err(|e| crate::deliver::object::classify(&what, e))
            }
        }
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>, batches: BatchStream) -> Result<Delivered> {
        let names = TableNames::new(&self.cfg.catalog, &self.cfg.schema, ctx.schema);
        let ddl_statements = self.ensure_tables(ctx.schema).await?;
        let provenance = FileProvenance {
            table: ctx.schema.table.name().to_string(),
            schema_version: ctx.schema.version,
            organization_id: ctx.organization_id,
            window_start: ctx.window_start,
            window_end: ctx.window_end,
            delivery_id: ctx.delivery_id,
        };
        let local = tempfile::Builder::new()
            .prefix("tidemark-databricks-")
            .suffix(".parquet")
            .tempfile()
            .map_err(|e| Error::unexpected("cannot create a local staging file").with_source(e))?;
        let (rows, bytes, sha256) = write_parquet(ctx, &provenance, local.path(), batches).await?;
        let plain = |quoted: &str| quoted.replace('`', "");
        let mut receipt = serde_json::json!({
            "kind": DestinationKind::Databricks.label(),
            "host": self.cfg.host,
            "warehouse_id": self.cfg.warehouse_id,
            "raw_table": plain(&names.raw),
            "analyst_table": plain(&names.analyst),
            "rows": rows,
            "ddl_statement_ids": ddl_statements,
            "provenance": provenance,
        });
        if rows == 0 {
            receipt["skipped"] = "empty window: nothing staged or loaded".into();
            return Ok(Delivered {
                rows,
                bytes: 0,
                receipt,
            });
        }

        let directory = self.staging_directory(ctx.schema);
        let file_name = format!("{}.parquet", ctx.delivery_id);
        let staged = format!("{directory}/{file_name}");
        self.stage(ctx.schema, &file_name, local.path(), bytes).await?;
        drop(local);

        ctx.fence.ensure().await?;
        let copy_sql = ddl::copy_into(&names, ctx.schema, &directory, &file_name, ctx.delivery_id);
        let copy = self
            .client
            .execute(&copy_sql, &format!("COPY INTO {} from {staged}", plain(&names.raw)))
            .await?;
        tracing::debug!(statement_id = %copy.statement_id, table = %names.raw, "COPY INTO done.");

        ctx.fence.ensure().await?;
        let merge_sql = ddl::merge(&names, ctx.schema, ctx.delivery_id);
        let merge = self
            .client
            .execute(&merge_sql, &format!("MERGE INTO {}", plain(&names.analyst)))
            .await?;

        let deleted = if self.cfg.keep_staged_files.unwrap_or(false) {
            false
        } else {
            match self.unstage(ctx.schema, &file_name).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(path = %staged, error = %e, "Deleting a staged file failed; it stays in the volume.");
                    false
                }
            }
        };
        receipt["staged_file"] = staged.into();
        receipt["staging"] = match self.staging {
            Staging::Volume { .. } => "volume",
            Staging::External { .. } => "external_location",
        }
        .into();
        receipt["staged_file_deleted"] = deleted.into();
        receipt["bytes"] = bytes.into();
        receipt["sha256"] = sha256.into();
        receipt["copy_into"] = copy.first_row_json();
        receipt["merge"] = merge.first_row_json();
        Ok(Delivered { rows, bytes, receipt })
    }
}
