//! Extraction: one closed window of one organization's rows, streamed from Postgres with
//! `COPY (SELECT … ORDER BY updated_at, id) TO STDOUT (FORMAT binary)` and decoded into
//! bounded Arrow batches on a task of its own, so decoding overlaps encoding.
//!
//! Two shapes of window ([`extract`] and [`extract_changes`]):
//! - the published columns of the rows whose current `updated_at` lies in the window;
//! - the same plus the envelope column `_op` (`'U'`), and, when the source has delete capture
//!   ([`crate::capture`]), one `'D'` row per delete logged in the window: the deleted row's
//!   last values rebuilt with `jsonb_populate_record(NULL::<table>, old_row)` (so NOT NULL
//!   columns stay filled and derived columns still evaluate) with `updated_at` replaced by
//!   `deleted_at`. Rows come in `(updated_at, id, _op)` order, so a delete and a re-insert of
//!   the same id by one transaction (same `now()`) come as `D` then `U`: the row exists.
//!
//! Invariants: at most four batches in memory per delivery (one being decoded, two in the
//! channel, one being encoded); the stream ends with an
//! `Err` item (never silently short) if the COPY fails or is cut; every row belongs to the
//! delivery's organization (checked by the decoder too).
//!
//! Must not touch: the control plane.

pub mod decode;

use std::pin::Pin;

use arrow_array::RecordBatch;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use futures::{Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::capture::DeleteLog;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::{OP_COLUMN, OP_DELETE, OP_UPSERT, TableSchema, quote_ident};
use decode::CopyDecoder;

/// Rows per Arrow batch. Bounds memory (a batch of the widest table is ~8 MB) and sets the
/// grain at which decoding and encoding overlap.
pub const DEFAULT_BATCH_ROWS: usize = 8_192;

pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// What the extraction saw, available once the stream has ended.
#[derive(Debug, Clone, Default)]
pub struct ExtractStats {
    pub rows: u64,
    pub source_bytes: u64,
    pub last_cursor: Option<(DateTime<Utc>, Uuid)>,
}

/// One window to extract.
#[derive(Debug, Clone)]
pub struct WindowQuery<'a> {
    pub schema: &'a TableSchema,
    pub organization_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn ts_literal(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// The `COPY` statement for a window. `sqlx` sends COPY over the simple protocol, so the
/// bounds are rendered as literals; they come from typed values, never from user text.
pub fn copy_statement(q: &WindowQuery<'_>) -> String {
    format!(
        "COPY (SELECT {cols} FROM {table} WHERE {org} = '{org_id}'::uuid AND updated_at >= {start} AND updated_at < {end} \
         ORDER BY updated_at, id) TO STDOUT (FORMAT binary)",
        cols = q.schema.select_list(),
        table = quote_ident(q.schema.table.name()),
        org = quote_ident(&q.schema.organization_column),
        org_id = q.organization_id,
        start = ts_literal(q.start),
        end = ts_literal(q.end),
    )
}

/// The `COPY` of a window's changes: its rows with `_op = 'U'`, and with `delete_log` its
/// logged deletes with `_op = 'D'`, ordered by `(updated_at, id, _op)`.
pub fn changes_copy_statement(q: &WindowQuery<'_>, delete_log: Option<&DeleteLog>) -> String {
    let table = quote_ident(q.schema.table.name());
    let cols = q.schema.select_list();
    let op = quote_ident(OP_COLUMN);
    let (start, end) = (ts_literal(q.start), ts_literal(q.end));
    let upserts = format!(
        "SELECT {cols}, '{OP_UPSERT}'::text AS {op} FROM {table} WHERE {org} = '{org_id}'::uuid \
         AND updated_at >= {start} AND updated_at < {end}",
        org = quote_ident(&q.schema.organization_column),
        org_id = q.organization_id,
    );
    let deletes = match delete_log {
        None => String::new(),
        Some(log) => format!(
            " UNION ALL SELECT {cols}, '{OP_DELETE}'::text AS {op} FROM (SELECT r.* FROM {log} l \
             CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, l.old_row || jsonb_build_object('updated_at', l.deleted_at)) r \
             WHERE l.table_name = '{name}' AND l.organization_id = '{org_id}'::uuid \
             AND l.deleted_at >= {start} AND l.deleted_at < {end}) AS {table}",
            log = log.qualified,
            name = q.schema.table.name(),
            org_id = q.organization_id,
        ),
    };
    format!("COPY ({upserts}{deletes} ORDER BY \"updated_at\", \"id\", {op}) TO STDOUT (FORMAT binary)")
}

/// A COPY that the source rejects as invalid (SQLSTATE class 42: a missing column or table, a
/// type mismatch, no privilege) will not succeed on retry: it is schema drift, dead-lettered.
fn copy_error(e: sqlx::Error) -> Error {
    let drift = matches!(&e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("42")));
    let err = Error::postgres("COPY from the source failed", e);
    if drift {
        Error::new(ErrorKind::Schema, err.to_string())
    } else {
        err
    }
}

/// Starts extracting a window's published columns. Returns the batch stream and, once it has
/// ended, the stats.
pub fn extract(
    source: PgPool,
    q: WindowQuery<'_>,
    batch_rows: usize,
) -> (BatchStream, oneshot::Receiver<ExtractStats>) {
    let statement = copy_statement(&q);
    let decoder = CopyDecoder::new(q.schema, q.organization_id, batch_rows);
    run_copy(source, statement, decoder)
}

/// Starts extracting a window's changes: batches of [`TableSchema::export_arrow_schema`]
/// (`_op` last), with the deletes of `delete_log` when the source has delete capture.
pub fn extract_changes(
    source: PgPool,
    q: WindowQuery<'_>,
    delete_log: Option<&DeleteLog>,
    batch_rows: usize,
) -> (BatchStream, oneshot::Receiver<ExtractStats>) {
    let statement = changes_copy_statement(&q, delete_log);
    let decoder = CopyDecoder::with_op(q.schema, q.organization_id, batch_rows);
    run_copy(source, statement, decoder)
}

/// `batch` with the `_op` column of an export: as it is when it already ends with one, else
/// with `_op = 'U'` appended (a stream of published columns has current versions only).
pub fn with_op_column(batch: RecordBatch, export: &arrow_schema::SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() == export.fields().len() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(arrow_array::StringArray::from_iter_values(
        std::iter::repeat_n(OP_UPSERT, batch.num_rows()),
    )));
    Ok(RecordBatch::try_new(export.clone(), columns)?)
}

fn run_copy(
    source: PgPool,
    statement: String,
    mut decoder: CopyDecoder,
) -> (BatchStream, oneshot::Receiver<ExtractStats>) {
    let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(2);
    let (stats_tx, stats_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut source_bytes = 0u64;
        let result: Result<()> = async {
            let mut conn = source
                .acquire()
                .await
                .map_err(|e| Error::postgres("cannot get a source connection", e))?;
            let mut copy = conn.copy_out_raw(&statement).await.map_err(copy_error)?;
            while let Some(chunk) = copy.next().await {
                let chunk = chunk.map_err(copy_error)?;
                source_bytes += chunk.len() as u64;
                let mut pending = Vec::new();
                decoder.feed(&chunk, &mut |b| {
                    pending.push(b);
                    Ok(())
                })?;
                for b in pending {
                    if tx.send(Ok(b)).await.is_err() {
                        return Err(Error::new(ErrorKind::Unexpected, "batch consumer went away"));
                    }
                }
            }
            if let Some(b) = decoder.finish()? {
                tx.send(Ok(b))
                    .await
                    .map_err(|_| Error::new(ErrorKind::Unexpected, "batch consumer went away"))?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                let last_cursor = decoder.last_cursor.map(|(micros, id)| {
                    (
                        Utc.timestamp_micros(micros).single().expect("in range"),
                        Uuid::from_bytes(id),
                    )
                });
                let _ = stats_tx.send(ExtractStats {
                    rows: decoder.rows,
                    source_bytes,
                    last_cursor,
                });
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (Box::pin(stream), stats_rx)
}
