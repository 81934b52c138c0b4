//! The orphan sweep: images that no job refers to, once a grace period has passed, are deleted.
//!
//! An image is stored before its job is recorded (the job must never name an image that is not
//! there), so a process that dies between the two leaves an image with no job. The grace period
//! (`storage.orphan_grace_secs`) is far longer than any upload takes; an upload of the same
//! bytes rewrites the object (S3) or touches its time (local folder), which restarts it.
//!
//! Deleting is guarded against the one race left, an upload of the very same bytes recording
//! its job while the sweep deletes: the sweep reads the image first, and puts it back when a
//! job refers to it after the delete.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{BlobStore, StorageError};
use crate::db::JobStore;

/// Where images live in the store (see [`super::image_key`]).
const IMAGES: &str = "images/";
/// Objects listed, and checked against the jobs, per round trip.
const PAGE: usize = 500;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Images looked at.
    pub examined: u64,
    /// Images older than the grace period that no job refers to, deleted.
    pub deleted: u64,
}

/// Deletes images that no job refers to.
pub struct OrphanSweeper {
    blobs: Arc<dyn BlobStore>,
    jobs: Arc<dyn JobStore>,
    grace: Duration,
    interval: Duration,
}

impl OrphanSweeper {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        jobs: Arc<dyn JobStore>,
        grace: Duration,
        interval: Duration,
    ) -> Self {
        Self {
            blobs,
            jobs,
            grace,
            interval,
        }
    }

    /// Sweeps every `interval` (the first after one interval) until `shutdown`; an interval of
    /// zero never sweeps.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            match self.sweep(Utc::now()).await {
                Ok(report) if report.deleted > 0 => tracing::info!(
                    examined = report.examined,
                    deleted = report.deleted,
                    "deleted images that no job refers to"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "orphan sweep failed"),
            }
        }
    }

    /// One pass over the store at `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> anyhow::Result<SweepReport> {
        let cutoff =
            now - chrono::TimeDelta::from_std(self.grace).unwrap_or(chrono::TimeDelta::MAX);
        let mut report = SweepReport::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .blobs
                .list(IMAGES, after.as_deref(), PAGE)
                .await
                .context("listing images")?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            after = Some(last.key.clone());
            report.examined += page.len() as u64;
            let old: Vec<String> = page
                .into_iter()
                .filter(|object| object.modified < cutoff)
                .map(|object| object.key)
                .collect();
            if old.is_empty() {
                continue;
            }
            let referenced = self.jobs.referenced_images(&old).await?;
            for key in old.iter().filter(|key| !referenced.contains(key)) {
                if self.delete_orphan(key).await? {
                    report.deleted += 1;
                }
            }
        }
    }

    /// Deletes `key`, and puts it back if a job came to refer to it meanwhile; true when it
    /// stayed deleted.
    async fn delete_orphan(&self, key: &str) -> anyhow::Result<bool> {
        let bytes = match self.blobs.get(key).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.blobs.delete(key).await?;
        let keys = [key.to_owned()];
        if self.jobs.referenced_images(&keys).await?.is_empty() {
            return Ok(true);
        }
        tracing::info!(
            key,
            "an image was uploaded again while it was swept: put back"
        );
        // The content type is not kept by every store; an image's key names its bytes, and the
        // service reads its format from them.
        self.blobs
            .put(key, bytes, "application/octet-stream")
            .await?;
        Ok(false)
    }
}
