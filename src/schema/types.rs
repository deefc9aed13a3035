//! The published column types and their one mapping to Arrow. Every encoder and decoder
//! derives its behaviour from [`ColumnType`]; adding a type starts here.

use std::fmt;
use std::str::FromStr;

use arrow_schema::{DataType, Field, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Uuid,
    Text,
    Int2,
    Int4,
    Int8,
    Float8,
    Bool,
    /// `numeric(precision, scale)`; unbounded numerics are not publishable (no exact target type).
    Numeric {
        precision: u8,
        scale: i8,
    },
    Timestamptz,
    Date,
    Jsonb,
    Inet,
    TextArray,
}

impl ColumnType {
    /// The Arrow type of the column. uuid and inet are exported in their canonical text form
    /// (what Postgres prints); jsonb as JSON text in Parquet and as nested JSON in JSONL.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Uuid | ColumnType::Text | ColumnType::Jsonb | ColumnType::Inet => DataType::Utf8,
            ColumnType::Int2 => DataType::Int16,
            ColumnType::Int4 => DataType::Int32,
            ColumnType::Int8 => DataType::Int64,
            ColumnType::Float8 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Numeric { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::TextArray => DataType::List(std::sync::Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }

    /// The Postgres type as `format_type()` would print it after our normalisation.
    pub fn postgres_type(self) -> String {
        match self {
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Text => "text".into(),
            ColumnType::Int2 => "smallint".into(),
            ColumnType::Int4 => "integer".into(),
            ColumnType::Int8 => "bigint".into(),
            ColumnType::Float8 => "double precision".into(),
            ColumnType::Bool => "boolean".into(),
            ColumnType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::Timestamptz => "timestamp with time zone".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Inet => "inet".into(),
            ColumnType::TextArray => "text[]".into(),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Uuid => f.write_str("uuid"),
            ColumnType::Text => f.write_str("text"),
            ColumnType::Int2 => f.write_str("int2"),
            ColumnType::Int4 => f.write_str("int4"),
            ColumnType::Int8 => f.write_str("int8"),
            ColumnType::Float8 => f.write_str("float8"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Numeric { precision, scale } => write!(f, "numeric({precision},{scale})"),
            ColumnType::Timestamptz => f.write_str("timestamptz"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Jsonb => f.write_str("jsonb"),
            ColumnType::Inet => f.write_str("inet"),
            ColumnType::TextArray => f.write_str("text[]"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = match s {
            "uuid" => ColumnType::Uuid,
            "text" => ColumnType::Text,
            "int2" => ColumnType::Int2,
            "int4" => ColumnType::Int4,
            "int8" => ColumnType::Int8,
            "float8" => ColumnType::Float8,
            "bool" => ColumnType::Bool,
            "timestamptz" => ColumnType::Timestamptz,
            "date" => ColumnType::Date,
            "jsonb" => ColumnType::Jsonb,
            "inet" => ColumnType::Inet,
            "text[]" => ColumnType::TextArray,
            other => {
                let inner = other.strip_prefix("numeric(").and_then(|r| r.strip_suffix(')'));
                let parsed = inner.and_then(|ps| {
                    let (p, s) = ps.split_once(',')?;
                    Some((p.trim().parse::<u8>().ok()?, s.trim().parse::<i8>().ok()?))
                });
                match parsed {
                    Some((precision, scale))
                        if (1..=38).contains(&precision) && scale >= 0 && (scale as u8) <= precision =>
                    {
                        ColumnType::Numeric { precision, scale }
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "unknown column type '{other}'; allowed: uuid, text, int2, int4, int8, float8, bool, numeric(P,S) with 1<=P<=38 and 0<=S<=P, timestamptz, date, jsonb, inet, text[]"
                        )));
                    }
                }
            }
        };
        Ok(t)
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_text() {
        for s in [
            "uuid",
            "text",
            "int2",
            "int4",
            "int8",
            "float8",
            "bool",
            "numeric(6,2)",
            "timestamptz",
            "date",
            "jsonb",
            "inet",
            "text[]",
        ] {
            assert_eq!(s.parse::<ColumnType>().unwrap().to_string(), s);
        }
        assert!("numeric".parse::<ColumnType>().is_err());
        assert!("numeric(39,2)".parse::<ColumnType>().is_err());
        assert!("numeric(4,5)".parse::<ColumnType>().is_err());
    }
}
