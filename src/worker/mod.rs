//! The worker: lease a due delivery, extract its window, hand the batches to its destination,
//! then complete it, all while heart-beating the lease. Retries and dead-lettering are decided
//! here, from the error's kind, never inside an adapter.
//!
//! Invariants: a worker only commits (object or control-plane row) while its lease token is
//! current; a worker that loses its lease stops and leaves the delivery to the new owner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::control::destinations::{self, Destination as DestinationRow};
use crate::control::outbox::{self, Completion, Lease, LeaseFilter};
use crate::deliver::{self, DeliveryContext, Destination, Fence};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::{self, WindowQuery};
use crate::schema::Registry;

/// Tunables of the delivery loop.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub owner: String,
    pub lease_ttl: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub batch_rows: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            owner: default_owner(),
            lease_ttl: Duration::from_secs(120),
            retry_base: Duration::from_secs(30),
            retry_cap: Duration::from_secs(3600),
            batch_rows: extract::DEFAULT_BATCH_ROWS,
        }
    }
}

/// `hostname:pid:random`, unique per process.
pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Exponential backoff with equal jitter: `min(cap, base·2^(attempt−1)) · [0.5, 1)`.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi((attempt - 1).clamp(0, 30));
    let ceiling = exp.min(cap.as_secs_f64());
    let jitter: f64 = rand::rng().random_range(0.5..1.0);
    Duration::from_secs_f64(ceiling * jitter)
}

/// Crash injection for tests of worker death: `TIDEMARK_FAILPOINT=abort-after-deliver[:N]`
/// aborts the process (no unwinding, no cleanup, like `kill -9`) after the N-th (default
/// first) delivery has landed at its destination and before it is completed.
fn failpoint_after_deliver() {
    static DELIVERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(spec) = std::env::var("TIDEMARK_FAILPOINT") else {
        return;
    };
    let Some(rest) = spec.strip_prefix("abort-after-deliver") else {
        return;
    };
    let nth: usize = rest.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or(1);
    if DELIVERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= nth {
        eprintln!("failpoint abort-after-deliver: aborting the process");
        std::process::abort();
    }
}

/// What happened to one delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub delivery_id: Uuid,
    pub destination_id: Uuid,
    pub table: String,
    pub schema_version: u32,
    pub window_start: chrono::DateTime<chrono::Utc>,
    pub status: String,
    pub rows: u64,
    pub bytes: u64,
    pub error: Option<String>,
    pub seconds: f64,
}

/// Shared state of the workers of one process.
pub struct Worker {
    control: PgPool,
    source: PgPool,
    registry: Arc<Registry>,
    options: WorkerOptions,
    destinations: Mutex<HashMap<Uuid, (DestinationRow, Arc<dyn Destination>)>>,
    /// Tables whose source definition was checked against the published schema.
    checked: Mutex<std::collections::HashSet<(crate::schema::Table, u32)>>,
}

impl Worker {
    pub fn new(control: PgPool, source: PgPool, registry: Arc<Registry>, options: WorkerOptions) -> Worker {
        Worker {
            control,
            source,
            registry,
            options,
            destinations: Mutex::new(HashMap::new()),
            checked: Mutex::new(Default::default()),
        }
    }

    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    pub fn control(&self) -> &PgPool {
        &self.control
    }

    pub fn source(&self) -> &PgPool {
        &self.source
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The destination's current row, and its adapter: built once per configuration, rebuilt
    /// when `destination set-config` changed it (a long-running `worker` picks up rotated
    /// credential references without a restart).
    async fn destination(&self, id: Uuid) -> Result<(DestinationRow, Arc<dyn Destination>)> {
        let row = destinations::get(&self.control, id).await?;
        let mut cache = self.destinations.lock().await;
        if let Some((cached, built)) = cache.get(&id)
            && cached.kind == row.kind
            && cached.config == row.config
        {
            let built = built.clone();
            cache.insert(id, (row.clone(), built.clone()));
            return Ok((row, built));
        }
        let built = deliver::build(row.kind, &row.config)?;
        cache.insert(id, (row.clone(), built.clone()));
        Ok((row, built))
    }

    /// Leases and runs one delivery. `None` when nothing is due.
    pub async fn run_one(&self, filter: &LeaseFilter, cancel: &CancellationToken) -> Result<Option<Outcome>> {
        let ttl = self.options.lease_ttl.as_secs_f64();
        let lease_started = std::time::Instant::now();
        let Some(lease) = outbox::lease(&self.control, &self.options.owner, ttl, filter).await? else {
            return Ok(None);
        };
        let lease_ms = lease_started.elapsed().as_secs_f64() * 1e3;
        let started = std::time::Instant::now();
        let heartbeat_cancel = cancel.child_token();
        let heartbeat = {
            let pool = self.control.clone();
            let lease = lease.clone();
            let every = self.options.lease_ttl / 3;
            let stop = heartbeat_cancel.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(every) => {}
                    }
                    match outbox::heartbeat(&pool, &lease, ttl).await {
                        Ok(()) => {}
                        // Lost for good: the final fence check will refuse to commit.
                        Err(e) if e.kind() == ErrorKind::Fenced => return Err(e),
                        // A control-plane hiccup: keep trying; the lease has ttl/3 slack per beat.
                        Err(e) => warn!(delivery = %lease.delivery_id, error = %e, "Heartbeat failed; retrying."),
                    }
                }
            })
        };
        let result = tokio::select! {
            r = self.deliver(&lease) => r,
            _ = cancel.cancelled() => Err(Error::new(ErrorKind::Unavailable, "interrupted")),
        };
        heartbeat_cancel.cancel();
        let heartbeat_result: Result<()> = heartbeat.await.unwrap_or(Ok(()));
        let mut outcome = Outcome {
            delivery_id: lease.delivery_id,
            destination_id: lease.destination_id,
            table: lease.table.name().to_string(),
            schema_version: lease.schema_version,
            window_start: lease.window_start,
            status: String::new(),
            rows: 0,
            bytes: 0,
            error: None,
            seconds: 0.0,
        };
        let lost = |e: &Error| {
            warn!(delivery = %lease.delivery_id, error = %e, "Lease lost; leaving the delivery to its new owner.");
        };
        match result {
            Ok(done) => {
                failpoint_after_deliver();
                let deliver_ms = started.elapsed().as_secs_f64() * 1e3;
                match outbox::complete(&self.control, &lease, &done).await {
                    Ok(()) => {
                        outcome.rows = done.rows as u64;
                        outcome.bytes = done.bytes as u64;
                        outcome.status = "delivered".into();
                        debug!(
                            delivery = %lease.delivery_id,
                            table = %lease.table,
                            schema_version = lease.schema_version,
                            window_start = %lease.window_start,
                            rows = done.rows,
                            bytes = done.bytes,
                            lease_ms,
                            deliver_ms,
                            complete_ms = started.elapsed().as_secs_f64() * 1e3 - deliver_ms,
                            "Delivered."
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::Fenced => {
                        lost(&e);
                        outcome.status = "fenced".into();
                        outcome.error = Some(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(_) if cancel.is_cancelled() => {
                outbox::release(&self.control, &lease).await?;
                outcome.status = "released".into();
            }
            Err(e)
                if e.kind() == ErrorKind::Fenced
                    || heartbeat_result.as_ref().is_err_and(|h| h.kind() == ErrorKind::Fenced) =>
            {
                lost(&e);
                outcome.status = "fenced".into();
                outcome.error = Some(e.to_string());
            }
            Err(e) => {
                let wait = backoff(lease.attempts, self.options.retry_base, self.options.retry_cap);
                let status = match outbox::fail(&self.control, &lease, &e, wait).await {
                    Ok(status) => status,
                    Err(f) if f.kind() == ErrorKind::Fenced => {
                        lost(&f);
                        "fenced".to_string()
                    }
                    Err(f) => return Err(f),
                };
                if e.kind() == ErrorKind::Config && status != "fenced" {
                    destinations::set_error(&self.control, lease.destination_id, &e.to_string()).await?;
                    self.destinations.lock().await.remove(&lease.destination_id);
                }
                if e.kind() == ErrorKind::Schema {
                    // Re-check the source definition before the next attempt of this table.
                    self.checked.lock().await.remove(&(lease.table, lease.schema_version));
                }
                warn!(delivery = %lease.delivery_id, table = %lease.table, schema_version = lease.schema_version, attempt = lease.attempts, status = %status, retry_in_s = wait.as_secs_f64(), error = %e, "Delivery failed.");
                outcome.status = status;
                outcome.error = Some(e.to_string());
            }
        }
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(Some(outcome))
    }

    async fn deliver(&self, lease: &Lease) -> Result<Completion> {
        let (row, destination) = self.destination(lease.destination_id).await?;
        if row.organization_id != lease.organization_id {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "delivery and destination belong to different organizations",
            ));
        }
        let schema = self.registry.get(lease.table, lease.schema_version)?;
        if !self.checked.lock().await.contains(&(lease.table, lease.schema_version)) {
            crate::source::check_table(&self.source, &schema).await?;
            self.checked.lock().await.insert((lease.table, lease.schema_version));
        }
        let query = WindowQuery {
            schema: &schema,
            organization_id: lease.organization_id,
            start: lease.window_start,
            end: lease.window_end,
        };
        let (batches, stats) = if destination.exports_op() {
            // Detected per delivery (one catalog lookup), so installing capture needs no restart.
            let delete_log = crate::capture::delete_log(&self.source).await?;
            extract::extract_changes(self.source.clone(), query, delete_log.as_ref(), self.options.batch_rows)
        } else {
            extract::extract(self.source.clone(), query, self.options.batch_rows)
        };
        let ctx = DeliveryContext {
            delivery_id: lease.delivery_id,
            organization_id: lease.organization_id,
            schema: &schema,
            window_start: lease.window_start,
            window_end: lease.window_end,
            fence: Fence::new(
                self.control.clone(),
                lease.clone(),
                self.options.lease_ttl.as_secs_f64(),
            ),
        };
        let delivered = destination.deliver(&ctx, batches).await?;
        let stats = stats
            .await
            .map_err(|_| Error::unexpected("extraction ended without reporting"))?;
        if stats.rows != delivered.rows {
            return Err(Error::unexpected(format!(
                "extracted {} rows but the destination wrote {}",
                stats.rows, delivered.rows
            )));
        }
        let mut receipt = delivered.receipt;
        if let Some(obj) = receipt.as_object_mut() {
            obj.insert("attempt".into(), lease.attempts.into());
            obj.insert("lease_token".into(), lease.token.into());
            obj.insert("source_bytes".into(), stats.source_bytes.into());
        }
        Ok(Completion {
            rows: stats.rows as i64,
            bytes: delivered.bytes as i64,
            last_cursor: stats.last_cursor,
            receipt,
        })
    }

    /// Runs deliveries until none is due (or `max` have run, or `cancel` fires).
    pub async fn drain(
        &self,
        filter: &LeaseFilter,
        max: Option<usize>,
        cancel: &CancellationToken,
        on_outcome: &(dyn Fn(&Outcome) + Sync),
    ) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        while max.is_none_or(|m| outcomes.len() < m) && !cancel.is_cancelled() {
            match self.run_one(filter, cancel).await? {
                Some(o) => {
                    on_outcome(&o);
                    outcomes.push(o);
                }
                None => break,
            }
        }
        Ok(outcomes)
    }
}
