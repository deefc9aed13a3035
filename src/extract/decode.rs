//! Postgres binary `COPY` → Arrow, with no per-row allocation.
//!
//! The wire format (PostgreSQL docs, "COPY: Binary Format"): an 11-byte signature, a 4-byte
//! flags field, a 4-byte header-extension length (+ extension), then tuples of
//! `i16 field_count` followed by `i32 length` (−1 = NULL) + bytes per field, and an `i16 −1`
//! trailer. Values use each type's binary send format. Chunks may split tuples anywhere; the
//! decoder keeps the unfinished tail and resumes.
//!
//! Invariant: every decoded row's organization column equals the organization of the
//! delivery. A foreign row aborts the window (`DataInvalid`) instead of being exported.

use std::io::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use bytes::{Buf, BytesMut};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{ColumnType, TableSchema};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between 1970-01-01 and 2000-01-01 (the Postgres epoch).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

enum ColumnBuilder {
    Uuid(StringBuilder),
    Text(StringBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float8(Float64Builder),
    Bool(BooleanBuilder),
    Numeric(Decimal128Builder, i8),
    Timestamptz(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Jsonb(StringBuilder),
    Inet(StringBuilder),
    TextArray(ListBuilder<StringBuilder>),
}

impl ColumnBuilder {
    /// A builder for `capacity` rows; `bytes` sizes the value buffer of variable-width columns
    /// (the previous batch's size, so steady state never reallocates).
    fn new(ty: ColumnType, capacity: usize, bytes: Option<usize>) -> ColumnBuilder {
        let strings = |per_row: usize| StringBuilder::with_capacity(capacity, bytes.unwrap_or(capacity * per_row));
        match ty {
            ColumnType::Uuid => ColumnBuilder::Uuid(strings(36)),
            ColumnType::Text => ColumnBuilder::Text(strings(16)),
            ColumnType::Int2 => ColumnBuilder::Int2(Int16Builder::with_capacity(capacity)),
            ColumnType::Int4 => ColumnBuilder::Int4(Int32Builder::with_capacity(capacity)),
            ColumnType::Int8 => ColumnBuilder::Int8(Int64Builder::with_capacity(capacity)),
            ColumnType::Float8 => ColumnBuilder::Float8(Float64Builder::with_capacity(capacity)),
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Numeric { precision, scale } => ColumnBuilder::Numeric(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(precision, scale)
                    .expect("validated precision/scale"),
                scale,
            ),
            ColumnType::Timestamptz => {
                ColumnBuilder::Timestamptz(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Jsonb => ColumnBuilder::Jsonb(strings(64)),
            ColumnType::Inet => ColumnBuilder::Inet(strings(16)),
            ColumnType::TextArray => ColumnBuilder::TextArray(ListBuilder::with_capacity(
                StringBuilder::with_capacity(capacity * 2, bytes.unwrap_or(capacity * 16)),
                capacity,
            )),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Uuid(b) | ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Inet(b) => {
                b.append_null()
            }
            ColumnBuilder::Int2(b) => b.append_null(),
            ColumnBuilder::Int4(b) => b.append_null(),
            ColumnBuilder::Int8(b) => b.append_null(),
            ColumnBuilder::Float8(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Numeric(b, _) => b.append_null(),
            ColumnBuilder::Timestamptz(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::TextArray(b) => b.append_null(),
        }
    }

    fn append(&mut self, v: &[u8]) -> Result<()> {
        match self {
            ColumnBuilder::Uuid(b) => {
                let bytes: [u8; 16] = v.try_into().map_err(|_| bad("uuid", v.len()))?;
                let mut buf = [0u8; 36];
                b.append_value(uuid::Uuid::from_bytes(bytes).hyphenated().encode_lower(&mut buf));
            }
            ColumnBuilder::Text(b) => b.append_value(utf8(v)?),
            ColumnBuilder::Int2(b) => {
                b.append_value(i16::from_be_bytes(v.try_into().map_err(|_| bad("int2", v.len()))?))
            }
            ColumnBuilder::Int4(b) => {
                b.append_value(i32::from_be_bytes(v.try_into().map_err(|_| bad("int4", v.len()))?))
            }
            ColumnBuilder::Int8(b) => {
                b.append_value(i64::from_be_bytes(v.try_into().map_err(|_| bad("int8", v.len()))?))
            }
            ColumnBuilder::Float8(b) => {
                b.append_value(f64::from_be_bytes(v.try_into().map_err(|_| bad("float8", v.len()))?))
            }
            ColumnBuilder::Bool(b) => match v {
                [x] => b.append_value(*x != 0),
                _ => return Err(bad("bool", v.len())),
            },
            ColumnBuilder::Numeric(b, scale) => b.append_value(decode_numeric(v, *scale)?),
            ColumnBuilder::Timestamptz(b) => {
                let raw = i64::from_be_bytes(v.try_into().map_err(|_| bad("timestamptz", v.len()))?);
                if raw == i64::MAX || raw == i64::MIN {
                    return Err(Error::new(
                        ErrorKind::DataInvalid,
                        "timestamptz 'infinity' cannot be exported",
                    ));
                }
                b.append_value(raw.checked_add(PG_EPOCH_MICROS).ok_or_else(|| bad("timestamptz", 8))?);
            }
            ColumnBuilder::Date(b) => {
                let raw = i32::from_be_bytes(v.try_into().map_err(|_| bad("date", v.len()))?);
                if raw == i32::MAX || raw == i32::MIN {
                    return Err(Error::new(ErrorKind::DataInvalid, "date 'infinity' cannot be exported"));
                }
                b.append_value(raw + PG_EPOCH_DAYS);
            }
            ColumnBuilder::Jsonb(b) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => {
                    return Err(Error::new(ErrorKind::DataInvalid, "unsupported jsonb binary version"));
                }
            },
            ColumnBuilder::Inet(b) => {
                let mut buf = [0u8; 64];
                let n = format_inet(v, &mut buf)?;
                b.append_value(std::str::from_utf8(&buf[..n]).expect("ascii"));
            }
            ColumnBuilder::TextArray(b) => decode_text_array(v, b)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Uuid(b) | ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Inet(b) => {
                Arc::new(b.finish())
            }
            ColumnBuilder::Int2(b) => Arc::new(b.finish()),
            ColumnBuilder::Int4(b) => Arc::new(b.finish()),
            ColumnBuilder::Int8(b) => Arc::new(b.finish()),
            ColumnBuilder::Float8(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Numeric(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Timestamptz(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::TextArray(b) => Arc::new(b.finish()),
        }
    }
}

fn bad(ty: &str, len: usize) -> Error {
    Error::new(
        ErrorKind::DataInvalid,
        format!("malformed binary {ty} value of {len} bytes"),
    )
}

/// UTF-8 validation is a visible share of decoding (jsonb payloads are hundreds of bytes per
/// row); the SIMD validator is several times faster than `std::str::from_utf8`.
fn utf8(v: &[u8]) -> Result<&str> {
    simdutf8::basic::from_utf8(v).map_err(|_| Error::new(ErrorKind::DataInvalid, "source text is not valid UTF-8"))
}

/// Decodes a binary `numeric` into an `i128` scaled by `10^scale`. The value must fit exactly:
/// the column is `numeric(p, scale)`, so Postgres has already rounded it to `scale` digits.
fn decode_numeric(v: &[u8], scale: i8) -> Result<i128> {
    if v.len() < 8 {
        return Err(bad("numeric", v.len()));
    }
    let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if v.len() != 8 + 2 * ndigits {
        return Err(bad("numeric", v.len()));
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            return Err(Error::new(ErrorKind::DataInvalid, "numeric 'NaN' cannot be exported"));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "numeric 'Infinity' cannot be exported",
            ));
        }
    }
    let overflow = || {
        Error::new(
            ErrorKind::DataInvalid,
            "numeric value does not fit its published precision",
        )
    };
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let d = u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(d))
            .ok_or_else(overflow)?;
    }
    // acc * 10000^(weight - ndigits + 1) is the value; we want value * 10^scale.
    let exp10 = if ndigits == 0 {
        0
    } else {
        4 * (weight - ndigits as i32 + 1) + scale as i32
    };
    if exp10 >= 0 {
        for _ in 0..exp10 {
            acc = acc.checked_mul(10).ok_or_else(overflow)?;
        }
    } else {
        let div = 10i128.checked_pow((-exp10) as u32).ok_or_else(overflow)?;
        if acc % div != 0 {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "numeric value has more fractional digits than its published scale",
            ));
        }
        acc /= div;
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// Formats an `inet` value exactly as Postgres's `inet_out` does: the address, and `/bits`
/// unless the mask covers the whole address.
fn format_inet(v: &[u8], out: &mut [u8; 64]) -> Result<usize> {
    if v.len() < 4 {
        return Err(bad("inet", v.len()));
    }
    let (family, bits, nb) = (v[0], v[1], v[3] as usize);
    let addr = &v[4..];
    if addr.len() != nb {
        return Err(bad("inet", v.len()));
    }
    let mut cur = std::io::Cursor::new(&mut out[..]);
    let full = match (family, nb) {
        (2, 4) => {
            write!(cur, "{}", std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])).expect("fits");
            32
        }
        (3, 16) => {
            let a: [u8; 16] = addr.try_into().expect("length checked");
            write!(cur, "{}", std::net::Ipv6Addr::from(a)).expect("fits");
            128
        }
        _ => return Err(bad("inet", v.len())),
    };
    if bits != full {
        write!(cur, "/{bits}").expect("fits");
    }
    Ok(cur.position() as usize)
}

fn decode_text_array(v: &[u8], b: &mut ListBuilder<StringBuilder>) -> Result<()> {
    let mut buf = v;
    if buf.remaining() < 12 {
        return Err(bad("text[]", v.len()));
    }
    let ndim = buf.get_i32();
    let _has_null = buf.get_i32();
    let _elem_oid = buf.get_u32();
    match ndim {
        0 => {}
        1 => {
            if buf.remaining() < 8 {
                return Err(bad("text[]", v.len()));
            }
            let len = buf.get_i32();
            let _lbound = buf.get_i32();
            for _ in 0..len {
                if buf.remaining() < 4 {
                    return Err(bad("text[]", v.len()));
                }
                let n = buf.get_i32();
                if n < 0 {
                    b.values().append_null();
                    continue;
                }
                let n = n as usize;
                if buf.remaining() < n {
                    return Err(bad("text[]", v.len()));
                }
                b.values().append_value(utf8(&buf[..n])?);
                buf.advance(n);
            }
        }
        _ => {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "multi-dimensional arrays cannot be exported as text[]",
            ));
        }
    }
    b.append(true);
    Ok(())
}

/// Turns a stream of binary COPY chunks into bounded `RecordBatch`es.
pub struct CopyDecoder {
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    types: Vec<ColumnType>,
    org_index: usize,
    organization: [u8; 16],
    cursor_index: (usize, usize),
    batch_rows: usize,
    rows_in_batch: usize,
    header_seen: bool,
    finished: bool,
    pending: BytesMut,
    /// Rows decoded so far over the whole stream.
    pub rows: u64,
    /// `(updated_at µs since the Unix epoch, id bytes)` of the last decoded row.
    pub last_cursor: Option<(i64, [u8; 16])>,
}

impl CopyDecoder {
    /// A decoder of the published columns.
    pub fn new(schema: &TableSchema, organization: uuid::Uuid, batch_rows: usize) -> CopyDecoder {
        Self::build(schema, organization, batch_rows, false)
    }

    /// A decoder of the published columns followed by the `_op` envelope column
    /// ([`TableSchema::export_arrow_schema`]).
    pub fn with_op(schema: &TableSchema, organization: uuid::Uuid, batch_rows: usize) -> CopyDecoder {
        Self::build(schema, organization, batch_rows, true)
    }

    fn build(schema: &TableSchema, organization: uuid::Uuid, batch_rows: usize, with_op: bool) -> CopyDecoder {
        let mut types: Vec<ColumnType> = schema.columns.iter().map(|c| c.ty).collect();
        if with_op {
            types.push(ColumnType::Text);
        }
        let cap = batch_rows.min(8192);
        CopyDecoder {
            schema: if with_op {
                schema.export_arrow_schema()
            } else {
                schema.arrow_schema()
            },
            builders: types.iter().map(|t| ColumnBuilder::new(*t, cap, None)).collect(),
            org_index: schema
                .column_index(&schema.organization_column)
                .expect("validated schema"),
            organization: *organization.as_bytes(),
            cursor_index: (
                schema.column_index("updated_at").expect("validated"),
                schema.column_index("id").expect("validated"),
            ),
            types,
            batch_rows: batch_rows.max(1),
            rows_in_batch: 0,
            header_seen: false,
            finished: false,
            pending: BytesMut::new(),
            rows: 0,
            last_cursor: None,
        }
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Feeds one chunk; calls `emit` for every full batch. Partial tuples are kept for the next chunk.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        if self.pending.is_empty() {
            let used = self.decode_available(chunk, emit)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.decode_available(&pending, emit)?;
            self.pending = pending;
            self.pending.advance(used);
        }
        Ok(())
    }

    /// Ends the stream: returns the last partial batch, if any. Errors if the stream was cut.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if !self.finished {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "COPY stream ended before its trailer; the connection was cut",
            ));
        }
        self.flush_batch()
            .map(|b| if b.num_rows() == 0 { None } else { Some(b) })
    }

    fn flush_batch(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        // `finish` leaves empty buffers behind: size the next batch's like this one's (+1/8).
        let rows = self.batch_rows;
        for ((builder, ty), col) in self.builders.iter_mut().zip(&self.types).zip(&columns) {
            let bytes = match col.data_type() {
                arrow_schema::DataType::Utf8 => Some(col.as_string::<i32>().values().len()),
                arrow_schema::DataType::List(_) => {
                    Some(col.as_list::<i32>().values().as_string::<i32>().values().len())
                }
                _ => None,
            };
            *builder = ColumnBuilder::new(*ty, rows, bytes.map(|b| b + b / 8));
        }
        self.rows_in_batch = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Decodes every complete tuple in `buf`; returns how many bytes were consumed.
    fn decode_available(&mut self, buf: &[u8], emit: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<usize> {
        let mut pos = 0;
        if !self.header_seen {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    "COPY stream does not start with the binary signature",
                ));
            }
            let ext = u32::from_be_bytes(buf[15..19].try_into().expect("4 bytes")) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_seen = true;
        }
        let ncols = self.types.len();
        while pos + 2 <= buf.len() {
            if self.finished {
                return Err(Error::new(ErrorKind::DataInvalid, "data after the COPY trailer"));
            }
            let fields = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if fields == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if fields as usize != ncols {
                return Err(Error::new(
                    ErrorKind::Schema,
                    format!("COPY returned {fields} columns, the published schema has {ncols}"),
                ));
            }
            // Check the whole tuple is here before touching any builder.
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..ncols {
                if end + 4 > buf.len() {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes(buf[end..end + 4].try_into().expect("4 bytes"));
                end += 4 + len.max(0) as usize;
                if end > buf.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut p = pos + 2;
            let mut updated_at = 0i64;
            let mut id = [0u8; 16];
            for col in 0..ncols {
                let len = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
                p += 4;
                if len < 0 {
                    self.builders[col].append_null();
                    continue;
                }
                let v = &buf[p..p + len as usize];
                p += len as usize;
                if col == self.org_index && v != self.organization {
                    return Err(Error::new(
                        ErrorKind::DataInvalid,
                        "source returned a row of another organization; the window is aborted",
                    )
                    .with_context("expected", uuid::Uuid::from_bytes(self.organization))
                    .with_context(
                        "found",
                        uuid::Uuid::from_slice(v).map(|u| u.to_string()).unwrap_or_default(),
                    ));
                }
                if col == self.cursor_index.0 && len == 8 {
                    updated_at = i64::from_be_bytes(v.try_into().expect("8 bytes")) + PG_EPOCH_MICROS;
                } else if col == self.cursor_index.1 && len == 16 {
                    id.copy_from_slice(v);
                }
                self.builders[col]
                    .append(v)
                    .map_err(|e| e.with_context("column", self.schema.field(col).name()))?;
            }
            self.last_cursor = Some((updated_at, id));
            pos = end;
            self.rows += 1;
            self.rows_in_batch += 1;
            if self.rows_in_batch >= self.batch_rows {
                let batch = self.flush_batch()?;
                emit(batch)?;
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: &[u16], weight: i16, neg: bool, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(ndigits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_decodes_to_scaled_integer() {
        // 12345.6789 = digits [1, 2345, 6789], weight 1
        assert_eq!(
            decode_numeric(&numeric(&[1, 2345, 6789], 1, false, 4), 4).unwrap(),
            123456789
        );
        // -0.05 with scale 2 = digits [500], weight -1
        assert_eq!(decode_numeric(&numeric(&[500], -1, true, 2), 2).unwrap(), -5);
        // 0
        assert_eq!(decode_numeric(&numeric(&[], 0, false, 2), 2).unwrap(), 0);
        // 20000 (trailing zero groups stripped): digits [2], weight 1
        assert_eq!(decode_numeric(&numeric(&[2], 1, false, 0), 2).unwrap(), 2_000_000);
        // too many fractional digits for scale 1
        assert!(decode_numeric(&numeric(&[1234], -1, false, 4), 1).is_err());
    }

    #[test]
    fn inet_formats_like_inet_out() {
        let mut out = [0u8; 64];
        let n = format_inet(&[2, 32, 0, 4, 10, 0, 0, 1], &mut out).unwrap();
        assert_eq!(&out[..n], b"10.0.0.1");
        let n = format_inet(&[2, 8, 0, 4, 10, 0, 0, 0], &mut out).unwrap();
        assert_eq!(&out[..n], b"10.0.0.0/8");
        let mut v6 = vec![3, 128, 0, 16];
        v6.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let n = format_inet(&v6, &mut out).unwrap();
        assert_eq!(&out[..n], b"2001:db8::1");
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use arrow_array::cast::AsArray;

    const SCHEMA: &str = r#"{"table": "events", "version": 1, "description": "t", "primary_key": ["id"],
        "cursor": ["updated_at", "id"], "organization_column": "organization_id", "columns": [
        {"name": "id", "type": "uuid", "nullable": false, "description": "x"},
        {"name": "organization_id", "type": "uuid", "nullable": false, "description": "x"},
        {"name": "tags", "type": "text[]", "nullable": true, "description": "x"},
        {"name": "note", "type": "text", "nullable": true, "description": "x"},
        {"name": "updated_at", "type": "timestamptz", "nullable": false, "description": "x"}]}"#;

    fn tuple(out: &mut Vec<u8>, id: u8, org: [u8; 16], tags: Option<&[&str]>, note: Option<&str>, micros: i64) {
        out.extend_from_slice(&5i16.to_be_bytes());
        out.extend_from_slice(&16i32.to_be_bytes());
        out.extend_from_slice(&[id; 16]);
        out.extend_from_slice(&16i32.to_be_bytes());
        out.extend_from_slice(&org);
        match tags {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(tags) => {
                let mut v = Vec::new();
                v.extend_from_slice(&(if tags.is_empty() { 0i32 } else { 1 }).to_be_bytes());
                v.extend_from_slice(&0i32.to_be_bytes());
                v.extend_from_slice(&25u32.to_be_bytes());
                if !tags.is_empty() {
                    v.extend_from_slice(&(tags.len() as i32).to_be_bytes());
                    v.extend_from_slice(&1i32.to_be_bytes());
                    for t in tags {
                        v.extend_from_slice(&(t.len() as i32).to_be_bytes());
                        v.extend_from_slice(t.as_bytes());
                    }
                }
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(&v);
            }
        }
        match note {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(n) => {
                out.extend_from_slice(&(n.len() as i32).to_be_bytes());
                out.extend_from_slice(n.as_bytes());
            }
        }
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&(micros - PG_EPOCH_MICROS).to_be_bytes());
    }

    fn stream(org: [u8; 16], foreign_at: Option<usize>) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(SIGNATURE);
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&0u32.to_be_bytes());
        for i in 0..50u8 {
            let o = if foreign_at == Some(i as usize) { [9u8; 16] } else { org };
            let tags: Option<&[&str]> = match i % 3 {
                0 => None,
                1 => Some(&[]),
                _ => Some(&["a", "東京", "🦀"]),
            };
            tuple(
                &mut s,
                i,
                o,
                tags,
                if i % 4 == 0 { None } else { Some("Ørsted ß") },
                1_700_000_000_000_000 + (i as i64 / 10),
            );
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    fn decode(bytes: &[u8], chunk: usize, org: [u8; 16]) -> Result<Vec<RecordBatch>> {
        let schema = TableSchema::parse(SCHEMA, "test").unwrap();
        let mut d = CopyDecoder::new(&schema, uuid::Uuid::from_bytes(org), 7);
        let mut batches = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c, &mut |b| {
                batches.push(b);
                Ok(())
            })?;
        }
        batches.extend(d.finish()?);
        Ok(batches)
    }

    #[test]
    fn any_chunking_gives_the_same_batches() {
        let org = [1u8; 16];
        let bytes = stream(org, None);
        let whole = decode(&bytes, bytes.len(), org).unwrap();
        assert_eq!(whole.iter().map(|b| b.num_rows()).sum::<usize>(), 50);
        assert!(whole.iter().all(|b| b.num_rows() <= 7), "batches are bounded");
        for chunk in [1, 2, 3, 5, 17, 64, 1000] {
            assert_eq!(decode(&bytes, chunk, org).unwrap(), whole, "chunk size {chunk}");
        }
        let first = &whole[0];
        assert!(first.column(2).is_null(0));
        assert_eq!(
            first.column(2).as_list::<i32>().value(1).len(),
            0,
            "empty array stays empty, not NULL"
        );
        let tags = first.column(2).as_list::<i32>().value(2);
        assert_eq!(tags.as_string::<i32>().value(1), "東京");
        assert_eq!(first.column(3).as_string::<i32>().value(1), "Ørsted ß");
        assert!(first.column(3).is_null(0));
    }

    #[test]
    fn a_foreign_organization_row_aborts_the_window() {
        let org = [1u8; 16];
        let err = decode(&stream(org, Some(33)), 100, org).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataInvalid);
        assert!(err.to_string().contains("another organization"), "{err}");
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_short_window() {
        let org = [1u8; 16];
        let bytes = stream(org, None);
        let err = decode(&bytes[..bytes.len() - 40], 64, org).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
}
