//! The MedInform worker: consumes screening jobs from the queue, runs the models, writes the
//! results.
//!
//! Deliveries are gathered into batches per model (up to `max_batch` images, waiting at most
//! `batch_window_ms` after the first one), so that one model run screens many images; at most
//! `concurrency` batches are processed at once, and the queue's prefetch bounds what is held
//! unacknowledged. Interactive jobs (a clinic's single uploads) are batched apart from bulk
//! ones (a drive's images), do not wait for their batch to fill, and run at once in a slot of
//! their own beside the `concurrency` bulk batches (or in the next free slot, ahead of every
//! bulk batch), so a clinic's image does not queue behind a drive's however deep its backlog. A message is acknowledged only after its job's final state is written, so a
//! worker that dies mid-job loses nothing: the message is redelivered.

mod process;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use medinform_core::app::Backends;
use medinform_core::config::{JobsConfig, WorkerConfig};
use medinform_core::imaging::ImageLimits;
use medinform_core::job::Priority;
use medinform_core::queue::{Delivery, Subscription};
use medinform_core::registry::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process::Processor;

/// What a worker needs besides its backends and models.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    pub limits: ImageLimits,
}

/// A worker bound to its backends and models, ready to [`run`](Worker::run).
pub struct Worker {
    backends: Backends,
    registry: Arc<Registry>,
    settings: WorkerSettings,
}

/// Deliveries of one model and kind waiting to fill a batch.
struct Pending {
    deliveries: Vec<Delivery>,
    /// When the batch goes, full or not.
    due: Instant,
}

/// What pending batches are kept by: the model, and the lane of its jobs.
type BatchKey = (String, Priority);

/// A batch waiting for a free slot.
struct Ready {
    model: String,
    deliveries: Vec<Delivery>,
    lane: Priority,
}

/// Batches waiting for a slot: the interactive ones first, each kind in arrival order.
#[derive(Default)]
struct ReadyBatches(VecDeque<Ready>);

impl ReadyBatches {
    fn push(&mut self, (model, lane): BatchKey, pending: Pending) {
        let at = if lane.is_interactive() {
            self.0
                .iter()
                .take_while(|b| b.lane.is_interactive())
                .count()
        } else {
            self.0.len()
        };
        self.0.insert(
            at,
            Ready {
                model,
                deliveries: pending.deliveries,
                lane,
            },
        );
    }

    /// Every delivery not yet started, for [`hand_back`].
    fn take_all(&mut self) -> Vec<Delivery> {
        self.0.drain(..).flat_map(|b| b.deliveries).collect()
    }
}

impl Worker {
    pub fn new(backends: Backends, registry: Arc<Registry>, settings: WorkerSettings) -> Self {
        Self {
            backends,
            registry,
            settings,
        }
    }

    /// The models this worker consumes: those configured (all when none are) that are ready
    /// in this process. A configured model that is not ready is logged and left out, so its
    /// jobs wait for a worker that can run them.
    pub fn served_models(&self) -> Vec<String> {
        let wanted = &self.settings.worker.models;
        let mut served = Vec::new();
        for model in self.registry.list() {
            if !wanted.is_empty() && !wanted.iter().any(|w| w == model.id()) {
                continue;
            }
            if model.is_ready() {
                served.push(model.id().to_owned());
            } else {
                tracing::warn!(model = model.id(), status = ?model.status(), "not serving a model that is not ready");
            }
        }
        for id in wanted {
            if self.registry.get(id).is_none() {
                tracing::warn!(model = %id, "worker.models names a model that is not in the registry");
            }
        }
        served
    }

    /// Consumes until `shutdown`, then stops consuming, hands back the deliveries not yet
    /// started and waits for the batches in progress to finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let models = self.served_models();
        if models.is_empty() {
            tracing::warn!("no ready model to serve; this worker takes no jobs");
            shutdown.cancelled().await;
            return Ok(());
        }
        let config = &self.settings.worker;
        let max_batch = config.max_batch.max(1);
        let window = Duration::from_millis(config.batch_window_ms);
        let prefetch = config.prefetch.max(1);
        let Some(mut subscription) = self.subscribe(&models, prefetch, &shutdown).await else {
            return Ok(());
        };
        tracing::info!(
            ?models,
            prefetch = config.prefetch,
            max_batch,
            batch_window_ms = config.batch_window_ms,
            concurrency = config.concurrency,
            "worker consuming"
        );

        let processor = Arc::new(Processor::new(
            self.backends.clone(),
            self.registry.clone(),
            self.settings.clone(),
        ));
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        // One interactive batch may run beyond `concurrency`: it is small (a few uploads), and
        // waiting for a bulk batch to finish would be most of a clinic's wait.
        let express = Arc::new(Semaphore::new(1));
        let mut running = JoinSet::new();
        // Pending batches by model and kind (interactive or not).
        let mut pending: HashMap<BatchKey, Pending> = HashMap::new();
        let mut ready = ReadyBatches::default();

        loop {
            let next_due = pending.values().map(|p| p.due).min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a batch task panicked");
                    }
                }
                permit = express.clone().acquire_owned(), if ready.0.front().is_some_and(|b| b.lane.is_interactive()) => {
                    let batch = ready.0.pop_front().expect("a ready batch");
                    start(&processor, &mut running, batch, permit.expect("never closed"));
                }
                permit = slots.clone().acquire_owned(), if !ready.0.is_empty() => {
                    let batch = ready.0.pop_front().expect("a ready batch");
                    start(&processor, &mut running, batch, permit.expect("never closed"));
                }
                () = sleep_until(next_due) => {
                    let now = Instant::now();
                    let due: Vec<BatchKey> = pending
                        .iter()
                        .filter(|(_, p)| p.due <= now)
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in due {
                        let batch = pending.remove(&key).expect("due batch");
                        ready.push(key, batch);
                    }
                }
                delivery = subscription.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let lane = delivery.message.priority();
                        let key = (delivery.message.model().to_owned(), lane);
                        let entry = pending.entry(key.clone()).or_insert_with(|| Pending {
                            deliveries: Vec::with_capacity(max_batch),
                            // A clinic waits for an interactive job: its batch goes now, with
                            // what else has arrived by then.
                            due: if lane.is_interactive() { Instant::now() } else { Instant::now() + window },
                        });
                        entry.deliveries.push(delivery);
                        if entry.deliveries.len() >= max_batch {
                            let batch = pending.remove(&key).expect("full batch");
                            ready.push(key, batch);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "job queue error; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => {
                        // The broker went away. What was received but not started goes back
                        // (or is redelivered by the broker once the connection is gone); the
                        // batches in progress finish and write their results; consuming
                        // resumes on a new connection when the broker answers again.
                        tracing::warn!("the job queue subscription closed; reconnecting");
                        hand_back(std::mem::take(&mut pending), ready.take_all()).await;
                        match self.subscribe(&models, prefetch, &shutdown).await {
                            Some(again) => subscription = again,
                            None => break,
                        }
                        tracing::info!(?models, "worker consuming again");
                    }
                },
            }
        }

        tracing::info!(
            in_flight = running.len(),
            "worker stopping: no new jobs; finishing the batches in progress"
        );
        hand_back(pending, ready.take_all()).await;
        running.join_all().await;
        drop(subscription);
        tracing::info!("worker stopped");
        Ok(())
    }
}

impl Worker {
    /// Subscribes to the lanes of `models`, retrying with backoff and jitter for as long as
    /// the broker does not answer; `None` when `shutdown` comes first.
    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
        shutdown: &CancellationToken,
    ) -> Option<Box<dyn Subscription>> {
        let mut attempt = 0u32;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                subscribed = self.backends.queue.subscribe(models, prefetch) => match subscribed {
                    Ok(subscription) => return Some(subscription),
                    Err(e) => {
                        let delay = reconnect_delay(attempt);
                        attempt = attempt.saturating_add(1);
                        tracing::warn!(
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "cannot subscribe to the job queue; retrying"
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                },
            }
        }
    }
}

/// Exponential backoff from 250 ms to 30 s, each delay drawn from its upper half (jitter), so
/// that the workers of a fleet do not reconnect in step.
fn reconnect_delay(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(250)
        .saturating_mul(1 << attempt.min(7))
        .min(Duration::from_secs(30));
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // A cheap, good-enough spread: the clock's sub-second noise.
    let noise = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    Duration::from_nanos(nanos / 2 + noise % (nanos / 2 + 1))
}

/// Processes `batch` on a task of its own, holding `permit` (its slot) until it is done.
fn start(
    processor: &Arc<Processor>,
    running: &mut JoinSet<()>,
    batch: Ready,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let processor = processor.clone();
    running.spawn(async move {
        processor
            .process(&batch.model, batch.lane, batch.deliveries)
            .await;
        drop(permit);
    });
}

/// Returns deliveries that were never started to the queue, for another worker.
async fn hand_back(pending: HashMap<BatchKey, Pending>, ready: Vec<Delivery>) {
    let waiting = pending.into_values().flat_map(|p| p.deliveries);
    for delivery in waiting.chain(ready) {
        let job_id = delivery.message.job_id();
        if let Err(e) = delivery.requeue().await {
            tracing::warn!(%job_id, error = %e, "could not hand a delivery back; the broker redelivers it");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_to_a_ceiling_with_jitter() {
        for attempt in 0..20 {
            let ceiling =
                Duration::from_millis(250 * (1 << attempt.min(7))).min(Duration::from_secs(30));
            let delay = reconnect_delay(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
    }
}
