//! `ICEBERG_S3`: each window becomes one Iceberg snapshot of the table
//! `<namespace>.<table>_v<major>`, written with iceberg's own writer stack (Parquet, zstd) on
//! the crate's object store, and committed through the configured catalog (SQL on Postgres by
//! default, REST, or Glue with the `iceberg-glue` feature).
//!
//! The table keeps every delivered row version (append-only history, partitioned by
//! `organization_id` and `day(updated_at)`); the newest version per `id` is a query
//! (`docs/destinations/iceberg.md` has it for DuckDB, Spark, Trino). iceberg 0.10.1 can only
//! `fast_append`, so there is no in-table upsert.
//!
//! Exactly once per delivery id: every snapshot's summary carries `tidemark.delivery-id`.
//! Before writing, a delivery looks for its id in the table's snapshots and, if an earlier
//! attempt already committed, reports that snapshot instead of committing again. Data files get
//! unique names per attempt, so an attempt that dies before its commit leaves only unreferenced
//! files (deleted when the failure is seen, else left for orphan-file cleanup). The commit comes
//! right after [`Fence::ensure`](super::Fence::ensure); a failed commit is checked by reloading
//! the table (the snapshot may have landed although the reply was lost).

mod catalog;
mod config;
pub mod ddl;
mod maintain;
mod storage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat, PartitionKey, SnapshotRef};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultLocationGenerator, FileNameGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use tokio::sync::OnceCell;

pub use config::{CatalogConfig, IcebergConfig};
pub use maintain::{MaintainOptions, TableMaintenance};

use super::{Delivered, DeliveryContext, Destination};
use crate::control::destinations::DestinationKind;
use crate::encode::{FileProvenance, Format};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::BatchStream;
use crate::schema::TableSchema;
use catalog::{S3Settings, classify};
use storage::ObjectStorage;

/// Snapshot summary key carrying the delivery id (the exactly-once marker).
pub const DELIVERY_ID_PROPERTY: &str = "tidemark.delivery-id";

pub struct IcebergDestination {
    config: IcebergConfig,
    /// The warehouse location without a trailing slash.
    warehouse: String,
    store: Arc<dyn ObjectStore>,
    storage: ObjectStorage,
    namespace: NamespaceIdent,
    catalog: OnceCell<Arc<dyn Catalog>>,
}

pub fn build(config: &serde_json::Value) -> Result<Arc<dyn Destination>> {
    Ok(Arc::new(IcebergDestination::from_config(config)?))
}

impl IcebergDestination {
    pub fn from_config(value: &serde_json::Value) -> Result<IcebergDestination> {
        let kind = DestinationKind::IcebergS3;
        let cfg: IcebergConfig = serde_json::from_value(value.clone())
            .map_err(|e| Error::config(format!("invalid {kind} configuration: {e}")))?;
        let warehouse = cfg.warehouse.trim_end_matches('/').to_string();
        let url = url::Url::parse(&warehouse).map_err(|e| {
            Error::config(format!(
                "invalid {kind} warehouse '{}': {e}; expected s3://bucket/prefix or file:///dir",
                cfg.warehouse
            ))
        })?;
        let root = match url.scheme() {
            "s3" => format!("s3://{}/", url.host_str().unwrap_or_default()),
            "file" => format!("{warehouse}/"),
            other => {
                return Err(Error::config(format!(
                    "invalid {kind} warehouse '{}': unsupported scheme '{other}'; use s3:// or file://",
                    cfg.warehouse
                )));
            }
        };
        if cfg.namespace.is_empty() || cfg.namespace.contains('.') {
            return Err(Error::config(format!(
                "invalid {kind} namespace '{}': one non-empty level without dots",
                cfg.namespace
            )));
        }
        // The object store of PARQUET_S3, built from the same settings (one S3 client, one
        // credential chain). For file://, it is rooted at the warehouse directory.
        let mut object = serde_json::json!({
            "url": warehouse,
            "allow_http": cfg.allow_http,
        });
        for (key, v) in [
            ("endpoint", serde_json::to_value(&cfg.endpoint)),
            ("region", serde_json::to_value(&cfg.region)),
            ("path_style", serde_json::to_value(cfg.path_style)),
            ("access_key_id", serde_json::to_value(&cfg.access_key_id)),
            ("secret_access_key", serde_json::to_value(&cfg.secret_access_key)),
            ("session_token", serde_json::to_value(&cfg.session_token)),
            (
                "request_timeout_seconds",
                serde_json::to_value(cfg.request_timeout_seconds),
            ),
            ("max_retries", serde_json::to_value(cfg.max_retries)),
        ] {
            let v = v.map_err(|e| Error::unexpected(format!("cannot re-encode {key}: {e}")))?;
            if !v.is_null() {
                object[key] = v;
            }
        }
        let objects = super::object::ObjectDestination::from_config(kind, Format::Parquet, &object)?;
        let store = objects.store();
        let storage = ObjectStorage::new(root, store.clone());
        Ok(IcebergDestination {
            namespace: NamespaceIdent::new(cfg.namespace.clone()),
            config: cfg,
            warehouse,
            store,
            storage,
            catalog: OnceCell::new(),
        })
    }

    /// The catalog, connected on first use (and again after a failed attempt).
    pub async fn catalog(&self) -> Result<Arc<dyn Catalog>> {
        self.catalog
            .get_or_try_init(|| async {
                let s3 = self.s3_settings()?;
                catalog::connect(&self.config.catalog, &self.warehouse, self.storage.clone(), &s3).await
            })
            .await
            .cloned()
    }

    fn s3_settings(&self) -> Result<S3Settings> {
        let keys = match (&self.config.access_key_id, &self.config.secret_access_key) {
            (Some(id), Some(secret)) => Some((
                id.resolve()?.expose().to_string(),
                secret.resolve()?.expose().to_string(),
                match &self.config.session_token {
                    Some(t) => Some(t.resolve()?.expose().to_string()),
                    None => None,
                },
            )),
            _ => None,
        };
        Ok(S3Settings {
            region: self.config.region.clone(),
            keys,
        })
    }

    pub fn namespace(&self) -> &NamespaceIdent {
        &self.namespace
    }

    /// The object store data and metadata files live in (rooted at the bucket, or at the
    /// warehouse directory for `file://`).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The data files of the current snapshot of `schema`'s table, as paths in
    /// [`Self::store`]: exactly the files the table holds (an attempt's uncommitted files and
    /// orphans are not among them). `None` when the table does not exist yet.
    pub async fn current_files(&self, schema: &TableSchema) -> Result<Option<Vec<object_store::path::Path>>> {
        let catalog = self.catalog().await?;
        let ident = self.table_ident(schema);
        let exists = catalog
            .table_exists(&ident)
            .await
            .map_err(|e| catalog::classify(format!("cannot look up {ident}"), e))?;
        if !exists {
            return Ok(None);
        }
        let table = catalog
            .load_table(&ident)
            .await
            .map_err(|e| catalog::classify(format!("cannot load {ident}"), e))?;
        if table.metadata().current_snapshot().is_none() {
            return Ok(Some(Vec::new()));
        }
        let scan = table
            .scan()
            .select_all()
            .build()
            .map_err(|e| catalog::classify(format!("cannot plan a scan of {ident}"), e))?;
        let mut tasks = scan
            .plan_files()
            .await
            .map_err(|e| catalog::classify(format!("cannot list the data files of {ident}"), e))?;
        let mut files = Vec::new();
        while let Some(task) = futures::StreamExt::next(&mut tasks).await {
            let task = task.map_err(|e| catalog::classify(format!("cannot list the data files of {ident}"), e))?;
            let path = self
                .storage
                .path(task.data_file_path())
                .map_err(|e| catalog::classify(format!("data file of {ident} outside the warehouse"), e))?;
            files.push(path);
        }
        files.sort();
        files.dedup();
        Ok(Some(files))
    }

    pub fn table_ident(&self, schema: &TableSchema) -> TableIdent {
        TableIdent::new(self.namespace.clone(), ddl::table_name(schema))
    }

    /// `sql:<name>`, `rest:<uri>` or `glue`, for receipts and messages (never credentials).
    fn catalog_label(&self) -> String {
        match &self.config.catalog {
            CatalogConfig::Sql { name, .. } => format!("sql:{name}"),
            CatalogConfig::Rest { uri, .. } => format!("rest:{uri}"),
            CatalogConfig::Glue { .. } => "glue".to_string(),
        }
    }

    /// Loads the table of `schema`, creating the namespace and table when missing, and
    /// evolving it when the published schema appends columns (a new minor version).
    pub async fn ensure_table(&self, catalog: &dyn Catalog, schema: &TableSchema) -> Result<Table> {
        let ident = self.table_ident(schema);
        let table = match catalog.load_table(&ident).await {
            Ok(t) => t,
            Err(e)
                if e.kind() == iceberg::ErrorKind::TableNotFound
                    || e.kind() == iceberg::ErrorKind::NamespaceNotFound =>
            {
                self.create_table(catalog, schema, &ident).await?
            }
            // Not every catalog says "not found" in the error kind (Glue: an SDK error).
            Err(e) => match catalog.table_exists(&ident).await {
                Ok(false) => self.create_table(catalog, schema, &ident).await?,
                _ => return Err(classify(format!("cannot load Iceberg table {ident}"), e)),
            },
        };
        match ddl::plan_schema(&ident.to_string(), table.metadata().current_schema(), schema)? {
            ddl::SchemaPlan::Matches => Ok(table),
            ddl::SchemaPlan::Append(columns) => {
                let names: Vec<_> = columns.iter().map(|c| c.name.clone()).collect();
                let tx = Transaction::new(&table);
                let mut action = tx.update_schema();
                for c in &columns {
                    // Element ids are assigned by the schema update (next after last-column-id).
                    let ty = ddl::iceberg_type(c.ty, 0);
                    action = action.add_column(
                        iceberg::transaction::AddColumn::builder()
                            .name(c.name.clone())
                            .field_type(ty)
                            .doc(c.description.clone())
                            .build(),
                    );
                }
                let table = action
                    .apply(tx)
                    .map_err(|e| classify(format!("cannot add columns {names:?} to {ident}"), e))?
                    .commit(catalog)
                    .await
                    .map_err(|e| classify(format!("cannot add columns {names:?} to {ident}"), e))?;
                tracing::info!(table = %ident, columns = ?names, "Iceberg table schema evolved.");
                Ok(table)
            }
        }
    }

    async fn create_table(&self, catalog: &dyn Catalog, schema: &TableSchema, ident: &TableIdent) -> Result<Table> {
        match catalog.create_namespace(&self.namespace, HashMap::new()).await {
            Ok(_) => {}
            Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
            // Another worker may have created it at the same moment (the SQL catalog reports
            // that as a unique violation, not as "already exists").
            Err(_) if catalog.namespace_exists(&self.namespace).await.unwrap_or(false) => {}
            Err(e) => {
                return Err(classify(
                    format!("cannot create Iceberg namespace {}", self.namespace.join(".")),
                    e,
                ));
            }
        }
        let creation = TableCreation::builder()
            .name(ident.name().to_string())
            .schema(ddl::iceberg_schema(schema)?)
            .partition_spec(ddl::partition_spec(schema)?)
            .properties(ddl::table_properties(schema))
            .build();
        match catalog.create_table(&self.namespace, creation).await {
            Ok(t) => {
                tracing::info!(table = %ident, "Iceberg table created.");
                Ok(t)
            }
            // Another worker created it first (reported as "already exists" or, by the SQL
            // catalog in a race, as a unique violation).
            Err(e) => match catalog.load_table(ident).await {
                Ok(t) => Ok(t),
                Err(_)
                    if matches!(self.config.catalog, CatalogConfig::Glue { .. })
                        && e.kind() == iceberg::ErrorKind::FeatureUnsupported =>
                {
                    // iceberg-catalog-glue 0.10.1 maps no timestamptz column to a Glue type (on
                    // create, register and every commit), and every published table has one.
                    Err(Error::new(
                        ErrorKind::DestinationRejected,
                        format!(
                            "cannot create Iceberg table {ident} in AWS Glue: iceberg-catalog-glue 0.10.1 cannot store \
                             timestamptz columns in Glue; use the sql or rest catalog (docs/destinations/iceberg.md)"
                        ),
                    )
                    .with_source(e))
                }
                Err(_) => Err(classify(format!("cannot create Iceberg table {ident}"), e)),
            },
        }
    }

    /// The receipt part shared by fresh and already-committed deliveries.
    fn receipt(&self, ident: &TableIdent, table: &Table, snapshot: &SnapshotRef) -> serde_json::Value {
        let summary = &snapshot.summary().additional_properties;
        serde_json::json!({
            "kind": DestinationKind::IcebergS3.label(),
            "catalog": self.catalog_label(),
            "warehouse": self.warehouse,
            "table": ident.to_string(),
            "snapshot_id": snapshot.snapshot_id(),
            "sequence_number": snapshot.sequence_number(),
            "metadata_location": table.metadata_location(),
            "added_records": summary.get("added-records").and_then(|v| v.parse::<u64>().ok()),
            "added_data_files": summary.get("added-data-files").and_then(|v| v.parse::<u64>().ok()),
            "added_files_size": summary.get("added-files-size").and_then(|v| v.parse::<u64>().ok()),
        })
    }
}

/// The snapshot an earlier attempt of `delivery_id` committed, if any.
pub fn find_delivery(table: &Table, delivery_id: uuid::Uuid) -> Option<SnapshotRef> {
    let id = delivery_id.to_string();
    table
        .metadata()
        .snapshots()
        .find(|s| s.summary().additional_properties.get(DELIVERY_ID_PROPERTY) == Some(&id))
        .cloned()
}

/// Data file names: `<window start>-<delivery id>-<attempt>-<n>.parquet`. The delivery and
/// window make files traceable; the attempt part keeps a retry from touching an earlier
/// attempt's files.
#[derive(Clone)]
struct DeliveryFileNames {
    prefix: String,
    count: Arc<AtomicU64>,
}

impl FileNameGenerator for DeliveryFileNames {
    fn generate_file_name(&self) -> String {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:05}.{}", self.prefix, DataFileFormat::Parquet)
    }
}

/// The table's default data locations, remembering every file it hands out so a failed
/// attempt can remove what it wrote.
#[derive(Clone)]
struct TrackedLocations {
    inner: DefaultLocationGenerator,
    written: Arc<Mutex<Vec<String>>>,
}

impl LocationGenerator for TrackedLocations {
    fn generate_location(&self, partition_key: Option<&PartitionKey>, file_name: &str) -> String {
        let location = self.inner.generate_location(partition_key, file_name);
        self.written.lock().expect("not poisoned").push(location.clone());
        location
    }
}

#[async_trait]
impl Destination for IcebergDestination {
    fn kind(&self) -> DestinationKind {
        DestinationKind::IcebergS3
    }

    async fn check(&self) -> Result<()> {
        let catalog = self.catalog().await?;
        catalog
            .namespace_exists(&self.namespace)
            .await
            .map_err(|e| classify(format!("cannot reach the Iceberg catalog {}", self.catalog_label()), e))?;
        let probe = format!("{}/_tidemark/check-{}", self.warehouse, uuid::Uuid::new_v4());
        let path = self
            .storage
            .path(&probe)
            .map_err(|e| classify(format!("invalid warehouse {}", self.warehouse), e))?;
        self.store
            .put(&path, bytes::Bytes::from_static(b"ok").into())
            .await
            .map_err(|e| super::object::classify(&format!("cannot write to the warehouse {}", self.warehouse), e))?;
        self.store
            .delete(&path)
            .await
            .map_err(|e| super::object::classify(&format!("cannot delete from the warehouse {}", self.warehouse), e))?;
        Ok(())
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>, mut batches: BatchStream) -> Result<Delivered> {
        let catalog = self.catalog().await?;
        let ident = self.table_ident(ctx.schema);
        let table = self.ensure_table(catalog.as_ref(), ctx.schema).await?;

        // Exactly once: an earlier attempt of this delivery already committed.
        if let Some(snapshot) = find_delivery(&table, ctx.delivery_id) {
            let mut rows = 0u64;
            while let Some(batch) = batches.next().await {
                rows += batch?.num_rows() as u64;
            }
            tracing::info!(delivery = %ctx.delivery_id, table = %ident, snapshot = snapshot.snapshot_id(), "Delivery already committed; reporting its snapshot.");
            let mut receipt = self.receipt(&ident, &table, &snapshot);
            receipt["already_committed"] = true.into();
            receipt["extracted_rows"] = rows.into();
            let bytes = receipt["added_files_size"].as_u64().unwrap_or(0);
            return Ok(Delivered { rows, bytes, receipt });
        }

        let written = Arc::new(Mutex::new(Vec::new()));
        let files = match self.write(ctx, &table, &mut batches, written.clone()).await {
            Ok(files) => files,
            Err(e) => {
                self.remove_files(&written).await;
                return Err(e);
            }
        };
        let rows: u64 = files.iter().map(|f| f.record_count()).sum();
        let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
        if files.is_empty() {
            // Every row of the window moved on since planning: nothing to make visible.
            return Ok(Delivered {
                rows: 0,
                bytes: 0,
                receipt: serde_json::json!({
                    "kind": DestinationKind::IcebergS3.label(),
                    "catalog": self.catalog_label(),
                    "table": ident.to_string(),
                    "snapshot_id": null,
                    "note": "no rows in the window; nothing committed",
                }),
            });
        }
        let file_receipts: Vec<_> = files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "path": f.file_path(),
                    "records": f.record_count(),
                    "bytes": f.file_size_in_bytes(),
                    // `organization_id=…/updated_at_day=…`, the partition path of the file.
                    "partition": f
                        .file_path()
                        .rsplit_once("/data/")
                        .and_then(|(_, rest)| rest.rsplit_once('/'))
                        .map(|(dir, _)| dir),
                })
            })
            .collect();

        let properties = HashMap::from([
            (DELIVERY_ID_PROPERTY.to_string(), ctx.delivery_id.to_string()),
            ("tidemark.organization-id".to_string(), ctx.organization_id.to_string()),
            ("tidemark.window-start".to_string(), ctx.window_start.to_rfc3339()),
            ("tidemark.window-end".to_string(), ctx.window_end.to_rfc3339()),
            ("tidemark.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]);
        let tx = Transaction::new(&table);
        let tx = tx
            .fast_append()
            // The duplicate check reads every manifest of the table on every commit (one per
            // delivery so far: quadratic over a backfill). Our file names carry a fresh attempt
            // id, so they cannot already be in the table.
            .with_check_duplicate(false)
            .set_snapshot_properties(properties)
            .add_data_files(files)
            .apply(tx)
            .map_err(|e| classify(format!("cannot prepare the commit to {ident}"), e))?;

        if let Err(e) = ctx.fence.ensure().await {
            self.remove_files(&written).await;
            return Err(e);
        }
        let committed = match tx.commit(catalog.as_ref()).await {
            Ok(t) => t,
            Err(e) => {
                // The reply may have been lost after the catalog took the commit: look.
                let failure = classify(format!("commit to Iceberg table {ident} failed"), e);
                match catalog.load_table(&ident).await {
                    Ok(t) if find_delivery(&t, ctx.delivery_id).is_some() => t,
                    Ok(_) => {
                        self.remove_files(&written).await;
                        return Err(failure);
                    }
                    // Unknown outcome: keep the files (a landed snapshot may reference them).
                    Err(_) => return Err(failure),
                }
            }
        };
        let snapshot = find_delivery(&committed, ctx.delivery_id).ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the commit to {ident} succeeded but its snapshot is not in the table"),
            )
        })?;
        let mut receipt = self.receipt(&ident, &committed, &snapshot);
        receipt["already_committed"] = false.into();
        receipt["records"] = rows.into();
        receipt["data_files"] = file_receipts.into();
        Ok(Delivered { rows, bytes, receipt })
    }
}

impl IcebergDestination {
    /// Streams the window into Parquet data files of the table (one open file per partition;
    /// a partition's file rolls over at the target size). Returns the closed files.
    async fn write(
        &self,
        ctx: &DeliveryContext<'_>,
        table: &Table,
        batches: &mut BatchStream,
        written: Arc<Mutex<Vec<String>>>,
    ) -> Result<Vec<DataFile>> {
        let ident = self.table_ident(ctx.schema);
        let rejected = |what: &str, e: iceberg::Error| classify(format!("{what} for {ident}"), e);
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(&schema).map_err(|e| rejected("cannot map the table schema", e))?,
        );
        let provenance = FileProvenance {
            table: ctx.schema.table.name().to_string(),
            schema_version: ctx.schema.version,
            organization_id: ctx.organization_id,
            window_start: ctx.window_start,
            window_end: ctx.window_end,
            delivery_id: ctx.delivery_id,
        };
        let props = crate::encode::parquet::writer_properties(&provenance, ctx.schema);
        let target_size = self
            .config
            .target_file_size_bytes
            .or_else(|| {
                metadata
                    .properties()
                    .get("write.target-file-size-bytes")
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(512 * 1024 * 1024);
        let locations = TrackedLocations {
            inner: DefaultLocationGenerator::new(metadata).map_err(|e| rejected("cannot place data files", e))?,
            written,
        };
        let names = DeliveryFileNames {
            prefix: format!(
                "{}-{}-{}",
                ctx.window_start.format("%Y%m%dT%H%M%SZ"),
                ctx.delivery_id,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            count: Arc::new(AtomicU64::new(0)),
        };
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            target_size,
            table.file_io().clone(),
            locations,
            names,
        );
        let mut writer = FanoutWriter::new(DataFileWriterBuilder::new(rolling));
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            schema.clone(),
            metadata.default_partition_spec().clone(),
        )
        .map_err(|e| rejected("cannot partition", e))?;
        while let Some(batch) = batches.next().await {
            let batch = ddl::to_table_batch(&batch?, &arrow_schema, ctx.schema)?;
            for (key, part) in splitter
                .split(&batch)
                .map_err(|e| rejected("cannot partition a batch", e))?
            {
                writer
                    .write(key, part)
                    .await
                    .map_err(|e| classify(format!("writing data files of {ident} failed"), e))?;
            }
        }
        writer
            .close()
            .await
            .map_err(|e| classify(format!("completing data files of {ident} failed"), e))
    }

    /// Best-effort removal of files an attempt wrote but did not commit.
    async fn remove_files(&self, written: &Mutex<Vec<String>>) {
        let files: Vec<String> = std::mem::take(&mut *written.lock().expect("not poisoned"));
        for f in files {
            if let Ok(path) = self.storage.path(&f)
                && let Err(e) = self.store.delete(&path).await
                && !matches!(e, object_store::Error::NotFound { .. })
            {
                tracing::warn!(file = %f, error = %e, "Cannot remove an uncommitted data file; it is an orphan now.");
            }
        }
    }
}
