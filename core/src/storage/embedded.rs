//! The embedded mode's blob store: small images in the job database, the rest in a folder.
//!
//! An upload is answered once its image and its job are both durable, the image first (a job
//! must never name an image that is not there). With images as files that is two syncs in a
//! row: a new file written and synced (about a millisecond, and an inode allocated for every
//! 50 px cell), then the commit that records the job. An image of at most [`INLINE_MAX_BYTES`]
//! is instead kept in the database, in the same write as its job
//! ([`SqliteJobStore::insert_with_image`]): one commit makes both durable, and the writer
//! shares that commit with every write waiting. SQLite's own measurements ("Internal Versus
//! External BLOBs", sqlite.org) find blobs under about 100 KB read faster from the database
//! than from files; larger images (a full-size radiograph, a DICOM file) stay files, so the
//! database does not carry them through its write-ahead log and back.

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, LocalBlobStore, StorageError, StoredObject, check_key};
use crate::db::SqliteJobStore;

/// The largest image kept in the database; larger ones are files.
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Images of at most [`INLINE_MAX_BYTES`] in the SQLite job database, the rest (and anything
/// stored before) in a [`LocalBlobStore`]. Reads and deletes look in both.
#[derive(Debug, Clone)]
pub struct EmbeddedBlobStore {
    db: SqliteJobStore,
    files: LocalBlobStore,
}

impl EmbeddedBlobStore {
    /// `db` must be the database the service records its jobs in.
    pub fn new(db: SqliteJobStore, files: LocalBlobStore) -> Self {
        Self { db, files }
    }
}

#[async_trait]
impl BlobStore for EmbeddedBlobStore {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        if bytes.len() > INLINE_MAX_BYTES {
            return self.files.put(key, bytes, content_type).await;
        }
        check_key(key)?;
        self.db
            .put_image(key, bytes)
            .await
            .map_err(|e| StorageError::Backend(e.into()))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        check_key(key)?;
        match self.db.image(key).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => self.files.get(key).await,
            Err(e) => Err(StorageError::Backend(e.into())),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.db
            .delete_image(key)
            .await
            .map_err(|e| StorageError::Backend(e.into()))?;
        self.files.delete(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError> {
        let mut found = self
            .db
            .list_images(prefix, start_after, limit)
            .await
            .map_err(|e| StorageError::Backend(e.into()))?;
        found.extend(self.files.list(prefix, start_after, limit).await?);
        // Both pages are in key order; together, the first `limit` of their union. A key in
        // both (a file stored before the database kept images) is one object.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found.dedup_by(|later, first| {
            let same = later.key == first.key;
            if same {
                first.modified = first.modified.max(later.modified);
            }
            same
        });
        found.truncate(limit);
        Ok(found)
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.files.check().await
    }

    fn describe(&self) -> String {
        format!(
            "{} (images up to {} KiB in the job database)",
            self.files.describe(),
            INLINE_MAX_BYTES / 1024
        )
    }

    fn beside_jobs(&self, bytes: usize) -> Option<&SqliteJobStore> {
        (bytes <= INLINE_MAX_BYTES).then_some(&self.db)
    }
}
