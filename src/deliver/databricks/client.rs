//! A small Databricks REST client over reqwest: bearer authentication (personal access token, or
//! OAuth M2M tokens from `POST {host}/oidc/v1/token`, cached until shortly before expiry), the
//! Files API for Unity Catalog volumes, the SQL Statement Execution API (submit, poll until a
//! terminal state, cancel on timeout) and the warehouses API for `check`.
//!
//! One request is retried here on 429, 5xx and network errors (honouring `Retry-After`), a few
//! times with backoff; what survives is classified into an [`ErrorKind`] and left to the worker.
//! Every statement tidemark submits is idempotent, so a resubmission after an ambiguous failure
//! is safe. Messages carry Databricks' own `error_code` and `message`, never a credential.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::config::{AuthConfig, DatabricksConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;

/// What to upload: a local file (re-opened for every attempt) or a few bytes in memory.
pub enum UploadBody {
    File(PathBuf, u64),
    Bytes(Bytes),
}

/// A statement that reached `SUCCEEDED`: its id and the inline `JSON_ARRAY` result.
#[derive(Debug, Clone)]
pub struct StatementResult {
    pub statement_id: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl StatementResult {
    /// The first row as a JSON object, numbers where the value is an integer (COPY INTO and
    /// MERGE report their counts this way).
    pub fn first_row_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("statement_id".into(), self.statement_id.clone().into());
        if let Some(row) = self.rows.first() {
            for (name, value) in self.columns.iter().zip(row) {
                let v = match value {
                    Some(s) => s.parse::<u64>().map(Into::into).unwrap_or_else(|_| s.clone().into()),
                    None => serde_json::Value::Null,
                };
                map.insert(name.clone(), v);
            }
        }
        serde_json::Value::Object(map)
    }
}

enum Auth {
    Token(SecretString),
    OAuth {
        client_id: String,
        secret: SecretString,
        cached: tokio::sync::Mutex<Option<(AccessToken, Instant)>>,
    },
}

/// A bearer token; like [`SecretString`], never printed.
#[derive(Clone)]
struct AccessToken(String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

pub struct Client {
    http: reqwest::Client,
    host: url::Url,
    auth: Auth,
    warehouse_id: String,
    max_retries: u32,
    wait_timeout: u32,
    statement_timeout: Duration,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error_code: Option<String>,
    message: Option<String>,
    /// OAuth token endpoint errors (RFC 6749).
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct StatementResponse {
    statement_id: String,
    status: StatementStatus,
    #[serde(default)]
    manifest: Option<Manifest>,
    #[serde(default)]
    result: Option<ResultData>,
}

#[derive(Deserialize)]
struct StatementStatus {
    state: String,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct Manifest {
    schema: ManifestSchema,
}

#[derive(Deserialize)]
struct ManifestSchema {
    #[serde(default)]
    columns: Vec<ColumnInfo>,
}

#[derive(Deserialize)]
struct ColumnInfo {
    name: String,
}

#[derive(Deserialize)]
struct ResultData {
    #[serde(default)]
    data_array: Vec<Vec<Option<String>>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// The kind of an HTTP failure. 404 is the caller's to decide (a missing volume is
/// configuration; a vanished statement is not).
fn http_kind(status: StatusCode, not_found: ErrorKind) -> ErrorKind {
    match status.as_u16() {
        401 | 403 => ErrorKind::DestinationAuth,
        404 => not_found,
        408 | 429 | 500..=599 => ErrorKind::DestinationTransient,
        400 => ErrorKind::Config,
        413 => ErrorKind::DestinationRejected,
        _ => ErrorKind::Unexpected,
    }
}

/// The kind of a `FAILED` statement, from its `error_code` and the error class Databricks puts
/// in brackets at the start of the message (`[TABLE_OR_VIEW_NOT_FOUND] ...`).
pub fn statement_kind(error_code: &str, message: &str) -> ErrorKind {
    let class = message
        .strip_prefix('[')
        .and_then(|m| m.split_once(']'))
        .map(|(c, _)| c)
        .unwrap_or("");
    match error_code {
        "TEMPORARILY_UNAVAILABLE"
        | "WORKSPACE_TEMPORARILY_UNAVAILABLE"
        | "SERVICE_UNDER_MAINTENANCE"
        | "INTERNAL_ERROR"
        | "IO_ERROR"
        | "DEADLINE_EXCEEDED"
        | "RESOURCE_EXHAUSTED"
        | "ABORTED"
        | "CANCELLED" => ErrorKind::DestinationTransient,
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ErrorKind::DestinationAuth,
        _ if class.starts_with("INSUFFICIENT_PERMISSIONS") || class == "PERMISSION_DENIED" => {
            ErrorKind::DestinationAuth
        }
        _ if class.contains("CONCURRENT") => ErrorKind::DestinationTransient,
        _ if matches!(
            class,
            "SCHEMA_NOT_FOUND"
                | "CATALOG_NOT_FOUND"
                | "NO_SUCH_CATALOG_EXCEPTION"
                | "UC_VOLUME_NOT_FOUND"
                | "TABLE_OR_VIEW_NOT_FOUND"
        ) =>
        {
            ErrorKind::Config
        }
        _ => ErrorKind::DestinationRejected,
    }
}

/// Backoff before retry `attempt` (1-based): 250 ms doubling up to 8 s, with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 0.25 * 2f64.powi(attempt.saturating_sub(1).min(5) as i32);
    Duration::from_secs_f64(base.min(8.0) * rand::Rng::random_range(&mut rand::rng(), 0.5..1.0))
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Client {
    pub fn new(cfg: &DatabricksConfig) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(cfg.request_timeout_seconds.unwrap_or(600)))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot build the DATABRICKS HTTP client").with_source(e))?;
        let auth = match cfg.auth()? {
            AuthConfig::Token(r) => Auth::Token(r.resolve()?),
            AuthConfig::OAuthM2m {
                client_id,
                client_secret,
            } => Auth::OAuth {
                client_id,
                secret: client_secret.resolve()?,
                cached: tokio::sync::Mutex::new(None),
            },
        };
        Ok(Client {
            http,
            host: url::Url::parse(&cfg.host).map_err(|e| Error::config(format!("invalid DATABRICKS host: {e}")))?,
            auth,
            warehouse_id: cfg.warehouse_id.clone(),
            max_retries: cfg.max_retries.unwrap_or(3),
            wait_timeout: cfg.wait_timeout_seconds.unwrap_or(30),
            statement_timeout: Duration::from_secs(cfg.statement_timeout_seconds.unwrap_or(3600)),
        })
    }

    /// `host` + path segments, each percent-encoded.
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> url::Url {
        let mut url = self.host.clone();
        url.path_segments_mut()
            .expect("validated http(s) host")
            .pop_if_empty()
            .extend(segments.into_iter().filter(|s| !s.is_empty()));
        url
    }

    /// The bearer token: the PAT, or a cached OAuth token (fetched once when missing or due).
    async fn bearer(&self) -> Result<AccessToken> {
        match &self.auth {
            Auth::Token(t) => Ok(AccessToken(t.expose().to_string())),
            Auth::OAuth {
                client_id,
                secret,
                cached,
            } => {
                let mut slot = cached.lock().await;
                if let Some((token, refresh_at)) = slot.as_ref()
                    && Instant::now() < *refresh_at
                {
                    return Ok(token.clone());
                }
                let url = self.url(["oidc", "v1", "token"]);
                let resp = self
                    .send(
                        "OAuth token request to /oidc/v1/token",
                        ErrorKind::Config,
                        false,
                        || {
                            Ok(self
                                .http
                                .post(url.clone())
                                .basic_auth(client_id, Some(secret.expose()))
                                .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")]))
                        },
                    )
                    .await?;
                let token: TokenResponse = resp.json().await.map_err(|e| {
                    Error::new(ErrorKind::DestinationTransient, "OAuth token response is not JSON").with_source(e)
                })?;
                // Refresh a minute early, or at half-life for short-lived tokens.
                let life = Duration::from_secs(token.expires_in);
                let refresh_at = Instant::now() + life.saturating_sub(Duration::from_secs(60)).max(life / 2);
                let token = AccessToken(token.access_token);
                *slot = Some((token.clone(), refresh_at));
                Ok(token)
            }
        }
    }

    async fn forget_token(&self) -> bool {
        match &self.auth {
            Auth::OAuth { cached, .. } => cached.lock().await.take().is_some(),
            Auth::Token(_) => false,
        }
    }

    /// Sends a request built by `build` (called again for every attempt), with the bearer token
    /// when `authed`, retrying transient failures. Returns the successful response.
    async fn send(
        &self,
        what: &str,
        not_found: ErrorKind,
        authed: bool,
        build: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let mut req = build()?;
            if authed {
                // Boxed: fetching an OAuth token goes through `send` itself.
                let token = Box::pin(self.bearer()).await?;
                req = req.bearer_auth(&token.0);
            }
            let (err, retry_after) = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    let text = resp.text().await.unwrap_or_default();
                    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                    let code = body.error_code.or(body.error).unwrap_or_default();
                    let message = body
                        .message
                        .or(body.error_description)
                        .unwrap_or_else(|| truncate(&text));
                    if authed && matches!(status.as_u16(), 401 | 403) && !refreshed && self.forget_token().await {
                        // An OAuth token revoked or expired early: fetch a new one, once.
                        refreshed = true;
                        continue;
                    }
                    let kind = http_kind(status, not_found);
                    let err = Error::new(kind, format!("{what}: HTTP {} {code}: {message}", status.as_u16()))
                        .with_context("status", status.as_u16());
                    (err, retry_after)
                }
                Err(e) => {
                    let kind = if e.is_builder() {
                        ErrorKind::Config
                    } else {
                        ErrorKind::DestinationTransient
                    };
                    (Error::new(kind, format!("{what}: request failed")).with_source(e), None)
                }
            };
            if err.kind() != ErrorKind::DestinationTransient || attempt >= self.max_retries {
                return Err(if attempt > 0 {
                    err.with_context("attempts", attempt + 1)
                } else {
                    err
                });
            }
            attempt += 1;
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            tracing::debug!(what, attempt, wait_ms = wait.as_millis() as u64, error = %err, "Retrying a Databricks request.");
            tokio::time::sleep(wait).await;
        }
    }

    /// Files API: `PUT /api/2.0/fs/files/Volumes/...?overwrite=true`.
    pub async fn upload(&self, volume_path: &str, body: UploadBody) -> Result<()> {
        let mut url = self.url(["api", "2.0", "fs", "files"].into_iter().chain(volume_path.split('/')));
        url.query_pairs_mut().append_pair("overwrite", "true");
        let what = format!("uploading {volume_path}");
        self.send(&what, ErrorKind::Config, true, || {
            let req = self
                .http
                .put(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
            Ok(match &body {
                UploadBody::Bytes(b) => req.body(b.clone()),
                UploadBody::File(path, len) => {
                    let file = std::fs::File::open(path).map_err(|e| {
                        Error::unexpected(format!("cannot reopen staging file {}", path.display())).with_source(e)
                    })?;
                    req.header(reqwest::header::CONTENT_LENGTH, *len)
                        .body(reqwest::Body::wrap_stream(file_stream(tokio::fs::File::from_std(file))))
                }
            })
        })
        .await?;
        Ok(())
    }

    /// Files API: `DELETE /api/2.0/fs/files/Volumes/...`.
    pub async fn delete(&self, volume_path: &str) -> Result<()> {
        let url = self.url(["api", "2.0", "fs", "files"].into_iter().chain(volume_path.split('/')));
        let what = format!("deleting {volume_path}");
        self.send(&what, ErrorKind::Config, true, || Ok(self.http.delete(url.clone())))
            .await?;
        Ok(())
    }

    /// `GET /api/2.0/sql/warehouses/{id}`: the warehouse's state (does not start it).
    pub async fn warehouse_state(&self) -> Result<String> {
        let url = self.url(["api", "2.0", "sql", "warehouses", &self.warehouse_id]);
        let what = format!("looking up SQL warehouse {}", self.warehouse_id);
        let resp = self
            .send(&what, ErrorKind::Config, true, || Ok(self.http.get(url.clone())))
            .await?;
        let v: serde_json::Value = resp.json().await.map_err(|e| {
            Error::new(ErrorKind::DestinationTransient, format!("{what}: response is not JSON")).with_source(e)
        })?;
        Ok(v["state"].as_str().unwrap_or("UNKNOWN").to_string())
    }

    /// Runs one statement to a terminal state: submits it with `wait_timeout`, then polls
    /// `GET /api/2.0/sql/statements/{id}` with backoff; cancels it after the statement timeout.
    pub async fn execute(&self, sql: &str, what: &str) -> Result<StatementResult> {
        let deadline = Instant::now() + self.statement_timeout;
        let url = self.url(["api", "2.0", "sql", "statements"]);
        let body = serde_json::json!({
            "warehouse_id": self.warehouse_id,
            "statement": sql,
            "wait_timeout": format!("{}s", self.wait_timeout),
            "on_wait_timeout": "CONTINUE",
            "disposition": "INLINE",
            "format": "JSON_ARRAY",
        });
        let request_timeout = Duration::from_secs(u64::from(self.wait_timeout) + 60);
        let resp = self
            .send(what, ErrorKind::Config, true, || {
                Ok(self.http.post(url.clone()).json(&body).timeout(request_timeout))
            })
            .await?;
        let mut st = parse_statement(what, resp).await?;
        let mut poll = Duration::from_millis(100);
        while matches!(st.status.state.as_str(), "PENDING" | "RUNNING") {
            if Instant::now() >= deadline {
                self.cancel(&st.statement_id).await;
                return Err(Error::new(
                    ErrorKind::DestinationTransient,
                    format!(
                        "{what}: statement {} still {} after {} s; canceled",
                        st.statement_id,
                        st.status.state,
                        self.statement_timeout.as_secs()
                    ),
                )
                .with_context("statement_id", &st.statement_id));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 3 / 2).min(Duration::from_secs(2));
            let url = self.url(["api", "2.0", "sql", "statements", &st.statement_id]);
            let resp = self
                .send(what, ErrorKind::DestinationTransient, true, || {
                    Ok(self.http.get(url.clone()))
                })
                .await?;
            st = parse_statement(what, resp).await?;
        }
        let id = st.statement_id.clone();
        match st.status.state.as_str() {
            "SUCCEEDED" => Ok(StatementResult {
                statement_id: st.statement_id,
                columns: st
                    .manifest
                    .map(|m| m.schema.columns.into_iter().map(|c| c.name).collect())
                    .unwrap_or_default(),
                rows: st.result.map(|r| r.data_array).unwrap_or_default(),
            }),
            "FAILED" => {
                let error = st.status.error.unwrap_or_default();
                let code = error.error_code.unwrap_or_else(|| "UNKNOWN".into());
                let message = error.message.unwrap_or_default();
                Err(Error::new(
                    statement_kind(&code, &message),
                    format!("{what} failed (statement {id}, {code}): {message}"),
                )
                .with_context("statement_id", id))
            }
            "CANCELED" => Err(Error::new(
                ErrorKind::DestinationTransient,
                format!("{what}: statement {id} was canceled"),
            )
            .with_context("statement_id", id)),
            other => Err(Error::unexpected(format!(
                "{what}: statement {id} ended in unexpected state {other}"
            ))),
        }
    }

    /// Best effort: a cancel that fails leaves the statement to the warehouse's own timeout.
    async fn cancel(&self, statement_id: &str) {
        let url = self.url(["api", "2.0", "sql", "statements", statement_id, "cancel"]);
        if let Err(e) = self
            .send("canceling a statement", ErrorKind::DestinationTransient, true, || {
                Ok(self.http.request(Method::POST, url.clone()))
            })
            .await
        {
            tracing::warn!(statement_id, error = %e, "Canceling a Databricks statement failed.");
        }
    }
}

async fn parse_statement(what: &str, resp: reqwest::Response) -> Result<StatementResponse> {
    let text = resp.text().await.map_err(|e| {
        Error::new(
            ErrorKind::DestinationTransient,
            format!("{what}: reading the response failed"),
        )
        .with_source(e)
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::unexpected(format!(
            "{what}: unexpected Statement Execution API response ({e}): {}",
            truncate(&text)
        ))
    })
}

/// A file as a stream of 1 MiB chunks.
fn file_stream(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_failures_are_classified() {
        assert_eq!(
            statement_kind("TEMPORARILY_UNAVAILABLE", "x"),
            ErrorKind::DestinationTransient
        );
        assert_eq!(
            statement_kind("BAD_REQUEST", "[CAST_INVALID_INPUT] bad value"),
            ErrorKind::DestinationRejected
        );
        assert_eq!(
            statement_kind("BAD_REQUEST", "[INSUFFICIENT_PERMISSIONS] no MODIFY"),
            ErrorKind::DestinationAuth
        );
        assert_eq!(
            statement_kind("BAD_REQUEST", "[SCHEMA_NOT_FOUND] The schema `a`.`b` cannot be found."),
            ErrorKind::Config
        );
        assert_eq!(
            statement_kind("ABORTED", "[DELTA_CONCURRENT_APPEND] conflict"),
            ErrorKind::DestinationTransient
        );
        assert_eq!(statement_kind("UNKNOWN", "no class"), ErrorKind::DestinationRejected);
    }

    #[test]
    fn http_failures_are_classified() {
        let k = |s: u16| http_kind(StatusCode::from_u16(s).unwrap(), ErrorKind::Config);
        assert_eq!(k(401), ErrorKind::DestinationAuth);
        assert_eq!(k(403), ErrorKind::DestinationAuth);
        assert_eq!(k(404), ErrorKind::Config);
        assert_eq!(k(429), ErrorKind::DestinationTransient);
        assert_eq!(k(503), ErrorKind::DestinationTransient);
        assert_eq!(k(400), ErrorKind::Config);
    }
}
