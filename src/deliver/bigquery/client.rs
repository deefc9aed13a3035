//! A small BigQuery REST client over reqwest: the handful of v2 calls the destination needs
//! (datasets.get/insert, tables.get/insert/delete, jobs.insert/get, the resumable media upload
//! of load jobs, tabledata.insertAll), authentication, and error classification.
//!
//! Credentials: a service account key (RS256 JWT exchanged at the key's `token_uri`, the token
//! cached until a minute before it expires) or a static access token reference. Neither the
//! key, the JWT nor the token ever reach a message, a log line or a receipt.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::config::BigQueryConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretRef;

/// An access token: no `Display`, redacted `Debug`.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// OAuth2 scope of the token tidemark asks for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// A cached token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Polling of a running job: start, factor, ceiling.
const POLL_START: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(5);
/// Idempotent GETs are retried this many times inside one attempt on transient failures.
const GET_RETRIES: u32 = 3;

enum Auth {
    Static(SecretRef),
    ServiceAccount {
        key: SecretRef,
        cached: Mutex<Option<(Token, Instant)>>,
    },
}

/// The fields of a service account key file tidemark uses. Deliberately no `Debug`.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// An HTTP error reply of the API, before classification.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn into_error(self, what: &str) -> Error {
        classify(Some(self.status), self.reason.as_deref(), &self.message, what)
    }
}

/// Maps a BigQuery reason (HTTP error or job `errorResult`) and status onto the crate's kinds.
/// The reason decides where it is known: BigQuery answers 403 for `rateLimitExceeded` too.
pub fn classify(status: Option<StatusCode>, reason: Option<&str>, message: &str, what: &str) -> Error {
    let by_reason = match reason {
        Some("accessDenied" | "forbidden" | "unauthorized" | "authError") => Some(ErrorKind::DestinationAuth),
        Some(
            "rateLimitExceeded"
            | "quotaExceeded"
            | "backendError"
            | "internalError"
            | "jobBackendError"
            | "jobInternalError"
            | "jobRateLimitExceeded"
            | "timeout"
            | "stopped"
            | "tableUnavailable"
            | "resourceInUse",
        ) => Some(ErrorKind::DestinationTransient),
        Some("invalid" | "invalidQuery" | "resourcesExceeded" | "responseTooLarge" | "badRequest") => {
            Some(ErrorKind::DestinationRejected)
        }
        Some("notFound") => Some(ErrorKind::Config),
        _ => None,
    };
    let kind = match (status.map(|s| s.as_u16()), by_reason) {
        (Some(401), _) => ErrorKind::DestinationAuth,
        (_, Some(k)) => k,
        (Some(403), None) => ErrorKind::DestinationAuth,
        (Some(408 | 429), None) => ErrorKind::DestinationTransient,
        (Some(s), None) if s >= 500 => ErrorKind::DestinationTransient,
        (Some(404), None) => ErrorKind::Config,
        (Some(400), None) => ErrorKind::DestinationRejected,
        _ => ErrorKind::Unexpected,
    };
    let mut msg = format!("{what}: {message}");
    if let Some(r) = reason {
        msg.push_str(&format!(" (reason {r})"));
    }
    if let Some(s) = status {
        msg.push_str(&format!(" [HTTP {}]", s.as_u16()));
    }
    Error::new(kind, msg)
}

fn transport(what: &str, e: reqwest::Error) -> Error {
    // Connection refused/reset, timeouts, TLS and body errors: all worth another attempt.
    Error::new(ErrorKind::DestinationTransient, format!("{what}: request failed")).with_source(e.without_url())
}

/// The `error` object of a Google API error body.
fn parse_api_error(status: StatusCode, body: &str) -> ApiError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let reason = err["errors"][0]["reason"].as_str().map(str::to_string);
    let message = err["message"].as_str().map(str::to_string).unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() {
            status.canonical_reason().unwrap_or("no message").to_string()
        } else {
            t.chars().take(500).collect()
        }
    });
    ApiError {
        status,
        reason,
        message,
    }
}

/// The error of a finished job, if it failed: its `errorResult` plus up to three detail lines.
pub fn job_error(job: &Value, what: &str) -> Option<Error> {
    let status = &job["status"];
    let result = status.get("errorResult").filter(|v| !v.is_null())?;
    let reason = result["reason"].as_str();
    let mut message = result["message"].as_str().unwrap_or("job failed").to_string();
    if let Some(errors) = status["errors"].as_array() {
        for e in errors.iter().take(4) {
            if let Some(m) = e["message"].as_str()
                && m != message
                && !message.contains(m)
            {
                message.push_str("; ");
                message.push_str(m);
            }
        }
    }
    Some(classify(None, reason, &message, what))
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    project: String,
    location: Option<String>,
    auth: Auth,
    allow_http: bool,
    job_timeout: Duration,
}

impl Client {
    pub fn new(cfg: &BigQueryConfig) -> Result<Client> {
        let timeout = Duration::from_secs(cfg.request_timeout_seconds.unwrap_or(120));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot build the BigQuery HTTP client").with_source(e))?;
        let auth = match (&cfg.service_account_key, &cfg.access_token) {
            (Some(key), None) => Auth::ServiceAccount {
                key: key.clone(),
                cached: Mutex::new(None),
            },
            (None, Some(token)) => Auth::Static(token.clone()),
            _ => unreachable!("validated by BigQueryConfig"),
        };
        Ok(Client {
            http,
            base: cfg.base_url().to_string(),
            project: cfg.project.clone(),
            location: cfg.location.clone(),
            auth,
            allow_http: cfg.allow_http,
            job_timeout: Duration::from_secs(cfg.job_timeout_seconds.unwrap_or(1800)),
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    fn api(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/{}{path}", self.base, self.project)
    }

    /// A valid access token: the static reference's current value, or a cached or freshly
    /// exchanged service account token.
    pub async fn token(&self) -> Result<Token> {
        match &self.auth {
            Auth::Static(r) => Ok(Token(r.resolve()?.expose().to_string())),
            Auth::ServiceAccount { key, cached } => {
                let mut slot = cached.lock().await;
                if let Some((token, refresh_at)) = slot.as_ref()
                    && Instant::now() < *refresh_at
                {
                    return Ok(token.clone());
                }
                let (token, lifetime) = self.exchange(key).await?;
                let refresh_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
                *slot = Some((token.clone(), refresh_at));
                Ok(token)
            }
        }
    }

    /// OAuth2 JWT-bearer grant (RFC 7523) at the key's `token_uri`.
    async fn exchange(&self, key_ref: &SecretRef) -> Result<(Token, Duration)> {
        let text = key_ref.resolve()?;
        let key: ServiceAccountKey = serde_json::from_str(text.expose()).map_err(|e| {
            // serde's message names a field or a position, never a value.
            Error::config(format!("service account key {key_ref} is not a valid key file: {e}"))
        })?;
        let token_url = url::Url::parse(&key.token_uri)
            .map_err(|e| Error::config(format!("service account key {key_ref} has an invalid token_uri: {e}")))?;
        if token_url.scheme() != "https" && !(self.allow_http && token_url.scheme() == "http") {
            return Err(Error::config(format!(
                "service account key {key_ref}: token_uri {token_url} is not https"
            )));
        }
        let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|e| {
            Error::config(format!(
                "service account key {key_ref}: private_key is not an RSA PEM key ({e})"
            ))
        })?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = key.private_key_id.clone();
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: &key.client_email,
            scope: SCOPE,
            aud: &key.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let assertion = jsonwebtoken::encode(&header, &claims, &encoding)
            .map_err(|e| Error::config(format!("service account key {key_ref}: signing the JWT failed ({e})")))?;
        let what = format!("token exchange for {} at {token_url}", key.client_email);
        let resp = self
            .http
            .post(token_url.clone())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport(&what, e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&what, e))?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            let code = v["error"].as_str().unwrap_or("");
            let desc = v["error_description"].as_str().unwrap_or("");
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                ErrorKind::DestinationTransient
            } else {
                ErrorKind::DestinationAuth
            };
            return Err(Error::new(
                kind,
                format!("{what} refused: {code} {desc} [HTTP {}]", status.as_u16()),
            ));
        }
        let token = v["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
            Error::new(
                ErrorKind::DestinationAuth,
                format!("{what}: no access_token in the reply"),
            )
        })?;
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        Ok((Token(token.to_string()), lifetime))
    }

    async fn authorized(&self, method: Method, url: &str) -> Result<RequestBuilder> {
        let token = self.token().await?;
        Ok(self.http.request(method, url).bearer_auth(token.expose()))
    }

    /// Sends a request; an HTTP error reply comes back as `Ok(Err(ApiError))` for the caller
    /// to inspect (404, 409), transport and credential failures as `Err`.
    async fn send(&self, req: RequestBuilder, what: &str) -> Result<std::result::Result<Value, ApiError>> {
        let resp = req.send().await.map_err(|e| transport(what, e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(what, e))?;
        if status.is_success() {
            if body.trim().is_empty() {
                return Ok(Ok(Value::Null));
            }
            let v = serde_json::from_str(&body).map_err(|e| {
                Error::new(ErrorKind::DestinationTransient, format!("{what}: reply is not JSON")).with_source(e)
            })?;
            Ok(Ok(v))
        } else {
            Ok(Err(parse_api_error(status, &body)))
        }
    }

    /// A GET retried a few times on transient failures; 404 is `None`.
    async fn get(&self, url: &str, what: &str) -> Result<Option<Value>> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.send(self.authorized(Method::GET, url).await?, what).await {
                Ok(Ok(v)) => return Ok(Some(v)),
                Ok(Err(e)) if e.status == StatusCode::NOT_FOUND => return Ok(None),
                Ok(Err(e)) => e.into_error(what),
                Err(e) => e,
            };
            if outcome.kind() != ErrorKind::DestinationTransient || attempt > GET_RETRIES {
                return Err(outcome);
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    pub async fn get_dataset(&self, dataset: &str) -> Result<Option<Value>> {
        let what = format!("BigQuery datasets.get {}:{dataset}", self.project);
        self.get(&self.api(&format!("/datasets/{dataset}")), &what).await
    }

    /// Creates the dataset; one that already exists is fine.
    pub async fn create_dataset(&self, dataset: &str) -> Result<()> {
        let what = format!("BigQuery datasets.insert {}:{dataset}", self.project);
        let mut body = json!({"datasetReference": {"projectId": self.project, "datasetId": dataset}});
        if let Some(loc) = &self.location {
            body["location"] = Value::String(loc.clone());
        }
        let req = self.authorized(Method::POST, &self.api("/datasets")).await?.json(&body);
        match self.send(req, &what).await? {
            Ok(_) => Ok(()),
            Err(e) if e.status == StatusCode::CONFLICT => Ok(()),
            Err(e) => Err(e.into_error(&what)),
        }
    }

    pub async fn get_table(&self, dataset: &str, table: &str) -> Result<Option<Value>> {
        let what = format!("BigQuery tables.get {}:{dataset}.{table}", self.project);
        self.get(&self.api(&format!("/datasets/{dataset}/tables/{table}")), &what)
            .await
    }

    /// Creates a table from a REST resource; an existing table is fine.
    pub async fn create_table(&self, dataset: &str, resource: &Value) -> Result<()> {
        let table = resource["tableReference"]["tableId"].as_str().unwrap_or("?");
        let what = format!("BigQuery tables.insert {}:{dataset}.{table}", self.project);
        let req = self
            .authorized(Method::POST, &self.api(&format!("/datasets/{dataset}/tables")))
            .await?
            .json(resource);
        match self.send(req, &what).await? {
            Ok(_) => Ok(()),
            Err(e) if e.status == StatusCode::CONFLICT => Ok(()),
            Err(e) => Err(e.into_error(&what)),
        }
    }

    /// Deletes a table; a missing one is fine.
    pub async fn delete_table(&self, dataset: &str, table: &str) -> Result<()> {
        let what = format!("BigQuery tables.delete {}:{dataset}.{table}", self.project);
        let req = self
            .authorized(
                Method::DELETE,
                &self.api(&format!("/datasets/{dataset}/tables/{table}")),
            )
            .await?;
        match self.send(req, &what).await? {
            Ok(_) => Ok(()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(e.into_error(&what)),
        }
    }

    fn job_url(&self, job_id: &str) -> String {
        let mut url = self.api(&format!("/jobs/{job_id}"));
        if let Some(loc) = &self.location {
            url.push_str("?location=");
            url.push_str(loc);
        }
        url
    }

    /// `jobs.get`; `None` when no job has this id.
    pub async fn get_job(&self, job_id: &str) -> Result<Option<Value>> {
        let what = format!("BigQuery jobs.get {job_id}");
        self.get(&self.job_url(job_id), &what).await
    }

    fn job_reference(&self, job_id: &str) -> Value {
        let mut r = json!({"projectId": self.project, "jobId": job_id});
        if let Some(loc) = &self.location {
            r["location"] = Value::String(loc.clone());
        }
        r
    }

    /// `jobs.insert` of a query job with a caller-chosen id. If the id exists already (another
    /// worker, or a lost reply), that job is returned instead: it is the same statement.
    pub async fn insert_query_job(&self, job_id: &str, sql: &str) -> Result<Value> {
        let what = format!("BigQuery jobs.insert {job_id}");
        let body = json!({
            "jobReference": self.job_reference(job_id),
            "configuration": {"query": {"query": sql, "useLegacySql": false}},
        });
        let req = self.authorized(Method::POST, &self.api("/jobs")).await?.json(&body);
        match self.send(req, &what).await? {
            Ok(job) => Ok(job),
            Err(e) if e.status == StatusCode::CONFLICT => self
                .get_job(job_id)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::DestinationTransient, format!("{what}: exists but not found"))),
            Err(e) => Err(e.into_error(&what)),
        }
    }

    /// Polls a job until it is DONE; returns the final resource (which may carry an error).
    pub async fn wait_job(&self, mut job: Value, what: &str) -> Result<Value> {
        let started = Instant::now();
        let mut delay = POLL_START;
        loop {
            if job["status"]["state"].as_str() == Some("DONE") {
                return Ok(job);
            }
            let id = job["jobReference"]["jobId"]
                .as_str()
                .ok_or_else(|| Error::unexpected(format!("{what}: job resource without jobReference.jobId")))?
                .to_string();
            if started.elapsed() > self.job_timeout {
                return Err(Error::new(
                    ErrorKind::DestinationTransient,
                    format!(
                        "{what}: job {id} still running after {}s; the next attempt finds it by its id and waits again",
                        self.job_timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(POLL_MAX);
            job = self
                .get_job(&id)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::DestinationTransient, format!("{what}: job {id} disappeared")))?;
        }
    }

    /// A load job with the file as its media, by the resumable upload protocol: one POST with
    /// the job resource, then the bytes in one PUT to the session URI. Returns the job as the
    /// server reports it (possibly still running); if the job id exists already, that job.
    pub async fn upload_load_job(&self, job: &Value, file: &Path, len: u64, what: &str) -> Result<Value> {
        let job_id = job["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        let url = format!(
            "{}/upload/bigquery/v2/projects/{}/jobs?uploadType=resumable",
            self.base, self.project
        );
        let req = self
            .authorized(Method::POST, &url)
            .await?
            .header("X-Upload-Content-Type", "application/octet-stream")
            .header("X-Upload-Content-Length", len.to_string())
            .json(job);
        let resp = req.send().await.map_err(|e| transport(what, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let e = parse_api_error(status, &body);
            if e.status == StatusCode::CONFLICT {
                return self.get_job(&job_id).await?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::DestinationTransient,
                        format!("{what}: job {job_id} exists but not found"),
                    )
                });
            }
            return Err(e.into_error(&format!("{what}: starting the upload")));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DestinationTransient,
                    format!("{what}: the upload reply has no Location"),
                )
            })?
            .to_string();
        // The session URI gets our token: it must be on the API's own origin.
        let session = url::Url::parse(&location)
            .or_else(|_| url::Url::parse(&self.base).and_then(|b| b.join(&location)))
            .map_err(|e| Error::unexpected(format!("{what}: unusable upload session URI ({e})")))?;
        let base = url::Url::parse(&self.base).map_err(|e| Error::config(format!("invalid base_url: {e}")))?;
        if session.origin() != base.origin() {
            return Err(Error::unexpected(format!(
                "{what}: the upload session is on another origin ({}), refusing to send credentials there",
                session.origin().ascii_serialization()
            )));
        }
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| Error::unexpected(format!("{what}: cannot reopen the staged file")).with_source(e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024));
        let mut req = self
            .authorized(Method::PUT, session.as_str())
            .await?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len.to_string())
            .body(body);
        if len > 0 {
            req = req.header("Content-Range", format!("bytes 0-{}/{len}", len - 1));
        }
        match self.send(req, &format!("{what}: uploading {len} bytes")).await? {
            Ok(job) => Ok(job),
            Err(e) if e.status == StatusCode::CONFLICT => self.get_job(&job_id).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::DestinationTransient,
                    format!("{what}: job {job_id} exists but not found"),
                )
            }),
            Err(e) => Err(e.into_error(&format!("{what}: uploading {len} bytes"))),
        }
    }

    /// `tabledata.insertAll` with a pre-serialised body. Returns the reply (with
    /// `insertErrors`, if any, for the caller to report).
    pub async fn insert_all(&self, dataset: &str, table: &str, body: Vec<u8>, what: &str) -> Result<Value> {
        let url = self.api(&format!("/datasets/{dataset}/tables/{table}/insertAll"));
        let req = self
            .authorized(Method::POST, &url)
            .await?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        match self.send(req, what).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(e.into_error(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_reason_then_status() {
        let k =
            |s: Option<u16>, r: Option<&str>| classify(s.map(|s| StatusCode::from_u16(s).unwrap()), r, "m", "w").kind();
        assert_eq!(k(Some(401), None), ErrorKind::DestinationAuth);
        assert_eq!(k(Some(403), Some("accessDenied")), ErrorKind::DestinationAuth);
        assert_eq!(k(Some(403), Some("rateLimitExceeded")), ErrorKind::DestinationTransient);
        assert_eq!(k(Some(503), None), ErrorKind::DestinationTransient);
        assert_eq!(k(Some(429), None), ErrorKind::DestinationTransient);
        assert_eq!(k(None, Some("backendError")), ErrorKind::DestinationTransient);
        assert_eq!(k(Some(400), Some("invalidQuery")), ErrorKind::DestinationRejected);
        assert_eq!(k(None, Some("invalid")), ErrorKind::DestinationRejected);
        assert_eq!(k(Some(404), Some("notFound")), ErrorKind::Config);
        let e = classify(Some(StatusCode::BAD_REQUEST), Some("invalid"), "bad row", "load job x");
        assert_eq!(e.to_string(), "load job x: bad row (reason invalid) [HTTP 400]");
    }

    #[test]
    fn job_errors_carry_the_warehouse_message() {
        let job = json!({"status": {"state": "DONE",
            "errorResult": {"reason": "invalid", "message": "Error while reading data"},
            "errors": [{"reason": "invalid", "message": "Error while reading data"},
                       {"reason": "invalid", "message": "column n: numeric overflow"}]}});
        let e = job_error(&job, "load job j").unwrap();
        assert_eq!(e.kind(), ErrorKind::DestinationRejected);
        assert!(e.to_string().contains("numeric overflow"), "{e}");
        assert!(job_error(&json!({"status": {"state": "DONE"}}), "x").is_none());
    }
}
