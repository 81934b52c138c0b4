//! Batch store: screening sessions and what their jobs add up to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{DbError, NewDelivery};
use crate::batch::{Batch, NewBatch, TallyRow};
use crate::job::{BatchId, Job, JobFailure};
use crate::tenant::TenantId;

/// A store of batches (the same database as the jobs).
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    async fn insert_batch(&self, batch: &NewBatch) -> Result<Batch, DbError>;
    /// The batch if it belongs to `tenant`.
    async fn find_batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<Batch>, DbError>;
    /// The tenant's batches, newest first, older than `before` when given.
    async fn list_batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: i64,
    ) -> Result<Vec<Batch>, DbError>;
    /// The batch's jobs grouped by status, predicted label and outcome.
    async fn batch_tallies(&self, id: BatchId) -> Result<Vec<TallyRow>, DbError>;
    /// Every job of the batch, oldest first (the export).
    async fn batch_jobs(&self, id: BatchId) -> Result<Vec<Job>, DbError>;
    /// Jobs were added: the batch is not complete any more (and will be announced again when
    /// it is).
    async fn reopen_batch(&self, id: BatchId) -> Result<(), DbError>;
    /// A request (or DICOM association) starts adding images to the batch, which does not
    /// complete until every such holder has let go ([`release_batch`](Self::release_batch)),
    /// or until `until` passes without [`keep_batch_held`](Self::keep_batch_held): the holder
    /// is then taken to have died.
    async fn hold_batch(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError>;
    /// A holder is still adding images: the hold lasts at least until `until`.
    async fn keep_batch_held(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError>;
    /// A holder is done. One that added jobs [reopens](Self::reopen_batch) the batch first,
    /// while it still holds it.
    async fn release_batch(&self, id: BatchId) -> Result<(), DbError>;
    /// Stamps `completed_at` on every batch that has jobs, none of them queued or processing,
    /// and no live hold; returns how many.
    async fn complete_batches(&self) -> Result<u64, DbError>;
    /// Completed batches whose `batch.completed` event is not fanned out yet, oldest first.
    async fn batches_awaiting_events(&self, limit: i64) -> Result<Vec<Batch>, DbError>;
    /// In one transaction: stamps the batch's event as fanned out and stores `deliveries`.
    /// False (and nothing stored) when another dispatcher stamped it first.
    async fn enqueue_batch_events(
        &self,
        tenant: TenantId,
        batch: BatchId,
        deliveries: &[NewDelivery],
    ) -> Result<bool, DbError>;
    /// Cancels the batch's `queued` jobs; returns how many.
    async fn cancel_batch(
        &self,
        tenant: TenantId,
        id: BatchId,
        failure: &JobFailure,
    ) -> Result<u64, DbError>;
}
