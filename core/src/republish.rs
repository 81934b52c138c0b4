//! The re-publisher: no job the API accepted is ever lost.
//!
//! The API commits the job row, then publishes its message. If the publish failed (broker down)
//! the row stays `queued` and unconfirmed; a worker that died mid-job leaves it `processing`
//! with a lease that runs out. This sweep finds both and publishes them again. A message
//! published twice is harmless: the job store lets only one claim finish a job. It also
//! cancels queued jobs whose deadline passed, so that they end even when no worker serves
//! their model.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::JobsConfig;
use crate::db::JobStore;
use crate::queue::{JobMessage, JobQueue};

/// Jobs published per sweep at most; the next sweep takes the rest.
const BATCH: i64 = 500;

/// The bulk rank of a job published again.
const REPUBLISHED_RANK: u8 = 1;

/// Sweeps every `sweep_interval_secs` until `shutdown` is cancelled.
#[derive(Clone)]
pub struct Republisher {
    jobs: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    config: JobsConfig,
}

impl Republisher {
    pub fn new(jobs: Arc<dyn JobStore>, queue: Arc<dyn JobQueue>, config: JobsConfig) -> Self {
        Self {
            jobs,
            queue,
            config,
        }
    }

    /// With a queue that does not survive restarts (the in-process queue), takes back every
    /// job a previous process left in flight and publishes every queued job; nothing to do with
    /// RabbitMQ. Call it before this process's worker starts: run beside it, it would take back
    /// the jobs that worker had just claimed, and they would run twice.
    pub async fn recover(&self) -> anyhow::Result<usize> {
        if self.queue.is_durable() {
            return Ok(0);
        }
        let published = self.sweep(true).await?;
        if published > 0 {
            tracing::info!(
                jobs = published,
                "re-published the jobs of the previous process"
            );
        }
        Ok(published)
    }

    /// Runs until `shutdown` (after [`Republisher::recover`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval =
            tokio::time::interval(Duration::from_secs(self.config.sweep_interval_secs.max(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.sweep(false).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "re-published jobs"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "re-publish sweep failed"),
            }
        }
    }

    /// One sweep; returns how many jobs were published. `everything`: treat every queued and
    /// processing job as lost (start-up of a single process with a non-durable queue).
    pub async fn sweep(&self, everything: bool) -> anyhow::Result<usize> {
        let now = Utc::now();
        let expired = self.jobs.expire_deadlines(now).await?;
        if expired > 0 {
            tracing::info!(jobs = expired, "canceled queued jobs whose deadline passed");
        }
        let reclaimed = self
            .jobs
            .reclaim_expired(if everything { None } else { Some(now) })
            .await?;
        if reclaimed > 0 {
            tracing::warn!(jobs = reclaimed, "took back jobs whose lease ran out");
        }
        let (unconfirmed_before, stale_before) = if everything {
            // Everything until now; what this sweep publishes is stamped later, so the loop
            // below never picks the same job twice.
            (now, now)
        } else {
            (
                now - secs(self.config.republish_unconfirmed_after_secs),
                now - secs(self.config.republish_stale_after_secs),
            )
        };
        let mut published = 0;
        loop {
            let due = self
                .jobs
                .due_for_publish(unconfirmed_before, stale_before, BATCH)
                .await?;
            let count = due.len();
            for job in due {
                self.queue
                    // A job published again keeps its lane; in the bulk lane it takes the rank of
                    // a tenant with a deep backlog's, behind fresh work of shorter ones.
                    .publish(&JobMessage::screen_in(
                        job.id,
                        job.model,
                        job.priority,
                        REPUBLISHED_RANK,
                    ))
                    .await?;
                self.jobs.mark_published(job.id).await?;
                published += 1;
            }
            if count < BATCH as usize {
                return Ok(published);
            }
        }
    }
}

fn secs(s: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}
