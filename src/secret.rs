//! Credentials by reference. A destination's config never holds a secret, only where to find
//! it: `{"env": "NAME"}` or `{"file": "/path"}` (a mounted Kubernetes Secret, say). A plain
//! string where a reference is expected is refused.
//!
//! Invariant: a resolved secret is a [`SecretString`], which has no `Display`, prints as
//! `[redacted]` in `Debug`, and is never `Serialize`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        let value = serde_json::Value::deserialize(d)?;
        if value.is_string() {
            return Err(serde::de::Error::custom(
                "plaintext secrets are not accepted; use a reference: {\"env\": \"VAR\"} or {\"file\": \"/path\"}",
            ));
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| {
            serde::de::Error::custom(format!(
                "a secret reference is {{\"env\": \"VAR\"}} or {{\"file\": \"/path\"}} ({e})"
            ))
        })?;
        match (raw.env, raw.file) {
            (Some(v), None) if !v.is_empty() => Ok(SecretRef::Env(v)),
            (None, Some(p)) if p.is_absolute() => Ok(SecretRef::File(p)),
            (None, Some(p)) => Err(serde::de::Error::custom(format!(
                "secret file path must be absolute: {}",
                p.display()
            ))),
            _ => Err(serde::de::Error::custom(
                "a secret reference names exactly one of \"env\" or \"file\"",
            )),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret. The error names the reference, never a value.
    pub fn resolve(&self) -> Result<SecretString> {
        let value = match self {
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| Error::config(format!("credential reference {self} is not set in the environment")))?,
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::config(format!("credential reference {self} cannot be read")).with_source(e))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(Error::config(format!("credential reference {self} is empty")));
        }
        Ok(SecretString(value))
    }
}

/// A resolved secret. Deliberately no `Display` and no `Serialize`.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_and_references_resolve() {
        let err = serde_json::from_str::<SecretRef>("\"AKIAEXAMPLE\"").unwrap_err();
        assert!(err.to_string().contains("plaintext secrets are not accepted"), "{err}");
        let r: SecretRef = serde_json::from_str("{\"env\": \"TIDEMARK_TEST_SECRET_XYZ\"}").unwrap();
        let err = r.resolve().unwrap_err();
        assert!(
            err.to_string().contains("env:TIDEMARK_TEST_SECRET_XYZ is not set"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        let r = SecretRef::File(path);
        let s = r.resolve().unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
