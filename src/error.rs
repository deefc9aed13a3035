//! The crate's one error type: an [`ErrorKind`] that drives retry and exit-code decisions,
//! a one-line message, key/value context and an optional source.
//!
//! Invariants: adapters classify, the worker decides; nothing formats secrets into a message
//! or a context value.

use std::fmt;

/// What went wrong, coarse enough to decide what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Configuration is invalid (unknown kind, malformed config, bad URL, missing secret).
    /// Never retried: a delivery that hits it is dead-lettered at once.
    Config,
    /// The user asked for something that does not exist or makes no sense.
    InvalidInput,
    /// A published schema file is malformed or disagrees with the source.
    Schema,
    /// The source database or the control plane could not be reached or failed transiently.
    Unavailable,
    /// The destination failed in a way that may succeed later (network, 5xx, throttling).
    DestinationTransient,
    /// The destination refused our credentials. Not retried: repeating a refused login only
    /// locks accounts and hides the problem; the delivery is dead-lettered with the
    /// warehouse's message, and `tidemark retry` brings it back after the credentials are fixed.
    DestinationAuth,
    /// The destination rejected the data itself.
    DestinationRejected,
    /// Our lease on a delivery was taken over: nothing may be committed.
    Fenced,
    /// The source returned data that violates an invariant (foreign organization, NaN, ...).
    DataInvalid,
    /// A bug or an impossible state.
    Unexpected,
}

impl ErrorKind {
    /// Whether a delivery failing with this kind should be retried with backoff.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::DestinationTransient | ErrorKind::Unexpected
        )
    }

    /// Stable lower-case name used in logs, `last_error` and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Schema => "schema",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DestinationTransient => "destination_transient",
            ErrorKind::DestinationAuth => "destination_auth",
            ErrorKind::DestinationRejected => "destination_rejected",
            ErrorKind::Fenced => "fenced",
            ErrorKind::DataInvalid => "data_invalid",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

/// The crate error. `Display` is one line: `message (k=v, ...): source`.
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub fn unexpected(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unexpected, message)
    }

    /// A failure talking to a Postgres database (source or control plane). Connection-level
    /// failures are `Unavailable`; SQL errors keep their SQLSTATE in the context.
    pub fn postgres(what: impl Into<String>, e: sqlx::Error) -> Self {
        let kind = match &e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                ErrorKind::Unavailable
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // connection exceptions, operator intervention, insufficient resources, serialization
                Some(c)
                    if c.starts_with("08")
                        || c.starts_with("57")
                        || c.starts_with("53")
                        || c == "40001"
                        || c == "40P01" =>
                {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Unexpected,
            },
            _ => ErrorKind::Unexpected,
        };
        let mut err = Error::new(kind, what);
        if let sqlx::Error::Database(db) = &e
            && let Some(code) = db.code()
        {
            err = err.with_context("sqlstate", code);
        }
        err.with_source(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {self}", self.kind.as_str())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::postgres("postgres query failed", e)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::new(ErrorKind::Unavailable, "control-plane migration failed").with_source(e)
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::new(ErrorKind::Unexpected, "arrow error").with_source(e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        // Errors raised by our own fenced writer come back wrapped; keep their kind.
        if let parquet::errors::ParquetError::External(inner) = &e
            && let Some(ours) = inner.downcast_ref::<Error>()
        {
            return Error::new(ours.kind, ours.to_string());
        }
        Error::new(ErrorKind::Unexpected, "parquet encoding failed").with_source(e)
    }
}
