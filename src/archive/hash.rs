//! The canonical row encoding and `row_sha256`.
//!
//! The canonical encoding of a row is its JSONL line exactly as [`JsonlEncoder`] writes it for
//! the published schema version of the proving delivery: keys in published column order, every
//! column present (`null` when NULL), timestamps RFC 3339 UTC with six fractional digits and `Z`,
//! dates `YYYY-MM-DD`, numerics as JSON strings with their full scale, jsonb as Postgres prints
//! it (raw, nested), text[] as arrays, floats in the shortest form that round-trips, all without
//! the trailing newline. `row_sha256` is SHA-256 over those bytes.
//!
//! The same bytes come from three places:
//! - a hot row: binary `COPY` of the published select list → [`CopyDecoder`] → Arrow →
//!   [`JsonlEncoder`] (what the tombstoning pass hashes, and what a restore is checked against);
//! - a Parquet object: the `parquet` crate's Arrow reader (with the published Arrow schema) →
//!   [`JsonlEncoder`];
//! - a JSONL object: the stored line itself (tidemark wrote it with the same encoder).

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::encode::jsonl::JsonlEncoder;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::decode::CopyDecoder;
use crate::schema::{TableSchema, quote_ident};

/// SHA-256 of a canonical line.
pub type RowHash = [u8; 32];

pub fn sha256(line: &[u8]) -> RowHash {
    Sha256::digest(line).into()
}

/// Turns Arrow batches of a published schema into canonical lines.
#[derive(Debug, Clone)]
pub struct CanonicalEncoder {
    encoder: JsonlEncoder,
    arrow: SchemaRef,
    id_index: usize,
    updated_index: usize,
}

impl CanonicalEncoder {
    pub fn new(schema: &TableSchema) -> CanonicalEncoder {
        let arrow = schema.arrow_schema();
        CanonicalEncoder {
            encoder: JsonlEncoder::new(&arrow),
            id_index: schema.column_index("id").expect("validated schema"),
            updated_index: schema.column_index("updated_at").expect("validated schema"),
            arrow,
        }
    }

    /// The published Arrow schema the batches must have.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    pub fn id_index(&self) -> usize {
        self.id_index
    }

    pub fn updated_index(&self) -> usize {
        self.updated_index
    }

    /// Calls `f(row, id, updated_at µs, canonical line)` for every row of `batch`. `buf` is
    /// scratch space, reused across calls.
    pub fn for_each_row(
        &self,
        batch: &RecordBatch,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(usize, Uuid, i64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let columns = batch.schema();
        if columns.fields().len() != self.arrow.fields().len()
            || columns
                .fields()
                .iter()
                .zip(self.arrow.fields())
                .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
        {
            return Err(Error::new(
                ErrorKind::Schema,
                "rows do not have the columns and types of the published schema",
            ));
        }
        buf.clear();
        self.encoder.encode(batch, buf)?;
        let ids = batch.column(self.id_index).as_string::<i32>();
        let updated = batch
            .column(self.updated_index)
            .as_primitive::<TimestampMicrosecondType>();
        let mut start = 0usize;
        for row in 0..batch.num_rows() {
            // JSON strings escape control characters and Postgres prints jsonb on one line, so
            // the only raw newline is the one ending the row.
            let len = buf[start..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| Error::unexpected("JSONL encoder wrote fewer lines than rows"))?;
            if ids.is_null(row) || updated.is_null(row) {
                return Err(Error::new(ErrorKind::DataInvalid, "a row without id or updated_at"));
            }
            let id = Uuid::parse_str(ids.value(row))
                .map_err(|_| Error::new(ErrorKind::DataInvalid, format!("invalid row id '{}'", ids.value(row))))?;
            f(row, id, updated.value(row), &buf[start..start + len])?;
            start += len + 1;
        }
        if start != buf.len() {
            return Err(Error::unexpected("JSONL encoder wrote more lines than rows"));
        }
        Ok(())
    }
}

/// `'2026-10-31T12:00:00.000000Z'::timestamptz`, for COPY statements (which take no bind
/// parameters; the values come from typed instants, never from user text).
pub fn ts_literal(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

pub fn micros_to_utc(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| Error::new(ErrorKind::DataInvalid, "timestamp out of range"))
}

/// `COPY (SELECT <published columns> FROM <table> WHERE <org> = '<org>' AND (<predicate>)
/// ORDER BY updated_at, id [LIMIT n]) TO STDOUT (FORMAT binary)`: the export's select list and
/// order.
pub fn copy_statement(schema: &TableSchema, organization_id: Uuid, predicate: &str, limit: Option<usize>) -> String {
    format!(
        "COPY (SELECT {cols} FROM {table} WHERE {org} = '{organization_id}'::uuid AND ({predicate}) \
         ORDER BY updated_at, id{limit}) TO STDOUT (FORMAT binary)",
        cols = schema.select_list(),
        table = quote_ident(schema.table.name()),
        org = quote_ident(&schema.organization_column),
        limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default(),
    )
}

/// Runs a binary COPY on `conn` and decodes it into Arrow batches (rows of another organization
/// abort it, as in an export).
pub async fn copy_rows(
    conn: &mut PgConnection,
    statement: &str,
    schema: &TableSchema,
    organization_id: Uuid,
) -> Result<Vec<RecordBatch>> {
    let mut decoder = CopyDecoder::new(schema, organization_id, crate::extract::DEFAULT_BATCH_ROWS);
    let mut batches = Vec::new();
    let mut copy = conn
        .copy_out_raw(statement)
        .await
        .map_err(|e| Error::postgres(format!("cannot read rows of {}", schema.table), e))?;
    while let Some(chunk) = copy.next().await {
        let chunk = chunk.map_err(|e| Error::postgres(format!("cannot read rows of {}", schema.table), e))?;
        decoder.feed(&chunk, &mut |b| {
            batches.push(b);
            Ok(())
        })?;
    }
    drop(copy);
    batches.extend(decoder.finish()?);
    Ok(batches)
}

/// One hot row's canonical hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotRowHash {
    pub id: Uuid,
    pub updated_at: DateTime<Utc>,
    pub sha256: RowHash,
    pub line: Vec<u8>,
}

/// Reads the given rows from the hot table and hashes them canonically (for checks: a restored
/// row must hash to its tombstone's `row_sha256`).
pub async fn hot_row_hashes(
    pool: &PgPool,
    schema: &TableSchema,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<HotRowHash>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    let statement = copy_statement(schema, organization_id, &format!("id IN ({})", list.join(",")), None);
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Error::postgres("cannot get a source connection", e))?;
    let batches = copy_rows(&mut conn, &statement, schema, organization_id).await?;
    let encoder = CanonicalEncoder::new(schema);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for batch in &batches {
        encoder.for_each_row(batch, &mut buf, |_, id, micros, line| {
            out.push(HotRowHash {
                id,
                updated_at: micros_to_utc(micros)?,
                sha256: sha256(line),
                line: line.to_vec(),
            });
            Ok(())
        })?;
    }
    Ok(out)
}
