//! `tidemark query`: SQL over a Parquet export with DataFusion, so an analyst can try every
//! published query without a warehouse.
//!
//! The export is what a `PARQUET_S3` destination writes (a local directory or an S3 prefix):
//! `<prefix>/<table>/v<major>/org_id=<org>/date=<day>/<object>.parquet`. For every published
//! table and major version the session registers, whether or not anything was exported yet
//! (an empty table keeps queries valid):
//!
//! - `<table>_v<N>_raw`: every exported row version (the history), deletes included as
//!   `_op = 'D'` rows, with the partition columns `org_id` and `date` for pruning;
//! - `<table>_v<N>_latest` and `<table>_v<N>`: the newest version of each `id` that is not
//!   deleted (the analyst table a warehouse destination keeps), the published columns only;
//! - `<table>`: `<table>_v<N>_latest` of the newest major this export holds objects of (the
//!   newest published major when it holds none): a v1-only export keeps answering `findings`
//!   from v1 after v2 is published.
//!
//! The same names and the same `latest` rule as the warehouse DDL, so a query written here
//! runs there. Results stream: JSON lines and CSV are written batch by batch; the table format
//! holds at most `max_rows` rows.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{OP_COLUMN, OP_DELETE, OP_UPSERT, Registry, TableSchema};

/// The URL scheme under which the export's store is registered with DataFusion.
const EXPORT_URL: &str = "tidemark://export";

/// Where the export lives: a store and the prefix the destination writes under.
pub struct Export {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// For a table format (Iceberg): the data files of each `<table>_v<N>`'s current snapshot,
    /// which are registered instead of listing `<prefix>/<table>/v<N>/` (a table's directory
    /// can hold files no snapshot references). A table missing from the map has no data yet.
    pub files: Option<std::collections::BTreeMap<String, Vec<Path>>>,
}

/// One registered relation, for `--list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Relation {
    pub name: String,
    pub kind: &'static str,
    pub objects: usize,
}

fn df_error(what: &str, e: datafusion::error::DataFusionError) -> Error {
    // Errors in the user's SQL (planning) are input errors; the rest are the engine's or I/O.
    let kind = match e.find_root() {
        datafusion::error::DataFusionError::SQL(..)
        | datafusion::error::DataFusionError::Plan(..)
        | datafusion::error::DataFusionError::SchemaError(..) => ErrorKind::InvalidInput,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("{what}: {e}"))
}

/// The `latest` rule shared with the warehouse views: the newest version per `id` (newest
/// `updated_at`; on a tie, `U` before `D`: a delete and a re-insert in one transaction leave
/// the row), and no row at all for an id whose newest version is a delete (`_op = 'D'`).
/// Objects written before delete capture have no `_op`: their rows count as `U`.
pub fn latest_view_sql(schema: &TableSchema, raw: &str) -> String {
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let cols = cols.join(", ");
    format!(
        "SELECT {cols} FROM (SELECT {cols}, coalesce(\"{OP_COLUMN}\", '{OP_UPSERT}') AS \"_tidemark_op\", \
         row_number() OVER (PARTITION BY \"id\" ORDER BY \"updated_at\" DESC, coalesce(\"{OP_COLUMN}\", '{OP_UPSERT}') DESC) AS \"_tidemark_rank\" \
         FROM {raw}) WHERE \"_tidemark_rank\" = 1 AND \"_tidemark_op\" <> '{OP_DELETE}'",
        raw = quote(raw)
    )
}

/// The history relation's schema: the export's (`_op` last), with `_op` nullable so objects
/// written before delete capture (without the column) read as NULL there.
fn history_schema(schema: &TableSchema) -> datafusion::arrow::datatypes::SchemaRef {
    let export = schema.export_arrow_schema();
    let fields: Vec<datafusion::arrow::datatypes::Field> = export
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.name() == OP_COLUMN {
                f.with_nullable(true)
            } else {
                f
            }
        })
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
        fields,
        export.metadata().clone(),
    ))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A DataFusion session with every published table of the export registered.
pub async fn session(export: &Export, registry: &Registry) -> Result<(SessionContext, Vec<Relation>)> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    let base = url::Url::parse(EXPORT_URL).expect("valid");
    ctx.register_object_store(&base, export.store.clone());

    let mut relations = Vec::new();
    // Per table: (holds objects, major) of the major the plain name points at.
    let mut newest: std::collections::BTreeMap<&'static str, (bool, u32)> = Default::default();
    for schema in registry.iter() {
        let table = schema.table.name();
        let dir = export
            .prefix
            .clone()
            .join(table)
            .join(format!("v{}", schema.version).as_str());
        let raw = format!("{table}_v{}_raw", schema.version);
        // Hive-style listing of the directory (partition columns org_id and date), or the
        // explicit files of a table format's snapshot (no partition directories to parse).
        let (urls, objects, hive): (Vec<String>, usize, bool) = match &export.files {
            Some(files) => {
                let urls: Vec<String> = files
                    .get(&format!("{table}_v{}", schema.version))
                    .map(|f| f.iter().map(|p| format!("{EXPORT_URL}/{p}")).collect())
                    .unwrap_or_default();
                let n = urls.len();
                (urls, n, false)
            }
            None => {
                let objects = export
                    .store
                    .list(Some(&dir))
                    .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
                    .try_fold(0usize, |n, _| futures::future::ready(Ok(n + 1)))
                    .await
                    .map_err(|e| crate::deliver::object::classify(&format!("cannot list the export under {dir}"), e))?;
                (vec![format!("{EXPORT_URL}/{dir}/")], objects, true)
            }
        };
        if objects > 0 {
            let mut options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            if hive {
                options = options.with_table_partition_cols(vec![
                    ("org_id".to_string(), DataType::Utf8),
                    ("date".to_string(), DataType::Utf8),
                ]);
            }
            let paths = urls
                .iter()
                .map(|u| ListingTableUrl::parse(u).map_err(|e| df_error(&format!("invalid location {u}"), e)))
                .collect::<Result<Vec<_>>>()?;
            let config = ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options);
            let config = if hive {
                config.with_schema(history_schema(schema))
            } else {
                // An Iceberg writer's files carry its own arrow types (field ids, list element
                // names): read them as they are (the views select the published columns by
                // name), plus a nullable `_op` the files lack (NULL reads as an upsert).
                let inferred = config
                    .infer_schema(&ctx.state())
                    .await
                    .map_err(|e| df_error(&format!("cannot read the schema of {raw}"), e))?;
                let file_schema = inferred
                    .file_schema
                    .clone()
                    .ok_or_else(|| Error::unexpected(format!("no schema inferred for {raw}")))?;
                let mut fields: Vec<datafusion::arrow::datatypes::Field> =
                    file_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                if !fields.iter().any(|f| f.name() == OP_COLUMN) {
                    fields.push(datafusion::arrow::datatypes::Field::new(
                        OP_COLUMN,
                        DataType::Utf8,
                        true,
                    ));
                }
                inferred.with_schema(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)))
            };
            let listing = ListingTable::try_new(config).map_err(|e| df_error(&format!("cannot register {raw}"), e))?;
            ctx.register_table(raw.as_str(), Arc::new(listing))
                .map_err(|e| df_error(&format!("cannot register {raw}"), e))?;
        } else {
            let empty = MemTable::try_new(history_schema(schema), vec![vec![]])
                .map_err(|e| df_error(&format!("cannot register the empty {raw}"), e))?;
            ctx.register_table(raw.as_str(), Arc::new(empty))
                .map_err(|e| df_error(&format!("cannot register {raw}"), e))?;
        }
        relations.push(Relation {
            name: raw.clone(),
            kind: "history",
            objects,
        });
        let latest = format!("{table}_v{}_latest", schema.version);
        for name in [latest.clone(), format!("{table}_v{}", schema.version)] {
            let sql = format!("CREATE VIEW {} AS {}", quote(&name), latest_view_sql(schema, &raw));
            ctx.sql(&sql)
                .await
                .map_err(|e| df_error(&format!("cannot create the view {name}"), e))?;
            relations.push(Relation {
                name,
                kind: "latest",
                objects,
            });
        }
        let v = newest.entry(table).or_insert((objects > 0, schema.version));
        *v = (*v).max((objects > 0, schema.version));
    }
    for (table, (_, version)) in newest {
        let sql = format!(
            "CREATE VIEW {} AS SELECT * FROM {}",
            quote(table),
            quote(&format!("{table}_v{version}_latest"))
        );
        ctx.sql(&sql)
            .await
            .map_err(|e| df_error(&format!("cannot create the view {table}"), e))?;
        relations.push(Relation {
            name: table.to_string(),
            kind: "latest (newest major)",
            objects: relations
                .iter()
                .find(|r| r.name == format!("{table}_v{version}_raw"))
                .map_or(0, |r| r.objects),
        });
    }
    Ok((ctx, relations))
}

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// Runs one SQL statement and writes its result to `out`; returns the row count.
pub async fn run(
    ctx: &SessionContext,
    sql: &str,
    format: OutputFormat,
    max_rows: usize,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let df = ctx.sql(sql).await.map_err(|e| df_error("query failed", e))?;
    let mut stream = df.execute_stream().await.map_err(|e| df_error("query failed", e))?;
    let io = |e: std::io::Error| Error::new(ErrorKind::Unexpected, "cannot write the result").with_source(e);
    let arrow = |e: datafusion::arrow::error::ArrowError| {
        Error::new(ErrorKind::Unexpected, format!("cannot format the result: {e}"))
    };
    let mut rows = 0u64;
    match format {
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| df_error("query failed", e))?;
                rows += batch.num_rows() as u64;
                w.write(&batch).map_err(arrow)?;
            }
            w.finish().map_err(arrow)?;
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| df_error("query failed", e))?;
                rows += batch.num_rows() as u64;
                w.write(&batch).map_err(arrow)?;
            }
        }
        OutputFormat::Table => {
            let mut kept: Vec<RecordBatch> = Vec::new();
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| df_error("query failed", e))?;
                let room = max_rows.saturating_sub(rows as usize);
                if batch.num_rows() > room {
                    truncated = true;
                    kept.push(batch.slice(0, room));
                    rows += room as u64;
                    break;
                }
                rows += batch.num_rows() as u64;
                kept.push(batch);
            }
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&kept).map_err(arrow)?;
            writeln!(out, "{text}").map_err(io)?;
            if truncated {
                writeln!(
                    out,
                    "(showing the first {max_rows} rows; use --max-rows, or --format json/csv to stream all)"
                )
                .map_err(io)?;
            } else {
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(rows)
}
