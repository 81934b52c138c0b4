//! Batch store: screening sessions and what their jobs add up to.

use async_trait::async_trait;

use super::DbError;
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
    /// Jobs were added: the batch is not complete any more.
    async fn reopen_batch(&self, id: BatchId) -> Result<(), DbError>;
    /// Cancels the batch's `queued` jobs; returns how many.
    async fn cancel_batch(
        &self,
        tenant: TenantId,
        id: BatchId,
        failure: &JobFailure,
    ) -> Result<u64, DbError>;
}
