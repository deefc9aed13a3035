//! `POSTGRES_REPLICA`: every window upserted into plain tables of a second Postgres database,
//! for teams with no warehouse. Layout and type mapping: [`ddl`].
//!
//! Over the wire, per delivery, on one fresh connection and in **one transaction**:
//! 1. `CREATE TEMP TABLE _tidemark_stage (…) ON COMMIT DROP`;
//! 2. `COPY _tidemark_stage (…) FROM STDIN (FORMAT binary)`, the batches encoded by [`copy`]
//!    one at a time and streamed as they arrive from the extractor (never a whole window in
//!    memory);
//! 3. `INSERT INTO <t>_raw … ON CONFLICT (id, updated_at) DO NOTHING` (history, when kept;
//!    deletes included as `_op = 'D'` rows);
//! 4. deletes: per id whose newest staged version is a `D`, the newest delete is recorded in
//!    `<t>_deleted` and the analyst row is deleted when its `updated_at` is not newer;
//! 5. `INSERT INTO <t> … ON CONFLICT (id) DO UPDATE SET … WHERE excluded.updated_at >
//!    <t>.updated_at OR (excluded.updated_at = <t>.updated_at AND <row differs>)`, for ids
//!    whose newest staged version is a `U` that no recorded delete is newer than or equal to;
//! 6. an upsert of the delivery's row in `_tidemark_deliveries` (the replay ledger);
//! 7. `ctx.fence.ensure()`, then `COMMIT`.
//!
//! Exactly-once effect: nothing is visible before the commit, and a replay of the same
//! delivery (or any older window) changes nothing: history rows are keyed by `(id,
//! updated_at)`, and the analyst row only moves forward in `updated_at` (a same-`updated_at`
//! version is rewritten only if its content differs, which is the `>=` rule without rewriting
//! identical rows). The ledger counts loads per delivery id, so the receipt says whether an
//! attempt was the first load or a replay.
//!
//! Deletes (docs/DELETES.md): a `D` deletes the analyst row unless that row is newer, and is
//! remembered in `<t>_deleted` (the newest `deleted_at` per id), because once the row is gone
//! nothing else would stop a replay of an older window from inserting it again. Among one
//! window's versions of an id the newest wins, and on an `updated_at` tie the `U` (a delete
//! and a re-insert in one transaction leave the row). The history keeps one version per `(id,
//! updated_at)`: on such a tie, the `U`.
//!
//! Setup (schema, tables, view, ledger) runs once per process and table in its own
//! transaction under an advisory lock, creating only what is missing and checking that existing
//! tables have the published column types (a pre-existing column of another type would be
//! converted silently by an assignment cast, so it is refused instead). A schema replicates one
//! organization (`_tidemark_replica`); a destination of another organization is refused.
//!
//! Must not touch: the control plane (only through `Fence`). The URL is a secret: it is never
//! logged or put into a message; messages name `host:port/database`.

mod config;
pub mod copy;
pub mod ddl;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError};
use sqlx::{Connection, Executor, PgConnection, Row};
use uuid::Uuid;

pub use config::{DEFAULT_SCHEMA, ReplicaConfig};

use super::{Delivered, DeliveryContext, Destination};
use crate::control::destinations::DestinationKind;
use crate::encode::FileProvenance;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::BatchStream;
use crate::schema::{OP_COLUMN, OP_DELETE, OP_UPSERT, Table, TableSchema, quote_ident};
use copy::CopyEncoder;
use ddl::{qualified, table_names};

const APPLICATION_NAME: &str = "tidemark-replica";
const STAGE: &str = "_tidemark_stage";

pub struct ReplicaDestination {
    /// Connection options; they hold the password. Never `Debug`-printed.
    options: PgConnectOptions,
    /// `host:port/database`, for messages and receipts.
    target: String,
    cfg: config::Resolved,
    /// Tables whose replica objects were created or checked by this process.
    ready: Mutex<HashSet<(Table, u32)>>,
}

pub fn build(config: &serde_json::Value) -> Result<Arc<dyn Destination>> {
    Ok(Arc::new(ReplicaDestination::from_config(config)?))
}

/// The kind of a Postgres SQLSTATE on the replica.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // invalid_password, invalid_authorization_specification (no such role, pg_hba reject)
        "28P01" | "28000" => ErrorKind::DestinationAuth,
        // insufficient_privilege: the credentials work but may not do this (like a 403)
        "42501" => ErrorKind::DestinationAuth,
        // no such database / schema, reserved name, read-only session (a standby)
        "3D000" | "3F000" | "42939" | "25006" => ErrorKind::Config,
        // a table vanished after setup: the next attempt checks (and re-creates) it again
        "42P01" => ErrorKind::DestinationTransient,
        // connection, resources, operator intervention (incl. statement timeout 57014),
        // system errors, serialization failure, deadlock, lock not available, object in use
        c if c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("57")
            || c.starts_with("58")
            || matches!(c, "40001" | "40P01" | "55P03" | "55006") =>
        {
            ErrorKind::DestinationTransient
        }
        // data exceptions, integrity constraints, cardinality, and the replica's objects not
        // fitting the data (42804 datatype_mismatch, 42703 undefined_column, 42P10 no unique
        // index for ON CONFLICT, …)
        c if c.starts_with("22") || c.starts_with("23") || c.starts_with("21") || c.starts_with("42") => {
            ErrorKind::DestinationRejected
        }
        _ => ErrorKind::Unexpected,
    }
}

/// Maps a sqlx error on the replica onto the crate's kinds, keeping the server's message,
/// SQLSTATE and detail.
pub fn classify(what: impl Into<String>, e: sqlx::Error) -> Error {
    let kind = match &e {
        sqlx::Error::Database(db) => db.code().map_or(ErrorKind::Unexpected, |c| kind_of_sqlstate(&c)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorKind::DestinationTransient,
        sqlx::Error::Configuration(_) => ErrorKind::Config,
        _ => ErrorKind::Unexpected,
    };
    let mut err = Error::new(kind, what);
    if let sqlx::Error::Database(db) = &e {
        if let Some(code) = db.code() {
            err = err.with_context("sqlstate", code);
        }
        if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
            if let Some(detail) = pg.detail() {
                err = err.with_context("detail", detail);
            }
            if let Some(column) = pg.column() {
                err = err.with_context("column", column);
            }
        }
    }
    err.with_source(e)
}

/// What one load did, as counted inside its transaction.
#[derive(Debug, Default)]
struct Counts {
    copied: u64,
    distinct: i64,
    raw_inserted: u64,
    inserted: i64,
    updated: i64,
    skipped_as_older: i64,
    /// Ids whose newest staged version is a delete.
    delete_ids: i64,
    /// Analyst rows deleted.
    deleted: i64,
    /// Ids whose newest staged version is a `U` not newer than a recorded delete.
    skipped_as_deleted: i64,
}

impl ReplicaDestination {
    pub fn from_config(config: &serde_json::Value) -> Result<ReplicaDestination> {
        let raw = ReplicaConfig::parse(config)?;
        let cfg = raw.resolved()?;
        let url = raw.url.resolve()?;
        let bad_url = |why: String| {
            Error::config(format!(
                "invalid POSTGRES_REPLICA url (from {}): {why}; expected postgres://user:password@host:port/database",
                raw.url
            ))
        };
        // Messages from the url crate and sqlx do not repeat the input, so they are safe here.
        let parsed = url::Url::parse(url.expose()).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad_url(format!("unsupported scheme '{}'", parsed.scheme())));
        }
        let mut options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| bad_url(e.to_string()))?
            .application_name(APPLICATION_NAME);
        let statement_timeout = format!("{}s", cfg.statement_timeout_seconds);
        options = options.options([("statement_timeout", statement_timeout.as_str())]);
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        Ok(ReplicaDestination {
            options,
            target,
            cfg,
            ready: Mutex::new(HashSet::new()),
        })
    }

    /// `host:port/database` of the replica (no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn schema(&self) -> &str {
        &self.cfg.schema
    }

    async fn connect(&self) -> Result<PgConnection> {
        match tokio::time::timeout(self.cfg.connect_timeout, PgConnection::connect_with(&self.options)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(format!("cannot connect to the replica {}", self.target), e)),
            Err(_) => Err(Error::new(
                ErrorKind::DestinationTransient,
                format!(
                    "cannot connect to the replica {}: no answer within {} s",
                    self.target,
                    self.cfg.connect_timeout.as_secs()
                ),
            )),
        }
    }

    fn is_ready(&self, schema: &TableSchema) -> bool {
        self.ready
            .lock()
            .expect("ready set poisoned")
            .contains(&(schema.table, schema.version))
    }

    fn set_ready(&self, schema: &TableSchema, ready: bool) {
        let mut set = self.ready.lock().expect("ready set poisoned");
        if ready {
            set.insert((schema.table, schema.version));
        } else {
            set.remove(&(schema.table, schema.version));
        }
    }

    /// Creates what is missing of the schema's and the table's replica objects, checks what
    /// exists, and claims the schema for `organization`. One transaction, serialised per
    /// schema by an advisory lock.
    async fn prepare(&self, conn: &mut PgConnection, schema: &TableSchema, organization: Uuid) -> Result<()> {
        let ns = &self.cfg.schema;
        let names = table_names(schema);
        let fail = |what: &str| {
            let what = what.to_string();
            move |e| classify(format!("{what} on the replica {}", self.target), e)
        };
        let mut tx = conn.begin().await.map_err(fail("cannot begin the setup transaction"))?;
        // DDL on existing objects waits at most this long for their locks, instead of queueing
        // (and holding up readers) behind long analyst queries; it fails transient (55P03).
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *tx)
            .await
            .map_err(fail("cannot set lock_timeout"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tidemark-replica:' || $1, 0))")
            .bind(ns)
            .execute(&mut *tx)
            .await
            .map_err(fail("cannot lock the schema for setup"))?;
        if sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
            .fetch_one(&mut *tx)
            .await
            .map_err(fail("cannot read the recovery state"))?
        {
            return Err(Error::config(format!(
                "the replica {} is a standby (read-only); point the POSTGRES_REPLICA url at a primary",
                self.target
            )));
        }
        // Relations of the schema that matter, with their kind.
        let wanted = [
            ddl::LEDGER.to_string(),
            ddl::OWNER.to_string(),
            names.analyst.clone(),
            names.raw.clone(),
            names.latest.clone(),
            names.deleted.clone(),
        ];
        let existing: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2)",
        )
        .bind(ns)
        .bind(&wanted[..])
        .fetch_all(&mut *tx)
        .await
        .map_err(fail("cannot read the catalog"))?;
        let has = |name: &str| existing.iter().any(|(n, _)| n == name);
        let missing: Vec<&str> = [ddl::LEDGER, ddl::OWNER, &names.analyst, &names.latest, &names.deleted]
            .into_iter()
            .chain(self.cfg.raw_history.then_some(names.raw.as_str()))
            .filter(|n| !has(n))
            .collect();
        if !missing.is_empty() && !self.cfg.create_tables {
            return Err(Error::config(format!(
                "the replica {} lacks {} in schema {} and create_tables is false; create them (see `tidemark schema ddl` / docs/destinations/postgres-replica.md) or enable create_tables",
                self.target,
                missing.join(", "),
                quote_ident(ns)
            )));
        }
        // Existing tables must be tables (plain or partitioned) …
        for table in [&names.analyst, &names.raw] {
            if let Some((_, kind)) = existing.iter().find(|(n, k)| n == table && k != "r" && k != "p") {
                return Err(Error::new(
                    ErrorKind::DestinationRejected,
                    format!(
                        "replica object {} is not a table (pg_class.relkind '{kind}'); drop or rename it",
                        qualified(ns, table)
                    ),
                ));
            }
        }
        // … holding the published columns with the published types.
        let mut add_columns = Vec::new();
        for table in [&names.analyst, &names.raw] {
            if !has(table) || (table == &names.raw && !self.cfg.raw_history) {
                continue;
            }
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(ns)
            .bind(table)
            .fetch_all(&mut *tx)
            .await
            .map_err(fail("cannot read the columns"))?;
            if table == &names.raw && !columns.iter().any(|(n, _)| n == OP_COLUMN) {
                // A history from before delete capture: its versions are all `U`.
                if !self.cfg.create_tables {
                    return Err(Error::new(
                        ErrorKind::DestinationRejected,
                        format!(
                            "replica table {} has no column {} (docs/DELETES.md); add it with `ALTER TABLE {} ADD COLUMN {}` or enable create_tables",
                            qualified(ns, table),
                            quote_ident(OP_COLUMN),
                            qualified(ns, table),
                            ddl::op_column_definition()
                        ),
                    ));
                }
                add_columns.push(format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}",
                    qualified(ns, table),
                    ddl::op_column_definition()
                ));
            }
            for col in &schema.columns {
                let expected = ddl::postgres_type(col.ty);
                match columns.iter().find(|(n, _)| n == &col.name) {
                    Some((_, found)) if *found == expected => {}
                    Some((_, found)) => {
                        return Err(Error::new(
                            ErrorKind::DestinationRejected,
                            format!(
                                "replica table {} has column {} of type {found}, but {} v{} publishes it as {expected}; \
                                 loading would convert or fail, so the table is refused (fix or drop the table)",
                                qualified(ns, table),
                                quote_ident(&col.name),
                                schema.table,
                                schema.version
                            ),
                        ));
                    }
                    None if col.nullable && self.cfg.create_tables => {
                        add_columns.push(format!(
                            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                            qualified(ns, table),
                            quote_ident(&col.name),
                            expected
                        ));
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::DestinationRejected,
                            format!(
                                "replica table {} has no column {} ({expected}) of {} v{}",
                                qualified(ns, table),
                                quote_ident(&col.name),
                                schema.table,
                                schema.version
                            ),
                        ));
                    }
                }
            }
        }
        let mut statements = Vec::new();
        let schema_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(ns)
            .fetch_one(&mut *tx)
            .await
            .map_err(fail("cannot read the catalog"))?;
        if !schema_exists && self.cfg.create_tables {
            statements.push(format!("CREATE SCHEMA {}", quote_ident(ns)));
        }
        if !has(ddl::LEDGER) || !has(ddl::OWNER) {
            statements.extend(ddl::control_statements(ns).into_iter().skip(1));
        }
        // Only what is missing is created (and commented: that needs ownership).
        if self.cfg.create_tables {
            let ddl = ddl::TableDdl::new(schema, ns, self.cfg.raw_history);
            if !has(&names.analyst) {
                statements.extend(ddl.analyst);
            }
            if !has(&names.deleted) {
                statements.extend(ddl.deleted);
            }
            if self.cfg.raw_history && !has(&names.raw) {
                statements.extend(ddl.raw);
            }
            statements.extend(add_columns.iter().cloned());
            // The view is replaced only when it is missing or stale (it takes an exclusive
            // lock on the view, which would queue behind analysts' long queries).
            let (reads_raw, honours_deletes, view_columns): (bool, bool, i64) = if has(&names.latest) {
                sqlx::query_as(
                    "SELECT pg_get_viewdef(to_regclass($1)) LIKE '%' || $2 || '%', \
                       pg_get_viewdef(to_regclass($1)) LIKE '%' || $3 || '%', \
                       (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0)",
                )
                .bind(qualified(ns, &names.latest))
                .bind(&names.raw)
                .bind(OP_COLUMN)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail("cannot read the latest view"))?
            } else {
                (false, false, 0)
            };
            let mut latest = ddl.latest.into_iter();
            if !has(&names.latest) {
                statements.extend(latest);
            } else if reads_raw != self.cfg.raw_history
                || (reads_raw && !honours_deletes)
                || view_columns < schema.columns.len() as i64
            {
                statements.extend(latest.next());
            }
        }
        for statement in &statements {
            (&mut *tx)
                .execute(sqlx::raw_sql(statement))
                .await
                .map_err(|e| classify(format!("setting up the replica schema {} failed", quote_ident(ns)), e))?;
        }
        // One schema, one organization.
        sqlx::query(&format!(
            "INSERT INTO {} (organization_id) VALUES ($1) ON CONFLICT DO NOTHING",
            qualified(ns, ddl::OWNER)
        ))
        .bind(organization)
        .execute(&mut *tx)
        .await
        .map_err(fail("cannot record the schema's organization"))?;
        let owner: Uuid = sqlx::query_scalar(&format!("SELECT organization_id FROM {}", qualified(ns, ddl::OWNER)))
            .fetch_one(&mut *tx)
            .await
            .map_err(fail("cannot read the schema's organization"))?;
        if owner != organization {
            return Err(Error::config(format!(
                "replica schema {} on {} already holds organization {owner}'s data; a destination of organization {organization} must use its own schema",
                quote_ident(ns),
                self.target
            )));
        }
        tx.commit().await.map_err(fail("cannot commit the setup"))?;
        if !statements.is_empty() {
            tracing::debug!(
                target = %self.target,
                schema = %ns,
                table = %names.analyst,
                statements = statements.len(),
                "Replica tables set up."
            );
        }
        Ok(())
    }

    /// Streams the window into the staging table, then merges it; returns the counts.
    async fn load(
        &self,
        conn: &mut PgConnection,
        ctx: &DeliveryContext<'_>,
        batches: &mut BatchStream,
        bytes: &mut u64,
    ) -> Result<(Counts, serde_json::Value, serde_json::Value)> {
        let schema = ctx.schema;
        let ns = &self.cfg.schema;
        let names = table_names(schema);
        let analyst = qualified(ns, &names.analyst);
        let raw = qualified(ns, &names.raw);
        let cols = ddl::column_list(schema);
        let fail = |what: String| move |e| classify(format!("{what} on the replica {}", self.target), e);
        let mut tx = conn
            .begin()
            .await
            .map_err(fail("cannot begin the load transaction".into()))?;
        let stage_columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), ddl::postgres_type(c.ty)))
            .chain([format!("{} text NOT NULL", quote_ident(OP_COLUMN))])
            .collect();
        let op = quote_ident(OP_COLUMN);
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!(
                "CREATE TEMP TABLE {} ({}) ON COMMIT DROP",
                quote_ident(STAGE),
                stage_columns.join(", ")
            )))
            .await
            .map_err(fail("cannot create the staging table".into()))?;

        // 1. Binary COPY into the staging table, batch by batch.
        let started = std::time::Instant::now();
        let encoder = CopyEncoder::with_op(schema, ctx.organization_id);
        let export = schema.export_arrow_schema();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {} ({cols}, {op}) FROM STDIN (FORMAT binary)",
                quote_ident(STAGE)
            ))
            .await
            .map_err(fail("cannot start COPY into the staging table".into()))?;
        let mut buf = Vec::with_capacity(1 << 20);
        CopyEncoder::header(&mut buf);
        let mut rows = 0u64;
        let mut streamed: Result<()> = Ok(());
        while let Some(batch) = batches.next().await {
            let step = match batch.and_then(|b| crate::extract::with_op_column(b, &export)) {
                Ok(batch) => encoder.encode(&batch, &mut buf).map(|()| batch.num_rows() as u64),
                Err(e) => Err(e),
            };
            match step {
                Ok(n) => rows += n,
                Err(e) => {
                    streamed = Err(e);
                    break;
                }
            }
            *bytes += buf.len() as u64;
            if let Err(e) = copy.send(buf.as_slice()).await {
                streamed = Err(classify(
                    format!("sending COPY data of {} to the replica {} failed", analyst, self.target),
                    e,
                ));
                break;
            }
            buf.clear();
        }
        if let Err(e) = streamed {
            // The server discards the COPY; the transaction (and the stage) roll back.
            let _ = copy.abort("tidemark: the delivery failed while streaming").await;
            return Err(e);
        }
        CopyEncoder::trailer(&mut buf);
        *bytes += buf.len() as u64;
        copy.send(buf.as_slice())
            .await
            .map_err(fail(format!("sending COPY data of {analyst}")))?;
        let copied = copy
            .finish()
            .await
            .map_err(fail(format!("COPY into the staging table of {analyst} failed")))?;
        if copied != rows {
            return Err(Error::unexpected(format!(
                "sent {rows} rows to the replica's staging table but COPY reported {copied}"
            )));
        }

        let copy_ms = started.elapsed().as_millis() as u64;
        // Temporary tables are never auto-analyzed; the merge below plans better knowing the
        // row count and the key columns (only those: jsonb payloads make a full ANALYZE cost
        // as much as the upsert).
        let started = std::time::Instant::now();
        (&mut *tx)
            .execute(sqlx::raw_sql(&format!(
                "ANALYZE {} (\"id\", \"updated_at\")",
                quote_ident(STAGE)
            )))
            .await
            .map_err(fail("cannot analyze the staging table".into()))?;
        let analyze_ms = started.elapsed().as_millis() as u64;

        // 2. History: every version once.
        let started = std::time::Instant::now();
        let raw_inserted = if self.cfg.raw_history {
            sqlx::query(&format!(
                "INSERT INTO {raw} ({cols}, {op}, {did}, {lat}) SELECT {cols}, {op}, $1, now() FROM {stage} \
                 ORDER BY \"id\", \"updated_at\", {op} DESC ON CONFLICT (\"id\", \"updated_at\") DO NOTHING",
                did = quote_ident(ddl::DELIVERY_ID_COLUMN),
                lat = quote_ident(ddl::LOADED_AT_COLUMN),
                stage = quote_ident(STAGE),
            ))
            .bind(ctx.delivery_id)
            .execute(&mut *tx)
            .await
            .map_err(fail(format!("inserting into {raw} failed")))?
            .rows_affected()
        } else {
            0
        };

        let raw_ms = started.elapsed().as_millis() as u64;

        // 3. Deletes: recorded in the deleted-ids ledger, and the analyst row goes unless it
        // is newer.
        let deleted_table = qualified(ns, &names.deleted);
        let (delete_ids, deleted): (i64, i64) = sqlx::query_as(&delete_statement(&analyst, &deleted_table))
            .bind(ctx.delivery_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(fail(format!("applying deletes to {analyst} failed")))?;

        // 4. Analyst table: newest updated_at wins; never backwards, never over a delete.
        let started = std::time::Instant::now();
        let row: sqlx::postgres::PgRow = sqlx::query(&upsert_statement(schema, &analyst, &deleted_table))
            .fetch_one(&mut *tx)
            .await
            .map_err(fail(format!("upserting into {analyst} failed")))?;
        let counts = Counts {
            copied,
            distinct: row.try_get("distinct_ids").map_err(|e| classify("reading counts", e))?,
            raw_inserted,
            inserted: row.try_get("inserted").map_err(|e| classify("reading counts", e))?,
            updated: row.try_get("updated").map_err(|e| classify("reading counts", e))?,
            skipped_as_older: row.try_get("older").map_err(|e| classify("reading counts", e))?,
            delete_ids,
            deleted,
            skipped_as_deleted: row.try_get("after_delete").map_err(|e| classify("reading counts", e))?,
        };

        let upsert_ms = started.elapsed().as_millis() as u64;

        // 4. The replay ledger.
        let started = std::time::Instant::now();
        let ledger = qualified(ns, ddl::LEDGER);
        let (loads, first_loaded_at, loaded_at): (i32, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(&format!(
            "INSERT INTO {ledger} AS l (delivery_id, organization_id, table_name, schema_version, window_start, window_end, \
               rows, raw_inserted, inserted, updated, skipped_as_older) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (delivery_id) DO UPDATE SET rows = excluded.rows, raw_inserted = excluded.raw_inserted, \
               inserted = excluded.inserted, updated = excluded.updated, skipped_as_older = excluded.skipped_as_older, \
               loads = l.loads + 1, loaded_at = now() \
             RETURNING loads, first_loaded_at, loaded_at"
        ))
        .bind(ctx.delivery_id)
        .bind(ctx.organization_id)
        .bind(schema.table.name())
        .bind(schema.version as i32)
        .bind(ctx.window_start)
        .bind(ctx.window_end)
        .bind(counts.copied as i64)
        .bind(counts.raw_inserted as i64)
        .bind(counts.inserted)
        .bind(counts.updated)
        .bind(counts.skipped_as_older)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail(format!("recording the delivery in {ledger} failed")))?;

        // 5. Visible in one step, and only while the lease is ours.
        ctx.fence.ensure().await?;
        tx.commit()
            .await
            .map_err(fail(format!("committing the load of {analyst} failed")))?;
        let ledger = serde_json::json!({
            "table": format!("{ns}.{}", ddl::LEDGER),
            "status": if loads == 1 { "first_load" } else { "replay" },
            "loads": loads,
            "first_loaded_at": first_loaded_at,
            "loaded_at": loaded_at,
        });
        let timings = serde_json::json!({
            "copy_ms": copy_ms,
            "analyze_ms": analyze_ms,
            "raw_insert_ms": raw_ms,
            "upsert_ms": upsert_ms,
            "ledger_fence_commit_ms": started.elapsed().as_millis() as u64,
        });
        Ok((counts, ledger, timings))
    }
}

/// The newest staged version per id: newest `updated_at`, and on a tie the `U` (a delete and
/// a re-insert in one transaction leave the row).
fn newest_staged(cols: &str) -> String {
    format!(
        "SELECT DISTINCT ON (\"id\") {cols}, {op} FROM {stage} ORDER BY \"id\", \"updated_at\" DESC, {op} DESC",
        op = quote_ident(OP_COLUMN),
        stage = quote_ident(STAGE),
    )
}

/// The deletes of a load, in one statement: ids whose newest staged version is a `D` get their
/// newest delete recorded in `deleted` (with delivery `$1`), and their analyst row deleted
/// unless it is newer. Returns `(delete ids, analyst rows deleted)`.
fn delete_statement(analyst: &str, deleted: &str) -> String {
    format!(
        "WITH s AS ({newest}), d AS (SELECT \"id\", \"updated_at\" FROM s WHERE {op} = '{OP_DELETE}'), \
         led AS (INSERT INTO {deleted} AS x (\"id\", {at}, {did}) SELECT \"id\", \"updated_at\", $1 FROM d ORDER BY \"id\" \
                 ON CONFLICT (\"id\") DO UPDATE SET {at} = excluded.{at}, {did} = excluded.{did} \
                 WHERE excluded.{at} > x.{at} RETURNING 1), \
         gone AS (DELETE FROM {analyst} t USING d WHERE t.\"id\" = d.\"id\" AND t.\"updated_at\" <= d.\"updated_at\" RETURNING 1) \
         SELECT (SELECT count(*) FROM d) AS delete_ids, (SELECT count(*) FROM gone) AS deleted",
        newest = newest_staged("\"id\", \"updated_at\""),
        op = quote_ident(OP_COLUMN),
        at = quote_ident(ddl::DELETED_AT_COLUMN),
        did = quote_ident(ddl::DELIVERY_ID_COLUMN),
    )
}

/// The analyst upsert with its counts, in one statement (all parts see one snapshot):
/// distinct ids staged, inserted, updated (a newer version, or the same version with other
/// content), staged versions older than the replica's (left alone), and versions not newer
/// than a recorded delete (never loaded: a replay must not resurrect a deleted row). Ids whose
/// newest staged version is a `D` are left to [`delete_statement`].
fn upsert_statement(schema: &TableSchema, analyst: &str, deleted: &str) -> String {
    let cols = ddl::column_list(schema);
    let others: Vec<&str> = schema
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| *n != "id")
        .collect();
    let set: Vec<String> = others
        .iter()
        .map(|n| format!("{q} = excluded.{q}", q = quote_ident(n)))
        .collect();
    let target_row: Vec<String> = others.iter().map(|n| format!("t.{}", quote_ident(n))).collect();
    let new_row: Vec<String> = others.iter().map(|n| format!("excluded.{}", quote_ident(n))).collect();
    format!(
        "WITH staged AS ({newest}), \
         s AS (SELECT * FROM staged WHERE {op} = '{OP_UPSERT}' AND NOT EXISTS \
                 (SELECT 1 FROM {deleted} x WHERE x.\"id\" = staged.\"id\" AND x.{at} >= staged.\"updated_at\")), \
         prior AS (SELECT count(*) FILTER (WHERE t.\"updated_at\" > s.\"updated_at\") AS older \
                   FROM s JOIN {analyst} t ON t.\"id\" = s.\"id\"), \
         up AS (INSERT INTO {analyst} AS t ({cols}) SELECT {cols} FROM s ORDER BY \"id\" \
                ON CONFLICT (\"id\") DO UPDATE SET {set} \
                WHERE excluded.\"updated_at\" > t.\"updated_at\" \
                   OR (excluded.\"updated_at\" = t.\"updated_at\" AND ({target_row}) IS DISTINCT FROM ({new_row})) \
                RETURNING (xmax = 0) AS fresh) \
         SELECT (SELECT count(*) FROM staged) AS distinct_ids, (SELECT older FROM prior) AS older, \
                (SELECT count(*) FROM staged WHERE {op} = '{OP_UPSERT}') - (SELECT count(*) FROM s) AS after_delete, \
                count(*) FILTER (WHERE fresh) AS inserted, count(*) FILTER (WHERE NOT fresh) AS updated FROM up",
        newest = newest_staged(&cols),
        op = quote_ident(OP_COLUMN),
        at = quote_ident(ddl::DELETED_AT_COLUMN),
        set = set.join(", "),
        target_row = target_row.join(", "),
        new_row = new_row.join(", "),
    )
}

#[async_trait]
impl Destination for ReplicaDestination {
    fn kind(&self) -> DestinationKind {
        DestinationKind::PostgresReplica
    }

    fn exports_op(&self) -> bool {
        true
    }

    /// Connects and authenticates, and proves the role can create (or use) the schema,
    /// inside a transaction that is rolled back.
    async fn check(&self) -> Result<()> {
        let mut conn = self.connect().await?;
        let ns = &self.cfg.schema;
        let fail = |e| classify(format!("checking the replica {} failed", self.target), e);
        let mut tx = conn.begin().await.map_err(fail)?;
        let (standby, exists): (bool, bool) =
            sqlx::query_as("SELECT pg_is_in_recovery(), EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(ns)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
        if standby {
            return Err(Error::config(format!(
                "the replica {} is a standby (read-only); point the POSTGRES_REPLICA url at a primary",
                self.target
            )));
        }
        match (exists, self.cfg.create_tables) {
            (false, true) => {
                (&mut *tx)
                    .execute(sqlx::raw_sql(&format!("CREATE SCHEMA {}", quote_ident(ns))))
                    .await
                    .map_err(fail)?;
            }
            (false, false) => {
                return Err(Error::config(format!(
                    "the replica {} has no schema {} and create_tables is false",
                    self.target,
                    quote_ident(ns)
                )));
            }
            (true, false) => {
                // Objects are pre-created: the ledger must be there and writable, and a
                // temporary staging table possible. (The tables are checked per table at the
                // first delivery.)
                let ledger = qualified(ns, ddl::LEDGER);
                let (has_ledger, temp): (bool, bool) = sqlx::query_as(
                    "SELECT to_regclass($1) IS NOT NULL, has_database_privilege(current_database(), 'TEMP')",
                )
                .bind(&ledger)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
                if !has_ledger {
                    return Err(Error::config(format!(
                        "the replica {} has no {ledger} and create_tables is false; create the replica objects first",
                        self.target
                    )));
                }
                if !temp {
                    return Err(Error::new(
                        ErrorKind::DestinationAuth,
                        format!(
                            "the replica role may not create temporary tables on {} (GRANT TEMPORARY ON DATABASE …)",
                            self.target
                        ),
                    ));
                }
                // Writes the ledger needs (rolled back below).
                sqlx::query(&format!(
                    "UPDATE {ledger} SET loads = loads WHERE delivery_id = '00000000-0000-0000-0000-000000000000'"
                ))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            }
            (true, true) => {
                // A throwaway table proves CREATE on the schema and that writes work.
                (&mut *tx)
                    .execute(sqlx::raw_sql(&format!(
                        "CREATE TABLE {}.\"_tidemark_check\" (x int); INSERT INTO {}.\"_tidemark_check\" VALUES (1)",
                        quote_ident(ns),
                        quote_ident(ns)
                    )))
                    .await
                    .map_err(fail)?;
            }
        }
        tx.rollback().await.map_err(fail)?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>, mut batches: BatchStream) -> Result<Delivered> {
        let schema = ctx.schema;
        let mut conn = self.connect().await?;
        if !self.is_ready(schema) {
            self.prepare(&mut conn, schema, ctx.organization_id).await?;
            self.set_ready(schema, true);
        }
        let mut bytes = 0u64;
        let (counts, ledger, timings) = match self.load(&mut conn, ctx, &mut batches, &mut bytes).await {
            Ok(done) => done,
            Err(e) => {
                // Check the tables again before the next attempt (one may have been dropped
                // or altered under us).
                self.set_ready(schema, false);
                return Err(e);
            }
        };
        let _ = conn.close().await;
        let names = table_names(schema);
        let ns = &self.cfg.schema;
        let unchanged = counts.distinct
            - counts.delete_ids
            - counts.skipped_as_deleted
            - counts.inserted
            - counts.updated
            - counts.skipped_as_older;
        tracing::debug!(
            delivery = %ctx.delivery_id,
            table = %names.analyst,
            rows = counts.copied,
            inserted = counts.inserted,
            updated = counts.updated,
            skipped_as_older = counts.skipped_as_older,
            replay = ledger["status"] == "replay",
            "Loaded into the replica."
        );
        Ok(Delivered {
            rows: counts.copied,
            bytes,
            receipt: serde_json::json!({
                "kind": DestinationKind::PostgresReplica.label(),
                "target": self.target,
                "schema": ns,
                "analyst_table": format!("{ns}.{}", names.analyst),
                "raw_table": self.cfg.raw_history.then(|| format!("{ns}.{}", names.raw)),
                "copy_format": "binary",
                "copy_bytes": bytes,
                "rows_copied": counts.copied,
                "distinct_ids": counts.distinct,
                "raw_inserted": counts.raw_inserted,
                "inserted": counts.inserted,
                "updated": counts.updated,
                "delete_ids": counts.delete_ids,
                "deleted": counts.deleted,
                "skipped_as_deleted": counts.skipped_as_deleted,
                "unchanged": unchanged,
                "skipped_as_older": counts.skipped_as_older,
                "ledger": ledger,
                "timings_ms": timings,
                "provenance": FileProvenance {
                    table: schema.table.name().to_string(),
                    schema_version: schema.version,
                    organization_id: ctx.organization_id,
                    window_start: ctx.window_start,
                    window_end: ctx.window_end,
                    delivery_id: ctx.delivery_id,
                },
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        for (code, kind) in [
            ("28P01", ErrorKind::DestinationAuth),
            ("28000", ErrorKind::DestinationAuth),
            ("42501", ErrorKind::DestinationAuth),
            ("3D000", ErrorKind::Config),
            ("08006", ErrorKind::DestinationTransient),
            ("57014", ErrorKind::DestinationTransient),
            ("57P01", ErrorKind::DestinationTransient),
            ("40P01", ErrorKind::DestinationTransient),
            ("53300", ErrorKind::DestinationTransient),
            ("22P02", ErrorKind::DestinationRejected),
            ("23502", ErrorKind::DestinationRejected),
            ("42804", ErrorKind::DestinationRejected),
            ("XX000", ErrorKind::Unexpected),
        ] {
            assert_eq!(kind_of_sqlstate(code), kind, "{code}");
        }
    }

    #[test]
    fn the_url_never_shows_in_errors() {
        // SAFETY: a variable only this test uses.
        unsafe { std::env::set_var("TIDEMARK_REPLICA_UNIT_URL", "mysql://u:hunter2@h/db") };
        let err = ReplicaDestination::from_config(&serde_json::json!({"url": {"env": "TIDEMARK_REPLICA_UNIT_URL"}}))
            .err()
            .expect("refused");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("env:TIDEMARK_REPLICA_UNIT_URL"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        unsafe { std::env::set_var("TIDEMARK_REPLICA_UNIT_URL", "postgres://u:hunter2@db.example:6432/app") };
        let Ok(d) = ReplicaDestination::from_config(&serde_json::json!({"url": {"env": "TIDEMARK_REPLICA_UNIT_URL"}}))
        else {
            panic!("a valid URL is accepted")
        };
        assert_eq!(d.target(), "db.example:6432/app");
        assert_eq!(d.schema(), "tidemark");
    }

    #[test]
    fn upsert_never_moves_backwards() {
        let schema = crate::schema::Registry::embedded().get(Table::Events, 1).unwrap();
        let sql = upsert_statement(
            &schema,
            "\"tidemark\".\"events_v1\"",
            "\"tidemark\".\"events_v1_deleted\"",
        );
        assert!(
            sql.contains("x.\"deleted_at\" >= staged.\"updated_at\""),
            "a version not newer than a recorded delete is never loaded: {sql}"
        );
        assert!(sql.contains("ON CONFLICT (\"id\") DO UPDATE"), "{sql}");
        assert!(
            sql.contains("WHERE excluded.\"updated_at\" > t.\"updated_at\""),
            "{sql}"
        );
        assert!(
            !sql.contains("\"id\" = excluded.\"id\""),
            "the key is not rewritten: {sql}"
        );
    }
}
