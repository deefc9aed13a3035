//! `tidemark tombstone` and `tidemark archive recall|report|override`: cold storage.

use std::io::Write;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::output::{instant, json, print_table};
use super::{Context, parse_instant};
use crate::archive::recall::{RecallRecord, RecallRequest, Selector};
use crate::archive::tombstone::{self, PassOptions, PassReport};
use crate::archive::{overrides, recall, report, require_same_database};
use crate::error::{Error, Result};
use crate::schema::Table;

#[derive(Debug, Args)]
pub struct TombstoneArgs {
    /// Delete proven rows (with their tombstones). Without it: a dry run that only counts.
    #[arg(long)]
    execute: bool,
    /// Only this organization.
    #[arg(long)]
    org: Option<Uuid>,
    /// Only this table.
    #[arg(long)]
    table: Option<Table>,
    /// At most this many rows archived in this pass (dry run: found provable).
    #[arg(long)]
    limit: Option<u64>,
    /// Candidate rows per batch; each batch commits in one transaction.
    #[arg(long, default_value_t = tombstone::DEFAULT_BATCH)]
    batch: usize,
    /// Batches of one organization × table read, hashed and committed at once, each on its own
    /// connections and in its own transaction (disjoint rows).
    #[arg(long, default_value_t = tombstone::DEFAULT_PARALLEL)]
    parallel: usize,
    /// Print the counts (and the run id) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Read archived rows back from their destination, verify each against its tombstone's hash,
    /// print them as JSON lines (or write them to --out), and with --restore put them back.
    Recall(RecallArgs),
    /// Evidence for auditors: per tombstoning run, what was archived, proven by which deliveries
    /// (object keys and sha256) or overrides, with counts and a digest of the row hashes.
    Report(ReportArgs),
    /// Record, revoke or list operator overrides ("archive without a delivered copy").
    #[command(subcommand)]
    Override(OverrideCommand),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("select").required(true).args(["id", "from"])))]
pub struct RecallArgs {
    /// Organization whose archived rows to recall.
    #[arg(long)]
    org: Uuid,
    /// Table the rows were archived from.
    #[arg(long)]
    table: Table,
    /// One row id.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    id: Option<Uuid>,
    /// Rows whose archived updated_at is at or after this instant (RFC 3339 or YYYY-MM-DD) ...
    #[arg(long, value_parser = parse_instant, requires = "to")]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// ... and before this one.
    #[arg(long, value_parser = parse_instant, requires = "from")]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Insert verified rows back into the hot table, keeping their archived updated_at, and
    /// stamp their tombstones restored_at (tombstones are never deleted).
    #[arg(long)]
    restore: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Organization to report on.
    #[arg(long)]
    org: Uuid,
    /// Runs whose tombstones were written at or after this instant ...
    #[arg(long, value_parser = parse_instant)]
    from: chrono::DateTime<chrono::Utc>,
    /// ... and before this one.
    #[arg(long, value_parser = parse_instant)]
    to: chrono::DateTime<chrono::Utc>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// Allow an organization's aged rows to be archived without a delivered copy.
    Add {
        #[arg(long)]
        org: Uuid,
        /// Why (recorded on every tombstone written under it).
        #[arg(long)]
        reason: String,
        /// Who decided.
        #[arg(long)]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke the organization's active override.
    Revoke {
        #[arg(long)]
        org: Uuid,
        /// Who revoked it.
        #[arg(long)]
        by: String,
    },
    /// List overrides, active and revoked.
    List {
        #[arg(long)]
        org: Option<Uuid>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn tombstone(ctx: &Context, args: TombstoneArgs) -> Result<u8> {
    require_same_database(ctx.database_url()?, ctx.source_url.as_deref(), "tombstoning")?;
    if args.batch == 0 {
        return Err(Error::invalid("--batch must be at least 1"));
    }
    if args.parallel == 0 || args.parallel > 8 {
        return Err(Error::invalid("--parallel must be between 1 and 8"));
    }
    let pool = ctx.control().await?;
    let registry = ctx.registry()?;
    tombstone::ensure_cold_storage(&pool).await?;
    let options = PassOptions {
        execute: args.execute,
        organization: args.org,
        table: args.table,
        limit: args.limit,
        batch: args.batch,
        parallel: args.parallel,
    };
    let now = tombstone::source_now(&pool).await?;
    let run_id = if args.execute {
        tombstone::start_run(
            &pool,
            now,
            serde_json::json!({"org": args.org, "table": args.table, "limit": args.limit, "batch": args.batch, "parallel": args.parallel}),
        )
        .await?
    } else {
        Uuid::new_v4()
    };
    // Ctrl-C or SIGTERM: the pass stops after the batches in flight.
    let cancel = super::run::interrupt_token("stopping after the batches in flight");
    let quiet = args.json;
    let progress = move |s: &tombstone::ScopeReport| {
        if !quiet {
            tracing::info!(
                organization = %s.organization_id,
                table = %s.table,
                candidates = s.tally.candidates,
                archived = s.tally.archived,
                "Tombstoning pass: table done."
            );
        }
    };
    let result = tombstone::run_pass(&pool, &registry, &options, run_id, now, &cancel, &progress).await;
    if args.execute {
        let error = match &result {
            Ok(r) if r.interrupted => Some("interrupted".to_string()),
            Ok(r) if r.failed() => Some("some tables failed".to_string()),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Err(e) = tombstone::finish_run(&pool, run_id, error.as_deref()).await {
            tracing::warn!(error = %e, "Could not record the end of the run.");
        }
    }
    let report = result?;
    if args.json {
        json(&report);
    } else {
        print_pass(&report);
    }
    Ok(if report.interrupted {
        130
    } else if report.failed() {
        5
    } else {
        0
    })
}

fn print_pass(r: &PassReport) {
    let rows: Vec<Vec<String>> = r
        .scopes
        .iter()
        .map(|s| {
            let blocked = s
                .tally
                .blocked
                .iter()
                .map(|(k, v)| format!("{} {v}", k.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                s.organization_id.to_string(),
                s.table.to_string(),
                s.retention_days.to_string(),
                instant(Some(s.cutoff)),
                s.tally.candidates.to_string(),
                s.tally.provable.to_string(),
                s.tally.by_override.to_string(),
                if r.executed {
                    s.tally.archived.to_string()
                } else {
                    "-".into()
                },
                if blocked.is_empty() { "-".into() } else { blocked },
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no candidate rows (source clock {})", instant(Some(r.source_now)));
    } else {
        print_table(
            &[
                "ORGANIZATION",
                "TABLE",
                "RETENTION",
                "CUTOFF",
                "CANDIDATES",
                "PROVABLE",
                "OVERRIDE",
                "ARCHIVED",
                "BLOCKED",
            ],
            &rows,
        );
    }
    let mut reasons = std::collections::BTreeMap::new();
    for s in &r.scopes {
        reasons.extend(s.blocked_reasons.iter().map(|(k, v)| (k.as_str(), *v)));
        if let Some(e) = &s.error {
            eprintln!("error: {} {}: {e}", s.organization_id, s.table);
        }
    }
    for (k, v) in reasons {
        println!("  {k}: {v}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if r.executed {
        println!(
            "run {}: archived {} rows ({} proven rows skipped: changed or proof withdrawn meanwhile) in {:.1}s{}{}",
            r.run_id,
            r.totals.archived,
            r.totals.skipped,
            r.seconds,
            if r.limit_reached {
                "; --limit reached, run again for the rest"
            } else {
                ""
            },
            if r.interrupted { "; interrupted" } else { "" },
        );
    } else {
        println!(
            "dry run: {} candidates, {} provable, {} by override, {} blocked; nothing was deleted (use --execute){}",
            r.totals.candidates,
            r.totals.provable,
            r.totals.by_override,
            r.totals.blocked_total(),
            if r.limit_reached { "; stopped at --limit" } else { "" },
        );
    }
}

pub async fn run(ctx: &Context, cmd: ArchiveCommand) -> Result<u8> {
    match cmd {
        ArchiveCommand::Recall(args) => recall_cmd(ctx, args).await,
        ArchiveCommand::Report(args) => report_cmd(ctx, args).await,
        ArchiveCommand::Override(cmd) => override_cmd(ctx, cmd).await,
    }
}

async fn recall_cmd(ctx: &Context, args: RecallArgs) -> Result<u8> {
    if args.restore {
        require_same_database(ctx.database_url()?, ctx.source_url.as_deref(), "restoring")?;
    }
    let selector = match (args.id, args.from, args.to) {
        (Some(id), None, None) => Selector::Id(id),
        (None, Some(from), Some(to)) if from < to => Selector::Range { from, to },
        (None, Some(_), Some(_)) => return Err(Error::invalid("--from must be before --to")),
        _ => return Err(Error::invalid("give --id, or --from and --to")),
    };
    let pool = ctx.control().await?;
    let registry = ctx.registry()?;
    tombstone::ensure_cold_storage(&pool).await?;
    let request = RecallRequest {
        organization_id: args.org,
        table: args.table,
        selector,
        restore: args.restore,
    };
    let mut sink: Box<dyn Write + Send> = match &args.out {
        Some(path) => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| {
                Error::invalid(format!("cannot create {}", path.display())).with_source(e)
            })?))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut emit = |r: &RecallRecord| -> Result<()> {
        if let Some(e) = &r.error {
            tracing::error!("{e}");
        }
        writeln!(sink, "{}", r.to_json_line())
            .map_err(|e| Error::unexpected("cannot write the recalled rows").with_source(e))
    };
    let summary = recall::recall(&pool, &registry, &request, &mut emit).await?;
    sink.flush()
        .map_err(|e| Error::unexpected("cannot write the recalled rows").with_source(e))?;
    drop(sink);
    if args.json {
        let text = serde_json::to_string(&summary).expect("serialisable");
        if args.out.is_some() {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    } else {
        let text = format!(
            "recalled {} archived rows from {} objects: {} verified, {} failed{}",
            summary.tombstones,
            summary.objects,
            summary.verified,
            summary.failed,
            if args.restore {
                format!(", {} restored", summary.restored)
            } else {
                String::new()
            }
        );
        if args.out.is_some() {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    }
    if summary.tombstones == 0 {
        eprintln!("no tombstones match (organization {}, table {})", args.org, args.table);
    }
    Ok(if summary.failed > 0 { 5 } else { 0 })
}

async fn report_cmd(ctx: &Context, args: ReportArgs) -> Result<u8> {
    if args.from >= args.to {
        return Err(Error::invalid("--from must be before --to"));
    }
    let pool = ctx.control().await?;
    tombstone::ensure_cold_storage(&pool).await?;
    let r = report::report(&pool, args.org, args.from, args.to).await?;
    if args.json {
        json(&r);
        return Ok(0);
    }
    println!(
        "Cold-storage evidence for organization {} — tombstones written {} to {} (generated {}, tidemark {})",
        r.organization_id,
        instant(Some(r.from)),
        instant(Some(r.to)),
        instant(Some(r.generated_at)),
        r.tidemark_version
    );
    if r.runs.is_empty() {
        println!("no rows were archived in this period");
        return Ok(0);
    }
    for run in &r.runs {
        println!();
        println!(
            "run {}  {} → {}  status {}  by {}{}",
            run.run_id,
            instant(run.started_at),
            instant(run.finished_at),
            run.status.as_deref().unwrap_or("-"),
            run.started_by.as_deref().unwrap_or("-"),
            if run.partial {
                "  (partly outside the period)"
            } else {
                ""
            }
        );
        println!(
            "  {} rows archived ({} restored since); digest of row hashes {}",
            run.rows, run.restored, run.rows_sha256_digest
        );
        print_table(
            &["TABLE", "ROWS", "RESTORED", "OLDEST ROW", "NEWEST ROW"],
            &run.tables
                .iter()
                .map(|t| {
                    vec![
                        t.table.clone(),
                        t.rows.to_string(),
                        t.restored.to_string(),
                        instant(Some(t.oldest_row_updated_at)),
                        instant(Some(t.newest_row_updated_at)),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        if !run.proofs.is_empty() {
            println!("  proven by {} deliveries:", run.proofs.len());
            print_table(
                &["DELIVERY", "DESTINATION", "KIND", "ROWS", "OBJECT", "OBJECT SHA256"],
                &run.proofs
                    .iter()
                    .map(|p| {
                        vec![
                            p.delivery_id.to_string(),
                            p.destination_name.clone(),
                            p.kind.clone(),
                            p.rows_proven.to_string(),
                            p.object_key.clone().unwrap_or_else(|| "-".into()),
                            p.object_sha256.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
        for o in &run.overrides {
            println!(
                "  {} rows under override {} by {} at {}: {}{}",
                o.rows,
                o.override_id,
                o.created_by.as_deref().unwrap_or("-"),
                instant(o.created_at),
                o.reason,
                o.revoked_at
                    .map(|t| format!(" (revoked {})", instant(Some(t))))
                    .unwrap_or_default()
            );
        }
    }
    println!();
    println!("digest rule: {}", r.digest_rule);
    Ok(0)
}

async fn override_cmd(ctx: &Context, cmd: OverrideCommand) -> Result<u8> {
    let pool = ctx.control().await?;
    tombstone::ensure_cold_storage(&pool).await?;
    match cmd {
        OverrideCommand::Add {
            org,
            reason,
            by,
            json: as_json,
        } => {
            let known: Option<bool> = sqlx::query_scalar(
                "SELECT CASE WHEN to_regclass('organizations') IS NULL THEN NULL \
                   ELSE EXISTS (SELECT 1 FROM organizations WHERE id = $1) END",
            )
            .bind(org)
            .fetch_one(&pool)
            .await
            .ok()
            .flatten();
            if known == Some(false) {
                return Err(Error::invalid(format!("no organization {org} in the source")));
            }
            let o = overrides::add(&pool, org, &reason, &by).await?;
            if as_json {
                json(&o);
            } else {
                println!(
                    "override {} recorded for organization {} by {}: {}",
                    o.id, o.organization_id, o.created_by, o.reason
                );
            }
        }
        OverrideCommand::Revoke { org, by } => {
            let o = overrides::revoke(&pool, org, &by).await?;
            println!(
                "override {} of organization {} revoked by {by}",
                o.id, o.organization_id
            );
        }
        OverrideCommand::List { org, json: as_json } => {
            let list = overrides::list(&pool, org).await?;
            if as_json {
                json(&list);
            } else if list.is_empty() {
                println!("no overrides");
            } else {
                print_table(
                    &["ID", "ORGANIZATION", "CREATED", "BY", "REVOKED", "REASON"],
                    &list
                        .iter()
                        .map(|o| {
                            vec![
                                o.id.to_string(),
                                o.organization_id.to_string(),
                                instant(Some(o.created_at)),
                                o.created_by.clone(),
                                o.revoked_at
                                    .map(|t| {
                                        format!("{} by {}", instant(Some(t)), o.revoked_by.as_deref().unwrap_or("?"))
                                    })
                                    .unwrap_or_else(|| "-".into()),
                                o.reason.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    Ok(0)
}
