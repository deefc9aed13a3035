//! JSONL: one JSON object per row, keys in published column order, every column present
//! (`null` when NULL). Timestamps are RFC 3339 UTC with microseconds (`…T10:15:00.000000Z`),
//! dates `YYYY-MM-DD`, numerics JSON strings with their full scale (exact, unlike JSON
//! numbers in most readers), jsonb nested as JSON, text[] as arrays.

use std::io::Write;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use chrono::{DateTime, NaiveDate};

use crate::error::{Error, ErrorKind, Result};

/// How each column is written, derived once per schema.
#[derive(Debug, Clone)]
pub struct JsonlEncoder {
    keys: Vec<Vec<u8>>,
    raw_json: Vec<bool>,
}

impl JsonlEncoder {
    pub fn new(schema: &arrow_schema::Schema) -> JsonlEncoder {
        JsonlEncoder {
            keys: schema
                .fields()
                .iter()
                .map(|f| {
                    let mut k = serde_json::to_vec(f.name()).expect("string");
                    k.push(b':');
                    k
                })
                .collect(),
            raw_json: schema
                .fields()
                .iter()
                .map(|f| f.metadata().get("tidemark.type").is_some_and(|t| t == "jsonb"))
                .collect(),
        }
    }

    /// Appends the batch's rows to `out`, one line each.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let columns = batch.columns();
        for row in 0..batch.num_rows() {
            out.push(b'{');
            for (i, col) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.keys[i]);
                if col.is_null(row) {
                    out.extend_from_slice(b"null");
                    continue;
                }
                write_value(col.as_ref(), row, self.raw_json[i], out)?;
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(())
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn write_value(col: &dyn Array, row: usize, raw_json: bool, out: &mut Vec<u8>) -> Result<()> {
    match col.data_type() {
        DataType::Utf8 => {
            let s = col.as_string::<i32>().value(row);
            if raw_json {
                // Postgres' jsonb output is valid JSON on one line.
                out.extend_from_slice(s.as_bytes());
            } else {
                write_str(s, out);
            }
        }
        DataType::Int16 => write!(out, "{}", col.as_primitive::<Int16Type>().value(row)).expect("vec"),
        DataType::Int32 => write!(out, "{}", col.as_primitive::<Int32Type>().value(row)).expect("vec"),
        DataType::Int64 => write!(out, "{}", col.as_primitive::<Int64Type>().value(row)).expect("vec"),
        DataType::Float64 => {
            let v = col.as_primitive::<Float64Type>().value(row);
            if v.is_finite() {
                // serde_json prints the shortest representation that round-trips.
                serde_json::to_writer(&mut *out, &v).expect("vec");
            } else {
                write_str(&v.to_string(), out);
            }
        }
        DataType::Boolean => out.extend_from_slice(if col.as_boolean().value(row) { b"true" } else { b"false" }),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            out.push(b'"');
            write_decimal(v, *scale, out);
            out.push(b'"');
        }
        DataType::Timestamp(_, _) => {
            let micros = col.as_primitive::<TimestampMicrosecondType>().value(row);
            let t = DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "timestamp out of range"))?;
            write!(out, "\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")).expect("vec");
        }
        DataType::Date32 => {
            let days = col.as_primitive::<Date32Type>().value(row);
            let d = NaiveDate::from_ymd_opt(1970, 1, 1)
                .expect("valid")
                .checked_add_signed(chrono::Duration::days(days as i64))
                .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "date out of range"))?;
            write!(out, "\"{}\"", d.format("%Y-%m-%d")).expect("vec");
        }
        DataType::List(_) => {
            let list = col.as_list::<i32>();
            let values = list.value(row);
            let strings = values.as_string::<i32>();
            out.push(b'[');
            for j in 0..strings.len() {
                if j > 0 {
                    out.push(b',');
                }
                if strings.is_null(j) {
                    out.extend_from_slice(b"null");
                } else {
                    write_str(strings.value(j), out);
                }
            }
            out.push(b']');
        }
        other => {
            return Err(Error::unexpected(format!("no JSONL encoding for Arrow type {other}")));
        }
    }
    Ok(())
}

/// `12345, 2` → `123.45`; `-5, 2` → `-0.05`; scale 0 → integer.
pub fn write_decimal(v: i128, scale: i8, out: &mut Vec<u8>) {
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale.max(0) as usize;
    if neg {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits.as_bytes());
        return;
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_scale() {
        let f = |v, s| {
            let mut o = Vec::new();
            write_decimal(v, s, &mut o);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(f(12345, 2), "123.45");
        assert_eq!(f(-5, 2), "-0.05");
        assert_eq!(f(0, 3), "0.000");
        assert_eq!(f(7, 0), "7");
        assert_eq!(f(-120, 1), "-12.0");
    }
}
