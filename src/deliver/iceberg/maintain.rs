//! `tidemark iceberg maintain`: table health for the tables of one `ICEBERG_S3` destination.
//!
//! What it does, per table:
//! - **expires snapshots** older than the cutoff (iceberg 0.10.1 `expire_snapshots`), except
//!   the current one and every snapshot whose delivery is not `delivered` in the outbox: a
//!   delivery that may still be retried must find its snapshot, or it would commit twice;
//! - **deletes the manifest lists** of the expired snapshots, and manifests only they
//!   referenced (with fast-append tables there are none: every manifest stays in the current
//!   snapshot);
//! - **deletes old table-metadata files** (`*.metadata.json`) that are neither current nor in the
//!   metadata log and older than the cutoff (and at least an hour old, so a commit in flight is
//!   never touched);
//! - **reports** files, bytes, average file size and manifests of the current snapshot.
//!
//! What it cannot do: rewrite small data files or manifests. iceberg 0.10.1 has no
//! rewrite/replace/overwrite commit (only `fast_append`, `expire_snapshots` and table updates),
//! so compaction needs an engine that has one; the report names the command
//! (docs/destinations/iceberg.md). Data files are never deleted here: appends never orphan
//! them, and files orphaned by another engine's rewrite are that engine's to expire.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use object_store::ObjectStoreExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::catalog::classify;
use super::{DELIVERY_ID_PROPERTY, IcebergDestination};
use crate::error::{Error, Result};
use crate::schema::TableSchema;

pub struct MaintainOptions {
    /// Snapshots and metadata files older than this may go.
    pub expire_older_than: chrono::Duration,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

/// What maintenance found and did for one table.
#[derive(Debug, Serialize)]
pub struct TableMaintenance {
    pub table: String,
    pub exists: bool,
    pub snapshots: usize,
    pub expired_snapshots: Vec<i64>,
    /// Old snapshots kept because their delivery is not `delivered` (delivery id, status).
    pub kept_for_retry: Vec<(String, String)>,
    pub removed_manifest_lists: usize,
    pub removed_manifests: usize,
    pub removed_metadata_files: usize,
    pub data_files: u64,
    pub records: u64,
    pub bytes: u64,
    pub average_file_bytes: u64,
    pub manifests: usize,
    pub compaction: String,
    pub dry_run: bool,
}

/// Files of this size or more are not worth compacting.
const SMALL_FILE_BYTES: u64 = 64 * 1024 * 1024;

impl IcebergDestination {
    pub async fn maintain(
        &self,
        control: &PgPool,
        schemas: &[Arc<TableSchema>],
        options: &MaintainOptions,
    ) -> Result<Vec<TableMaintenance>> {
        let catalog = self.catalog().await?;
        let now = Utc::now();
        let cutoff = now - options.expire_older_than;
        let mut reports = Vec::new();
        for schema in schemas {
            let ident = self.table_ident(schema);
            let mut report = TableMaintenance {
                table: ident.to_string(),
                exists: false,
                snapshots: 0,
                expired_snapshots: vec![],
                kept_for_retry: vec![],
                removed_manifest_lists: 0,
                removed_manifests: 0,
                removed_metadata_files: 0,
                data_files: 0,
                records: 0,
                bytes: 0,
                average_file_bytes: 0,
                manifests: 0,
                compaction: String::new(),
                dry_run: options.dry_run,
            };
            let table = match catalog.load_table(&ident).await {
                Ok(t) => t,
                Err(_) if !catalog.table_exists(&ident).await.unwrap_or(true) => {
                    reports.push(report);
                    continue;
                }
                Err(e) => return Err(classify(format!("cannot load Iceberg table {ident}"), e)),
            };
            report.exists = true;
            report.snapshots = table.metadata().snapshots().len();

            let (expire, kept) = self.expirable(control, &table, cutoff).await?;
            report.kept_for_retry = kept;
            report.expired_snapshots = expire.clone();
            let table = if !expire.is_empty() && !options.dry_run {
                let after = self.expire(&table, &expire).await?;
                let (lists, manifests) = self.remove_expired_manifests(&table, &after, &expire).await?;
                report.removed_manifest_lists = lists;
                report.removed_manifests = manifests;
                after
            } else {
                table
            };
            report.removed_metadata_files = self
                .remove_old_metadata(&table, cutoff.min(now - chrono::Duration::hours(1)), options.dry_run)
                .await?;

            if let Some(current) = table.metadata().current_snapshot() {
                let total = |k: &str| {
                    current
                        .summary()
                        .additional_properties
                        .get(k)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                report.data_files = total("total-data-files");
                report.records = total("total-records");
                report.bytes = total("total-files-size");
                report.average_file_bytes = report.bytes.checked_div(report.data_files).unwrap_or(0);
                report.manifests = table
                    .manifest_list_reader(current)
                    .load()
                    .await
                    .map_err(|e| classify(format!("cannot read the manifest list of {ident}"), e))?
                    .entries()
                    .len();
            }
            report.compaction = if report.data_files > 1 && report.average_file_bytes < SMALL_FILE_BYTES {
                format!(
                    "{} data files averaging {} KiB in {} manifests: compact with an engine that can rewrite \
                     (iceberg-rust 0.10.1 cannot), e.g. Spark: CALL <catalog>.system.rewrite_data_files(table => '{ident}', \
                     where => 'updated_at < current_date()'); CALL <catalog>.system.rewrite_manifests('{ident}')",
                    report.data_files,
                    report.average_file_bytes / 1024,
                    report.manifests
                )
            } else {
                "no compaction needed".to_string()
            };
            reports.push(report);
        }
        Ok(reports)
    }

    /// Snapshots older than `cutoff` that may be expired, and the old ones kept because their
    /// delivery could still be retried.
    async fn expirable(
        &self,
        control: &PgPool,
        table: &Table,
        cutoff: DateTime<Utc>,
    ) -> Result<(Vec<i64>, Vec<(String, String)>)> {
        let metadata = table.metadata();
        let current = metadata.current_snapshot_id();
        // Heads of branches and tags (0.10.1 has no accessor for the refs; the metadata JSON
        // has them): expiring one is an error.
        let heads: HashSet<i64> = serde_json::to_value(metadata)
            .ok()
            .and_then(|m| m.get("refs").and_then(|r| r.as_object()).cloned())
            .map(|refs| refs.values().filter_map(|r| r["snapshot-id"].as_i64()).collect())
            .unwrap_or_default();
        let old: Vec<_> = metadata
            .snapshots()
            .filter(|s| s.timestamp_ms() < cutoff.timestamp_millis())
            .filter(|s| Some(s.snapshot_id()) != current && !heads.contains(&s.snapshot_id()))
            .collect();
        let ids: Vec<Uuid> = old
            .iter()
            .filter_map(|s| s.summary().additional_properties.get(DELIVERY_ID_PROPERTY))
            .filter_map(|v| v.parse().ok())
            .collect();
        let statuses: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, status::text FROM warehouse_deliveries WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(control)
                .await
                .map_err(|e| Error::postgres("cannot read delivery states", e))?;
        let mut expire = Vec::new();
        let mut kept = Vec::new();
        for s in old {
            let delivery = s
                .summary()
                .additional_properties
                .get(DELIVERY_ID_PROPERTY)
                .and_then(|v| v.parse::<Uuid>().ok());
            // A delivery that is not in the outbox (any more) can never be retried.
            match delivery.and_then(|d| statuses.iter().find(|(id, _)| *id == d)) {
                Some((id, status)) if status != "delivered" => kept.push((id.to_string(), status.clone())),
                _ => expire.push(s.snapshot_id()),
            }
        }
        Ok((expire, kept))
    }

    async fn expire(&self, table: &Table, ids: &[i64]) -> Result<Table> {
        let catalog = self.catalog().await?;
        let ident = table.identifier().clone();
        let tx = Transaction::new(table);
        tx.expire_snapshots()
            .expire_snapshot_ids(ids.iter().copied())
            // By id alone: no age-based selection on top of ours.
            .expire_older_than_ms(0)
            .apply(tx)
            .map_err(|e| classify(format!("cannot expire snapshots of {ident}"), e))?
            .commit(catalog.as_ref())
            .await
            .map_err(|e| classify(format!("cannot expire snapshots of {ident}"), e))
    }

    /// Deletes the manifest lists of the `expired` snapshots of `before`, and the manifests
    /// they list that no snapshot of `after` (the table once they expired) references.
    async fn remove_expired_manifests(&self, before: &Table, after: &Table, expired: &[i64]) -> Result<(usize, usize)> {
        let ident = after.identifier().clone();
        let mut referenced: HashSet<String> = HashSet::new();
        for s in after.metadata().snapshots() {
            let list = after
                .manifest_list_reader(s)
                .load()
                .await
                .map_err(|e| classify(format!("cannot read a manifest list of {ident}"), e))?;
            referenced.extend(list.entries().iter().map(|m| m.manifest_path.clone()));
        }
        let kept_lists: HashSet<&str> = after.metadata().snapshots().map(|s| s.manifest_list()).collect();
        let mut lists = 0;
        let mut manifests = 0;
        for id in expired {
            let Some(s) = before.metadata().snapshot_by_id(*id) else {
                continue;
            };
            let list = before
                .manifest_list_reader(s)
                .load()
                .await
                .map_err(|e| classify(format!("cannot read a manifest list of {ident}"), e))?;
            for m in list.entries() {
                if referenced.insert(m.manifest_path.clone()) {
                    self.delete_quietly(&m.manifest_path).await;
                    manifests += 1;
                }
            }
            if !kept_lists.contains(s.manifest_list()) {
                self.delete_quietly(s.manifest_list()).await;
                lists += 1;
            }
        }
        Ok((lists, manifests))
    }

    async fn remove_old_metadata(&self, table: &Table, cutoff: DateTime<Utc>, dry_run: bool) -> Result<usize> {
        let metadata = table.metadata();
        let mut keep: HashSet<String> = metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone())
            .collect();
        if let Some(current) = table.metadata_location() {
            keep.insert(current.to_string());
        }
        let keep: HashSet<String> = keep
            .iter()
            .filter_map(|k| self.storage.path(k).ok())
            .map(|p| p.to_string())
            .collect();
        let dir = self
            .storage
            .path(&format!("{}/metadata", metadata.location().trim_end_matches('/')))
            .map_err(|e| classify(format!("invalid location of {}", table.identifier()), e))?;
        let listed: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| super::super::object::classify(&format!("cannot list {dir}"), e))?;
        let mut removed = 0;
        for meta in listed {
            let name = meta.location.to_string();
            if name.ends_with(".metadata.json") && !keep.contains(&name) && meta.last_modified < cutoff {
                if !dry_run {
                    self.store
                        .delete(&meta.location)
                        .await
                        .map_err(|e| super::super::object::classify(&format!("cannot delete {name}"), e))?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn delete_quietly(&self, location: &str) {
        if let Ok(path) = self.storage.path(location)
            && let Err(e) = self.store.delete(&path).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(file = %location, error = %e, "Cannot delete an expired metadata file.");
        }
    }
}
