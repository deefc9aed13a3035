//! `tidemark demo`: the whole pipeline on a throwaway Postgres, end to end, in one command.
//! Starts a cluster from the installed binaries, creates the reference application with
//! synthetic data for a few organizations, registers a Parquet and a JSONL destination on a
//! local directory, exports everything, and prints the status table and what landed where.

use std::path::{Path, PathBuf};

use clap::Args;

use super::Context;
use super::output::{bytes, print_table};
use super::run::{WorkerFlags, print_status, run_passes};
use crate::control::destinations::{self, DestinationKind, NewDestination};
use crate::control::{self, APP_CONTROL};
use crate::deliver;
use crate::ephemeral::EphemeralPostgres;
use crate::error::{Error, Result};
use crate::reference::{self, GenerateSpec};
use crate::schema::Table;

const MARKER: &str = ".tidemark-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the exported files go (created; a previous demo output there is replaced).
    #[arg(long, default_value = "tidemark-demo")]
    dir: PathBuf,
    /// Organizations to generate.
    #[arg(long, default_value_t = 3)]
    orgs: i32,
    /// Rows of `events` (other tables get proportional counts).
    #[arg(long, default_value_t = 60_000)]
    rows: i64,
    /// Days of history.
    #[arg(long, default_value_t = 2)]
    days: i32,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: i32,
    /// Concurrent deliveries.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Window length (at least 60s, divides a day), e.g. 15m or 1d; longer windows, fewer files.
    #[arg(long, default_value = "15m", value_parser = super::parse_duration_secs)]
    window: i64,
    /// Export every organization (its own destinations, same directories), not only the first.
    #[arg(long)]
    all_orgs: bool,
    /// Export formats, comma-separated: parquet, jsonl.
    #[arg(long, value_delimiter = ',', default_value = "parquet,jsonl")]
    formats: Vec<DemoFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoFormat {
    Parquet,
    Jsonl,
}

fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        if !dir.join(MARKER).exists() {
            return Err(Error::invalid(format!(
                "{} exists and is not a previous demo output; choose another --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir)
            .map_err(|e| Error::invalid(format!("cannot clear {}", dir.display())).with_source(e))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::invalid(format!("cannot create {}", dir.display())).with_source(e))?;
    std::fs::write(dir.join(MARKER), "created by `tidemark demo`; safe to delete\n")
        .map_err(|e| Error::invalid("cannot write marker").with_source(e))?;
    std::fs::canonicalize(dir).map_err(|e| Error::invalid("cannot resolve --dir").with_source(e))
}

fn files_under(dir: &Path) -> (u64, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut files, mut size) = (0, 0);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != MARKER) {
                files += 1;
                size += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, size)
}

pub async fn run(args: DemoArgs) -> Result<u8> {
    if args.window < 60 || 86_400 % args.window != 0 {
        return Err(Error::invalid(format!(
            "--window {}s must be at least 60s and divide a day",
            args.window
        )));
    }
    if args.formats.is_empty() {
        return Err(Error::invalid("--formats needs parquet, jsonl or both"));
    }
    let dir = prepare_dir(&args.dir)?;
    eprintln!("==> starting a throwaway PostgreSQL cluster");
    let pg = EphemeralPostgres::start()?;
    let url = pg.create_database("app").await?;
    let pool = control::connect(&url, APP_CONTROL, 4).await?;
    eprintln!(
        "==> creating the reference application schema and generating data (seed {}, {} orgs, {} events over {} days)",
        args.seed, args.orgs, args.rows, args.days
    );
    reference::install(&pool).await?;
    // Data ends two hours ago, so every window of it is closed.
    let end = crate::plan::align_down(chrono::Utc::now() - chrono::Duration::hours(2), 3600);
    let t = std::time::Instant::now();
    reference::generate(
        &pool,
        &GenerateSpec {
            seed: args.seed,
            organizations: args.orgs,
            rows: args.rows,
            days: args.days,
            end,
            only_events: false,
        },
    )
    .await?;
    eprintln!("    generated in {:.1}s", t.elapsed().as_secs_f64());
    // Hard deletes from now on are exported as `_op = 'D'` rows (docs/DELETES.md).
    crate::capture::install(&pool, &crate::schema::Registry::embedded(), &Table::ALL).await?;
    eprintln!("    delete capture installed (tidemark source install-delete-capture)");
    control::migrate(&pool).await?;
    let orgs = reference::organizations(&pool).await?;
    let Some((_, first_name)) = orgs.first().cloned() else {
        return Err(Error::invalid("--orgs must be at least 1"));
    };
    let exported = if args.all_orgs { &orgs[..] } else { &orgs[..1] };
    let mut added = Vec::new();
    for (org, org_name) in exported {
        eprintln!("==> registering destinations for organization {org_name} ({org})");
        for (format, kind, name, sub) in [
            (
                DemoFormat::Parquet,
                DestinationKind::ParquetS3,
                "demo-parquet",
                "parquet",
            ),
            (DemoFormat::Jsonl, DestinationKind::JsonlS3, "demo-jsonl", "jsonl"),
        ] {
            if !args.formats.contains(&format) {
                continue;
            }
            let out = dir.join(sub);
            let config = serde_json::json!({ "url": format!("file://{}", out.display()) });
            deliver::build(kind, &config)?.check().await?;
            let d = destinations::insert(
                &pool,
                &NewDestination {
                    organization_id: *org,
                    kind,
                    name: name.into(),
                    config,
                    enabled_tables: Table::ALL.to_vec(),
                    window_seconds: args.window as i32,
                    grace_seconds: 60,
                    max_attempts: 8,
                    start_from: None,
                },
            )
            .await?;
            added.push((d, out));
        }
    }
    eprintln!("==> running plan + deliver until idle ({} workers)", args.workers);
    let ctx = Context {
        database_url: Some(url.clone()),
        source_url: None,
        schemas_dir: None,
    };
    let flags = WorkerFlags {
        workers: args.workers,
        lease: 120,
        retry_base: 5,
        retry_cap: 60,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let summary = run_passes(&ctx, &flags, true, None, &cancel).await?;
    println!();
    let (now, tables) = crate::status::table_status(&pool).await?;
    print_status(&crate::status::Status {
        now,
        tables,
        blocking_transaction: None,
        prepared_transaction_since: None,
    });
    println!();
    // Every organization's destinations of a kind share its directory: one line per directory.
    let rows: Vec<Vec<String>> = added
        .iter()
        .take(added.len() / exported.len())
        .map(|(d, out)| {
            let (files, size) = files_under(out);
            vec![
                d.name.clone(),
                d.kind.to_string(),
                files.to_string(),
                bytes(size as i64),
                out.display().to_string(),
            ]
        })
        .collect();
    print_table(&["DESTINATION", "KIND", "FILES", "SIZE", "WHERE"], &rows);
    println!(
        "\ndelivered {} windows, {} rows in {:.1}s ({:.0} rows/s); failed {}, dead-lettered {}",
        summary.delivered,
        summary.rows,
        summary.seconds,
        summary.rows as f64 / summary.seconds.max(1e-3),
        summary.failed,
        summary.dead_letter
    );
    if args.all_orgs {
        println!(
            "all {} organizations were exported, each by its own destinations.",
            orgs.len()
        );
    } else {
        println!(
            "only organization {first_name} was exported; the other {} organizations' rows stayed home.",
            orgs.len() - 1
        );
    }
    if args.formats.contains(&DemoFormat::Parquet) {
        println!(
            "try: python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{}/events', format='parquet', partitioning='hive').count_rows())\"",
            dir.join("parquet").display()
        );
    }
    pool.close().await;
    drop(pg);
    Ok(summary.exit_code())
}
