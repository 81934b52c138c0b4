//! The embedded blob store: a folder on the local disk.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, StorageError, check_key};

/// Objects as files under one folder; writes go to a temporary file first and are renamed into
/// place, so a reader never sees half an image.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// Opens (and creates) the folder.
    pub async fn open(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .with_context(|| format!("creating image folder {}", root.display()))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> anyhow::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let dir = path.parent().context("object key without a folder")?;
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        let file = tokio::fs::File::open(&tmp).await.context("reopening")?;
        file.sync_all().await.context("syncing image to disk")?;
        tokio::fs::rename(&tmp, &path)
            .await
            .with_context(|| format!("moving image into place at {}", path.display()))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound(key.into())),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        let probe = self.root.join(".readyz");
        tokio::fs::write(&probe, b"ok")
            .await
            .with_context(|| format!("image folder {} is not writable", self.root.display()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local folder {}", self.root.display())
    }
}
