//! Encoders: Arrow batches → Parquet or JSONL bytes. The type mapping comes from the
//! published schema via the Arrow schema and its field metadata; nothing here names a column.
//!
//! Must not touch: storage. Encoders write into whatever sink the destination hands them.

pub mod jsonl;
pub mod parquet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File formats of object destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Provenance written into every file (Parquet key-value metadata) and every receipt.
#[derive(Debug, Clone, Serialize)]
pub struct FileProvenance {
    pub table: String,
    pub schema_version: u32,
    pub organization_id: Uuid,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub delivery_id: Uuid,
}

impl FileProvenance {
    pub fn key_values(&self) -> Vec<(String, String)> {
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        vec![
            ("tidemark.table".into(), self.table.clone()),
            ("tidemark.schema_version".into(), self.schema_version.to_string()),
            ("tidemark.organization_id".into(), self.organization_id.to_string()),
            ("tidemark.window_start".into(), ts(self.window_start)),
            ("tidemark.window_end".into(), ts(self.window_end)),
            ("tidemark.delivery_id".into(), self.delivery_id.to_string()),
            ("tidemark.version".into(), env!("CARGO_PKG_VERSION").into()),
        ]
    }
}
