//! `BIGQUERY`: windows land in `<table>_v<major>_raw` (history) and `<table>_v<major>` (one
//! row per id), see [`ddl`] for the layout and type mapping.
//!
//! Load mode, per delivery `d` (job ids `tidemark_<d>_<step>_<n>`, `n` counting failed jobs of
//! the step; a retry GETs them in order and reuses a succeeded one):
//! 1. `merge`: if a MERGE job of `d` succeeded already, nothing is loaded again.
//! 2. `load`: the window is encoded to a Parquet temp file and loaded by a resumable media
//!    upload into the per-delivery stage table `_tidemark_stage_<table>_v<major>_<d>`
//!    (WRITE_TRUNCATE, explicit schema, expires after 7 days). Not visible to analysts.
//! 3. `raw`: after the fence, `INSERT INTO raw … SELECT … FROM stage WHERE NOT EXISTS (rows of
//!    d in raw within the window's partitions)`: at most one copy of a delivery, even if the
//!    job ids were lost.
//! 4. `merge`: after the fence, `MERGE` the delivery's raw rows into the analyst table on `id`,
//!    newest `updated_at` wins (a repeated MERGE changes nothing); a `_op = 'D'` row deletes
//!    the analyst row unless it is newer, and a `U` older than a `D` of the id in the raw
//!    history is never inserted (docs/DELETES.md).
//! 5. The stage table is dropped.
//!
//! Stream mode replaces 2–3 with `tabledata.insertAll` of the rows into raw, `insertId`
//! `<d>:<row>`; see the module docs of [`config::Mode`] for its weaker raw-table guarantee.

mod client;
mod config;
pub mod ddl;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use parquet::arrow::async_writer::{AsyncArrowWriter, AsyncFileWriter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use uuid::Uuid;

pub use client::{Client, classify, job_error};
pub use config::{BigQueryConfig, DEFAULT_BASE_URL, Mode};
use ddl::{DELIVERY_COLUMN, Dataset, JsonbAs, LOADED_AT_COLUMN, Role, quote_ident, quote_literal, table_names};

use super::{Delivered, DeliveryContext, Destination};
use crate::control::destinations::DestinationKind;
use crate::encode::FileProvenance;
use crate::encode::jsonl::JsonlEncoder;
use crate::error::{Error, ErrorKind, Result};
use crate::extract::BatchStream;
use crate::schema::{ColumnType, OP_COLUMN, OP_DELETE, OP_UPSERT, Table, TableSchema};

/// Jobs of one step tried per delivery before giving up (each failed attempt leaves one).
const MAX_JOBS_PER_STEP: u32 = 100;
/// Stage tables outlive a dead-lettered delivery by at most this long.
const STAGE_TTL: chrono::Duration = chrono::Duration::days(7);
/// Rows and bytes per `tabledata.insertAll` request (the API allows 50 000 rows / 10 MB and
/// recommends about 500 rows).
const STREAM_ROWS: usize = 500;
const STREAM_BYTES: usize = 5 * 1024 * 1024;

pub fn build(config: &serde_json::Value) -> Result<Arc<dyn Destination>> {
    Ok(Arc::new(BigQueryDestination::from_config(config)?))
}

pub struct BigQueryDestination {
    cfg: BigQueryConfig,
    client: Client,
    ds: Dataset,
    /// Tables known to exist with every published column, per (table, major).
    ready: Mutex<HashSet<(Table, u32)>>,
}

/// What the retry found of a step's jobs.
struct Found {
    /// A succeeded job of the step.
    done: Option<Value>,
    /// The id to use for a new job of the step.
    next_id: String,
}

fn ts_literal(t: DateTime<Utc>) -> String {
    format!(
        "TIMESTAMP {}",
        quote_literal(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    )
}

fn job_summary(job: &Value, reused: bool) -> Value {
    let stats = &job["statistics"];
    let mut s = json!({
        "job_id": job["jobReference"]["jobId"],
        "location": job["jobReference"]["location"],
        "reused": reused,
    });
    if let Some(load) = stats.get("load") {
        s["output_rows"] = load["outputRows"].clone();
        s["input_file_bytes"] = load["inputFileBytes"].clone();
        s["bad_records"] = load["badRecords"].clone();
    }
    if let Some(q) = stats.get("query") {
        s["statement_type"] = q["statementType"].clone();
        s["dml_affected_rows"] = q["numDmlAffectedRows"].clone();
        if let Some(d) = q.get("dmlStats") {
            s["dml_stats"] = d.clone();
        }
    }
    s
}

impl BigQueryDestination {
    pub fn from_config(config: &serde_json::Value) -> Result<BigQueryDestination> {
        let cfg = BigQueryConfig::parse(config)?;
        let client = Client::new(&cfg)?;
        let ds = Dataset {
            project: Some(cfg.project.clone()),
            dataset: cfg.dataset.clone(),
        };
        Ok(BigQueryDestination {
            cfg,
            client,
            ds,
            ready: Mutex::new(HashSet::new()),
        })
    }

    fn stage_table(&self, ctx: &DeliveryContext<'_>) -> String {
        format!(
            "_tidemark_stage_{}_v{}_{}",
            ctx.schema.table.name(),
            ctx.schema.version,
            ctx.delivery_id.simple()
        )
    }

    fn job_prefix(delivery: Uuid, step: &str) -> String {
        format!("tidemark_{}_{step}", delivery.simple())
    }

    /// Runs a DDL/DML statement as a query job with a fresh random id and waits for it.
    async fn run_statement(&self, sql: &str, what: &str) -> Result<Value> {
        let id = format!("tidemark_ddl_{}", Uuid::new_v4().simple());
        let job = self.client.insert_query_job(&id, sql).await?;
        let job = self.client.wait_job(job, what).await?;
        if let Some(e) = job_error(&job, &format!("{what} (job {id})")) {
            return Err(e);
        }
        Ok(job)
    }

    /// Creates the dataset, the raw and analyst tables and the latest view where missing, and
    /// adds published columns a table lacks (additive minor versions). Once per process and
    /// table; with `create_tables: false` anything missing is a configuration error.
    async fn ensure_tables(&self, schema: &TableSchema) -> Result<()> {
        let key = (schema.table, schema.version);
        if self.ready.lock().await.contains(&key) {
            return Ok(());
        }
        let dataset = &self.cfg.dataset;
        let names = table_names(schema);
        if self.client.get_dataset(dataset).await?.is_none() {
            if !self.cfg.create_tables {
                return Err(Error::config(format!(
                    "BigQuery dataset {}:{dataset} does not exist and create_tables is false",
                    self.cfg.project
                )));
            }
            self.client.create_dataset(dataset).await?;
        }
        for (table, create, is_raw) in [
            (&names.raw, ddl::create_raw(schema, &self.ds, self.cfg.jsonb_as), true),
            (
                &names.analyst,
                ddl::create_analyst(schema, &self.ds, self.cfg.jsonb_as),
                false,
            ),
        ] {
            let what = format!("creating BigQuery table {}:{dataset}.{table}", self.cfg.project);
            match self.client.get_table(dataset, table).await? {
                None if !self.cfg.create_tables => {
                    return Err(Error::config(format!(
                        "BigQuery table {}:{dataset}.{table} does not exist and create_tables is false",
                        self.cfg.project
                    )));
                }
                None => {
                    self.run_statement(&create, &what).await?;
                }
                Some(existing) => {
                    let have: HashSet<&str> = existing["schema"]["fields"]
                        .as_array()
                        .map(|f| f.iter().filter_map(|f| f["name"].as_str()).collect())
                        .unwrap_or_default();
                    // (name, type) of every column the table should have, metadata included.
                    let missing: Vec<(String, String)> = schema
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), ddl::bq_type(c.ty, self.cfg.jsonb_as).ddl()))
                        .chain([
                            (DELIVERY_COLUMN.to_string(), "STRING".to_string()),
                            (LOADED_AT_COLUMN.to_string(), "TIMESTAMP".to_string()),
                        ])
                        // A raw table from before delete capture gains `_op` (NULL = U).
                        .chain(is_raw.then(|| (OP_COLUMN.to_string(), "STRING".to_string())))
                        .filter(|(name, _)| !have.contains(name.as_str()))
                        .collect();
                    if missing.is_empty() {
                        continue;
                    }
                    if !self.cfg.create_tables {
                        let names: Vec<_> = missing.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(Error::config(format!(
                            "BigQuery table {}:{dataset}.{table} lacks columns {} and create_tables is false",
                            self.cfg.project,
                            names.join(", ")
                        )));
                    }
                    // One column per statement: rare (a new minor version), and portable.
                    for (name, ty) in missing {
                        let sql = format!(
                            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {ty}",
                            self.ds.table(table),
                            quote_ident(&name)
                        );
                        let what = format!("adding column {name} to {}:{dataset}.{table}", self.cfg.project);
                        self.run_statement(&sql, &what).await?;
                    }
                }
            }
        }
        if self.client.get_table(dataset, &names.latest).await?.is_none() {
            if !self.cfg.create_tables {
                return Err(Error::config(format!(
                    "BigQuery view {}:{dataset}.{} does not exist and create_tables is false",
                    self.cfg.project, names.latest
                )));
            }
            let what = format!("creating BigQuery view {}:{dataset}.{}", self.cfg.project, names.latest);
            self.run_statement(&ddl::create_latest_view(schema, &self.ds), &what)
                .await?;
        }
        self.ready.lock().await.insert(key);
        Ok(())
    }

    /// The jobs of one step of a delivery, in id order: waits for a running one, skips failed
    /// ones, returns a succeeded one or the next free id.
    async fn find_job(&self, delivery: Uuid, step: &str) -> Result<Found> {
        let prefix = Self::job_prefix(delivery, step);
        for n in 0..MAX_JOBS_PER_STEP {
            let id = format!("{prefix}_{n}");
            let Some(job) = self.client.get_job(&id).await? else {
                return Ok(Found {
                    done: None,
                    next_id: id,
                });
            };
            let job = self.client.wait_job(job, &format!("BigQuery job {id}")).await?;
            if job_error(&job, "").is_none() {
                return Ok(Found {
                    done: Some(job),
                    next_id: id,
                });
            }
        }
        Err(Error::new(
            ErrorKind::DestinationRejected,
            format!("BigQuery: {MAX_JOBS_PER_STEP} failed {step} jobs for delivery {delivery}; giving up"),
        ))
    }

    /// Inserts a query job under `id`, waits, and classifies its failure.
    async fn run_job(&self, id: &str, sql: &str, what: &str) -> Result<Value> {
        let job = self.client.insert_query_job(id, sql).await?;
        let job = self.client.wait_job(job, what).await?;
        match job_error(&job, &format!("{what} (job {id})")) {
            Some(e) => Err(e),
            None => Ok(job),
        }
    }

    /// The SELECT list moving stage columns into raw: jsonb parsed into JSON where the
    /// published tables hold JSON.
    fn stage_select(&self, schema: &TableSchema) -> String {
        schema
            .columns
            .iter()
            .map(|c| {
                let q = quote_ident(&c.name);
                if c.ty == ColumnType::Jsonb && self.cfg.jsonb_as == JsonbAs::Json {
                    format!("PARSE_JSON({q}) AS {q}")
                } else {
                    q
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `updated_at` within the delivery's window: prunes the raw table to its partitions.
    fn window_filter(ctx: &DeliveryContext<'_>) -> String {
        format!(
            "{d} = {id} AND {u} >= {start} AND {u} < {end}",
            d = quote_ident(DELIVERY_COLUMN),
            id = quote_literal(&ctx.delivery_id.to_string()),
            u = quote_ident("updated_at"),
            start = ts_literal(ctx.window_start),
            end = ts_literal(ctx.window_end),
        )
    }

    fn raw_insert_sql(&self, ctx: &DeliveryContext<'_>, stage: &str) -> String {
        let names = table_names(ctx.schema);
        let cols: Vec<String> = ctx
            .schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain([
                quote_ident(OP_COLUMN),
                quote_ident(DELIVERY_COLUMN),
                quote_ident(LOADED_AT_COLUMN),
            ])
            .collect();
        format!(
            "INSERT INTO {raw} ({cols})\nSELECT {select}, {op}, {id}, CURRENT_TIMESTAMP()\nFROM {stage}\n\
             WHERE NOT EXISTS (SELECT 1 FROM {raw} WHERE {filter})",
            raw = self.ds.table(&names.raw),
            cols = cols.join(", "),
            select = self.stage_select(ctx.schema),
            op = quote_ident(OP_COLUMN),
            id = quote_literal(&ctx.delivery_id.to_string()),
            stage = self.ds.table(stage),
            filter = Self::window_filter(ctx),
        )
    }

    fn merge_sql(&self, ctx: &DeliveryContext<'_>) -> String {
        let names = table_names(ctx.schema);
        let all: Vec<String> = ctx
            .schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain([quote_ident(DELIVERY_COLUMN), quote_ident(LOADED_AT_COLUMN)])
            .collect();
        let id = quote_ident("id");
        let u = quote_ident("updated_at");
        let set: Vec<String> = all
            .iter()
            .filter(|c| **c != id)
            .map(|c| format!("{c} = S.{c}"))
            .collect();
        let values: Vec<String> = all.iter().map(|c| format!("S.{c}")).collect();
        format!(
            "MERGE {analyst} T\nUSING (\n  SELECT R.*, D.{deleted_at} FROM (\n    SELECT * FROM {raw} WHERE {filter}\n    \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY {u} DESC, {op} DESC, {l} DESC) = 1\n  ) R\n  \
             LEFT JOIN (\n    SELECT {id}, MAX({u}) AS {deleted_at} FROM {raw}\n    \
             WHERE {op_name} = '{OP_DELETE}' AND {id} IN (SELECT {id} FROM {raw} WHERE {filter})\n    GROUP BY {id}\n  ) D ON D.{id} = R.{id}\n) S\n\
             ON T.{id} = S.{id}\n\
             WHEN MATCHED AND {s_op} = '{OP_DELETE}' AND S.{u} >= T.{u} THEN DELETE\n\
             WHEN MATCHED AND {s_op} = '{OP_UPSERT}' AND S.{u} > T.{u} THEN UPDATE SET {set}\n\
             WHEN NOT MATCHED AND {s_op} = '{OP_UPSERT}' AND (S.{deleted_at} IS NULL OR S.{deleted_at} <= S.{u}) \
             THEN INSERT ({cols}) VALUES ({values})",
            analyst = self.ds.table(&names.analyst),
            raw = self.ds.table(&names.raw),
            filter = Self::window_filter(ctx),
            op = ddl::op_expression(""),
            s_op = ddl::op_expression("S."),
            op_name = quote_ident(OP_COLUMN),
            deleted_at = quote_ident("_tidemark_deleted_at"),
            l = quote_ident(LOADED_AT_COLUMN),
            set = set.join(", "),
            cols = all.join(", "),
            values = values.join(", "),
        )
    }

    /// Stage table with an expiry, so a dead-lettered delivery does not leave it forever.
    async fn create_stage(&self, ctx: &DeliveryContext<'_>, stage: &str) -> Result<()> {
        let expires = (Utc::now() + STAGE_TTL).timestamp_millis();
        let resource = json!({
            "tableReference": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": stage},
            "schema": ddl::schema_json(ctx.schema, Role::Stage, self.cfg.jsonb_as),
            "expirationTime": expires.to_string(),
            "description": format!("tidemark stage of delivery {}", ctx.delivery_id),
        });
        self.client.create_table(&self.cfg.dataset, &resource).await
    }

    /// Encodes the window to a Parquet temp file and loads it into the stage table.
    async fn load_stage(
        &self,
        ctx: &DeliveryContext<'_>,
        batches: &mut BatchStream,
        stage: &str,
        job_id: &str,
    ) -> Result<(u64, u64, String, Option<Value>)> {
        let tmp = tempfile::Builder::new()
            .prefix("tidemark-bq-")
            .suffix(".parquet")
            .tempfile()
            .map_err(|e| Error::unexpected("cannot create a temp file for the window's Parquet").with_source(e))?;
        let file = tokio::fs::File::from_std(
            tmp.reopen()
                .map_err(|e| Error::unexpected("cannot open the temp Parquet file").with_source(e))?,
        );
        let (rows, bytes, sha) = encode_parquet(ctx, batches, file).await?;
        if rows == 0 {
            return Ok((0, bytes, sha, None));
        }
        self.create_stage(ctx, stage).await?;
        let what = format!(
            "BigQuery load job {job_id} into {}:{}.{stage}",
            self.cfg.project, self.cfg.dataset
        );
        let mut reference = json!({"projectId": self.cfg.project, "jobId": job_id});
        if let Some(loc) = self.client.location() {
            reference["location"] = Value::String(loc.to_string());
        }
        let job = json!({
            "jobReference": reference,
            "configuration": {"load": {
                "destinationTable": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": stage},
                "sourceFormat": "PARQUET",
                "schema": ddl::schema_json(ctx.schema, Role::Stage, self.cfg.jsonb_as),
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_IF_NEEDED",
                "parquetOptions": {"enableListInference": true},
                "labels": {"tidemark_delivery": ctx.delivery_id.simple().to_string()},
            }},
        });
        let started = self.client.upload_load_job(&job, tmp.path(), bytes, &what).await?;
        let done = self.client.wait_job(started, &what).await?;
        if let Some(e) = job_error(&done, &what) {
            return Err(e);
        }
        Ok((rows, bytes, sha, Some(done)))
    }

    /// Streams the window into the raw table with `tabledata.insertAll`.
    async fn stream_raw(&self, ctx: &DeliveryContext<'_>, batches: &mut BatchStream) -> Result<(u64, u64)> {
        let names = table_names(ctx.schema);
        // jsonb goes as a JSON string (what insertAll takes for JSON and STRING columns alike).
        let arrow = ctx.schema.export_arrow_schema();
        let plain = arrow_schema::Schema::new(
            arrow
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_metadata(Default::default()))
                .collect::<Vec<_>>(),
        );
        let encoder = JsonlEncoder::new(&plain);
        let loaded_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let suffix = format!(
            ",{}:{},{}:{}}}}}",
            serde_json::to_string(DELIVERY_COLUMN).expect("str"),
            serde_json::to_string(&ctx.delivery_id.to_string()).expect("str"),
            serde_json::to_string(LOADED_AT_COLUMN).expect("str"),
            serde_json::to_string(&loaded_at).expect("str"),
        );
        let what = format!(
            "BigQuery tabledata.insertAll into {}:{}.{}",
            self.cfg.project, self.cfg.dataset, names.raw
        );
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut lines = Vec::with_capacity(1 << 20);
        let head = br#"{"skipInvalidRows":false,"ignoreUnknownValues":false,"rows":["#;
        let mut body: Vec<u8> = head.to_vec();
        let mut in_body = 0usize;
        while let Some(batch) = batches.next().await {
            let batch = crate::extract::with_op_column(batch?, &arrow)?;
            lines.clear();
            encoder.encode(&batch, &mut lines)?;
            // Rows become visible as they arrive: the lease must hold before each batch.
            ctx.fence.ensure().await?;
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if in_body > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(br#"{"insertId":""#);
                body.extend_from_slice(format!("{}:{rows}", ctx.delivery_id.simple()).as_bytes());
                body.extend_from_slice(br#"","json":"#);
                body.extend_from_slice(&line[..line.len() - 1]);
                body.extend_from_slice(suffix.as_bytes());
                rows += 1;
                in_body += 1;
                if in_body >= STREAM_ROWS || body.len() >= STREAM_BYTES {
                    body.extend_from_slice(b"]}");
                    bytes += body.len() as u64;
                    self.send_rows(
                        &names.raw,
                        std::mem::replace(&mut body, head.to_vec()),
                        rows - in_body as u64,
                        &what,
                    )
                    .await?;
                    in_body = 0;
                }
            }
        }
        if in_body > 0 {
            body.extend_from_slice(b"]}");
            bytes += body.len() as u64;
            self.send_rows(&names.raw, body, rows - in_body as u64, &what).await?;
        }
        Ok((rows, bytes))
    }

    async fn send_rows(&self, table: &str, body: Vec<u8>, first_row: u64, what: &str) -> Result<()> {
        let reply = self.client.insert_all(&self.cfg.dataset, table, body, what).await?;
        let Some(errors) = reply["insertErrors"].as_array().filter(|e| !e.is_empty()) else {
            return Ok(());
        };
        let details: Vec<String> = errors
            .iter()
            .take(3)
            .map(|e| {
                let row = first_row + e["index"].as_u64().unwrap_or(0);
                let inner = &e["errors"][0];
                format!(
                    "row {row}: {} {} ({})",
                    inner["location"].as_str().unwrap_or(""),
                    inner["message"].as_str().unwrap_or("rejected"),
                    inner["reason"].as_str().unwrap_or("invalid")
                )
            })
            .collect();
        Err(Error::new(
            ErrorKind::DestinationRejected,
            format!("{what}: {} rows rejected: {}", errors.len(), details.join("; ")),
        ))
    }
}

/// Counts the rows of a stream without encoding them (a retry whose load already landed).
async fn drain(batches: &mut BatchStream) -> Result<u64> {
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// A file sink for the async Parquet writer that hashes and counts what it writes.
struct HashingFile {
    file: tokio::fs::File,
    sha256: Sha256,
    bytes: u64,
}

impl AsyncFileWriter for HashingFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.sha256.update(&bs);
            self.bytes += bs.len() as u64;
            self.file
                .write_all(&bs)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.file
                .flush()
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }
}

async fn encode_parquet(
    ctx: &DeliveryContext<'_>,
    batches: &mut BatchStream,
    file: tokio::fs::File,
) -> Result<(u64, u64, String)> {
    let provenance = FileProvenance {
        table: ctx.schema.table.name().to_string(),
        schema_version: ctx.schema.version,
        organization_id: ctx.organization_id,
        window_start: ctx.window_start,
        window_end: ctx.window_end,
        delivery_id: ctx.delivery_id,
    };
    let props = crate::encode::parquet::writer_properties(&provenance, ctx.schema);
    let sink = HashingFile {
        file,
        sha256: Sha256::new(),
        bytes: 0,
    };
    let export = ctx.schema.export_arrow_schema();
    let mut writer = AsyncArrowWriter::try_new(sink, export.clone(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = crate::extract::with_op_column(batch?, &export)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    writer.finish().await?;
    let sink = writer.into_inner();
    Ok((rows, sink.bytes, hex::encode(sink.sha256.finalize())))
}

#[async_trait]
impl Destination for BigQueryDestination {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Bigquery
    }

    /// Deletes land in the raw table as `_op = 'D'` rows; the MERGE applies them.
    fn exports_op(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<()> {
        // datasets.get: authenticated, cheap, runs no job.
        match self.client.get_dataset(&self.cfg.dataset).await? {
            Some(_) => Ok(()),
            None if self.cfg.create_tables => Ok(()),
            None => Err(Error::config(format!(
                "BigQuery dataset {}:{} does not exist and create_tables is false",
                self.cfg.project, self.cfg.dataset
            ))),
        }
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>, mut batches: BatchStream) -> Result<Delivered> {
        let names = table_names(ctx.schema);
        let stage = self.stage_table(ctx);
        self.ensure_tables(ctx.schema).await?;
        let mut receipt = json!({
            "kind": DestinationKind::Bigquery.label(),
            "mode": match self.cfg.mode { Mode::Load => "load", Mode::Stream => "stream" },
            "project": self.cfg.project,
            "dataset": self.cfg.dataset,
            "raw_table": names.raw,
            "analyst_table": names.analyst,
        });

        // A MERGE of this delivery that succeeded means everything before it did too.
        let merge = self.find_job(ctx.delivery_id, "merge").await?;
        if let Some(job) = merge.done {
            let rows = drain(&mut batches).await?;
            self.client.delete_table(&self.cfg.dataset, &stage).await.ok();
            receipt["merge_job"] = job_summary(&job, true);
            receipt["rows"] = rows.into();
            return Ok(Delivered {
                rows,
                bytes: 0,
                receipt,
            });
        }

        let (rows, bytes) = match self.cfg.mode {
            Mode::Load => {
                receipt["stage_table"] = stage.clone().into();
                let raw = self.find_job(ctx.delivery_id, "raw").await?;
                if let Some(job) = raw.done {
                    receipt["raw_insert_job"] = job_summary(&job, true);
                    (drain(&mut batches).await?, 0)
                } else {
                    let load = self.find_job(ctx.delivery_id, "load").await?;
                    let stage_exists = match &load.done {
                        Some(_) => self.client.get_table(&self.cfg.dataset, &stage).await?.is_some(),
                        None => false,
                    };
                    let (rows, bytes) = match load.done {
                        Some(job) if stage_exists => {
                            receipt["load_job"] = job_summary(&job, true);
                            (drain(&mut batches).await?, 0)
                        }
                        _ => {
                            let (rows, bytes, sha, job) =
                                self.load_stage(ctx, &mut batches, &stage, &load.next_id).await?;
                            receipt["parquet_bytes"] = bytes.into();
                            receipt["parquet_sha256"] = sha.into();
                            match job {
                                Some(job) => receipt["load_job"] = job_summary(&job, false),
                                None => {
                                    // An empty window: no job at all (quota is per job).
                                    receipt["rows"] = 0.into();
                                    return Ok(Delivered {
                                        rows: 0,
                                        bytes,
                                        receipt,
                                    });
                                }
                            }
                            (rows, bytes)
                        }
                    };
                    ctx.fence.ensure().await?;
                    let what = format!(
                        "BigQuery insert of delivery {} into {}:{}.{}",
                        ctx.delivery_id, self.cfg.project, self.cfg.dataset, names.raw
                    );
                    let job = self
                        .run_job(&raw.next_id, &self.raw_insert_sql(ctx, &stage), &what)
                        .await?;
                    receipt["raw_insert_job"] = job_summary(&job, false);
                    (rows, bytes)
                }
            }
            Mode::Stream => {
                let (rows, bytes) = self.stream_raw(ctx, &mut batches).await?;
                receipt["streamed_rows"] = rows.into();
                if rows == 0 {
                    receipt["rows"] = 0.into();
                    return Ok(Delivered { rows, bytes, receipt });
                }
                (rows, bytes)
            }
        };

        ctx.fence.ensure().await?;
        let what = format!(
            "BigQuery MERGE of delivery {} into {}:{}.{}",
            ctx.delivery_id, self.cfg.project, self.cfg.dataset, names.analyst
        );
        let job = self.run_job(&merge.next_id, &self.merge_sql(ctx), &what).await?;
        receipt["merge_job"] = job_summary(&job, false);
        receipt["rows"] = rows.into();
        if self.cfg.mode == Mode::Load
            && let Err(e) = self.client.delete_table(&self.cfg.dataset, &stage).await
        {
            // Harmless: the stage table expires on its own.
            tracing::warn!(error = %e, stage = %stage, "Could not drop the BigQuery stage table.");
        }
        Ok(Delivered { rows, bytes, receipt })
    }
}
