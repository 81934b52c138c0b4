//! One batch of deliveries for one model: claim the jobs, fetch the images, screen them in one
//! model run, record each outcome, settle each message.
//!
//! How each message ends:
//! - job finished already (a redelivery or a duplicate publish): acknowledged, nothing done;
//! - job held by another live worker: acknowledged (that worker settles its own message; if it
//!   dies, the lease runs out and the re-publisher publishes the job again);
//! - no such job: dead-lettered for a person to look at;
//! - screened: result written (once: the attempt number fences out a worker whose lease was
//!   taken over), then acknowledged;
//! - image missing or undecodable: `failed` at once and dead-lettered (retrying cannot help);
//! - anything else (storage or model error): the job goes back to `queued` and the message is
//!   requeued after a short back-off, until `jobs.max_attempts`; then `failed` with the last
//!   reason and dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use medinform_core::app::Backends;
use medinform_core::cpu;
use medinform_core::db::Claim;
use medinform_core::job::{
    FailureCode, Job, JobFailure, JobId, JobStatus, Priority, ScreeningResult,
};
use medinform_core::metrics;
use medinform_core::queue::Delivery;
use medinform_core::registry::{Model, Registry};
use medinform_core::screening::{self, ScreenError};
use medinform_core::storage::StorageError;
use ndarray::Array3;

use crate::WorkerSettings;

pub(crate) struct Processor {
    backends: Backends,
    registry: Arc<Registry>,
    settings: WorkerSettings,
}

/// A claimed job with its message.
struct Claimed {
    job: Job,
    delivery: Delivery,
}

/// A claimed job's image: as stored, or already the model's input.
enum Source {
    Encoded(Bytes),
    Prepared(Array3<f32>),
}

/// What became of one claimed job.
enum Outcome {
    Succeeded(ScreeningResult),
    /// Retrying cannot help.
    Failed(JobFailure),
    /// Worth another attempt.
    Retry(JobFailure),
}

impl Processor {
    pub(crate) fn new(
        backends: Backends,
        registry: Arc<Registry>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            backends,
            registry,
            settings,
        }
    }

    /// Screens one batch of `lane`'s deliveries (on that lane's threads and model session).
    pub(crate) async fn process(&self, model_id: &str, lane: Priority, deliveries: Vec<Delivery>) {
        let claimed = self.claim(lane, deliveries).await;
        if claimed.is_empty() {
            return;
        }

        // An image uploaded to this process is already the model's input; the others are
        // read from storage.
        let model = self.registry.get(model_id);
        let sources = join_all(claimed.iter().map(|c| {
            let prepared = model
                .as_ref()
                .and_then(|m| m.take_prepared(&c.job.image_sha256));
            async move {
                match prepared {
                    Some(input) => Ok(Source::Prepared(input)),
                    None => self.fetch(&c.job).await.map(Source::Encoded),
                }
            }
        }))
        .await;
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(claimed.len());
        let mut to_screen = Vec::new();
        let mut slots = Vec::new();
        for (index, source) in sources.into_iter().enumerate() {
            match source {
                Ok(source) => {
                    outcomes.push(None);
                    to_screen.push(source);
                    slots.push(index);
                }
                Err(outcome) => outcomes.push(Some(outcome)),
            }
        }

        if !to_screen.is_empty() {
            let screened = self.screen(model_id, model, lane, to_screen).await;
            for (index, outcome) in slots.into_iter().zip(screened) {
                outcomes[index] = Some(outcome);
            }
        }

        let outcomes = claimed
            .into_iter()
            .zip(outcomes)
            .map(|(claimed, outcome)| (claimed, outcome.expect("every job has an outcome")));
        self.finish(lane, outcomes.collect()).await;
    }

    /// Claims the deliveries' jobs in one round trip; those with nothing to do are settled
    /// here and left out.
    async fn claim(&self, lane: Priority, deliveries: Vec<Delivery>) -> Vec<Claimed> {
        let asked: Vec<(JobId, bool)> = deliveries
            .iter()
            .map(|d| (d.message.job_id(), d.redelivered))
            .collect();
        let lease = Duration::from_secs(self.settings.jobs.lease_secs);
        let claims = match self.backends.jobs.claim_many(&asked, lease, lane).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(jobs = asked.len(), error = %e, "could not claim jobs; handing them back");
                let later = Settle::RequeueLater(Duration::from_secs(1));
                join_all(deliveries.into_iter().map(|d| settle(d, later))).await;
                return Vec::new();
            }
        };
        let claimed = join_all(deliveries.into_iter().zip(claims).map(
            |(delivery, claim)| async move {
                let job_id = delivery.message.job_id();
                match claim {
                    Claim::Claimed(job) => {
                        metrics::job_claimed(&job);
                        return Some(Claimed { job, delivery });
                    }
                    Claim::Finished(job) => {
                        tracing::info!(%job_id, status = %job.status, "job already finished; message acknowledged");
                        settle(delivery, Settle::Ack).await;
                    }
                    Claim::Busy => {
                        tracing::info!(%job_id, "job held by another worker; duplicate message acknowledged");
                        settle(delivery, Settle::Ack).await;
                    }
                    Claim::Missing => {
                        tracing::error!(%job_id, "message for a job that does not exist; dead-lettered");
                        settle(delivery, Settle::DeadLetter).await;
                    }
                }
                None
            },
        ))
        .await;
        claimed.into_iter().flatten().collect()
    }

    async fn fetch(&self, job: &Job) -> Result<Bytes, Outcome> {
        match self.backends.blobs.get(&job.image_key).await {
            Ok(bytes) => Ok(bytes),
            Err(StorageError::NotFound(key)) => Err(Outcome::Failed(JobFailure::new(
                FailureCode::ImageMissing,
                format!("the uploaded image ({key}) is no longer in storage: upload it again"),
            ))),
            Err(e) => Err(Outcome::Retry(JobFailure::new(
                FailureCode::StorageUnavailable,
                format!("the image could not be read from storage: {e}"),
            ))),
        }
    }

    /// Decodes and preprocesses what is not prepared yet, and runs the model, on a blocking
    /// thread of `lane`'s CPU priority.
    async fn screen(
        &self,
        model_id: &str,
        model: Option<Arc<Model>>,
        lane: Priority,
        images: Vec<Source>,
    ) -> Vec<Outcome> {
        let count = images.len();
        let Some(model) = model else {
            let failure = JobFailure::new(
                FailureCode::UnknownModel,
                format!("model {model_id} is not in this worker's registry"),
            );
            return (0..count)
                .map(|_| Outcome::Retry(failure.clone()))
                .collect();
        };
        let limits = self.settings.limits;
        let started = std::time::Instant::now();
        let screened = cpu::run(lane, move || {
            let inputs = images
                .into_iter()
                .map(|image| match image {
                    Source::Prepared(input) => Ok(input),
                    Source::Encoded(bytes) => screening::prepare(&model, &bytes, &limits),
                })
                .collect();
            screening::screen_prepared(&model, inputs, lane)
        })
        .await;
        match screened {
            Ok(results) => {
                tracing::debug!(
                    model = model_id,
                    images = count,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "batch screened"
                );
                results.into_iter().map(outcome_of).collect()
            }
            Err(e) => {
                let failure = JobFailure::new(
                    FailureCode::InferenceFailed,
                    format!("the model run stopped unexpectedly: {e}"),
                );
                (0..count)
                    .map(|_| Outcome::Retry(failure.clone()))
                    .collect()
            }
        }
    }

    /// Records each outcome (the results in one round trip), then settles each message.
    async fn finish(&self, lane: Priority, outcomes: Vec<(Claimed, Outcome)>) {
        let mut succeeded = Vec::new();
        let mut unsuccessful = Vec::new();
        for (claimed, outcome) in outcomes {
            match outcome {
                Outcome::Succeeded(result) => succeeded.push((claimed, result)),
                Outcome::Failed(failure) => unsuccessful.push((claimed, failure, false)),
                Outcome::Retry(failure) => unsuccessful.push((claimed, failure, true)),
            }
        }
        let results: Vec<(JobId, i32, &ScreeningResult)> = succeeded
            .iter()
            .map(|(claimed, result)| (claimed.job.id, claimed.job.attempts, result))
            .collect();
        let written: Vec<Result<bool, String>> = if results.is_empty() {
            Vec::new()
        } else {
            match self.backends.jobs.succeed_many(&results, lane).await {
                Ok(written) => written.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e.to_string()); results.len()],
            }
        };
        let succeeded = succeeded
            .into_iter()
            .zip(written)
            .map(|((claimed, _), written)| {
                settle_written(claimed, written, Settle::Ack, Some(JobStatus::Succeeded))
            });
        let unsuccessful = unsuccessful
            .into_iter()
            .map(|(claimed, failure, retry)| self.finish_unsuccessful(claimed, failure, retry));
        join_all(succeeded).await;
        join_all(unsuccessful).await;
    }

    /// Records a failure for good, or a failed attempt to retry (until `jobs.max_attempts`),
    /// then settles the message.
    async fn finish_unsuccessful(&self, claimed: Claimed, failure: JobFailure, retry: bool) {
        let job = &claimed.job;
        let jobs = &self.backends.jobs;
        let (written, settle_as, status) = if retry
            && job.attempts < self.settings.jobs.max_attempts
        {
            tracing::warn!(job_id = %job.id, attempt = job.attempts, code = %failure.code, reason = %failure.message, "attempt failed; will retry");
            let backoff = Duration::from_secs(1 << job.attempts.clamp(0, 5));
            (
                jobs.release(job.id, job.attempts, &failure).await,
                Settle::RequeueLater(backoff),
                None,
            )
        } else {
            let failure = if retry {
                JobFailure::new(
                    failure.code.clone(),
                    format!(
                        "gave up after {} attempts: {}",
                        job.attempts, failure.message
                    ),
                )
            } else {
                failure
            };
            tracing::warn!(job_id = %job.id, code = %failure.code, reason = %failure.message, "job failed");
            (
                jobs.fail(job.id, job.attempts, &failure).await,
                Settle::DeadLetter,
                Some(JobStatus::Failed),
            )
        };
        settle_written(
            claimed,
            written.map_err(|e| e.to_string()),
            settle_as,
            status,
        )
        .await;
    }
}

/// Settles a claimed job's message once its outcome is written (or could not be); `status`:
/// the final status the outcome gave the job, if it was final.
async fn settle_written(
    claimed: Claimed,
    written: Result<bool, String>,
    settle_as: Settle,
    status: Option<JobStatus>,
) {
    let Claimed { job, delivery } = claimed;
    match written {
        Ok(true) => {
            if let Some(status) = status {
                metrics::job_finished(&job, status);
            }
            settle(delivery, settle_as).await;
        }
        // Fenced out: the lease was taken over and the new holder finishes the job.
        Ok(false) => {
            tracing::warn!(job_id = %job.id, "lease taken over by another worker; leaving the job to it");
            settle(delivery, Settle::Ack).await;
        }
        // The database is unreachable: leave the message unsettled for redelivery.
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "could not record the outcome; handing the job back");
            settle(delivery, Settle::RequeueLater(Duration::from_secs(1))).await;
        }
    }
}

fn outcome_of(result: Result<ScreeningResult, ScreenError>) -> Outcome {
    match result {
        Ok(result) => Outcome::Succeeded(result),
        Err(e) if e.is_permanent() => Outcome::Failed(e.to_failure()),
        Err(e) => Outcome::Retry(e.to_failure()),
    }
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    DeadLetter,
    /// Requeue once the back-off has passed (on its own task, so the batch slot is free).
    RequeueLater(Duration),
}

async fn settle(delivery: Delivery, how: Settle) {
    let job_id = delivery.message.job_id();
    let result = match how {
        Settle::Ack => delivery.ack().await,
        Settle::DeadLetter => delivery.dead_letter().await,
        Settle::RequeueLater(backoff) => {
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                if let Err(e) = delivery.requeue().await {
                    tracing::warn!(%job_id, error = %e, "could not requeue; the broker redelivers it");
                }
            });
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::warn!(%job_id, error = %e, "could not settle a message; it will be redelivered");
    }
}
