//! Recall: tombstones → the objects that hold the archived copies → the rows → re-hash →
//! verify against `row_sha256`; optionally restore the verified rows into the hot table.
//!
//! Tombstones are taken in `(row_updated_at, row_id)` order and grouped by the delivery that
//! proved them: one object per group, read once. The object store is built from the
//! destination's current configuration (or, once the destination is gone, from the snapshot in
//! `cold_storage_proofs`) with [`ObjectDestination::from_config`]. A Parquet object is read with
//! the `parquet` crate's async Arrow reader over object-store range requests: row groups whose
//! `updated_at` statistics exclude every wanted row are skipped, and a row filter on `id`
//! decodes only the wanted rows of the others. A JSONL object is read whole and its stored
//! lines are hashed as they are, less the trailing `_op` envelope key. The `_op` column is
//! never part of a row hash (docs/DELETES.md): objects written before and after delete
//! capture verify alike.
//!
//! A missing object, a missing row, an unreadable object or a hash mismatch becomes an error
//! record naming the object and the row; recall goes on with the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::file::statistics::Statistics;
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::ARCHIVAL_SETTING;
use super::hash::{CanonicalEncoder, sha256};
use crate::control::destinations::DestinationKind;
use crate::deliver::object::ObjectDestination;
use crate::encode::Format;
use crate::error::{Error, Result};
use crate::schema::{OP_COLUMN, OP_DELETE, OP_UPSERT, Registry, Table, TableSchema, quote_ident};

/// Which archived rows to recall.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Every tombstone of this row id.
    Id(Uuid),
    /// Every tombstone whose row `updated_at` is in `[from, to)`.
    Range { from: DateTime<Utc>, to: DateTime<Utc> },
}

#[derive(Debug, Clone)]
pub struct RecallRequest {
    pub organization_id: Uuid,
    pub table: Table,
    pub selector: Selector,
    /// Put verified rows back into the hot table (and stamp their tombstones `restored_at`).
    pub restore: bool,
}

/// One recalled row, or why it could not be recalled.
#[derive(Debug, Clone, Serialize)]
pub struct RecallRecord {
    pub id: Uuid,
    pub table: Table,
    pub updated_at: DateTime<Utc>,
    pub archived_at: DateTime<Utc>,
    /// The row was found and hashes to its tombstone's `row_sha256`.
    pub verified: bool,
    pub row_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_sha256: Option<String>,
    pub delivery_id: Option<Uuid>,
    /// `s3://bucket/key` or `file:///dir/key` of the archived copy.
    pub object: Option<String>,
    /// When the tombstone was restored (before this recall, or by it).
    pub restored_at: Option<DateTime<Utc>>,
    /// With `--restore`: whether this recall put the row back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<bool>,
    pub error: Option<String>,
    /// The canonical line (verified rows only); written raw as `"row": {...}`.
    #[serde(skip)]
    pub row: Option<Vec<u8>>,
}

impl RecallRecord {
    /// One JSON line: the record's fields, then `"row"` with the canonical line embedded as is
    /// (so keys keep their published order and values their exact text).
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("serialisable");
        if let Some(row) = &self.row {
            s.pop();
            s.push_str(",\"row\":");
            s.push_str(&String::from_utf8_lossy(row));
            s.push('}');
        }
        s
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecallSummary {
    pub tombstones: u64,
    pub verified: u64,
    pub failed: u64,
    pub restored: u64,
    pub objects: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
struct Tombstone {
    id: Uuid,
    updated_at: DateTime<Utc>,
    archived_at: DateTime<Utc>,
    sha256: Vec<u8>,
    schema_version: i32,
    delivery_id: Option<Uuid>,
    override_id: Option<Uuid>,
    override_reason: Option<String>,
    restored_at: Option<DateTime<Utc>>,
}

impl Tombstone {
    fn record(&self, table: Table) -> RecallRecord {
        RecallRecord {
            id: self.id,
            table,
            updated_at: self.updated_at,
            archived_at: self.archived_at,
            verified: false,
            row_sha256: hex::encode(&self.sha256),
            found_sha256: None,
            delivery_id: self.delivery_id,
            object: None,
            restored_at: self.restored_at,
            restored: None,
            error: None,
            row: None,
        }
    }
}

/// Where a delivery's object lives and how to open it.
struct ObjectRef {
    store: Arc<dyn ObjectStore>,
    path: Path,
    format: Format,
    display: String,
}

const PAGE: i64 = 10_000;

/// Recalls the selected rows; `emit` receives every record, verified or not. Fails only for
/// problems that concern the whole recall (control plane unreachable, restore not permitted).
pub async fn recall(
    pool: &PgPool,
    registry: &Registry,
    request: &RecallRequest,
    emit: &mut (dyn FnMut(&RecallRecord) -> Result<()> + Send),
) -> Result<RecallSummary> {
    let started = std::time::Instant::now();
    let mut summary = RecallSummary::default();
    let mut objects: HashMap<Uuid, std::result::Result<Arc<ObjectRef>, String>> = HashMap::new();
    let mut stores = StoreCache::new();
    let mut walk = Walk::new(&request.selector);
    while let Some(page) = walk.next(pool, request).await? {
        // Group by proving delivery, keeping the order of first appearance.
        let mut order: Vec<Option<Uuid>> = Vec::new();
        let mut groups: HashMap<Option<Uuid>, Vec<Tombstone>> = HashMap::new();
        for t in page {
            groups
                .entry(t.delivery_id)
                .or_insert_with(|| {
                    order.push(t.delivery_id);
                    Vec::new()
                })
                .push(t);
        }
        for delivery in order {
            let group = groups.remove(&delivery).expect("grouped");
            let mut records = match delivery {
                None => group
                    .iter()
                    .map(|t| {
                        let mut r = t.record(request.table);
                        r.error = Some(format!(
                            "row {} was archived under override {} ({}): no delivered copy exists to recall",
                            t.id,
                            t.override_id.map(|o| o.to_string()).unwrap_or_default(),
                            t.override_reason.as_deref().unwrap_or("")
                        ));
                        r
                    })
                    .collect(),
                Some(delivery_id) => {
                    let object = match objects.get(&delivery_id) {
                        Some(o) => o.clone(),
                        None => {
                            let o = open_object(pool, &mut stores, delivery_id).await?;
                            objects.insert(delivery_id, o.clone());
                            o
                        }
                    };
                    summary.objects += 1;
                    verify_group(registry, request.table, &object, &group).await
                }
            };
            if request.restore {
                restore(pool, registry, request, &group, &mut records).await?;
            }
            for r in &records {
                summary.tombstones += 1;
                if r.verified && r.error.is_none() {
                    summary.verified += 1;
                } else {
                    summary.failed += 1;
                }
                if r.restored == Some(true) {
                    summary.restored += 1;
                }
                emit(r)?;
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The selected tombstones in `(row_updated_at, row_id, archived_at)` order, a page at a time.
///
/// A time range is walked in slices of `row_updated_at`, each read with the BRIN index and
/// paged by key inside the slice; a slice that needed more than one page halves the next
/// slice, a sparse one doubles it. Every query thus reads about one page's worth of the table,
/// however large the range.
struct Walk {
    lo: DateTime<Utc>,
    width: chrono::Duration,
    after: Option<(DateTime<Utc>, Uuid, DateTime<Utc>)>,
    pages_in_slice: u32,
    done: bool,
}

type TombstoneKey = (DateTime<Utc>, Uuid, DateTime<Utc>);

impl Walk {
    fn new(selector: &Selector) -> Walk {
        Walk {
            lo: match selector {
                Selector::Range { from, .. } => *from,
                Selector::Id(_) => DateTime::<Utc>::MIN_UTC,
            },
            width: chrono::Duration::hours(1),
            after: None,
            pages_in_slice: 0,
            done: false,
        }
    }

    async fn next(&mut self, pool: &PgPool, request: &RecallRequest) -> Result<Option<Vec<Tombstone>>> {
        if self.done {
            return Ok(None);
        }
        let to = match &request.selector {
            Selector::Id(id) => {
                self.done = true;
                let page = tombstones(pool, request, Some(*id), None).await?;
                return Ok((!page.is_empty()).then_some(page));
            }
            Selector::Range { to, .. } => *to,
        };
        loop {
            if self.lo >= to {
                self.done = true;
                return Ok(None);
            }
            let hi = (self.lo + self.width).min(to);
            let page = tombstones(pool, request, None, Some((self.lo, hi, self.after))).await?;
            if page.len() as i64 == PAGE {
                let last = &page[page.len() - 1];
                self.after = Some((last.updated_at, last.id, last.archived_at));
                self.pages_in_slice += 1;
                return Ok(Some(page));
            }
            // The slice is exhausted: move on, and size the next one by how full this one was.
            if self.pages_in_slice > 0 {
                self.width = (self.width / 2).max(chrono::Duration::seconds(1));
            } else if (page.len() as i64) < PAGE / 4 {
                self.width = (self.width * 2).min(chrono::Duration::days(3650));
            }
            self.lo = hi;
            self.after = None;
            self.pages_in_slice = 0;
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
    }
}

async fn tombstones(
    pool: &PgPool,
    request: &RecallRequest,
    id: Option<Uuid>,
    slice: Option<(DateTime<Utc>, DateTime<Utc>, Option<TombstoneKey>)>,
) -> Result<Vec<Tombstone>> {
    const COLUMNS: &str = "row_id, row_updated_at, archived_at, row_sha256, schema_version, delivery_id, override_id, \
                           override_reason, restored_at";
    let rows = match (id, slice) {
        (Some(id), _) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM cold_storage_archive \
                 WHERE organization_id = $1 AND \"table\" = $2::warehouse_table AND row_id = $3 \
                 ORDER BY row_updated_at, row_id, archived_at"
            ))
            .bind(request.organization_id)
            .bind(request.table.db_label())
            .bind(id)
            .fetch_all(pool)
            .await?
        }
        (None, Some((lo, hi, after))) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM cold_storage_archive \
                 WHERE organization_id = $1 AND \"table\" = $2::warehouse_table \
                   AND row_updated_at >= coalesce($5, $3) AND row_updated_at < $4 \
                   AND ($5::timestamptz IS NULL OR (row_updated_at, row_id, archived_at) > ($5, $6, $7)) \
                 ORDER BY row_updated_at, row_id, archived_at LIMIT $8"
            ))
            .bind(request.organization_id)
            .bind(request.table.db_label())
            .bind(lo)
            .bind(hi)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(after.map(|a| a.2))
            .bind(PAGE)
            .fetch_all(pool)
            .await?
        }
        (None, None) => Vec::new(),
    };
    rows.iter()
        .map(|r| {
            Ok(Tombstone {
                id: r.try_get("row_id")?,
                updated_at: r.try_get("row_updated_at")?,
                archived_at: r.try_get("archived_at")?,
                sha256: r.try_get("row_sha256")?,
                schema_version: r.try_get("schema_version")?,
                delivery_id: r.try_get("delivery_id")?,
                override_id: r.try_get("override_id")?,
                override_reason: r.try_get("override_reason")?,
                restored_at: r.try_get("restored_at")?,
            })
        })
        .collect()
}

/// `s3://bucket/key` or `file:///dir/key`: the receipt's object key under its url's root.
fn display_object(url: &str, key: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "s3" => format!("s3://{}/{key}", u.host_str().unwrap_or("")),
        Ok(u) if u.scheme() == "file" => format!("file://{}/{key}", u.path().trim_end_matches('/')),
        _ => format!("{url} {key}"),
    }
}

/// One object-store client per destination (and kind), or why it could not be built.
type StoreCache = HashMap<(Uuid, DestinationKind), std::result::Result<Arc<dyn ObjectStore>, String>>;

/// Opens the object of a proving delivery. `Err(message)` (per delivery) when it cannot be
/// opened; `Err` of the outer result only for control-plane failures.
async fn open_object(
    pool: &PgPool,
    stores: &mut StoreCache,
    delivery_id: Uuid,
) -> Result<std::result::Result<Arc<ObjectRef>, String>> {
    let row = sqlx::query(
        "SELECT p.kind::text AS kind, p.receipt, p.destination_config, p.destination_id, w.config AS current_config \
         FROM cold_storage_proofs p LEFT JOIN warehouse_destinations w ON w.id = p.destination_id \
         WHERE p.delivery_id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Err(format!(
            "the proof of delivery {delivery_id} is not recorded in cold_storage_proofs"
        )));
    };
    let kind: String = row.try_get("kind")?;
    let destination_id: Uuid = row.try_get("destination_id")?;
    let receipt: serde_json::Value = row.try_get("receipt")?;
    let snapshot: serde_json::Value = row.try_get("destination_config")?;
    let current: Option<serde_json::Value> = row.try_get("current_config")?;
    let Some(key) = receipt.get("object_key").and_then(|k| k.as_str()) else {
        return Ok(Err(format!(
            "delivery {delivery_id} ({kind}) has no object key in its receipt: it cannot be recalled from an object store"
        )));
    };
    let url = receipt.get("url").and_then(|u| u.as_str()).unwrap_or("");
    let display = display_object(url, key);
    let kind: DestinationKind = match kind.parse() {
        Ok(k) => k,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let format = match (kind, receipt.get("format").and_then(|f| f.as_str())) {
        (DestinationKind::ParquetS3, _) | (_, Some("parquet")) => Format::Parquet,
        (DestinationKind::JsonlS3, _) | (_, Some("jsonl")) => Format::Jsonl,
        _ => {
            return Ok(Err(format!(
                "object {display} of delivery {delivery_id}: destination kind {kind} cannot be recalled in this build"
            )));
        }
    };
    let store = stores
        .entry((destination_id, kind))
        .or_insert_with(|| {
            // The current configuration (rotated credential references apply); the snapshot
            // once the destination is gone.
            let config = current.unwrap_or(snapshot);
            ObjectDestination::from_config(kind, format, &config)
                .map(|d| d.store())
                .map_err(|e| e.to_string())
        })
        .clone();
    match store {
        Ok(store) => Ok(Ok(Arc::new(ObjectRef {
            store,
            path: Path::from(key),
            format,
            display,
        }))),
        Err(e) => Ok(Err(format!(
            "cannot open the destination of object {display} (delivery {delivery_id}): {e}"
        ))),
    }
}

/// Reads the rows of `group` from their object and verifies each.
async fn verify_group(
    registry: &Registry,
    table: Table,
    object: &std::result::Result<Arc<ObjectRef>, String>,
    group: &[Tombstone],
) -> Vec<RecallRecord> {
    let mut records: Vec<RecallRecord> = group.iter().map(|t| t.record(table)).collect();
    let object = match object {
        Ok(o) => o,
        Err(message) => {
            for r in &mut records {
                r.error = Some(format!("row {}: {message}", r.id));
            }
            return records;
        }
    };
    for r in &mut records {
        r.object = Some(object.display.clone());
    }
    let version = group[0].schema_version;
    let lines = match registry.get(table, version as u32) {
        Ok(schema) => read_rows(object, &schema, group).await,
        Err(e) => Err(e.to_string()),
    };
    let lines = match lines {
        Ok(l) => l,
        Err(message) => {
            for r in &mut records {
                r.error = Some(format!("row {}: object {}: {message}", r.id, object.display));
            }
            return records;
        }
    };
    for (r, t) in records.iter_mut().zip(group) {
        let Some(candidates) = lines.get(&t.id) else {
            r.error = Some(format!(
                "row {} (updated_at {}) is missing from object {}",
                t.id,
                t.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                object.display
            ));
            continue;
        };
        match candidates.iter().find(|l| sha256(l).as_slice() == t.sha256.as_slice()) {
            Some(line) => {
                r.verified = true;
                r.row = Some(line.clone());
            }
            None => {
                r.found_sha256 = Some(hex::encode(sha256(&candidates[0])));
                r.error = Some(format!(
                    "hash mismatch: row {} in object {} hashes to {}, its tombstone says {}",
                    t.id,
                    object.display,
                    r.found_sha256.as_deref().unwrap_or(""),
                    r.row_sha256
                ));
            }
        }
    }
    records
}

/// The canonical lines of the wanted rows in the object, by id. `Err(message)` when the object
/// is missing or unreadable.
async fn read_rows(
    object: &ObjectRef,
    schema: &TableSchema,
    group: &[Tombstone],
) -> std::result::Result<HashMap<Uuid, Vec<Vec<u8>>>, String> {
    let meta = match object.store.head(&object.path).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Err("the object is missing".into()),
        Err(e) => return Err(format!("cannot read the object: {e}")),
    };
    let wanted: HashSet<Uuid> = group.iter().map(|t| t.id).collect();
    let mut out: HashMap<Uuid, Vec<Vec<u8>>> = HashMap::new();
    match object.format {
        Format::Jsonl => {
            let bytes = object
                .store
                .get(&object.path)
                .await
                .map_err(|e| format!("cannot read the object: {e}"))?
                .bytes()
                .await
                .map_err(|e| format!("cannot read the object: {e}"))?;
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Some(id) = jsonl_id(line)
                    && wanted.contains(&id)
                {
                    out.entry(id).or_default().push(without_op(line));
                }
            }
        }
        Format::Parquet => {
            let encoder = CanonicalEncoder::new(schema);
            let mut reader =
                ParquetObjectReader::new(object.store.clone(), object.path.clone()).with_file_size(meta.size);
            let unreadable = |e: parquet::errors::ParquetError| {
                format!(
                    "not a readable Parquet file of {} v{}: {e}",
                    schema.table, schema.version
                )
            };
            // Objects written since delete capture end with the `_op` envelope column, older
            // ones do not; the row hash is over the published columns either way.
            let found = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                .await
                .map_err(unreadable)?;
            let published = encoder.arrow_schema().fields().len();
            let has_op = found.schema().fields().len() == published + 1
                && found.schema().fields()[published].name() == OP_COLUMN;
            let supplied = if has_op {
                schema.export_arrow_schema()
            } else {
                encoder.arrow_schema().clone()
            };
            let metadata = ArrowReaderMetadata::try_new(
                found.metadata().clone(),
                ArrowReaderOptions::new().with_schema(supplied),
            )
            .map_err(unreadable)?;
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
            let published_only = ProjectionMask::roots(builder.parquet_schema(), 0..published);
            let row_groups = row_groups_for(builder.metadata(), group);
            let id_leaf = builder
                .parquet_schema()
                .columns()
                .iter()
                .position(|c| c.path().string() == "id")
                .ok_or("the Parquet file has no id column")?;
            let mask = ProjectionMask::leaves(builder.parquet_schema(), [id_leaf]);
            let ids: HashSet<String> = wanted.iter().map(|u| u.to_string()).collect();
            let predicate = ArrowPredicateFn::new(mask, move |batch: arrow_array::RecordBatch| {
                let col = batch.column(0).as_string::<i32>();
                Ok(BooleanArray::from_iter(
                    (0..col.len()).map(|i| Some(!col.is_null(i) && ids.contains(col.value(i)))),
                ))
            });
            let mut stream = builder
                .with_row_groups(row_groups)
                .with_projection(published_only)
                .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
                .build()
                .map_err(|e| format!("cannot read the Parquet file: {e}"))?;
            let mut buf = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| format!("cannot read the Parquet file: {e}"))?;
                encoder
                    .for_each_row(&batch, &mut buf, |_, id, _, line| {
                        out.entry(id).or_default().push(line.to_vec());
                        Ok(())
                    })
                    .map_err(|e| format!("cannot encode its rows: {e}"))?;
            }
        }
    }
    Ok(out)
}

/// A stored JSONL line without its trailing `_op` envelope key (`,"_op":"U"}` → `}`): the
/// canonical line of the published columns. Lines written before delete capture have none.
fn without_op(line: &[u8]) -> Vec<u8> {
    for op in [OP_UPSERT, OP_DELETE] {
        let suffix = format!(",\"{OP_COLUMN}\":\"{op}\"}}");
        if let Some(head) = line.strip_suffix(suffix.as_bytes()) {
            let mut canonical = head.to_vec();
            canonical.push(b'}');
            return canonical;
        }
    }
    line.to_vec()
}

/// The row id of a JSONL line: `{"id":"<uuid>",…` (published order puts `id` first), else
/// parsed.
fn jsonl_id(line: &[u8]) -> Option<Uuid> {
    const PREFIX: &[u8] = b"{\"id\":\"";
    if line.len() > PREFIX.len() + 36 && line.starts_with(PREFIX) && line[PREFIX.len() + 36] == b'"' {
        return std::str::from_utf8(&line[PREFIX.len()..PREFIX.len() + 36])
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok());
    }
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Uuid,
    }
    serde_json::from_slice::<IdOnly>(line).ok().map(|r| r.id)
}

/// Row groups whose `updated_at` statistics can hold one of the wanted rows (all of them when
/// a row group has no statistics).
fn row_groups_for(metadata: &parquet::file::metadata::ParquetMetaData, group: &[Tombstone]) -> Vec<usize> {
    let leaf = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "updated_at");
    (0..metadata.num_row_groups())
        .filter(|&i| {
            let Some(leaf) = leaf else { return true };
            match metadata.row_group(i).column(leaf).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(&min), Some(&max)) => group.iter().any(|t| {
                        let u = t.updated_at.timestamp_micros();
                        u >= min && u <= max
                    }),
                    _ => true,
                },
                _ => true,
            }
        })
        .collect()
}

/// Puts the verified, not yet restored rows of `records` back into the hot table, in one
/// transaction, and stamps their tombstones `restored_at`.
///
/// Runs with `session_replication_role = replica` for that transaction only, so that triggers
/// (like one that stamps `updated_at := now()`) do not fire and the row keeps its archived
/// `updated_at`: the restored row is byte-for-byte the archived one. That setting needs a
/// superuser, or on PostgreSQL 15+ `GRANT SET ON PARAMETER session_replication_role`.
async fn restore(
    pool: &PgPool,
    registry: &Registry,
    request: &RecallRequest,
    group: &[Tombstone],
    records: &mut [RecallRecord],
) -> Result<()> {
    // One version per row id: the newest archived one (the group is in updated_at order).
    let mut newest: HashMap<Uuid, usize> = HashMap::new();
    for (i, (r, t)) in records.iter_mut().zip(group).enumerate() {
        if !r.verified || r.error.is_some() {
            continue;
        }
        if t.restored_at.is_some() {
            r.restored = Some(false);
            continue;
        }
        newest.insert(t.id, i);
    }
    let mut by_version: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, (r, t)) in records.iter_mut().zip(group).enumerate() {
        if r.verified && r.error.is_none() && t.restored_at.is_none() {
            if newest.get(&t.id) == Some(&i) {
                by_version.entry(t.schema_version).or_default().push(i);
            } else {
                r.restored = Some(false);
                r.error = Some(format!(
                    "row {}: a newer archived version of this row is restored instead",
                    t.id
                ));
            }
        }
    }
    for (version, idx) in by_version {
        let schema = registry.get(request.table, version as u32)?;
        if !schema.is_restorable() {
            // A derived column (e.g. a label computed from a number) cannot be written back.
            let derived: Vec<&str> = schema.derived_columns().map(|c| c.name.as_str()).collect();
            for &i in &idx {
                records[i].restored = Some(false);
                records[i].error = Some(format!(
                    "row {}: archived as {} v{version}, whose column(s) {} are derived from source columns: it can be recalled and verified but not restored automatically",
                    group[i].id,
                    request.table,
                    derived.join(", ")
                ));
            }
            continue;
        }
        let mut json = Vec::with_capacity(idx.len() * 512);
        json.push(b'[');
        for (n, &i) in idx.iter().enumerate() {
            if n > 0 {
                json.push(b',');
            }
            json.extend_from_slice(records[i].row.as_deref().expect("verified rows carry their line"));
        }
        json.push(b']');
        let json = String::from_utf8(json).map_err(|_| Error::unexpected("a canonical line is not UTF-8"))?;
        let ids: Vec<Uuid> = idx.iter().map(|&i| group[i].id).collect();
        let archived: Vec<DateTime<Utc>> = idx.iter().map(|&i| group[i].archived_at).collect();
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('session_replication_role', 'replica', true)")
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => Error::config(
                    "restoring needs permission to set session_replication_role (so triggers keep the archived \
                     updated_at): connect as a superuser, or on PostgreSQL 15+ GRANT SET ON PARAMETER \
                     session_replication_role TO the tidemark role",
                ),
                _ => Error::postgres("cannot prepare the restore", e),
            })?;
        sqlx::query("SELECT set_config($1, 'restore', true)")
            .bind(ARCHIVAL_SETTING)
            .execute(&mut *tx)
            .await?;
        let table = quote_ident(schema.table.name());
        let cols = schema.select_list();
        let restored: Vec<Uuid> = sqlx::query_scalar(&format!(
            "WITH ins AS ( \
               INSERT INTO {table} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) \
               ON CONFLICT DO NOTHING RETURNING id) \
             UPDATE cold_storage_archive a SET restored_at = now() \
             FROM unnest($2::uuid[], $3::timestamptz[]) AS k(id, archived_at) JOIN ins ON ins.id = k.id \
             WHERE a.organization_id = $4 AND a.\"table\" = $5::warehouse_table AND a.row_id = k.id \
               AND a.archived_at = k.archived_at AND a.restored_at IS NULL \
             RETURNING a.row_id"
        ))
        .bind(&json)
        .bind(&ids)
        .bind(&archived)
        .bind(request.organization_id)
        .bind(request.table.db_label())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| Error::postgres(format!("restoring rows of {} failed", request.table), e))?;
        let restored_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let restored: HashSet<Uuid> = restored.into_iter().collect();
        for &i in &idx {
            let r = &mut records[i];
            if restored.contains(&r.id) {
                r.restored = Some(true);
                r.restored_at = Some(restored_at);
            } else {
                r.restored = Some(false);
                r.error = Some(format!(
                    "row {} is already in the hot table {}: not restored (its tombstone is left as it was)",
                    r.id, request.table
                ));
            }
        }
    }
    Ok(())
}
