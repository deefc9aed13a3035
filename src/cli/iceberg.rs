//! `tidemark iceberg maintain`: snapshot expiry and file-health report for the Iceberg tables
//! of one `ICEBERG_S3` destination (see `deliver::iceberg::maintain`).

use clap::{Args, Subcommand};

use super::output::{bytes, json, print_table};
use super::{Context, parse_duration_secs};
use crate::control::destinations::{self, DestinationKind};
use crate::deliver::iceberg::{IcebergDestination, MaintainOptions};
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum IcebergCommand {
    /// Expire old snapshots (never one whose delivery could still be retried) and old metadata
    /// files; report data files, sizes and manifests, and whether compaction is due.
    Maintain(MaintainArgs),
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Destination id or name (an ICEBERG_S3 destination).
    #[arg(long)]
    destination: String,
    /// Expire snapshots and metadata files older than this (e.g. 7d, 36h).
    #[arg(long, default_value = "7d", value_parser = parse_duration_secs)]
    expire_older_than: i64,
    /// Report what would be expired and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, cmd: IcebergCommand) -> Result<u8> {
    match cmd {
        IcebergCommand::Maintain(args) => maintain(ctx, args).await,
    }
}

async fn maintain(ctx: &Context, args: MaintainArgs) -> Result<u8> {
    let control = ctx.control().await?;
    let registry = ctx.registry()?;
    let dest = destinations::resolve(&control, &args.destination).await?;
    if dest.kind != DestinationKind::IcebergS3 {
        return Err(Error::invalid(format!(
            "destination '{}' is {}, not ICEBERG_S3",
            dest.name, dest.kind
        )));
    }
    let iceberg = IcebergDestination::from_config(&dest.config)?;
    let schemas: Vec<_> = registry
        .iter()
        .filter(|s| dest.enabled_tables.contains(&s.table))
        .cloned()
        .collect();
    let options = MaintainOptions {
        expire_older_than: chrono::Duration::seconds(args.expire_older_than),
        dry_run: args.dry_run,
    };
    let reports = iceberg.maintain(&control, &schemas, &options).await?;
    if args.json {
        json(&reports);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .filter(|r| r.exists)
        .map(|r| {
            vec![
                r.table.clone(),
                r.snapshots.to_string(),
                r.expired_snapshots.len().to_string(),
                r.kept_for_retry.len().to_string(),
                r.removed_metadata_files.to_string(),
                r.data_files.to_string(),
                bytes(r.average_file_bytes as i64),
                r.manifests.to_string(),
            ]
        })
        .collect();
    if args.dry_run {
        println!("dry run: nothing was changed\n");
    }
    print_table(
        &[
            "TABLE",
            "SNAPSHOTS",
            "EXPIRED",
            "KEPT FOR RETRY",
            "OLD METADATA",
            "DATA FILES",
            "AVG FILE",
            "MANIFESTS",
        ],
        &rows,
    );
    for r in reports.iter().filter(|r| r.exists) {
        println!("{}: {}", r.table, r.compaction);
    }
    Ok(0)
}
