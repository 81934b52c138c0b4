//! Small images in the embedded database (`images` table), for
//! [`crate::storage::EmbeddedBlobStore`].
//!
//! A job's image must be durable before the job that names it is. On a local folder that is a
//! new file written and synced, then the commit that records the job, synced again: two syncs
//! in a row before the upload is answered, and a new inode for every cell. An image kept in the
//! database instead goes in with its job, in one statement pair of one write, so both are
//! durable at the same commit, which the writer shares with every other write waiting
//! ([`super::writer`]).

use bytes::Bytes;
use chrono::Utc;
use sqlx::sqlite::SqliteConnection;

use super::{SqliteJobStore, insert_job, millis, time};
use crate::db::{DbError, NewJob};
use crate::job::{Job, Priority};
use crate::storage::StoredObject;

impl SqliteJobStore {
    /// Records `job` and keeps `image` (its bytes, under `job.image_key`) in one write: both
    /// are committed together, or neither. Where the job exists already (a retried request,
    /// by its submission key) that job is answered, and the image's time renewed.
    ///
    /// Should the job's statement fail after the image's (a constraint), the image stays
    /// behind, as a file would: the orphan sweep removes what no job names.
    pub async fn insert_with_image(&self, job: &NewJob, image: Bytes) -> Result<Job, DbError> {
        let job = job.clone();
        self.writer
            .write(job.priority, move |conn| {
                Box::pin(async move {
                    store(conn, &job.image_key, &image).await?;
                    insert_job(conn, &job).await
                })
            })
            .await
    }

    /// Keeps `bytes` under `key` (renewing its time where it is there already).
    pub async fn put_image(&self, key: &str, bytes: Bytes) -> Result<(), DbError> {
        let key = key.to_owned();
        self.writer
            .write(Priority::Interactive, move |conn| {
                Box::pin(async move { store(conn, &key, &bytes).await })
            })
            .await
    }

    /// The image under `key`, if the database keeps it.
    pub async fn image(&self, key: &str) -> Result<Option<Bytes>, DbError> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar("select bytes from images where key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(bytes.map(Bytes::from))
    }

    /// Removes the image under `key`; true when there was one.
    pub async fn delete_image(&self, key: &str) -> Result<bool, DbError> {
        let key = key.to_owned();
        self.writer
            .write(Priority::Interactive, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query("delete from images where key = ?1")
                        .bind(&key)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    /// Up to `limit` images whose keys start with `prefix` and sort after `start_after`, in
    /// key order.
    pub async fn list_images(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, DbError> {
        // Keys are checked object keys (ASCII), so the keys that start with `prefix` are those
        // from `prefix` up to, not including, `prefix` with its last character one higher.
        let end = prefix.chars().last().map(|last| {
            let mut end = prefix[..prefix.len() - last.len_utf8()].to_owned();
            end.push(char::from_u32(u32::from(last) + 1).unwrap_or(char::MAX));
            end
        });
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select key, stored_at from images \
             where key >= ?1 and (?2 is null or key < ?2) and (?3 is null or key > ?3) \
             order by key limit ?4",
        )
        .bind(prefix)
        .bind(end)
        .bind(start_after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(key, stored_at)| {
                Ok(StoredObject {
                    key,
                    modified: time(stored_at)?,
                })
            })
            .collect()
    }
}

/// Inserts the image, or renews its time: the same key always carries the same bytes.
async fn store(conn: &mut SqliteConnection, key: &str, bytes: &[u8]) -> Result<(), DbError> {
    sqlx::query(
        "insert into images (key, bytes, stored_at) values (?1, ?2, ?3) \
         on conflict (key) do update set stored_at = excluded.stored_at",
    )
    .bind(key)
    .bind(bytes)
    .bind(millis(Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
