//! Arrow → Postgres binary `COPY` (the inverse of `extract::decode`).
//!
//! The wire format (PostgreSQL docs, "COPY: Binary Format"): an 11-byte signature, a 4-byte
//! flags field and a 4-byte header-extension length, then per row `i16 field_count` and per
//! field `i32 length` (−1 = NULL) + the value in its type's binary *receive* format, and an
//! `i16 −1` trailer. [`CopyEncoder::encode`] appends whole rows of one batch to a buffer, so a
//! window streams batch by batch and never sits in memory whole.
//!
//! Input is what the extractor produces for a published schema (`ColumnType::arrow_type`):
//! uuid/inet/jsonb/text as `Utf8` text, numeric as `Decimal128` with the published scale,
//! timestamptz as UTC microseconds, date as days, text[] as `List<Utf8>`.
//!
//! Invariant: every encoded row's organization column equals the delivery's organization; a
//! foreign row aborts the window (`DataInvalid`), like the decoder does on the way in.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, GenericListArray, RecordBatch, StringArray};
use uuid::Uuid;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{ColumnType, TableSchema};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between 1970-01-01 and 2000-01-01 (the Postgres epoch).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// `pg_type.oid` of `text`, the element type of `text[]` (stable since Postgres 6).
const TEXT_OID: u32 = 25;
/// `PGSQL_AF_INET` / `PGSQL_AF_INET6` of `inet_send` (not the OS's AF_* values).
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// Encodes the batches of one published table into binary `COPY` rows.
pub struct CopyEncoder {
    types: Vec<ColumnType>,
    names: Vec<String>,
    org_index: usize,
    organization: String,
}

impl CopyEncoder {
    pub fn new(schema: &TableSchema, organization: Uuid) -> CopyEncoder {
        CopyEncoder {
            types: schema.columns.iter().map(|c| c.ty).collect(),
            names: schema.columns.iter().map(|c| c.name.clone()).collect(),
            org_index: schema
                .column_index(&schema.organization_column)
                .expect("validated schema has its organization column"),
            organization: organization.hyphenated().to_string(),
        }
    }

    /// The 19-byte file header (no flags, no extension).
    /// An encoder of the published columns followed by the `_op` envelope column.
    pub fn with_op(schema: &TableSchema, organization: Uuid) -> CopyEncoder {
        let mut encoder = CopyEncoder::new(schema, organization);
        encoder.types.push(ColumnType::Text);
        encoder.names.push(crate::schema::OP_COLUMN.to_string());
        encoder
    }

    pub fn header(out: &mut Vec<u8>) {
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
    }

    /// The 2-byte file trailer.
    pub fn trailer(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }

    /// Appends every row of `batch` to `out`.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        if batch.num_columns() != self.types.len() {
            return Err(Error::unexpected(format!(
                "batch has {} columns, the published schema {}",
                batch.num_columns(),
                self.types.len()
            )));
        }
        let org = batch
            .column(self.org_index)
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::unexpected("organization column is not text in the batch"))?;
        for row in 0..batch.num_rows() {
            if org.is_null(row) || org.value(row) != self.organization {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    "a batch holds a row of another organization; the window is aborted",
                )
                .with_context("expected", &self.organization)
                .with_context("found", if org.is_null(row) { "NULL" } else { org.value(row) }));
            }
        }
        let columns: Vec<Column<'_>> = batch
            .columns()
            .iter()
            .zip(&self.types)
            .zip(&self.names)
            .map(|((a, t), n)| Column::new(a, *t, n))
            .collect::<Result<_>>()?;
        let fields = (self.types.len() as i16).to_be_bytes();
        for row in 0..batch.num_rows() {
            out.extend_from_slice(&fields);
            for col in &columns {
                col.write(row, out)
                    .map_err(|e| e.with_context("column", col.name).with_context("row", row))?;
            }
        }
        Ok(())
    }
}

/// One typed column of a batch.
struct Column<'a> {
    name: &'a str,
    array: &'a ArrayRef,
    ty: ColumnType,
}

fn mismatch(name: &str, ty: ColumnType, array: &ArrayRef) -> Error {
    Error::unexpected(format!(
        "column {name} ({ty}) arrived as Arrow {}, not {}",
        array.data_type(),
        ty.arrow_type()
    ))
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, ty: ColumnType, name: &'a str) -> Result<Column<'a>> {
        if array.data_type() != &ty.arrow_type() {
            // Timestamps may carry another spelling of UTC; everything else must match.
            let both_micros = matches!(
                (array.data_type(), ty),
                (
                    arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _),
                    ColumnType::Timestamptz
                )
            );
            let any_list = matches!(
                (array.data_type(), ty),
                (arrow_schema::DataType::List(f), ColumnType::TextArray) if f.data_type() == &arrow_schema::DataType::Utf8
            );
            if !both_micros && !any_list {
                return Err(mismatch(name, ty, array));
            }
        }
        Ok(Column { name, array, ty })
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        if self.array.is_null(row) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        let a = self.array;
        match self.ty {
            ColumnType::Uuid => {
                let text = a.as_string::<i32>().value(row);
                let id = Uuid::try_parse(text)
                    .map_err(|_| Error::new(ErrorKind::DataInvalid, format!("'{text}' is not a uuid")))?;
                put(out, id.as_bytes());
            }
            ColumnType::Text => put(out, a.as_string::<i32>().value(row).as_bytes()),
            ColumnType::Int2 => put(out, &a.as_primitive::<Int16Type>().value(row).to_be_bytes()),
            ColumnType::Int4 => put(out, &a.as_primitive::<Int32Type>().value(row).to_be_bytes()),
            ColumnType::Int8 => put(out, &a.as_primitive::<Int64Type>().value(row).to_be_bytes()),
            ColumnType::Float8 => put(out, &a.as_primitive::<Float64Type>().value(row).to_be_bytes()),
            ColumnType::Bool => put(out, &[a.as_boolean().value(row) as u8]),
            ColumnType::Numeric { scale, .. } => {
                let v = a.as_primitive::<Decimal128Type>().value(row);
                with_length(out, |out| encode_numeric(v, scale, out));
            }
            ColumnType::Timestamptz => {
                let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
                let pg = micros
                    .checked_sub(PG_EPOCH_MICROS)
                    .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "timestamp out of the Postgres range"))?;
                put(out, &pg.to_be_bytes());
            }
            ColumnType::Date => {
                let days = a.as_primitive::<Date32Type>().value(row);
                put(out, &(days - PG_EPOCH_DAYS).to_be_bytes());
            }
            ColumnType::Jsonb => {
                let text = a.as_string::<i32>().value(row);
                with_length(out, |out| {
                    out.push(1); // jsonb binary format version
                    out.extend_from_slice(text.as_bytes());
                });
            }
            ColumnType::Inet => {
                let text = a.as_string::<i32>().value(row);
                let start = out.len();
                out.extend_from_slice(&0i32.to_be_bytes());
                encode_inet(text, out)?;
                let len = (out.len() - start - 4) as i32;
                out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            ColumnType::TextArray => {
                let list: &GenericListArray<i32> = a.as_list::<i32>();
                let values = list.value(row);
                let values: &StringArray = values.as_string::<i32>();
                with_length(out, |out| encode_text_array(values, out));
            }
        }
        Ok(())
    }
}

fn put(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
    out.extend_from_slice(v);
}

/// Writes a length-prefixed value whose length is known only after writing it.
fn with_length(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    write(out);
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// `numeric_send` of `v / 10^scale`: base-10000 digits aligned on the decimal point,
/// most significant first, without leading or trailing zero groups; `weight` is the power of
/// 10000 of the first digit; `dscale` the published scale.
pub(crate) fn encode_numeric(v: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.max(0) as u32;
    let mut abs = v.unsigned_abs();
    // Fractional digit groups, and the zeros that pad the last one to four digits.
    let frac_groups = scale.div_ceil(4) as i32;
    let pad = (4 - scale % 4) % 4;
    // groups[i] has weight i - frac_groups (least significant first). 38 digits + 3 pad → 11.
    let mut groups = [0u16; 12];
    let mut n = 0;
    if pad > 0 {
        let m = 10u128.pow(4 - pad);
        groups[0] = ((abs % m) * 10u128.pow(pad)) as u16;
        abs /= m;
        n = 1;
    }
    while abs > 0 {
        groups[n] = (abs % 10_000) as u16;
        abs /= 10_000;
        n += 1;
    }
    let used = &groups[..n];
    let (digits, weight): (&[u16], i16) = match used.iter().position(|g| *g != 0) {
        None => (&[], 0),
        Some(lo) => {
            let hi = used.iter().rposition(|g| *g != 0).expect("a non-zero group exists");
            (&used[lo..=hi], (hi as i32 - frac_groups) as i16)
        }
    };
    out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if v < 0 && !digits.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for d in digits.iter().rev() {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// `inet_send` of `addr` or `addr/bits` as Postgres prints an inet.
pub(crate) fn encode_inet(text: &str, out: &mut Vec<u8>) -> Result<()> {
    let bad = || Error::new(ErrorKind::DataInvalid, format!("'{text}' is not an inet value"));
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    match addr.parse::<std::net::IpAddr>().map_err(|_| bad())? {
        std::net::IpAddr::V4(a) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return Err(bad());
            }
            out.extend_from_slice(&[PGSQL_AF_INET, bits, 0, 4]);
            out.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return Err(bad());
            }
            out.extend_from_slice(&[PGSQL_AF_INET6, bits, 0, 16]);
            out.extend_from_slice(&a.octets());
        }
    }
    Ok(())
}

/// `array_send` of a one-dimensional `text[]` (zero dimensions when empty, as Postgres does).
fn encode_text_array(values: &StringArray, out: &mut Vec<u8>) {
    let ndim: i32 = if values.is_empty() { 0 } else { 1 };
    out.extend_from_slice(&ndim.to_be_bytes());
    let has_null: i32 = if values.null_count() > 0 { 1 } else { 0 };
    out.extend_from_slice(&has_null.to_be_bytes());
    out.extend_from_slice(&TEXT_OID.to_be_bytes());
    if ndim == 0 {
        return;
    }
    out.extend_from_slice(&(values.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    for i in 0..values.len() {
        if values.is_null(i) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            put(out, values.value(i).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i128, scale: i8) -> (u16, i16, u16, u16, Vec<u16>) {
        let mut out = Vec::new();
        encode_numeric(v, scale, &mut out);
        let be = |i: usize| u16::from_be_bytes([out[i], out[i + 1]]);
        let n = be(0) as usize;
        assert_eq!(out.len(), 8 + 2 * n);
        let digits = (0..n).map(|i| be(8 + 2 * i)).collect();
        (be(0), be(2) as i16, be(4), be(6), digits)
    }

    #[test]
    fn numeric_matches_numeric_send() {
        // The same cases the decoder's test reads (decode.rs), written the other way.
        assert_eq!(numeric(123_456_789, 4), (3, 1, 0, 4, vec![1, 2345, 6789]));
        assert_eq!(numeric(-5, 2), (1, -1, 0x4000, 2, vec![500]));
        assert_eq!(numeric(0, 2), (0, 0, 0, 2, vec![]));
        assert_eq!(numeric(2_000_000, 2), (1, 1, 0, 2, vec![2]));
        // 1000.00 → [1000], weight 0; 0.0001 with scale 6 → [1], weight -1
        assert_eq!(numeric(100_000, 2), (1, 0, 0, 2, vec![1000]));
        assert_eq!(numeric(100, 6), (1, -1, 0, 6, vec![1]));
        // 12.5 at scale 1 → [12, 5000]
        assert_eq!(numeric(125, 1), (2, 0, 0, 1, vec![12, 5000]));
        // The widest values fit: 38 nines at scale 38 and at scale 0.
        let max = 10i128.pow(38) - 1;
        let (n, w, _, _, d) = numeric(max, 38);
        assert_eq!((n, w), (10, -1));
        assert_eq!(d[..9], [9999; 9]);
        assert_eq!(d[9], 9900);
        let (n, w, s, _, _) = numeric(-max, 0);
        assert_eq!((n, w, s), (10, 9, 0x4000));
    }

    #[test]
    fn inet_matches_inet_send() {
        let enc = |t: &str| {
            let mut out = Vec::new();
            encode_inet(t, &mut out).map(|_| out)
        };
        assert_eq!(enc("10.0.0.1").unwrap(), [2, 32, 0, 4, 10, 0, 0, 1]);
        assert_eq!(enc("10.0.0.0/8").unwrap(), [2, 8, 0, 4, 10, 0, 0, 0]);
        let v6 = enc("2001:db8::1/64").unwrap();
        assert_eq!(&v6[..4], &[3, 64, 0, 16]);
        assert_eq!(&v6[4..6], &[0x20, 0x01]);
        assert!(enc("10.0.0.1/33").is_err());
        assert!(enc("not an address").is_err());
    }

    #[test]
    fn a_foreign_row_aborts_the_batch() {
        let schema = crate::schema::Registry::embedded()
            .get(crate::schema::Table::Identities, 1)
            .unwrap();
        let org = Uuid::from_u128(1);
        let enc = CopyEncoder::new(&schema, org);
        let arrays: Vec<ArrayRef> = schema
            .columns
            .iter()
            .map(|c| arrow_array::new_null_array(&c.ty.arrow_type(), 1))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            schema.arrow_schema(),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(1)),
        );
        // Non-nullable fields refuse NULLs; build the batch without the schema's constraints.
        let batch = batch.unwrap_or_else(|_| {
            let fields: Vec<_> = schema
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            RecordBatch::try_new(
                std::sync::Arc::new(arrow_schema::Schema::new(fields)),
                schema
                    .columns
                    .iter()
                    .map(|c| arrow_array::new_null_array(&c.ty.arrow_type(), 1))
                    .collect(),
            )
            .unwrap()
        });
        let err = enc.encode(&batch, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataInvalid);
        assert!(err.to_string().contains("another organization"), "{err}");
    }
}
