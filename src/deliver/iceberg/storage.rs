//! iceberg's storage traits over the `object_store` the crate already uses for `PARQUET_S3`.
//!
//! iceberg 0.10 takes its file I/O from a [`StorageFactory`]; the ready-made S3 one
//! (`iceberg-storage-opendal`) brings opendal and a second reqwest (0.13). This adapter keeps
//! one HTTP stack, one credential chain and one set of S3 settings for both object
//! destinations and Iceberg.
//!
//! Paths: iceberg hands over absolute locations (`s3://bucket/prefix/ns/t/metadata/…`,
//! `file:///dir/ns/t/data/…`). Everything must lie under the warehouse root; a table located
//! elsewhere is refused rather than written through a store configured for another place.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

/// Upload buffer and part size of one file, and parts in flight (same bounds as `PARQUET_S3`).
const UPLOAD_BUFFER: usize = 8 * 1024 * 1024;
const UPLOAD_CONCURRENCY: usize = 2;

/// An object store rooted at the warehouse. Serializable only because iceberg's traits demand
/// it (`typetag`); the store itself (with resolved credentials) is never serialized, and a
/// deserialized copy refuses every operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorage {
    /// `s3://bucket/` or `file:///dir/`: the prefix that maps to the store's root.
    root: String,
    #[serde(skip)]
    store: Option<Arc<dyn ObjectStore>>,
}

impl ObjectStorage {
    /// `root` is what a location starts with for the store's empty path.
    pub fn new(root: String, store: Arc<dyn ObjectStore>) -> ObjectStorage {
        let root = if root.ends_with('/') { root } else { format!("{root}/") };
        ObjectStorage {
            root,
            store: Some(store),
        }
    }

    fn store(&self) -> iceberg::Result<&Arc<dyn ObjectStore>> {
        self.store.as_ref().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "tidemark object storage was deserialized without its store",
            )
        })
    }

    /// The store path of an absolute location.
    pub fn path(&self, location: &str) -> iceberg::Result<Path> {
        let normalized;
        let location = if self.root.starts_with("file://") {
            // Accept the spellings iceberg implementations use for local files.
            normalized = match location.strip_prefix("file:") {
                Some(rest) => format!("file:///{}", rest.trim_start_matches('/')),
                None => format!("file:///{}", location.trim_start_matches('/')),
            };
            normalized.as_str()
        } else if let Some(rest) = location.strip_prefix("s3a://") {
            normalized = format!("s3://{rest}");
            normalized.as_str()
        } else {
            location
        };
        let relative = location.strip_prefix(&self.root).ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!(
                    "location {location} is outside the configured warehouse {}",
                    self.root.trim_end_matches('/')
                ),
            )
        })?;
        Path::parse(relative).map_err(|e| {
            iceberg::Error::new(iceberg::ErrorKind::DataInvalid, format!("invalid location {location}")).with_source(e)
        })
    }
}

/// Maps an object store error onto iceberg's kinds; the object_store error stays the source
/// so tidemark's classifier can see it (auth vs transient).
fn to_iceberg(what: String, e: object_store::Error) -> iceberg::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => iceberg::ErrorKind::DataInvalid,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            iceberg::ErrorKind::FeatureUnsupported
        }
        _ => iceberg::ErrorKind::Unexpected,
    };
    iceberg::Error::new(kind, what).with_source(e)
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.store()?.head(&self.path(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(to_iceberg(format!("cannot stat {path}"), e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let meta = self
            .store()?
            .head(&self.path(path)?)
            .await
            .map_err(|e| to_iceberg(format!("cannot stat {path}"), e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let got = self
            .store()?
            .get(&self.path(path)?)
            .await
            .map_err(|e| to_iceberg(format!("cannot read {path}"), e))?;
        got.bytes()
            .await
            .map_err(|e| to_iceberg(format!("cannot read {path}"), e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(ObjectRead {
            store: self.store()?.clone(),
            path: self.path(path)?,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.store()?
            .put(&self.path(path)?, bs.into())
            .await
            .map_err(|e| to_iceberg(format!("cannot write {path}"), e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let writer = BufWriter::with_capacity(self.store()?.clone(), self.path(path)?, UPLOAD_BUFFER)
            .with_max_concurrency(UPLOAD_CONCURRENCY);
        Ok(Box::new(ObjectWrite {
            writer: Some(writer),
            location: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.store()?.delete(&self.path(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_iceberg(format!("cannot delete {path}"), e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let store = self.store()?.clone();
        let prefix = self.path(path)?;
        let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
        store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| to_iceberg(format!("cannot delete under {path}"), e))?;
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Hands the same [`ObjectStorage`] to every `FileIO` a catalog builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorageFactory {
    storage: ObjectStorage,
}

impl ObjectStorageFactory {
    pub fn new(storage: ObjectStorage) -> ObjectStorageFactory {
        ObjectStorageFactory { storage }
    }
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|e| to_iceberg(format!("cannot read {}", self.path), e))
    }
}

/// A streaming upload: one PUT below [`UPLOAD_BUFFER`], a multipart upload above it. Nothing
/// is visible under the location before `close`.
struct ObjectWrite {
    writer: Option<BufWriter>,
    location: String,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let writer = self.writer.as_mut().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("{} is already closed", self.location),
            )
        })?;
        writer
            .put(bs)
            .await
            .map_err(|e| to_iceberg(format!("cannot write {}", self.location), e))
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let mut writer = self.writer.take().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("{} is already closed", self.location),
            )
        })?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await.map_err(|e| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("cannot complete the upload of {}", self.location),
            )
            .with_source(e)
        })
    }
}

impl Drop for ObjectWrite {
    fn drop(&mut self) {
        // A file abandoned mid-write (the delivery failed): abort its multipart upload so no
        // parts linger. Best effort, in the background.
        if let Some(mut writer) = self.writer.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[test]
    fn locations_map_under_the_root_only() {
        let s3 = ObjectStorage::new("s3://lake".into(), Arc::new(InMemory::new()));
        assert_eq!(s3.path("s3://lake/wh/ns/t/x.json").unwrap().as_ref(), "wh/ns/t/x.json");
        assert_eq!(s3.path("s3a://lake/wh/x").unwrap().as_ref(), "wh/x");
        let err = s3.path("s3://other/wh/x").unwrap_err();
        assert!(
            err.to_string().contains("outside the configured warehouse s3://lake"),
            "{err}"
        );

        let fs = ObjectStorage::new("file:///var/lake/".into(), Arc::new(InMemory::new()));
        for spelling in ["file:///var/lake/ns/t", "file:/var/lake/ns/t", "/var/lake/ns/t"] {
            assert_eq!(fs.path(spelling).unwrap().as_ref(), "ns/t", "{spelling}");
        }
        assert!(fs.path("file:///var/other/x").is_err());
    }

    #[tokio::test]
    async fn write_read_exists_delete_round_trip() {
        let storage = ObjectStorage::new("s3://b".into(), Arc::new(InMemory::new()));
        let loc = "s3://b/t/data/a.parquet";
        assert!(!storage.exists(loc).await.unwrap());
        let mut w = storage.writer(loc).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(!storage.exists(loc).await.unwrap(), "invisible before close");
        w.close().await.unwrap();
        assert_eq!(storage.metadata(loc).await.unwrap().size, 11);
        let r = storage.reader(loc).await.unwrap();
        assert_eq!(r.read(6..11).await.unwrap(), Bytes::from_static(b"world"));
        storage.delete_prefix("s3://b/t").await.unwrap();
        assert!(!storage.exists(loc).await.unwrap());
        storage.delete(loc).await.unwrap();
    }
}
