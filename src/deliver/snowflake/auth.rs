//! Snowflake key-pair authentication: the JWT a driver sends in place of a password.
//!
//! Claims as Snowflake documents them ("Key-pair authentication", "Generate a JWT"):
//! `iss = <ACCOUNT>.<USER>.SHA256:<fingerprint>`, `sub = <ACCOUNT>.<USER>`, `iat`, `exp`
//! (at most one hour later), signed RS256. `<fingerprint>` is the standard base64 of the
//! SHA-256 of the public key's DER `SubjectPublicKeyInfo` (what
//! `openssl rsa -pubout -outform DER | openssl dgst -sha256 -binary | openssl enc -base64`
//! prints, and what `DESC USER` shows as `RSA_PUBLIC_KEY_FP` after `SHA256:`). `<ACCOUNT>` is
//! the account identifier upper-cased, without a region suffix (`xy12345.eu-west-1` →
//! `XY12345`); `<USER>` is the login name upper-cased.

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Lifetime of a login JWT: Snowflake accepts at most one hour; a login uses it at once.
const JWT_LIFETIME_SECONDS: i64 = 59 * 60;

/// A parsed RSA private key and the fingerprint of its public half.
pub struct KeyPair {
    key: EncodingKey,
    fingerprint: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair(SHA256:{})", self.fingerprint)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
}

impl KeyPair {
    /// Reads an unencrypted RSA private key in PEM (PKCS#8 or PKCS#1). `origin` names the
    /// credential reference in errors; the key itself never appears in one.
    pub fn from_pem(pem: &SecretString, origin: &str) -> Result<KeyPair> {
        let text = pem.expose();
        let bad = |why: &str| Error::config(format!("private key {origin}: {why}"));
        if text.contains("ENCRYPTED PRIVATE KEY") {
            return Err(bad(
                "encrypted keys are not supported; store the key unencrypted (PKCS#8, BEGIN PRIVATE KEY) in a Secret",
            ));
        }
        let (label, der) = pem_body(text).ok_or_else(|| bad("not a PEM block (expected BEGIN PRIVATE KEY)"))?;
        let pair = match label.as_str() {
            "PRIVATE KEY" => ring::signature::RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => ring::signature::RsaKeyPair::from_der(&der),
            other => {
                return Err(bad(&format!(
                    "unsupported PEM block '{other}'; expected an RSA private key"
                )));
            }
        }
        .map_err(|e| bad(&format!("not a usable RSA key ({e})")))?;
        let pkcs1 = ring::signature::KeyPair::public_key(&pair).as_ref().to_vec();
        let fingerprint = fingerprint_of_pkcs1_public_key(&pkcs1);
        let key = EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| bad(&format!("cannot load ({e})")))?;
        Ok(KeyPair { key, fingerprint })
    }

    /// `SHA256:` fingerprint payload (base64) of the public key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The login JWT for `account`/`user`, issued at `now`.
    pub fn jwt(&self, account: &str, user: &str, now: DateTime<Utc>) -> Result<String> {
        let qualified = format!("{}.{}", jwt_account(account), user.to_ascii_uppercase());
        let iss = format!("{qualified}.SHA256:{}", self.fingerprint);
        let claims = Claims {
            iss: &iss,
            sub: &qualified,
            iat: now.timestamp(),
            exp: now.timestamp() + JWT_LIFETIME_SECONDS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| Error::config(format!("cannot sign the Snowflake login JWT: {e}")))
    }
}

/// The account part of the JWT claims: upper-cased, region and cloud suffix removed.
pub fn jwt_account(account: &str) -> String {
    let account = account.trim();
    // `<locator>.<region>[.<cloud>]` and `<org>-<acct>.global` both keep only the first part
    // (the Python and JDBC drivers do the same).
    let base = if account.contains(".global") {
        account.split('-').next().unwrap_or(account)
    } else {
        account.split('.').next().unwrap_or(account)
    };
    base.to_ascii_uppercase()
}

/// Returns the label and the DER bytes of the first PEM block.
fn pem_body(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let b64: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

/// base64(SHA-256(SubjectPublicKeyInfo DER)) of an RSA public key given as PKCS#1 DER.
pub fn fingerprint_of_pkcs1_public_key(pkcs1: &[u8]) -> String {
    let spki = spki_from_pkcs1(pkcs1);
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki))
}

/// Wraps a PKCS#1 `RSAPublicKey` into `SubjectPublicKeyInfo { rsaEncryption, NULL }`.
fn spki_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0x00); // no unused bits
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALGORITHM.len() + bit_string.len(), &mut out);
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway 2048-bit test key (generated with `openssl genrsa 2048 | openssl pkcs8 -topk8
    /// -nocrypt`) and its fingerprint as openssl computes it:
    /// `openssl pkey -pubout -outform DER | openssl dgst -sha256 -binary | openssl enc -base64`.
    const TEST_KEY: &str = include_str!("../../../tests/fixtures/snowflake_test_key.p8");
    const TEST_FP: &str = include_str!("../../../tests/fixtures/snowflake_test_key.fp");
    const TEST_PUB: &str = include_str!("../../../tests/fixtures/snowflake_test_key.pub");

    fn secret(text: &str) -> SecretString {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, text).unwrap();
        crate::secret::SecretRef::File(path).resolve().unwrap()
    }

    fn b64url(part: &str) -> serde_json::Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn fingerprint_matches_openssl_and_claims_follow_snowflake_docs() {
        let kp = KeyPair::from_pem(&secret(TEST_KEY), "file:/k").unwrap();
        assert_eq!(kp.fingerprint(), TEST_FP.trim());
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let token = kp.jwt("myorg-acct1", "tidemark_loader", now).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(b64url(parts[0])["alg"], "RS256");
        let claims = b64url(parts[1]);
        assert_eq!(
            claims["iss"],
            format!("MYORG-ACCT1.TIDEMARK_LOADER.SHA256:{}", TEST_FP.trim())
        );
        assert_eq!(claims["sub"], "MYORG-ACCT1.TIDEMARK_LOADER");
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_000 + 59 * 60);
        // The signature verifies against the public key (PKCS#1 DER from the SPKI PEM).
        let spki = pem_body(TEST_PUB).unwrap().1;
        let pkcs1 = &spki[spki.len() - pkcs1_len(&spki)..];
        let key = jsonwebtoken::DecodingKey::from_rsa_der(pkcs1);
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    }

    /// Length of the PKCS#1 key at the end of an SPKI (the BIT STRING's payload minus its
    /// leading unused-bits byte).
    fn pkcs1_len(spki: &[u8]) -> usize {
        // SPKI = 30 L [30 0d ...15 bytes] 03 L' 00 <pkcs1>
        let mut i = 1;
        i += if spki[i] & 0x80 != 0 {
            1 + (spki[i] & 0x7f) as usize
        } else {
            1
        };
        i += 15;
        assert_eq!(spki[i], 0x03);
        i += 1;
        i += if spki[i] & 0x80 != 0 {
            1 + (spki[i] & 0x7f) as usize
        } else {
            1
        };
        i += 1;
        spki.len() - i
    }

    #[test]
    fn account_drops_region_and_is_upper_cased() {
        assert_eq!(jwt_account("xy12345.eu-west-1"), "XY12345");
        assert_eq!(jwt_account("xy12345.us-east-2.aws"), "XY12345");
        assert_eq!(jwt_account("myorg-acct1"), "MYORG-ACCT1");
        assert_eq!(jwt_account("myorg-acct1.global"), "MYORG");
    }

    #[test]
    fn encrypted_and_garbage_keys_are_config_errors_without_the_key() {
        let enc = secret("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
        let err = KeyPair::from_pem(&enc, "env:K").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(err.to_string().contains("env:K"), "{err}");
        let err = KeyPair::from_pem(&secret("hunter2"), "env:K").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
