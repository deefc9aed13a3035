//! Extraction: one closed window of one organization's rows, streamed from Postgres with
//! `COPY (SELECT … ORDER BY updated_at, id) TO STDOUT (FORMAT binary)` and decoded into
//! bounded Arrow batches on a task of its own, so decoding overlaps encoding.
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

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{TableSchema, quote_ident};
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

/// Starts extracting a window. Returns the batch stream and, once it has ended, the stats.
pub fn extract(
    source: PgPool,
    q: WindowQuery<'_>,
    batch_rows: usize,
) -> (BatchStream, oneshot::Receiver<ExtractStats>) {
    let statement = copy_statement(&q);
    let mut decoder = CopyDecoder::new(q.schema, q.organization_id, batch_rows);
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
