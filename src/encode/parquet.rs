//! Parquet writer settings, explained:
//! - zstd level 1: within a few percent of level 3's size on this data, at a fraction of the
//!   CPU (the encoder must keep up with `COPY`);
//! - page-level statistics and the page index, so engines prune by `updated_at` and ids;
//! - row groups of at most 128 Ki rows or 64 MiB: bounded writer memory, and enough groups per
//!   file for parallel reads;
//! - key-value metadata carries the provenance (table, schema version, window, delivery);
//! - no dictionary for columns that are unique or nearly so (uuid, jsonb): the writer would
//!   hash every value only to fall back to plain encoding when the dictionary page fills up;
//!   no statistics for jsonb (min/max of documents prune nothing).

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::FileProvenance;
use crate::schema::{ColumnType, TableSchema};

pub const MAX_ROW_GROUP_ROWS: usize = 32 * 1024;
/// And at most this many bytes buffered per row group, however wide the rows.
pub const MAX_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

pub fn writer_properties(provenance: &FileProvenance, schema: &TableSchema) -> WriterProperties {
    let kv = provenance
        .key_values()
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
        .set_key_value_metadata(Some(kv))
        .set_created_by(format!("tidemark version {}", env!("CARGO_PKG_VERSION")));
    for c in &schema.columns {
        let path = || ColumnPath::from(c.name.as_str());
        if matches!(c.ty, ColumnType::Uuid | ColumnType::Jsonb) {
            builder = builder.set_column_dictionary_enabled(path(), false);
        }
        if c.ty == ColumnType::Jsonb {
            // min/max of JSON documents prune nothing and cost a comparison of every value.
            builder = builder.set_column_statistics_enabled(path(), EnabledStatistics::None);
        }
    }
    builder.build()
}
