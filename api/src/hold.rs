//! A request's hold on a batch it is adding images to.
//!
//! The first images of a large upload may be screened before its last ones are stored; the
//! batch must not be taken as complete (and announced to webhooks with only those first images)
//! in between. A [`BatchHold`] keeps it open: taken before the first image, renewed while the
//! request runs, let go when the last image is in. If the process dies holding it, the hold
//! lapses after `server.idempotency_lease_secs`, the same lease that a request's idempotency
//! claim has.

use chrono::{DateTime, Utc};
use medinform_core::db::DbError;
use medinform_core::job::BatchId;
use tokio::task::AbortHandle;

use crate::{ApiError, AppState};

/// Keeps a batch from completing while a request adds images to it.
///
/// [`release`](Self::release) lets go once the request's images are in; a hold dropped without
/// it (the request failed or its client went away) lets go in a task of its own.
pub struct BatchHold {
    state: AppState,
    batch: BatchId,
    /// Whether the holder added jobs: letting go then reopens a batch that had completed.
    added: bool,
    /// The task that renews the hold; `None` once let go.
    renewing: Option<AbortHandle>,
}

impl BatchHold {
    pub async fn take(state: &AppState, batch: BatchId) -> Result<Self, ApiError> {
        let lease = state.idempotency.lease;
        state
            .backends
            .batches
            .hold_batch(batch, until(lease))
            .await?;
        let renewing = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let renewed = state
                        .backends
                        .batches
                        .keep_batch_held(batch, until(lease))
                        .await;
                    if let Err(e) = renewed {
                        tracing::warn!(%batch, error = %e, "could not keep a batch held");
                    }
                }
            })
            .abort_handle()
        };
        Ok(Self {
            state: state.clone(),
            batch,
            added: false,
            renewing: Some(renewing),
        })
    }

    pub fn batch(&self) -> BatchId {
        self.batch
    }

    /// The holder added a job to the batch.
    pub fn added(&mut self) {
        self.added = true;
    }

    /// Lets go of the batch, which completes (again, if it had) once its jobs are final.
    pub async fn release(mut self) -> Result<(), ApiError> {
        if let Some(renewing) = self.renewing.take() {
            renewing.abort();
            let_go(&self.state, self.batch, self.added).await?;
        }
        Ok(())
    }
}

impl Drop for BatchHold {
    fn drop(&mut self) {
        let Some(renewing) = self.renewing.take() else {
            return;
        };
        renewing.abort();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to let go in: the hold lapses with its lease.
            return;
        };
        let (state, batch, added) = (self.state.clone(), self.batch, self.added);
        runtime.spawn(async move {
            if let Err(e) = let_go(&state, batch, added).await {
                tracing::warn!(%batch, error = %e, "could not let go of a batch: its hold lapses with its lease");
            }
        });
    }
}

/// Lets go of `batch`, reopened first (while still held, so that it cannot complete in
/// between) when the holder `added` jobs.
async fn let_go(state: &AppState, batch: BatchId, added: bool) -> Result<(), DbError> {
    let batches = &state.backends.batches;
    if added {
        batches.reopen_batch(batch).await?;
    }
    batches.release_batch(batch).await
}

/// The end of a hold taken or renewed now.
fn until(lease: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| Utc::now().checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
