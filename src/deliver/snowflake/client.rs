//! A small Snowflake REST client: the login and query endpoints the official drivers use
//! (`POST /session/v1/login-request`, `POST /queries/v1/query-request`, polling
//! `getResultUrl` while a statement runs, `POST /session?delete=true`), password or key-pair
//! (JWT) authentication, inline result sets as JSON rows or an Arrow IPC stream
//! (`rowsetBase64`), and the upload half of `PUT` for stages that hand out a presigned URL.
//!
//! One [`Session`] per delivery: Snowflake transactions belong to a session, so deliveries
//! running concurrently must not share one. Errors keep Snowflake's code, SQL state, message and
//! query id; [`classify`] maps them onto the crate's kinds.

use std::io::Cursor;
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch, cast::AsArray};
use arrow_schema::DataType;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::KeyPair;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;

/// Statement still running: poll `data.getResultUrl`.
const QUERY_IN_PROGRESS: &str = "333333";
const QUERY_IN_PROGRESS_ASYNC: &str = "333334";
/// How long a statement may run before tidemark gives up polling (the statement itself is
/// aborted by Snowflake's own STATEMENT_TIMEOUT_IN_SECONDS, not by us).
const MAX_STATEMENT_WAIT: Duration = Duration::from_secs(4 * 3600);

pub enum Credential {
    Password(SecretString),
    KeyPair(KeyPair),
}

/// Everything needed to open sessions. Never holds a session token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    account: String,
    user: String,
    credential: Credential,
    database: String,
    schema: String,
    warehouse: Option<String>,
    role: Option<String>,
}

/// An open session (its token authenticates every statement).
pub struct Session<'a> {
    client: &'a Client,
    /// The session token; never logged, never in an error.
    token: String,
    sequence: std::sync::atomic::AtomicU64,
}

/// A Snowflake error as the server reported it.
#[derive(Debug, Clone)]
pub struct SqlError {
    pub code: String,
    pub sql_state: Option<String>,
    pub message: String,
    pub query_id: Option<String>,
}

/// A failed request: either Snowflake answered with an error, or the request itself failed
/// (already classified).
pub enum QueryError {
    Sql(SqlError),
    Other(Error),
}

impl QueryError {
    /// The error with the default classification, described as failing `what`.
    pub fn into_error(self, what: &str) -> Error {
        match self {
            QueryError::Sql(e) => sql_error(what, &e, classify(&e)),
            QueryError::Other(e) => Error::new(e.kind(), format!("{what}: {e}")),
        }
    }
}

impl From<Error> for QueryError {
    fn from(e: Error) -> Self {
        QueryError::Other(e)
    }
}

/// A crate error carrying Snowflake's own code, state, message and query id.
pub fn sql_error(what: &str, e: &SqlError, kind: ErrorKind) -> Error {
    let mut err = Error::new(
        kind,
        format!("{what}: Snowflake error {}: {}", e.code, e.message.trim()),
    );
    if let Some(state) = &e.sql_state {
        err = err.with_context("sqlstate", state);
    }
    if let Some(id) = &e.query_id {
        err = err.with_context("query_id", id);
    }
    err
}

/// Maps a Snowflake error code / SQL state onto the crate's kinds.
pub fn classify(e: &SqlError) -> ErrorKind {
    let state = e.sql_state.as_deref().unwrap_or("");
    match e.code.as_str() {
        // Session or token expired mid-delivery: a new attempt logs in again.
        "390112" | "390114" | "390111" => ErrorKind::DestinationTransient,
        // Role, warehouse or database named in the login is not granted / does not exist.
        "390189" | "390201" | "390202" | "390203" => ErrorKind::Config,
        // Authentication: 390100 wrong user or password, 390144 JWT invalid, 390102 user locked,
        // 390103/390104 no or unknown session token, 3903xx account/login issues.
        c if c.starts_with("3901") || c.starts_with("3902") || c.starts_with("3903") => ErrorKind::DestinationAuth,
        // No active warehouse; object does not exist or not authorized; insufficient privileges.
        "000606" | "002003" | "003001" | "002043" => ErrorKind::Config,
        // Syntax error in SQL tidemark generated: a bug.
        "001003" => ErrorKind::Unexpected,
        // Statement timeout / cancelled, transaction conflicts and aborts.
        "000630" | "000604" | "000625" | "000603" => ErrorKind::DestinationTransient,
        // Data errors during a load (100xxx: value not recognised, NULL into NOT NULL, ...).
        c if c.starts_with("100") => ErrorKind::DestinationRejected,
        _ => match state.get(..2) {
            Some("08") | Some("57") | Some("40") => ErrorKind::DestinationTransient,
            Some("28") => ErrorKind::DestinationAuth,
            Some("22") | Some("23") | Some("42") | Some("0A") => ErrorKind::DestinationRejected,
            _ => ErrorKind::Unexpected,
        },
    }
}

/// Request-level failures: network, timeouts, HTTP status without a Snowflake body.
fn http_error(what: &str, e: reqwest::Error) -> Error {
    let kind = match e.status() {
        Some(s) if s.as_u16() == 401 || s.as_u16() == 403 => ErrorKind::DestinationAuth,
        Some(s) if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 => ErrorKind::Config,
        _ => ErrorKind::DestinationTransient,
    };
    // reqwest's Display includes the URL; ours carry no credentials (tokens go in headers).
    Error::new(kind, what.to_string()).with_source(e.without_url())
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    success: bool,
}

impl Envelope {
    fn code(&self) -> String {
        match &self.code {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => format!("{n:0>6}"),
            _ => String::new(),
        }
    }

    fn error(&self) -> SqlError {
        SqlError {
            code: self.code(),
            sql_state: self.data.get("sqlState").and_then(Value::as_str).map(str::to_string),
            message: self.message.clone().unwrap_or_else(|| "(no message)".into()),
            query_id: self.data.get("queryId").and_then(Value::as_str).map(str::to_string),
        }
    }
}

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub query_id: Option<String>,
    pub columns: Vec<String>,
    /// Every cell as Snowflake's text form (numbers with their scale applied), NULL as `None`.
    pub rows: Vec<Vec<Option<String>>>,
    /// The raw `data` object (e.g. a PUT's `stageInfo`).
    pub data: Value,
}

impl QueryResult {
    /// The first row's cell of column `name` (case-insensitive).
    pub fn cell(&self, row: usize, name: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c.eq_ignore_ascii_case(name))?;
        self.rows.get(row)?.get(i)?.as_deref()
    }
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base: String,
        account: String,
        user: String,
        credential: Credential,
        database: String,
        schema: String,
        warehouse: Option<String>,
        role: Option<String>,
        timeout: Duration,
    ) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot build the Snowflake HTTP client").with_source(e))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            account,
            user,
            credential,
            database,
            schema,
            warehouse,
            role,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /session/v1/login-request`: a new session.
    pub async fn login(&self) -> Result<Session<'_>> {
        let what = format!("Snowflake login of user {} to account {}", self.user, self.account);
        let mut data = json!({
            "CLIENT_APP_ID": "tidemark",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": self.account.split('.').next().unwrap_or(&self.account).to_ascii_uppercase(),
            "LOGIN_NAME": self.user,
            "CLIENT_ENVIRONMENT": {"APPLICATION": "tidemark", "OS": std::env::consts::OS},
            "SESSION_PARAMETERS": {"AUTOCOMMIT": true, "TIMEZONE": "UTC", "QUERY_TAG": "tidemark"},
        });
        match &self.credential {
            Credential::Password(p) => {
                data["PASSWORD"] = Value::String(p.expose().to_string());
            }
            Credential::KeyPair(kp) => {
                data["AUTHENTICATOR"] = Value::String("SNOWFLAKE_JWT".into());
                data["TOKEN"] = Value::String(kp.jwt(&self.account, &self.user, chrono::Utc::now())?);
            }
        }
        let mut query: Vec<(&str, String)> = vec![
            ("requestId", Uuid::new_v4().to_string()),
            ("databaseName", self.database.clone()),
            ("schemaName", self.schema.clone()),
        ];
        if let Some(w) = &self.warehouse {
            query.push(("warehouse", w.clone()));
        }
        if let Some(r) = &self.role {
            query.push(("roleName", r.clone()));
        }
        let response = self
            .http
            .post(format!("{}/session/v1/login-request", self.base))
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&json!({ "data": data }))
            .send()
            .await
            .map_err(|e| http_error(&what, e))?;
        let envelope = read_envelope(&what, response).await?;
        if !envelope.success {
            let e = envelope.error();
            return Err(sql_error(&what, &e, classify(&e)));
        }
        let token = envelope.data.get("token").and_then(Value::as_str).ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{what}: the response carries no session token"),
            )
        })?;
        Ok(Session {
            client: self,
            token: token.to_string(),
            sequence: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Uploads a local file to a presigned URL (the GCS form of a PUT's `stageInfo`).
    /// For a client-side encrypted stage, `path` is the encrypted file and `encryption` goes into
    /// the `x-goog-meta-encryptiondata` and `x-goog-meta-matdesc` headers, as the drivers send them.
    pub async fn upload_presigned(
        &self,
        url: &str,
        path: &std::path::Path,
        sha256_b64: &str,
        encryption: Option<&super::encryption::EncryptionMetadata>,
    ) -> Result<()> {
        let what = "uploading the staged file to the stage's presigned URL";
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            Error::new(ErrorKind::Unexpected, format!("{what}: cannot open the local file")).with_source(e)
        })?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::new(ErrorKind::Unexpected, what).with_source(e))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header("x-goog-meta-sfc-digest", sha256_b64);
        if let Some(e) = encryption {
            request = request
                .header("x-goog-meta-encryptiondata", e.gcs_encryption_data())
                .header("x-goog-meta-matdesc", &e.matdesc);
        }
        request
            .body(body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| http_error(what, e))?;
        Ok(())
    }
}

impl Session<'_> {
    fn auth_header(&self) -> String {
        format!("Snowflake Token=\"{}\"", self.token)
    }

    /// Runs one statement and returns its (inline) result.
    pub async fn query(&self, sql: &str) -> std::result::Result<QueryResult, QueryError> {
        let what = "Snowflake query request";
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let body = json!({
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": sequence,
            "querySubmissionTime": chrono::Utc::now().timestamp_millis(),
        });
        let response = self
            .client
            .http
            .post(format!("{}/queries/v1/query-request", self.client.base))
            .query(&[("requestId", Uuid::new_v4().to_string())])
            .header(reqwest::header::ACCEPT, "application/snowflake")
            .header(reqwest::header::AUTHORIZATION, self.auth_header())
            .json(&body)
            .send()
            .await
            .map_err(|e| http_error(what, e))?;
        let mut envelope = read_envelope(what, response).await?;
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        while !envelope.success && matches!(envelope.code().as_str(), QUERY_IN_PROGRESS | QUERY_IN_PROGRESS_ASYNC) {
            let Some(url) = envelope
                .data
                .get("getResultUrl")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                break;
            };
            if started.elapsed() > MAX_STATEMENT_WAIT {
                return Err(QueryError::Other(Error::new(
                    ErrorKind::DestinationTransient,
                    format!("Snowflake statement still running after {MAX_STATEMENT_WAIT:?}; gave up waiting"),
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            let response = self
                .client
                .http
                .get(format!("{}{}", self.client.base, url))
                .header(reqwest::header::ACCEPT, "application/snowflake")
                .header(reqwest::header::AUTHORIZATION, self.auth_header())
                .send()
                .await
                .map_err(|e| http_error("polling a running Snowflake statement", e))?;
            envelope = read_envelope(what, response).await?;
        }
        if !envelope.success {
            return Err(QueryError::Sql(envelope.error()));
        }
        Ok(parse_result(envelope.data)?)
    }

    /// Ends the session (best effort: an abandoned session expires on its own).
    pub async fn close(self) {
        let _ = self
            .client
            .http
            .post(format!("{}/session", self.client.base))
            .query(&[("delete", "true")])
            .header(reqwest::header::AUTHORIZATION, self.auth_header())
            .header(reqwest::header::ACCEPT, "application/snowflake")
            .send()
            .await;
    }
}

/// Reads a JSON envelope; an HTTP error status without one is classified by status.
async fn read_envelope(what: &str, response: reqwest::Response) -> Result<Envelope> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| http_error(what, e))?;
    match serde_json::from_slice::<Envelope>(&bytes) {
        Ok(env) if status.is_success() || !env.success && env.code.is_some() && env.message.is_some() => {
            // A Snowflake error body (fakesnow sends its internal errors with HTTP 500 and
            // code 261000; a 5xx stays transient whatever the body says).
            if status.is_server_error() {
                return Err(Error::new(
                    ErrorKind::DestinationTransient,
                    format!(
                        "{what}: HTTP {status}: Snowflake error {}: {}",
                        env.code(),
                        env.message.as_deref().unwrap_or("").lines().next().unwrap_or("")
                    ),
                ));
            }
            Ok(env)
        }
        _ => {
            let kind = match status.as_u16() {
                401 | 403 => ErrorKind::DestinationAuth,
                408 | 429 => ErrorKind::DestinationTransient,
                s if s >= 500 => ErrorKind::DestinationTransient,
                s if s >= 400 => ErrorKind::Config,
                _ => ErrorKind::Unexpected,
            };
            let text = String::from_utf8_lossy(&bytes);
            let snippet: String = text.chars().take(300).collect();
            Err(Error::new(
                kind,
                format!("{what}: HTTP {status}: unexpected response: {snippet}"),
            ))
        }
    }
}

fn parse_result(data: Value) -> Result<QueryResult> {
    let query_id = data.get("queryId").and_then(Value::as_str).map(str::to_string);
    if data
        .get("chunks")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty())
    {
        return Err(Error::new(
            ErrorKind::Unexpected,
            "Snowflake returned a chunked result; tidemark's client reads only inline results",
        ));
    }
    let mut columns: Vec<String> = data
        .get("rowtype")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| c.get("name").and_then(Value::as_str).unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    if let Some(rowset) = data.get("rowset").and_then(Value::as_array) {
        for row in rowset {
            let cells = row.as_array().cloned().unwrap_or_default();
            rows.push(
                cells
                    .into_iter()
                    .map(|v| match v {
                        Value::Null => None,
                        Value::String(s) => Some(s),
                        other => Some(other.to_string()),
                    })
                    .collect(),
            );
        }
    } else if let Some(b64) = data
        .get("rowsetBase64")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| Error::new(ErrorKind::Unexpected, "Snowflake rowsetBase64 is not base64").with_source(e))?;
        let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
            .map_err(|e| Error::new(ErrorKind::Unexpected, "Snowflake Arrow result unreadable").with_source(e))?;
        if columns.is_empty() {
            columns = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        }
        for batch in reader {
            let batch = batch
                .map_err(|e| Error::new(ErrorKind::Unexpected, "Snowflake Arrow result unreadable").with_source(e))?;
            rows.extend(batch_rows(&batch));
        }
    }
    Ok(QueryResult {
        query_id,
        columns,
        rows,
        data,
    })
}

/// Text form of every cell of an Arrow batch in Snowflake's result encoding: fixed-point
/// numbers are integers with a `scale` in the field metadata.
fn batch_rows(batch: &RecordBatch) -> Vec<Vec<Option<String>>> {
    let schema = batch.schema();
    let columns: Vec<Vec<Option<String>>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(array, field)| {
            let scale: u32 = field.metadata().get("scale").and_then(|s| s.parse().ok()).unwrap_or(0);
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        None
                    } else {
                        Some(cell(array.as_ref(), i, scale))
                    }
                })
                .collect()
        })
        .collect();
    (0..batch.num_rows())
        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
        .collect()
}

fn fixed(v: i128, scale: u32) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let digits = format!("{:0>width$}", v.unsigned_abs(), width = scale as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - scale as usize);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

fn cell(array: &dyn Array, i: usize, scale: u32) -> String {
    use arrow_array::types::*;
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).to_string(),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Int8 => fixed(array.as_primitive::<Int8Type>().value(i).into(), scale),
        DataType::Int16 => fixed(array.as_primitive::<Int16Type>().value(i).into(), scale),
        DataType::Int32 => fixed(array.as_primitive::<Int32Type>().value(i).into(), scale),
        DataType::Int64 => fixed(array.as_primitive::<Int64Type>().value(i).into(), scale),
        DataType::Decimal128(_, s) => fixed(array.as_primitive::<Decimal128Type>().value(i), (*s).max(0) as u32),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(i).to_string(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(i).to_string(),
        other => format!("<{other}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, state: Option<&str>) -> SqlError {
        SqlError {
            code: code.into(),
            sql_state: state.map(str::to_string),
            message: "m".into(),
            query_id: None,
        }
    }

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(classify(&err("390100", Some("08004"))), ErrorKind::DestinationAuth);
        assert_eq!(classify(&err("390144", Some("08004"))), ErrorKind::DestinationAuth);
        assert_eq!(classify(&err("390114", Some("08001"))), ErrorKind::DestinationTransient);
        assert_eq!(classify(&err("390201", None)), ErrorKind::Config);
        assert_eq!(classify(&err("002003", Some("42S02"))), ErrorKind::Config);
        assert_eq!(classify(&err("003001", Some("42501"))), ErrorKind::Config);
        assert_eq!(classify(&err("100038", Some("22018"))), ErrorKind::DestinationRejected);
        assert_eq!(classify(&err("002023", Some("22000"))), ErrorKind::DestinationRejected);
        assert_eq!(classify(&err("000904", Some("42000"))), ErrorKind::DestinationRejected);
        assert_eq!(classify(&err("001003", Some("42000"))), ErrorKind::Unexpected);
        assert_eq!(classify(&err("000630", Some("57014"))), ErrorKind::DestinationTransient);
        assert_eq!(classify(&err("000625", Some("57014"))), ErrorKind::DestinationTransient);
    }

    #[test]
    fn json_and_arrow_results_decode() {
        let r = parse_result(json!({"queryId": "q1", "rowtype": [{"name": "number of rows inserted"}, {"name": "number of rows updated"}],
            "rowset": [["2", "1"]]}))
        .unwrap();
        assert_eq!(r.cell(0, "number of rows updated"), Some("1"));
        assert_eq!(r.query_id.as_deref(), Some("q1"));

        // An Arrow stream like Snowflake's: NUMBER(10,2) as Int64 with scale metadata.
        use arrow_array::{Int64Array, StringArray};
        use arrow_schema::{Field, Schema};
        let mut md = std::collections::HashMap::new();
        md.insert("scale".to_string(), "2".to_string());
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("file", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true).with_metadata(md),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(StringArray::from(vec![Some("a.parquet"), None])),
                std::sync::Arc::new(Int64Array::from(vec![Some(-5), Some(12345)])),
            ],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&buf);
        let r = parse_result(json!({"rowtype": [{"name": "file"}, {"name": "amount"}], "rowsetBase64": b64})).unwrap();
        assert_eq!(
            r.rows,
            vec![
                vec![Some("a.parquet".to_string()), Some("-0.05".to_string())],
                vec![None, Some("123.45".to_string())]
            ]
        );
    }
}
