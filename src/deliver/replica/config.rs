//! Typed configuration of the `POSTGRES_REPLICA` destination.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::secret::SecretRef;

/// Schema the replica tables live in when none is configured.
pub const DEFAULT_SCHEMA: &str = "tidemark";
const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 10;
const DEFAULT_STATEMENT_TIMEOUT_SECONDS: u64 = 300;
/// Postgres truncates identifiers longer than `NAMEDATALEN - 1` bytes; a truncated schema name
/// would silently point somewhere else.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// `POSTGRES_REPLICA` configuration, e.g.
/// `{"url": {"env": "REPLICA_DATABASE_URL"}, "schema": "analytics"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Reference to the replica's connection URL (`postgres://user:password@host:port/db?sslmode=…`).
    /// The whole URL is treated as a secret: it is never logged, stored or printed.
    pub url: SecretRef,
    /// Postgres schema the tables are created in (default `tidemark`). One schema holds one
    /// organization's replica.
    #[serde(default)]
    pub schema: Option<String>,
    /// Create the schema, tables, view and ledger when missing, and add columns of new minor
    /// schema versions (default true). With false, they must exist (see the docs for the DDL).
    #[serde(default)]
    pub create_tables: Option<bool>,
    /// Keep the append-only history table `<table>_v<major>_raw` (default true).
    #[serde(default)]
    pub raw_history: Option<bool>,
    /// Seconds to wait for a connection (TCP, TLS and authentication; default 10).
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
    /// `statement_timeout` of the replica session in seconds (default 300; 0 = none).
    #[serde(default)]
    pub statement_timeout_seconds: Option<u64>,
}

/// The configuration with defaults applied and names validated.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub schema: String,
    pub create_tables: bool,
    pub raw_history: bool,
    pub connect_timeout: std::time::Duration,
    pub statement_timeout_seconds: u64,
}

impl ReplicaConfig {
    pub fn parse(config: &serde_json::Value) -> Result<ReplicaConfig> {
        serde_json::from_value(config.clone())
            .map_err(|e| Error::config(format!("invalid POSTGRES_REPLICA configuration: {e}")))
    }

    pub fn resolved(&self) -> Result<Resolved> {
        let schema = self.schema.clone().unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
        validate_schema_name(&schema)?;
        let connect = self.connect_timeout_seconds.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECONDS);
        if connect == 0 {
            return Err(Error::config(
                "POSTGRES_REPLICA connect_timeout_seconds must be at least 1",
            ));
        }
        Ok(Resolved {
            schema,
            create_tables: self.create_tables.unwrap_or(true),
            raw_history: self.raw_history.unwrap_or(true),
            connect_timeout: std::time::Duration::from_secs(connect),
            statement_timeout_seconds: self
                .statement_timeout_seconds
                .unwrap_or(DEFAULT_STATEMENT_TIMEOUT_SECONDS),
        })
    }
}

/// Schema names are quoted in every statement, so any text is safe SQL; these are the names
/// Postgres would refuse or silently change.
pub fn validate_schema_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some("is longer than 63 bytes (Postgres would truncate it)")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else if name.starts_with("pg_") {
        Some("starts with pg_, which Postgres reserves for system schemas")
    } else if name == "information_schema" {
        Some("is a system schema")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::config(format!(
            "invalid POSTGRES_REPLICA schema '{}': it {p}",
            name.escape_debug()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parse_config() {
        let c = ReplicaConfig::parse(&serde_json::json!({"url": {"env": "X"}})).unwrap();
        let r = c.resolved().unwrap();
        assert_eq!(r.schema, "tidemark");
        assert!(r.create_tables && r.raw_history);
        assert_eq!(r.statement_timeout_seconds, 300);

        for (bad, says) in [
            (serde_json::json!({"url": "postgres://u:p@h/db"}), "plaintext secrets"),
            (
                serde_json::json!({"url": {"env": "X"}, "schem": "a"}),
                "unknown field `schem`",
            ),
            (serde_json::json!({"schema": "a"}), "missing field `url`"),
        ] {
            let err = ReplicaConfig::parse(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(says), "{err}");
            assert!(!err.to_string().contains("u:p@h"), "{err}");
        }
        for (schema, says) in [
            ("", "is empty"),
            ("pg_data", "starts with pg_"),
            (&"s".repeat(64) as &str, "longer than 63 bytes"),
        ] {
            let c = ReplicaConfig::parse(&serde_json::json!({"url": {"env": "X"}, "schema": schema})).unwrap();
            let err = c.resolved().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(says), "{err}");
        }
        // Quoted everywhere, so unusual but legal names are accepted.
        validate_schema_name("Analytics \"eu\"; drop").unwrap();
    }
}
