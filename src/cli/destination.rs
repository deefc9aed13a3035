//! `tidemark destination add|list|show|pause|resume|remove|set-schema-versions`.

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::output::{instant, json, print_table};
use super::{Context, parse_duration_secs, parse_instant};
use crate::control::destinations::{self, DestinationKind, NewDestination};
use crate::control::ensure_migrated;
use crate::deliver;
use crate::error::{Error, Result};
use crate::schema::Table;

#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// Register a destination for an organization. The configuration is validated, credential
    /// references are resolved and the destination is probed (`--no-check` skips the probe).
    Add(AddArgs),
    /// List destinations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one destination (by id or unique name).
    Show {
        destination: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop planning and delivering for a destination.
    Pause { destination: String },
    /// Resume a paused (or errored) destination.
    Resume { destination: String },
    /// Choose the major schema versions a destination receives, per table: `--versions 1,2`
    /// starts a dual-write window (both versions, each with its own windows and watermark),
    /// `--versions 2` then retires v1 (no new v1 windows; those already planned complete).
    SetSchemaVersions(SetVersionsArgs),
    /// Replace a destination's configuration, e.g. to point at rotated credentials. The new
    /// configuration is validated, its references resolved and the destination probed before
    /// anything changes (`--no-check` skips the probe); the kind cannot change. The next
    /// attempt of every window uses it.
    SetConfig {
        /// Destination id or unique name.
        destination: String,
        /// The whole new configuration: JSON, or @file with JSON.
        #[arg(long)]
        config: String,
        #[arg(long)]
        no_check: bool,
        #[arg(long)]
        json: bool,
    },
    /// Probe a destination with its stored configuration (resolves its credential references
    /// and writes/reads a check object or runs a check query). Exit 0 when it is reachable.
    Check {
        /// Destination id or unique name.
        destination: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-deliver a table's windows from an instant on: delivered windows that end after
    /// `--from` go back into the queue and the watermark moves back. Dry run unless
    /// `--execute`. Refused while one of them is being delivered, or when one proves rows
    /// archived by the cold-storage pass. Re-delivery reuses each window's delivery id, so no
    /// destination gets duplicates (docs/OPERATIONS.md#rewinding-a-watermark).
    Rewind(RewindArgs),
    /// Delete a destination and its delivery history.
    Remove {
        destination: String,
        /// Required: removal is not reversible.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Organization whose rows this destination receives (and only those).
    #[arg(long)]
    org: Uuid,
    /// PARQUET_S3, JSONL_S3, ... (SNOWFLAKE, BIGQUERY, DATABRICKS, ICEBERG_S3, POSTGRES_REPLICA when built in).
    #[arg(long)]
    kind: String,
    /// Name, unique within the organization.
    #[arg(long)]
    name: String,
    /// Configuration as JSON, or @path to a JSON file. Secrets only as references: {"env": "VAR"} or {"file": "/path"}.
    #[arg(long)]
    config: String,
    /// Comma-separated tables to export, or `all`.
    #[arg(long, default_value = "all")]
    tables: String,
    /// Window length (divides a day): 15m by default.
    #[arg(long, default_value = "15m", value_parser = parse_duration_secs)]
    window: i64,
    /// How long after a window's end to wait before extracting it.
    #[arg(long, default_value = "60s", value_parser = parse_duration_secs)]
    grace: i64,
    /// Attempts before a delivery is dead-lettered.
    #[arg(long, default_value_t = 8)]
    max_attempts: i32,
    /// `earliest` (all history, the default), `now` (only new data; backfill the rest), or an instant.
    #[arg(long, default_value = "earliest")]
    start_from: String,
    /// Skip the reachability probe (the configuration is still validated).
    #[arg(long)]
    no_check: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RewindArgs {
    /// Destination id or unique name.
    destination: String,
    /// The table to rewind.
    #[arg(long)]
    table: Table,
    /// Instant (RFC 3339 or YYYY-MM-DD) from which windows are delivered again.
    #[arg(long)]
    from: String,
    /// Only this major schema version (default: every version the table has a watermark for).
    #[arg(long)]
    version: Option<u32>,
    /// Apply the rewind (default: report what would be re-queued).
    #[arg(long)]
    execute: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SetVersionsArgs {
    /// Destination id or unique name.
    destination: String,
    /// Comma-separated major versions, e.g. `1,2` (dual-write) or `2` (v1 retired).
    #[arg(long, value_delimiter = ',', required = true)]
    versions: Vec<u32>,
    /// Comma-separated tables. Default: every enabled table that publishes all of --versions
    /// (the others are left as they are, and listed).
    #[arg(long)]
    tables: Option<String>,
    /// Where a newly added version starts: `start` (the destination's own start: its whole
    /// history is planned, the default), `now`, or an instant (earlier windows can be
    /// backfilled). A version added again after being retired resumes where it stopped.
    #[arg(long, default_value = "start")]
    from: String,
    #[arg(long)]
    json: bool,
}

fn parse_tables(s: &str) -> Result<Vec<Table>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Table::ALL.to_vec());
    }
    let mut tables: Vec<Table> = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_>>()?;
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        return Err(Error::invalid("--tables names no table"));
    }
    Ok(tables)
}

fn parse_config(s: &str) -> Result<serde_json::Value> {
    let (text, origin) = match s.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Error::config(format!("cannot read config file {path}")).with_source(e))?,
            path.to_string(),
        ),
        None => (s.to_string(), "--config".to_string()),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::config(format!("{origin} is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::config(format!("{origin} must be a JSON object")));
    }
    Ok(value)
}

pub async fn run(ctx: &Context, cmd: DestinationCommand) -> Result<u8> {
    match cmd {
        DestinationCommand::Add(args) => add(ctx, args).await,
        DestinationCommand::List { json: as_json } => {
            let pool = ctx.control().await?;
            ensure_migrated(&pool).await?;
            let all = destinations::list(&pool).await?;
            if as_json {
                json(&all);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.to_string(),
                            d.name.clone(),
                            d.organization_id.to_string(),
                            d.kind.to_string(),
                            d.status.clone(),
                            d.enabled_tables.len().to_string(),
                            instant(d.last_delivery_at),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "NAME",
                        "ORGANIZATION",
                        "KIND",
                        "STATUS",
                        "TABLES",
                        "LAST DELIVERY",
                    ],
                    &rows,
                );
            }
            Ok(0)
        }
        DestinationCommand::Show {
            destination,
            json: as_json,
        } => {
            let pool = ctx.control().await?;
            ensure_migrated(&pool).await?;
            let d = destinations::resolve(&pool, &destination).await?;
            if as_json {
                json(&d);
            } else {
                println!("id:             {}", d.id);
                println!("name:           {}", d.name);
                println!("organization:   {}", d.organization_id);
                println!("kind:           {}", d.kind);
                println!("status:         {}", d.status);
                println!(
                    "tables:         {}",
                    d.enabled_tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                );
                println!(
                    "schema versions: {}",
                    d.enabled_tables
                        .iter()
                        .map(|t| format!(
                            "{t} {}",
                            d.versions(*t)
                                .iter()
                                .map(|v| format!("v{v}"))
                                .collect::<Vec<_>>()
                                .join("+")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!("window / grace: {}s / {}s", d.window_seconds, d.grace_seconds);
                println!("max attempts:   {}", d.max_attempts);
                println!("start from:     {}", instant(d.start_from));
                println!("last delivery:  {}", instant(d.last_delivery_at));
                println!("last error:     {}", d.last_error.as_deref().unwrap_or("-"));
                println!("config:         {}", d.config);
            }
            Ok(0)
        }
        DestinationCommand::SetSchemaVersions(args) => set_schema_versions(ctx, args).await,
        DestinationCommand::SetConfig {
            destination,
            config,
            no_check,
            json: as_json,
        } => {
            let config = parse_config(&config)?;
            let pool = ctx.control().await?;
            ensure_migrated(&pool).await?;
            let d = destinations::resolve(&pool, &destination).await?;
            let unchanged = |e: Error| Error::new(e.kind(), format!("{e}; configuration unchanged"));
            let built = deliver::build(d.kind, &config).map_err(unchanged)?;
            if !no_check {
                built
                    .check()
                    .await
                    .map_err(|e| unchanged(Error::new(e.kind(), format!("destination check failed: {e}"))))?;
            }
            destinations::set_config(&pool, d.id, &config).await?;
            if as_json {
                json(
                    &serde_json::json!({"destination": d.name, "destination_id": d.id, "checked": !no_check, "config": config}),
                );
            } else {
                println!(
                    "destination {} ({}): configuration replaced{}; the next attempt of every window uses it",
                    d.name,
                    d.id,
                    if no_check { " (not probed)" } else { " and probed" }
                );
            }
            Ok(0)
        }
        DestinationCommand::Check {
            destination,
            json: as_json,
        } => {
            let pool = ctx.control().await?;
            ensure_migrated(&pool).await?;
            let d = destinations::resolve(&pool, &destination).await?;
            let started = std::time::Instant::now();
            let outcome = match deliver::build(d.kind, &d.config) {
                Ok(built) => built.check().await,
                Err(e) => Err(e),
            };
            let seconds = started.elapsed().as_secs_f64();
            if as_json {
                json(&serde_json::json!({
                    "destination": d.name, "destination_id": d.id, "kind": d.kind, "ok": outcome.is_ok(),
                    "error_kind": outcome.as_ref().err().map(|e| e.kind().as_str()),
                    "error": outcome.as_ref().err().map(|e| e.to_string()), "seconds": seconds,
                }));
            }
            match outcome {
                Ok(()) => {
                    if !as_json {
                        println!("destination {} ({}) is reachable ({seconds:.2}s)", d.name, d.kind);
                    }
                    Ok(0)
                }
                Err(e) if as_json => Ok(crate::cli::exit_code(&e)),
                Err(e) => Err(Error::new(
                    e.kind(),
                    format!("destination {} check failed: {e}", d.name),
                )),
            }
        }
        DestinationCommand::Rewind(args) => rewind(ctx, args).await,
        DestinationCommand::Pause { destination } => set_status(ctx, &destination, "paused").await,
        DestinationCommand::Resume { destination } => set_status(ctx, &destination, "active").await,
        DestinationCommand::Remove { destination, yes } => {
            if !yes {
                return Err(Error::invalid(
                    "removing a destination deletes its delivery history; pass --yes to confirm",
                ));
            }
            let pool = ctx.control().await?;
            ensure_migrated(&pool).await?;
            let d = destinations::resolve(&pool, &destination).await?;
            destinations::remove(&pool, d.id).await?;
            println!("removed destination {} ({})", d.name, d.id);
            Ok(0)
        }
    }
}

/// What `set-schema-versions` did to one table.
#[derive(Debug, serde::Serialize)]
struct VersionChange {
    table: Table,
    before: Vec<u32>,
    after: Vec<u32>,
    /// Versions that start now, and from where (`None`: the destination's start).
    added: Vec<u32>,
    starts_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Versions no longer planned, with their deliveries still to complete.
    retired: Vec<u32>,
    retired_in_flight: i64,
}

async fn set_schema_versions(ctx: &Context, args: SetVersionsArgs) -> Result<u8> {
    let registry = ctx.registry()?;
    let pool = ctx.control().await?;
    ensure_migrated(&pool).await?;
    let d = destinations::resolve(&pool, &args.destination).await?;
    let start = match args.from.as_str() {
        "start" => None,
        "now" => Some(chrono::Utc::now()),
        other => Some(parse_instant(other).map_err(Error::invalid)?),
    };
    let mut versions = args.versions.clone();
    versions.sort_unstable();
    versions.dedup();
    let explicit = args.tables.is_some();
    let tables = match &args.tables {
        Some(t) => parse_tables(t)?,
        None => d.enabled_tables.clone(),
    };
    let mut apply = Vec::new();
    let mut skipped = Vec::new();
    for table in tables {
        if !d.enabled_tables.contains(&table) {
            return Err(Error::invalid(format!(
                "table {table} is not enabled for destination {}",
                d.name
            )));
        }
        let published = registry.versions(table);
        let missing: Vec<u32> = versions.iter().copied().filter(|v| !published.contains(v)).collect();
        if missing.is_empty() {
            apply.push(table);
        } else if explicit {
            return Err(Error::invalid(format!(
                "{table} has no published schema {}; published: {}",
                missing.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
                published.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
            )));
        } else {
            skipped.push(table);
        }
    }
    if apply.is_empty() {
        return Err(Error::invalid(format!(
            "no enabled table of destination {} publishes every version of {:?}; nothing changed",
            d.name, versions
        )));
    }
    let mut changes = Vec::new();
    for table in apply {
        let before = destinations::set_schema_versions(&pool, d.id, table, &versions, start).await?;
        let retired: Vec<u32> = before.iter().copied().filter(|v| !versions.contains(v)).collect();
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM warehouse_deliveries WHERE destination_id = $1 AND \"table\" = $2::warehouse_table \
             AND schema_version = ANY($3) AND status IN ('pending', 'leased', 'failed')",
        )
        .bind(d.id)
        .bind(table.db_label())
        .bind(retired.iter().map(|v| *v as i32).collect::<Vec<i32>>())
        .fetch_one(&pool)
        .await?;
        changes.push(VersionChange {
            table,
            added: versions.iter().copied().filter(|v| !before.contains(v)).collect(),
            before,
            after: versions.clone(),
            starts_from: start.map(|s| crate::plan::align_down(s, d.window_seconds as i64)),
            retired,
            retired_in_flight: in_flight,
        });
    }
    if args.json {
        json(
            &serde_json::json!({"destination": d.name, "destination_id": d.id, "changes": changes, "unchanged": skipped}),
        );
        return Ok(0);
    }
    let vs = |v: &[u32]| v.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join("+");
    for c in &changes {
        println!("{} {}: {} -> {}", d.name, c.table, vs(&c.before), vs(&c.after));
        if !c.added.is_empty() {
            let from = match c.starts_from {
                Some(t) => format!("from {}", instant(Some(t))),
                None => "from the destination's start (its whole history is planned)".into(),
            };
            println!(
                "  {} start {from}, unless delivered before (then they resume)",
                vs(&c.added)
            );
        }
        if !c.retired.is_empty() {
            println!(
                "  {} retired: no new windows; {} delivery(ies) already planned will still complete; watermark kept",
                vs(&c.retired),
                c.retired_in_flight
            );
        }
    }
    for t in &skipped {
        println!(
            "{} {t}: unchanged ({}), no {} published",
            d.name,
            vs(&d.versions(*t)),
            vs(&versions)
        );
    }
    Ok(0)
}

async fn rewind(ctx: &Context, args: RewindArgs) -> Result<u8> {
    let from = parse_instant(&args.from).map_err(Error::invalid)?;
    let pool = ctx.control().await?;
    ensure_migrated(&pool).await?;
    let d = destinations::resolve(&pool, &args.destination).await?;
    if !d.enabled_tables.contains(&args.table) {
        return Err(Error::invalid(format!(
            "table {} is not enabled for destination {}",
            args.table, d.name
        )));
    }
    let r = crate::control::rewind::rewind(&pool, d.id, args.table, args.version, from, args.execute).await?;
    if args.json {
        json(&serde_json::json!({"destination": d.name, "rewind": r}));
        return Ok(0);
    }
    let verb = if r.executed { "re-queued" } else { "would re-queue" };
    for v in &r.versions {
        println!(
            "{} {} v{}: {verb} {} delivered window(s), {} row(s){}",
            d.name,
            r.table,
            v.schema_version,
            v.requeued,
            v.requeued_rows,
            match (v.first_window, v.last_window_end) {
                (Some(a), Some(b)) => format!(" in [{}, {})", instant(Some(a)), instant(Some(b))),
                _ => String::new(),
            }
        );
        for (status, n) in &v.untouched {
            println!("  {n} {status} window(s) in the range left as they are");
        }
        println!(
            "  delivered through: {} -> {}",
            instant(v.delivered_through_before),
            instant(v.delivered_through_after)
        );
    }
    if !r.executed {
        println!("dry run: nothing changed; pass --execute to rewind");
    }
    Ok(0)
}

async fn set_status(ctx: &Context, destination: &str, status: &str) -> Result<u8> {
    let pool = ctx.control().await?;
    ensure_migrated(&pool).await?;
    let d = destinations::resolve(&pool, destination).await?;
    destinations::set_status(&pool, d.id, status).await?;
    println!("destination {} ({}) is now {status}", d.name, d.id);
    Ok(0)
}

/// Validates everything that can be validated before touching the control plane, so a bad
/// destination never gets a row.
pub async fn add(ctx: &Context, args: AddArgs) -> Result<u8> {
    let kind: DestinationKind = args.kind.parse()?;
    let tables = parse_tables(&args.tables)?;
    let config = parse_config(&args.config)?;
    if args.window <= 0 || 86_400 % args.window != 0 || args.window < 60 {
        return Err(Error::invalid(format!(
            "--window {}s must be at least 60s and divide a day",
            args.window
        )));
    }
    let start_from = match args.start_from.as_str() {
        "earliest" => None,
        "now" => Some(chrono::Utc::now()),
        other => Some(parse_instant(other).map_err(Error::invalid)?),
    };
    let built = deliver::build(kind, &config)?;
    if !args.no_check {
        built
            .check()
            .await
            .map_err(|e| Error::new(e.kind(), format!("destination check failed: {}", e)))?;
    }
    let pool = ctx.control().await?;
    ensure_migrated(&pool).await?;
    let d = destinations::insert(
        &pool,
        &NewDestination {
            organization_id: args.org,
            kind,
            name: args.name,
            config,
            enabled_tables: tables,
            window_seconds: args.window as i32,
            grace_seconds: args.grace as i32,
            max_attempts: args.max_attempts,
            start_from,
        },
    )
    .await?;
    if args.json {
        json(&d);
    } else {
        println!(
            "added destination {} ({}) for organization {}",
            d.name, d.id, d.organization_id
        );
    }
    Ok(0)
}
