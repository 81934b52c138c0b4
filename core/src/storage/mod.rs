//! Blob store: where uploaded images live, under content-addressed keys.

mod embedded;
mod local;
mod s3;
pub mod sweep;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::db::SqliteJobStore;

pub use embedded::{EmbeddedBlobStore, INLINE_MAX_BYTES};
pub use local::LocalBlobStore;
pub use s3::S3BlobStore;

/// Errors of a blob store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("storage backend error: {0:#}")]
    Backend(#[from] anyhow::Error),
}

/// A store of immutable objects addressed by key.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`. Storing the same key twice is harmless (content addressing:
    /// the same key always carries the same bytes).
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError>;
    /// Reads the object under `key`.
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;
    /// Deletes the object under `key` (no error when there is none).
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Up to `limit` objects whose keys start with `prefix` and sort after `start_after`, in key
    /// order: the next page starts after the last key of this one.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError>;
    /// Answers whether the store is reachable and writable (readiness).
    async fn check(&self) -> Result<(), StorageError>;
    /// A short description for logs, without secrets.
    fn describe(&self) -> String;
    /// The job database, where this store keeps an image of this many bytes in it
    /// ([`EmbeddedBlobStore`]): such an image is stored with its job, in one commit
    /// ([`SqliteJobStore::insert_with_image`]), not by [`BlobStore::put`] first.
    fn beside_jobs(&self, _bytes: usize) -> Option<&SqliteJobStore> {
        None
    }
}

/// An object as [`BlobStore::list`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    /// When it was last written ([`BlobStore::put`] of an existing key counts as a write).
    pub modified: DateTime<Utc>,
}

/// The SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The content-addressed key of an image: `images/sha256/ab/abcdef…`.
pub fn image_key(sha256: &str) -> String {
    format!("images/sha256/{}/{sha256}", &sha256[..2])
}

/// The key of a DICOM instance that arrived by STOW-RS or C-STORE and that no routing rule
/// sends to a model: stored, and kept (no job refers to it, and the orphan sweep looks only at
/// `images/`).
pub fn dicom_instance_key(sha256: &str) -> String {
    format!("dicom/sha256/{}/{sha256}", &sha256[..2])
}

/// Keys are built by [`image_key`] and [`dicom_instance_key`]; anything else is refused so that a key can never
/// escape the store's root (`..`, absolute paths).
fn check_key(key: &str) -> anyhow::Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    anyhow::ensure!(valid, "invalid object key {key:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_content_addressed_and_checked() {
        let sha = sha256_hex(b"abc");
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(image_key(&sha), format!("images/sha256/ba/{sha}"));
        assert!(check_key(&image_key(&sha)).is_ok());
        for bad in ["", "/etc/passwd", "images/../../x", "a//b", "a/./b", "a b"] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
