//! `tidemark plan|run|worker|backfill|status|retry`: the delivery loop and its views.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::output::{bytes, duration, instant, json, print_table};
use super::{Context, parse_duration_secs, parse_instant};
use crate::control::destinations;
use crate::control::ensure_migrated;
use crate::control::outbox::{self, LeaseFilter};
use crate::error::{Error, Result};
use crate::plan;
use crate::schema::Table;
use crate::status;
use crate::worker::{Outcome, Worker, WorkerOptions};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct WorkerFlags {
    /// Concurrent deliveries in this process.
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Lease length; a worker that stops heart-beating loses its delivery after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration_secs)]
    pub(crate) lease: i64,
    /// First retry delay; doubles per attempt (with jitter) up to --retry-cap.
    #[arg(long, default_value = "30s", value_parser = parse_duration_secs)]
    pub(crate) retry_base: i64,
    #[arg(long, default_value = "1h", value_parser = parse_duration_secs)]
    pub(crate) retry_cap: i64,
}

impl WorkerFlags {
    fn options(&self) -> WorkerOptions {
        WorkerOptions {
            lease_ttl: Duration::from_secs(self.lease.max(3) as u64),
            retry_base: Duration::from_secs(self.retry_base.max(0) as u64),
            retry_cap: Duration::from_secs(self.retry_cap.max(1) as u64),
            ..WorkerOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Repeat plan + deliver until a pass delivers nothing.
    #[arg(long)]
    until_idle: bool,
    /// Stop after this many deliveries (across workers).
    #[arg(long)]
    max_deliveries: Option<usize>,
    #[command(flatten)]
    flags: WorkerFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Pause between passes that found nothing to do.
    #[arg(long, default_value = "30s", value_parser = parse_duration_secs)]
    poll_interval: i64,
    #[command(flatten)]
    flags: WorkerFlags,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Destination id or unique name.
    #[arg(long)]
    destination: String,
    #[arg(long)]
    table: Table,
    /// Start of the range (RFC 3339 or YYYY-MM-DD), aligned down to a window.
    #[arg(long, value_parser = parse_instant)]
    from: chrono::DateTime<chrono::Utc>,
    /// End of the range (exclusive), clipped to the newest closed window.
    #[arg(long, value_parser = parse_instant)]
    to: chrono::DateTime<chrono::Utc>,
    /// Span of one backfill delivery: whole windows, dividing a day. Bigger chunks amortise the
    /// fixed cost per delivery (one object, a few control-plane round trips); each chunk is
    /// still its own delivery, so an interrupted backfill resumes chunk by chunk. Default: 6h
    /// when that is a whole number of the destination's windows, else one window.
    #[arg(long, value_parser = parse_duration_secs)]
    chunk: Option<i64>,
    #[command(flatten)]
    flags: WorkerFlags,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Only this destination (id or unique name).
    #[arg(long)]
    destination: Option<String>,
    #[arg(long)]
    table: Option<Table>,
    /// Only this delivery.
    #[arg(long)]
    delivery: Option<Uuid>,
}

pub async fn plan(ctx: &Context, args: PlanArgs) -> Result<u8> {
    let (control, source, registry) = (ctx.control().await?, ctx.source().await?, ctx.registry()?);
    ensure_migrated(&control).await?;
    let (clock, planned, errors) = plan::plan_all(&control, &source, &registry).await?;
    if args.json {
        json(
            &serde_json::json!({"clock": clock, "planned": planned, "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()}),
        );
    } else {
        print_plan(&clock, &planned);
        for e in &errors {
            eprintln!("error: {e}");
        }
    }
    Ok(if errors.is_empty() { 0 } else { 5 })
}

fn print_plan(clock: &plan::SourceClock, planned: &[plan::PlannedTable]) {
    let rows: Vec<Vec<String>> = planned
        .iter()
        .filter(|p| p.new_windows > 0)
        .map(|p| {
            vec![
                p.destination.clone(),
                p.table.to_string(),
                format!("v{}", p.schema_version),
                instant(p.from),
                instant(Some(p.through)),
                p.new_windows.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no new windows (source clock {})", instant(Some(clock.now)));
    } else {
        print_table(
            &["DESTINATION", "TABLE", "VERSION", "FROM", "THROUGH", "NEW WINDOWS"],
            &rows,
        );
    }
    if let Some(tx) = &clock.oldest {
        println!(
            "oldest open source transaction: pid {} since {} ({}, {})",
            tx.pid,
            instant(Some(tx.xact_start)),
            tx.state,
            tx.application_name
        );
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    pub planned_windows: u64,
    pub delivered: usize,
    pub failed: usize,
    pub dead_letter: usize,
    pub fenced: usize,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub plan_errors: Vec<String>,
    pub outcomes: Vec<Outcome>,
}

impl RunSummary {
    fn add(&mut self, o: &Outcome) {
        match o.status.as_str() {
            "delivered" => {
                self.delivered += 1;
                self.rows += o.rows;
                self.bytes += o.bytes;
            }
            "dead_letter" => self.dead_letter += 1,
            "fenced" => self.fenced += 1,
            "released" => {}
            _ => self.failed += 1,
        }
    }

    pub fn exit_code(&self) -> u8 {
        if self.failed + self.dead_letter > 0 || !self.plan_errors.is_empty() {
            5
        } else {
            0
        }
    }
}

/// Runs `workers` concurrent drain loops over one filter; returns every outcome.
pub async fn drain_parallel(
    worker: Arc<Worker>,
    workers: usize,
    filter: LeaseFilter,
    max: Option<usize>,
    cancel: CancellationToken,
    on_outcome: Arc<dyn Fn(&Outcome) + Send + Sync>,
) -> Result<Vec<Outcome>> {
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(max.unwrap_or(usize::MAX)));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (worker, filter, cancel, budget, on_outcome) = (
            worker.clone(),
            filter.clone(),
            cancel.clone(),
            budget.clone(),
            on_outcome.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                if cancel.is_cancelled() {
                    break;
                }
                // Take one unit of budget before leasing.
                if budget
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |b| b.checked_sub(1),
                    )
                    .is_err()
                {
                    break;
                }
                match worker.run_one(&filter, &cancel).await? {
                    Some(o) => {
                        on_outcome(&o);
                        outcomes.push(o);
                    }
                    None => break,
                }
            }
            Ok::<_, Error>(outcomes)
        }));
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => all.extend(o),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(Error::unexpected(format!("worker task panicked: {e}")))),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

/// Cancelled on Ctrl-C or SIGTERM (a Kubernetes pod being stopped); `what` says in the log
/// what the command does about it (workers give their leases back so deliveries are picked up
/// at once, not after the lease expires; the tombstone pass finishes its batch in flight).
pub(crate) fn interrupt_token(what: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::warn!("Interrupted: {what}.");
        t.cancel();
    });
    token
}

/// Plan + deliver; the body of `run`, `worker` and `demo`.
pub async fn run_passes(
    ctx: &Context,
    flags: &WorkerFlags,
    until_idle: bool,
    max: Option<usize>,
    cancel: &CancellationToken,
) -> Result<RunSummary> {
    let (control, source, registry) = (ctx.control().await?, ctx.source().await?, ctx.registry()?);
    ensure_migrated(&control).await?;
    let worker = Arc::new(Worker::new(control, source, registry, flags.options()));
    run_passes_with(&worker, flags.workers, until_idle, max, cancel).await
}

/// Plan + deliver passes with an existing worker (and its connection pools).
pub async fn run_passes_with(
    worker: &Arc<Worker>,
    workers: usize,
    until_idle: bool,
    max: Option<usize>,
    cancel: &CancellationToken,
) -> Result<RunSummary> {
    let (control, source, registry) = (
        worker.control().clone(),
        worker.source().clone(),
        worker.registry().clone(),
    );
    let started = std::time::Instant::now();
    let mut summary = RunSummary::default();
    loop {
        let (_, planned, errors) = plan::plan_all(&control, &source, &registry).await?;
        summary.planned_windows += planned.iter().map(|p| p.new_windows).sum::<u64>();
        summary.plan_errors.extend(errors.iter().map(|e| e.to_string()));
        let remaining = max.map(|m| m.saturating_sub(summary.outcomes.len()));
        let outcomes = drain_parallel(
            worker.clone(),
            workers,
            LeaseFilter::default(),
            remaining,
            cancel.clone(),
            Arc::new(|_| {}),
        )
        .await?;
        let delivered_now = outcomes.iter().filter(|o| o.status == "delivered").count();
        for o in &outcomes {
            summary.add(o);
        }
        summary.outcomes.extend(outcomes);
        if !until_idle || delivered_now == 0 || cancel.is_cancelled() || remaining.is_some_and(|r| r <= delivered_now) {
            break;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<u8> {
    let cancel = interrupt_token("releasing leases and stopping");
    let summary = run_passes(ctx, &args.flags, args.until_idle, args.max_deliveries, &cancel).await?;
    if args.json {
        json(&summary);
    } else {
        println!(
            "planned {} windows; delivered {} ({} rows, {}) in {:.1}s; failed {}, dead-lettered {}, fenced {}",
            summary.planned_windows,
            summary.delivered,
            summary.rows,
            bytes(summary.bytes as i64),
            summary.seconds,
            summary.failed,
            summary.dead_letter,
            summary.fenced
        );
        for e in &summary.plan_errors {
            eprintln!("planning error: {e}");
        }
        for o in summary.outcomes.iter().filter(|o| o.error.is_some()) {
            eprintln!(
                "{} {} v{} {} {}: {}",
                o.status,
                o.table,
                o.schema_version,
                instant(Some(o.window_start)),
                o.delivery_id,
                o.error.as_deref().unwrap_or("")
            );
        }
    }
    if cancel.is_cancelled() {
        return Ok(130);
    }
    Ok(summary.exit_code())
}

pub async fn worker(ctx: &Context, args: WorkerArgs) -> Result<u8> {
    let cancel = interrupt_token("releasing leases and stopping");
    let (control, source, registry) = (ctx.control().await?, ctx.source().await?, ctx.registry()?);
    ensure_migrated(&control).await?;
    let worker = Arc::new(Worker::new(control, source, registry, args.flags.options()));
    tracing::info!(workers = args.flags.workers, owner = %worker.options().owner, "Worker started.");
    while !cancel.is_cancelled() {
        match run_passes_with(&worker, args.flags.workers, true, None, &cancel).await {
            Ok(s) if s.delivered + s.failed + s.dead_letter > 0 => tracing::info!(
                delivered = s.delivered,
                failed = s.failed,
                dead_letter = s.dead_letter,
                rows = s.rows,
                bytes = s.bytes,
                seconds = s.seconds,
                "Pass finished."
            ),
            Ok(_) => {}
            Err(e) if e.is_retryable() => tracing::warn!(error = %e, "Pass failed; will retry."),
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(args.poll_interval.max(1) as u64)) => {}
        }
    }
    Ok(130)
}

pub async fn backfill(ctx: &Context, args: BackfillArgs) -> Result<u8> {
    let cancel = interrupt_token("releasing leases and stopping");
    let (control, source, registry) = (ctx.control().await?, ctx.source().await?, ctx.registry()?);
    ensure_migrated(&control).await?;
    let dest = destinations::resolve(&control, &args.destination).await?;
    if !dest.enabled_tables.contains(&args.table) {
        return Err(Error::invalid(format!(
            "table {} is not enabled for destination {}",
            args.table, dest.name
        )));
    }
    if dest.status != "active" {
        return Err(Error::invalid(format!(
            "destination {} is {}; resume it first",
            dest.name, dest.status
        )));
    }
    if args.from >= args.to {
        return Err(Error::invalid("--from must be before --to"));
    }
    let clock = plan::source_clock(&source).await?;
    let window = dest.window_seconds as i64;
    let chunk = args.chunk.unwrap_or(if 21_600 % window == 0 { 21_600 } else { window });
    let (new, from, to) = plan::plan_range(
        &control, &source, &registry, &clock, &dest, args.table, args.from, args.to, chunk,
    )
    .await?;
    let filter = LeaseFilter {
        destination_id: Some(dest.id),
        table: Some(args.table),
        from: Some(from),
        to: Some(to),
    };
    let counts = outbox::count_by_status(&control, &filter).await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let done: i64 = counts.iter().filter(|(s, _)| s == "delivered").map(|(_, n)| n).sum();
    tracing::info!(destination = %dest.name, table = %args.table, from = %from, to = %to, deliveries = total, new_deliveries = new, already_delivered = done, "Backfill planned.");
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} deliveries  {msg}  eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} → {}", args.table, dest.name));
    bar.set_position(done as u64);
    let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = std::time::Instant::now();
    let on_outcome: Arc<dyn Fn(&Outcome) + Send + Sync> = {
        let (bar, rows) = (bar.clone(), rows.clone());
        Arc::new(move |o: &Outcome| {
            if o.status == "delivered" {
                let r = rows.fetch_add(o.rows, std::sync::atomic::Ordering::Relaxed) + o.rows;
                bar.inc(1);
                bar.set_message(format!(
                    "{r} rows, {:.0} rows/s",
                    r as f64 / started.elapsed().as_secs_f64().max(1e-3)
                ));
            } else if let Some(e) = &o.error {
                bar.println(format!("{} {}: {e}", o.status, instant(Some(o.window_start))));
            }
        })
    };
    let worker = Arc::new(Worker::new(control.clone(), source, registry, args.flags.options()));
    let outcomes = drain_parallel(
        worker,
        args.flags.workers,
        filter.clone(),
        None,
        cancel.clone(),
        on_outcome,
    )
    .await?;
    bar.finish_and_clear();
    let mut summary = RunSummary {
        planned_windows: new,
        ..RunSummary::default()
    };
    for o in &outcomes {
        summary.add(o);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let after = outbox::count_by_status(&control, &filter).await?;
    let remaining: i64 = after.iter().filter(|(s, _)| s != "delivered").map(|(_, n)| n).sum();
    if args.json {
        json(
            &serde_json::json!({"destination": dest.name, "table": args.table, "from": from, "to": to, "deliveries": total, "remaining": remaining, "summary": summary}),
        );
    } else {
        println!(
            "backfill {} → {} [{}, {}): delivered {} deliveries, {} rows, {} in {:.1}s ({:.0} rows/s); {} deliveries remaining",
            args.table,
            dest.name,
            instant(Some(from)),
            instant(Some(to)),
            summary.delivered,
            summary.rows,
            bytes(summary.bytes as i64),
            summary.seconds,
            summary.rows as f64 / summary.seconds.max(1e-3),
            remaining
        );
        if remaining > 0 {
            println!(
                "re-run the same command to continue (failed windows are retried after their backoff; see `tidemark status`)"
            );
        }
    }
    if cancel.is_cancelled() {
        return Ok(130);
    }
    Ok(if remaining > 0 { 5 } else { 0 })
}

pub async fn status(ctx: &Context, args: StatusArgs) -> Result<u8> {
    let control = ctx.control().await?;
    ensure_migrated(&control).await?;
    let (now, tables) = status::table_status(&control).await?;
    // The blocking transaction is only interesting when it actually holds windows open.
    let clock = match ctx.source().await {
        Ok(source) => match plan::source_clock(&source).await {
            Ok(clock) => Some(clock),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the source's open transactions.");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "Cannot reach the source.");
            None
        }
    };
    let st = status::Status {
        now,
        tables,
        blocking_transaction: clock.as_ref().and_then(|c| {
            c.oldest
                .clone()
                .filter(|tx| (c.now - tx.xact_start).num_milliseconds() > 1_000)
        }),
        prepared_transaction_since: clock.and_then(|c| c.prepared_since),
    };
    if args.json {
        json(&st);
        return Ok(0);
    }
    print_status(&st);
    Ok(0)
}

pub fn print_status(st: &status::Status) {
    let rows: Vec<Vec<String>> = st
        .tables
        .iter()
        .map(|t| {
            vec![
                t.destination.clone(),
                t.kind.clone(),
                t.table.clone(),
                if t.retired {
                    format!("v{} (retired)", t.schema_version)
                } else {
                    format!("v{}", t.schema_version)
                },
                instant(t.watermark_updated_at),
                duration(t.lag_seconds),
                t.pending.to_string(),
                t.leased.to_string(),
                t.delivered.to_string(),
                t.failed.to_string(),
                t.dead_letter.to_string(),
                t.rows_delivered.to_string(),
                bytes(t.bytes_delivered),
            ]
        })
        .collect();
    print_table(
        &[
            "DESTINATION",
            "KIND",
            "TABLE",
            "VERSION",
            "WATERMARK",
            "LAG",
            "PENDING",
            "LEASED",
            "DELIVERED",
            "FAILED",
            "DEAD",
            "ROWS",
            "BYTES",
        ],
        &rows,
    );
    for t in st.tables.iter().filter(|t| t.dead_letter > 0 || t.failed > 0) {
        if let Some(e) = &t.last_error {
            println!("{} / {} v{}: {e}", t.destination, t.table, t.schema_version);
        }
    }
    if let Some(t) = st.prepared_transaction_since {
        println!(
            "\nevery window is held open by a prepared (two-phase) source transaction, prepared at {}; COMMIT PREPARED or ROLLBACK PREPARED it (see pg_prepared_xacts)",
            instant(Some(t))
        );
    }
    if let Some(tx) = &st.blocking_transaction {
        println!(
            "\nwindows are held open by source transaction pid {} ({}, {}) open since {}: {}",
            tx.pid,
            tx.application_name,
            tx.state,
            instant(Some(tx.xact_start)),
            tx.query
        );
    }
}

pub async fn retry(ctx: &Context, args: RetryArgs) -> Result<u8> {
    let control = ctx.control().await?;
    ensure_migrated(&control).await?;
    let dest = match &args.destination {
        Some(d) => Some(destinations::resolve(&control, d).await?.id),
        None => None,
    };
    let n = outbox::retry(&control, dest, args.table, args.delivery).await?;
    println!("re-queued {n} dead-lettered deliveries");
    Ok(0)
}
