//! Client-side encryption of files `PUT` to a `SNOWFLAKE_FULL` internal stage (Snowflake's
//! default for internal stages).
//!
//! A PUT to such a stage answers with `encryptionMaterial`: a base64 *query stage master key*
//! (128 or 256 bits), the `queryId` and the `smkId`. The drivers (Python connector's
//! `SnowflakeEncryptionUtil.encrypt_stream`, JDBC's `EncryptionProvider`) then:
//! 1. draw a random file key of the master key's length and a random 16-byte IV;
//! 2. encrypt the file with AES-CBC under the file key, PKCS#7 padded (a full padding block
//!    when the length is a multiple of 16);
//! 3. wrap the file key with AES-ECB under the master key, also PKCS#7 padded;
//! 4. store the wrapped key, the IV and a material descriptor
//!    `{"queryId":…,"smkId":"…","keySize":"<bits>"}` as object metadata next to the file
//!    (S3: `x-amz-meta-x-amz-key`, `-x-amz-iv`, `-x-amz-matdesc`; GCS: `x-goog-meta-encryptiondata`
//!    and `x-goog-meta-matdesc`), with `sfc-digest` the SHA-256 of the *plaintext*.
//!
//! Snowflake decrypts with the master key when COPY reads the file. This module does steps
//! 1–3 streaming (64 KiB at a time, never the whole file in memory); the upload functions add
//! the metadata of step 4. The test suite decrypts what it writes with the Python connector's
//! own `decrypt_stream` (tests/py), an implementation independent of this one.

use std::io::{Read, Write};
use std::path::Path;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, BlockEncryptMut, BlockSizeUser, KeyInit, KeyIvInit};
use base64::Engine;
use rand::TryRngCore;
use serde_json::Value;

use crate::error::{Error, Result};

const BLOCK: usize = 16;

/// What a PUT's `encryptionMaterial` carries. The master key is never logged (`Debug` hides it).
#[derive(Clone)]
pub struct EncryptionMaterial {
    master_key: Vec<u8>,
    query_id: String,
    smk_id: String,
}

impl std::fmt::Debug for EncryptionMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionMaterial")
            .field("master_key", &format_args!("<{} bits>", self.master_key.len() * 8))
            .field("query_id", &self.query_id)
            .field("smk_id", &self.smk_id)
            .finish()
    }
}

/// The metadata stored beside an encrypted file (base64 wrapped key and IV, JSON descriptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionMetadata {
    pub key: String,
    pub iv: String,
    pub matdesc: String,
}

impl EncryptionMetadata {
    /// The `x-goog-meta-encryptiondata` value the drivers write for GCS stages.
    pub fn gcs_encryption_data(&self) -> String {
        serde_json::json!({
            "EncryptionMode": "FullBlob",
            "WrappedContentKey": {"KeyId": "symmKey1", "EncryptedKey": self.key, "Algorithm": "AES_CBC_256"},
            "EncryptionAgent": {"Protocol": "1.0", "EncryptionAlgorithm": "AES_CBC_256"},
            "ContentEncryptionIV": self.iv,
            "KeyWrappingMetadata": {"EncryptionLibrary": "Java 5.3.0"},
        })
        .to_string()
    }
}

impl EncryptionMaterial {
    /// Reads the material of a PUT response: `data.encryptionMaterial` is an object for an
    /// upload (a list for downloads; its first entry is taken). `Ok(None)`: the stage is not
    /// client-side encrypted.
    pub fn from_put_response(data: &Value) -> Result<Option<EncryptionMaterial>> {
        let node = match data.get("encryptionMaterial") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => match items.iter().find(|v| !v.is_null()) {
                Some(v) => v,
                None => return Ok(None),
            },
            Some(v) => v,
        };
        let text = |k: &str| -> Option<String> {
            match node.get(k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            }
        };
        let bad = |why: &str| Error::unexpected(format!("the PUT response's encryptionMaterial {why}"));
        let key = text("queryStageMasterKey").ok_or_else(|| bad("has no queryStageMasterKey"))?;
        let master_key = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_err(|_| bad("has a queryStageMasterKey that is not base64"))?;
        if !matches!(master_key.len(), 16 | 24 | 32) {
            return Err(bad(&format!(
                "has a {}-bit master key; AES needs 128, 192 or 256",
                master_key.len() * 8
            )));
        }
        Ok(Some(EncryptionMaterial {
            master_key,
            query_id: text("queryId").ok_or_else(|| bad("has no queryId"))?,
            smk_id: text("smkId").ok_or_else(|| bad("has no smkId"))?,
        }))
    }

    /// Encrypts `src` into `dst` with a fresh file key and IV; returns the metadata to store
    /// with the object and the encrypted size.
    pub fn encrypt_file(&self, src: &Path, dst: &Path) -> Result<(EncryptionMetadata, u64)> {
        let mut file_key = vec![0u8; self.master_key.len()];
        let mut iv = [0u8; BLOCK];
        let mut os = rand::rngs::OsRng;
        os.try_fill_bytes(&mut file_key)
            .and_then(|()| os.try_fill_bytes(&mut iv))
            .map_err(|e| Error::unexpected(format!("no randomness for the file key: {e}")))?;
        let reader = std::fs::File::open(src)
            .map_err(|e| Error::unexpected("cannot reopen the encoded Parquet file").with_source(e))?;
        let writer = std::fs::File::create(dst)
            .map_err(|e| Error::unexpected("cannot create the encrypted staging file").with_source(e))?;
        let size = self.encrypt_stream(&file_key, &iv, reader, writer)?;
        let metadata = EncryptionMetadata {
            key: base64::engine::general_purpose::STANDARD.encode(self.wrap(&file_key)),
            iv: base64::engine::general_purpose::STANDARD.encode(iv),
            matdesc: self.matdesc(),
        };
        Ok((metadata, size))
    }

    /// The material descriptor, byte for byte as the drivers write it.
    fn matdesc(&self) -> String {
        format!(
            r#"{{"queryId":{},"smkId":{},"keySize":"{}"}}"#,
            Value::String(self.query_id.clone()),
            Value::String(self.smk_id.clone()),
            self.master_key.len() * 8
        )
    }

    /// AES-ECB of the PKCS#7-padded file key under the master key.
    fn wrap(&self, file_key: &[u8]) -> Vec<u8> {
        let mut buf = pkcs7(file_key);
        match self.master_key.len() {
            16 => ecb(
                &aes::Aes128::new_from_slice(&self.master_key).expect("16-byte key"),
                &mut buf,
            ),
            24 => ecb(
                &aes::Aes192::new_from_slice(&self.master_key).expect("24-byte key"),
                &mut buf,
            ),
            _ => ecb(
                &aes::Aes256::new_from_slice(&self.master_key).expect("32-byte key"),
                &mut buf,
            ),
        }
        buf
    }

    fn encrypt_stream(&self, file_key: &[u8], iv: &[u8; BLOCK], r: impl Read, w: impl Write) -> Result<u64> {
        match file_key.len() {
            16 => cbc_stream(cbc::Encryptor::<aes::Aes128>::new_from_slices(file_key, iv), r, w),
            24 => cbc_stream(cbc::Encryptor::<aes::Aes192>::new_from_slices(file_key, iv), r, w),
            _ => cbc_stream(cbc::Encryptor::<aes::Aes256>::new_from_slices(file_key, iv), r, w),
        }
    }
}

/// `data` followed by PKCS#7 padding to a whole number of blocks (always at least one byte).
fn pkcs7(data: &[u8]) -> Vec<u8> {
    let pad = BLOCK - data.len() % BLOCK;
    let mut out = Vec::with_capacity(data.len() + pad);
    out.extend_from_slice(data);
    out.resize(data.len() + pad, pad as u8);
    out
}

fn ecb<C: BlockEncrypt>(cipher: &C, buf: &mut [u8]) {
    for block in buf.chunks_exact_mut(BLOCK) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
}

/// Streams `r` through AES-CBC into `w`, 64 KiB at a time, PKCS#7-padding the tail.
fn cbc_stream<C: BlockEncryptMut + BlockSizeUser>(
    cipher: std::result::Result<C, aes::cipher::InvalidLength>,
    mut r: impl Read,
    mut w: impl Write,
) -> Result<u64> {
    let mut cipher = cipher.map_err(|_| Error::unexpected("AES-CBC key or IV of the wrong length"))?;
    let io = |e: std::io::Error| Error::unexpected("encrypting the staging file failed").with_source(e);
    // A multiple of the block size, so a full buffer encrypts whole.
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0usize;
    let mut written = 0u64;
    loop {
        let n = r.read(&mut buf[filled..]).map_err(io)?;
        filled += n;
        if n != 0 && filled < buf.len() {
            continue;
        }
        // A full buffer, or the end of input: pad what is left (a whole block of 16s when it
        // is aligned) and stop.
        let mut tail;
        let body: &mut [u8] = if n == 0 {
            tail = pkcs7(&buf[..filled]);
            &mut tail
        } else {
            &mut buf[..filled]
        };
        for block in body.chunks_exact_mut(BLOCK) {
            cipher.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        w.write_all(body).map_err(io)?;
        written += body.len() as u64;
        filled = 0;
        if n == 0 {
            break;
        }
    }
    w.flush().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockDecrypt, BlockDecryptMut, block_padding::Pkcs7};

    fn material(bits: usize) -> EncryptionMaterial {
        let key = base64::engine::general_purpose::STANDARD.encode(vec![7u8; bits / 8]);
        EncryptionMaterial::from_put_response(&serde_json::json!({
            "encryptionMaterial": {"queryStageMasterKey": key, "queryId": "01b2-q", "smkId": 9_876_543_210u64}
        }))
        .unwrap()
        .unwrap()
    }

    fn decrypt(m: &EncryptionMaterial, meta: &EncryptionMetadata, data: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut wrapped = b64.decode(&meta.key).unwrap();
        let kek = aes::Aes128::new_from_slice(&m.master_key).unwrap();
        for b in wrapped.chunks_exact_mut(16) {
            kek.decrypt_block(GenericArray::from_mut_slice(b));
        }
        let file_key = &wrapped[..wrapped.len() - *wrapped.last().unwrap() as usize];
        let iv = b64.decode(&meta.iv).unwrap();
        let mut buf = data.to_vec();
        cbc::Decryptor::<aes::Aes128>::new_from_slices(file_key, &iv)
            .unwrap()
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn files_of_every_length_around_the_buffer_and_block_round_trip() {
        let m = material(128);
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 15, 16, 17, 65_535, 65_536, 65_537, 200_003] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (src, dst) = (dir.path().join("p"), dir.path().join("c"));
            std::fs::write(&src, &plain).unwrap();
            let (meta, size) = m.encrypt_file(&src, &dst).unwrap();
            let cipher = std::fs::read(&dst).unwrap();
            assert_eq!(cipher.len() as u64, size);
            assert_eq!(
                size as usize,
                (len / 16 + 1) * 16,
                "PKCS#7 adds 1..=16 bytes (len {len})"
            );
            if len > 0 {
                assert_ne!(&cipher[..len.min(16)], &plain[..len.min(16)]);
            }
            assert_eq!(decrypt(&m, &meta, &cipher), plain, "len {len}");
            // 128-bit file key + a full padding block.
            assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(&meta.key)
                    .unwrap()
                    .len(),
                32
            );
        }
    }

    #[test]
    fn descriptor_and_material_parse_as_the_drivers_write_them() {
        let m = material(256);
        assert_eq!(
            m.matdesc(),
            r#"{"queryId":"01b2-q","smkId":"9876543210","keySize":"256"}"#
        );
        assert!(
            !format!("{m:?}").contains("BwcH"),
            "the master key is not printed: {m:?}"
        );
        let none = EncryptionMaterial::from_put_response(&serde_json::json!({"encryptionMaterial": null})).unwrap();
        assert!(none.is_none());
        let listed = EncryptionMaterial::from_put_response(&serde_json::json!({
            "encryptionMaterial": [{"queryStageMasterKey": "AAAAAAAAAAAAAAAAAAAAAA==", "queryId": "q", "smkId": "1"}]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(listed.master_key.len(), 16);
        let short = EncryptionMaterial::from_put_response(&serde_json::json!({
            "encryptionMaterial": {"queryStageMasterKey": "AAAA", "queryId": "q", "smkId": 1}
        }))
        .unwrap_err();
        assert!(short.to_string().contains("24-bit master key"), "{short}");
        let gcs: Value = serde_json::from_str(
            &EncryptionMetadata {
                key: "k".into(),
                iv: "i".into(),
                matdesc: "m".into(),
            }
            .gcs_encryption_data(),
        )
        .unwrap();
        assert_eq!(gcs["WrappedContentKey"]["EncryptedKey"], "k");
        assert_eq!(gcs["ContentEncryptionIV"], "i");
    }
}
