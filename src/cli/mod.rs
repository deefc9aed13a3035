//! The command line: argument types, logging set-up, dispatch and exit codes. One file per
//! command group. Everything returns the crate's `Error`; its kind becomes the exit code.
//!
//! Exit codes: 0 success · 1 unexpected failure · 2 usage error · 3 invalid configuration,
//! input or schema · 4 a database or destination is unreachable · 5 the run finished but some
//! deliveries failed or were dead-lettered · 130 interrupted.

mod archive;
mod demo;
mod destination;
#[cfg(feature = "iceberg")]
mod iceberg;
mod output;
#[cfg(feature = "query")]
mod query;
mod reference;
mod run;
mod schema;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use sqlx::PgPool;

use crate::control::{self, APP_CONTROL, APP_EXTRACT};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::Registry;

#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Export a Postgres application's hot tables to warehouses and object stores, exactly once per 15-minute window.",
    long_about = "tidemark keeps a high-water mark per destination and table, cuts fixed windows on (updated_at, id), \
                  and extracts a window only once no transaction that could still write into it is open. Every window \
                  is a delivery in a leased, fenced outbox in the control-plane database.\n\n\
                  Start with `tidemark demo` to see the whole pipeline on a throwaway Postgres.",
    after_help = "Exit codes: 0 ok, 1 unexpected, 2 usage, 3 invalid config/input/schema, 4 unreachable, 5 deliveries failed, 130 interrupted."
)]
pub struct Cli {
    /// Control-plane database (destinations, deliveries, watermarks).
    #[arg(long, env = "TIDEMARK_DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Source database with the hot tables; defaults to the control-plane database.
    #[arg(long, env = "TIDEMARK_SOURCE_URL", global = true, hide_env_values = true)]
    source_url: Option<String>,
    /// Read published schemas from this directory instead of the ones built in.
    #[arg(long, env = "TIDEMARK_SCHEMAS_DIR", global = true)]
    schemas_dir: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "TIDEMARK_LOG_FORMAT", global = true, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `tidemark=debug`.
    #[arg(long, env = "TIDEMARK_LOG", global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the control-plane tables.
    Migrate,
    /// Register and manage destinations.
    #[command(subcommand)]
    Destination(destination::DestinationCommand),
    /// Record a delivery for every closed, non-empty window of every active destination × table.
    Plan(run::PlanArgs),
    /// Plan, then deliver due windows (what the CronJob runs every 15 minutes).
    Run(run::RunArgs),
    /// Long-running loop: plan and deliver, forever.
    Worker(run::WorkerArgs),
    /// Export a historical range for one destination and table, with progress; safe to interrupt and re-run.
    Backfill(run::BackfillArgs),
    /// Watermark, lag and delivery counts per destination × table.
    Status(run::StatusArgs),
    /// Put dead-lettered deliveries back in the queue.
    Retry(run::RetryArgs),
    /// Remove aged rows from the hot tables once they are proven delivered, leaving a tombstone per row (dry run unless --execute).
    Tombstone(archive::TombstoneArgs),
    /// Cold storage: recall archived rows with verification, evidence reports, overrides.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// SQL over a Parquet export (local directory or a PARQUET_S3 destination) with DataFusion, with the same `latest` views as the warehouses.
    #[cfg(feature = "query")]
    Query(query::QueryArgs),
    /// Inspect the published schemas.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Set up the source database: delete capture.
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Iceberg table health: snapshot expiry and file report (ICEBERG_S3 destinations).
    #[cfg(feature = "iceberg")]
    #[command(subcommand)]
    Iceberg(iceberg::IcebergCommand),
    /// Run the whole pipeline on a throwaway Postgres with synthetic data, into a local directory.
    Demo(demo::DemoArgs),
    /// The reference application (schema, synthetic data, throwaway cluster) for trials and benchmarks.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
}

/// Shared state of one invocation.
pub struct Context {
    database_url: Option<String>,
    source_url: Option<String>,
    schemas_dir: Option<PathBuf>,
}

impl Context {
    pub(crate) fn database_url(&self) -> Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| Error::config("no control-plane database: set TIDEMARK_DATABASE_URL or pass --database-url"))
    }

    pub async fn control(&self) -> Result<PgPool> {
        control::connect(self.database_url()?, APP_CONTROL, 16).await
    }

    pub async fn source(&self) -> Result<PgPool> {
        let url = match &self.source_url {
            Some(u) => u.as_str(),
            None => self.database_url()?,
        };
        control::connect(url, APP_EXTRACT, 16).await
    }

    pub fn registry(&self) -> Result<Arc<Registry>> {
        Ok(Arc::new(Registry::load(self.schemas_dir.as_deref())?))
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}

/// Maps an error to the documented exit code.
pub fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Config | ErrorKind::InvalidInput | ErrorKind::Schema => 3,
        ErrorKind::Unavailable | ErrorKind::DestinationTransient | ErrorKind::DestinationAuth => 4,
        _ => 1,
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ctx = Context {
        database_url: cli.database_url,
        source_url: cli.source_url,
        schemas_dir: cli.schemas_dir,
    };
    let result = runtime.block_on(dispatch(&ctx, cli.command));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn dispatch(ctx: &Context, command: Command) -> Result<u8> {
    match command {
        Command::Migrate => {
            let pool = ctx.control().await?;
            let applied = control::migrate(&pool).await?;
            if applied.is_empty() {
                println!("control plane is up to date");
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
            Ok(0)
        }
        Command::Destination(cmd) => destination::run(ctx, cmd).await,
        Command::Plan(args) => run::plan(ctx, args).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Worker(args) => run::worker(ctx, args).await,
        Command::Backfill(args) => run::backfill(ctx, args).await,
        Command::Status(args) => run::status(ctx, args).await,
        Command::Retry(args) => run::retry(ctx, args).await,
        Command::Tombstone(args) => archive::tombstone(ctx, args).await,
        Command::Archive(cmd) => archive::run(ctx, cmd).await,
        Command::Schema(cmd) => schema::run(ctx, cmd),
        Command::Source(cmd) => source::run(ctx, cmd).await,
        #[cfg(feature = "iceberg")]
        Command::Iceberg(cmd) => iceberg::run(ctx, cmd).await,
        Command::Demo(args) => demo::run(args).await,
        #[cfg(feature = "query")]
        Command::Query(args) => query::query(ctx, args).await,
        Command::Reference(cmd) => reference::run(ctx, cmd).await,
    }
}

/// Parses `15m`, `900s`, `1h`, `90` (seconds).
pub fn parse_duration_secs(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}'; use e.g. 15m, 900s, 1h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in '{s}'; use s, m, h or d")),
    };
    Ok(n * mult)
}

/// Parses an RFC 3339 instant or a plain date (midnight UTC).
pub fn parse_instant(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("valid").and_utc());
    }
    Err(format!(
        "invalid instant '{s}'; use RFC 3339 (2026-11-19T10:00:00Z) or a date (2026-11-19)"
    ))
}
