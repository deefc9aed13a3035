//! `tidemark query`: SQL over a Parquet export (see [`crate::query`]).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Context;
use super::output::print_table;
use crate::control::destinations::{self, DestinationKind};
use crate::deliver::object::ObjectDestination;
use crate::encode::Format;
use crate::error::{Error, Result};
use crate::query::{self, Export, OutputFormat};

#[derive(Debug, Args)]
#[command(
    after_help = "Registered per published table T and major N: T_vN_raw (every exported version), \
T_vN_latest and T_vN (newest version per id), and T (the latest view of the newest major).\n\n\
Examples:\n  tidemark demo && tidemark query \"SELECT severity, count(*) FROM findings GROUP BY 1 ORDER BY 1\"\n  \
tidemark query --destination lake --format json \"SELECT * FROM events_v1_raw WHERE org_id = '…' LIMIT 10\"\n  \
tidemark query --list"
)]
pub struct QueryArgs {
    /// The SQL statement (DataFusion's dialect, close to PostgreSQL).
    #[arg(required_unless_present = "list")]
    sql: Option<String>,
    /// A local Parquet export directory (what a file:// PARQUET_S3 destination writes). Default:
    /// the demo's `tidemark-demo/parquet` when it exists.
    #[arg(long, conflicts_with = "destination")]
    dir: Option<PathBuf>,
    /// Query what a PARQUET_S3 destination (id or name) has written, local or on S3, or the
    /// current snapshots of an ICEBERG_S3 destination's tables (through its catalog), with its
    /// configured credentials. Needs the control-plane database.
    #[arg(long)]
    destination: Option<String>,
    /// Output format: an aligned table, JSON lines, or CSV with a header.
    #[arg(long, value_enum, default_value = "table")]
    format: QueryFormat,
    /// Rows shown by the table format (JSON lines and CSV stream every row).
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
    /// List the registered tables and views instead of running SQL.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum QueryFormat {
    Table,
    Json,
    Csv,
}

async fn export(ctx: &Context, args: &QueryArgs) -> Result<Export> {
    let destination = match (&args.destination, &args.dir) {
        (Some(name), _) => {
            let pool = ctx.control().await?;
            let d = destinations::resolve(&pool, name).await?;
            #[cfg(feature = "iceberg")]
            if d.kind == DestinationKind::IcebergS3 {
                return iceberg_export(ctx, &d.config).await;
            }
            if d.kind != DestinationKind::ParquetS3 {
                return Err(Error::invalid(format!(
                    "destination '{}' is {}; `tidemark query` reads PARQUET_S3 exports and ICEBERG_S3 tables (query a warehouse in the warehouse)",
                    d.name, d.kind
                )));
            }
            ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &d.config)?
        }
        (None, dir) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    let demo = PathBuf::from("tidemark-demo/parquet");
                    if !demo.is_dir() {
                        return Err(Error::invalid(
                            "no export given: pass --dir DIR or --destination NAME (or run `tidemark demo` first, which writes tidemark-demo/parquet)",
                        ));
                    }
                    demo
                }
            };
            if !dir.is_dir() {
                return Err(Error::invalid(format!(
                    "export directory {} does not exist",
                    dir.display()
                )));
            }
            let dir = std::fs::canonicalize(&dir)
                .map_err(|e| Error::invalid(format!("cannot resolve {}", dir.display())).with_source(e))?;
            let url = url::Url::from_directory_path(&dir)
                .map_err(|_| Error::invalid(format!("{} is not an absolute directory", dir.display())))?;
            let config = serde_json::json!({ "url": url.as_str() });
            ObjectDestination::from_config(DestinationKind::ParquetS3, Format::Parquet, &config)?
        }
    };
    Ok(Export {
        store: destination.store(),
        prefix: destination.prefix().clone(),
        files: None,
    })
}

/// An ICEBERG_S3 destination's tables: the data files of each table's current snapshot,
/// found through its catalog.
#[cfg(feature = "iceberg")]
async fn iceberg_export(ctx: &Context, config: &serde_json::Value) -> Result<Export> {
    let registry = ctx.registry()?;
    let dest = crate::deliver::iceberg::IcebergDestination::from_config(config)?;
    let mut files = std::collections::BTreeMap::new();
    for schema in registry.iter() {
        if let Some(f) = dest.current_files(schema).await? {
            files.insert(format!("{}_v{}", schema.table.name(), schema.version), f);
        }
    }
    Ok(Export {
        store: dest.store(),
        prefix: object_store::path::Path::default(),
        files: Some(files),
    })
}

pub async fn query(ctx: &Context, args: QueryArgs) -> Result<u8> {
    let registry = ctx.registry()?;
    let export = export(ctx, &args).await?;
    let (session, relations) = query::session(&export, &registry).await?;
    if args.list {
        match args.format {
            QueryFormat::Json => {
                for r in &relations {
                    println!("{}", serde_json::to_string(r).expect("serializable"));
                }
            }
            _ => {
                let rows: Vec<Vec<String>> = relations
                    .iter()
                    .map(|r| vec![r.name.clone(), r.kind.to_string(), r.objects.to_string()])
                    .collect();
                print_table(&["relation", "kind", "objects"], &rows);
            }
        }
        return Ok(0);
    }
    let sql = args.sql.as_deref().expect("clap requires sql unless --list");
    let format = match args.format {
        QueryFormat::Table => OutputFormat::Table,
        QueryFormat::Json => OutputFormat::Json,
        QueryFormat::Csv => OutputFormat::Csv,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    query::run(&session, sql, format, args.max_rows, &mut out).await?;
    out.flush().ok();
    Ok(0)
}
