//! Job queue: carries "screen this job" messages from the API to the workers, routed by model.
//!
//! A message carries ids only, never image bytes. Delivery is at least once: a worker
//! acknowledges a message after the job's result is written, and handles a message twice
//! harmlessly (the job store decides whether there is still work to do).

mod memory;
mod rabbitmq;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::job::JobId;

pub use memory::MemoryQueue;
pub use rabbitmq::RabbitMqQueue;

/// A message on the job queue. Versioned: a new shape gets a new variant, so that workers of
/// the previous release can still read what is in flight during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum JobMessage {
    /// Screen the image of job `job_id` with model `model`.
    #[serde(rename = "screen.v1")]
    ScreenV1 { job_id: JobId, model: String },
}

impl JobMessage {
    pub fn screen(job_id: JobId, model: impl Into<String>) -> Self {
        Self::ScreenV1 {
            job_id,
            model: model.into(),
        }
    }

    /// The model the message is routed by.
    pub fn model(&self) -> &str {
        match self {
            Self::ScreenV1 { model, .. } => model,
        }
    }

    pub fn job_id(&self) -> JobId {
        match self {
            Self::ScreenV1 { job_id, .. } => *job_id,
        }
    }
}

/// Errors of a job queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue backend error: {0:#}")]
    Backend(#[from] anyhow::Error),
}

/// A queue with one lane per model.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Publishes `message` on its model's lane and returns once the broker has taken
    /// responsibility for it (publisher confirm).
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError>;
    /// Starts consuming the lanes of `models`, holding at most `prefetch` unacknowledged
    /// deliveries of each lane at once (RabbitMQ's per-consumer prefetch; a busy model then
    /// never takes the place of another's batch).
    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError>;
    /// Answers whether the broker is reachable (readiness).
    async fn check(&self) -> Result<(), QueueError>;
    /// Whether messages survive a restart of this process. The in-process queue does not: the
    /// re-publisher then publishes every queued job again at start-up.
    fn is_durable(&self) -> bool;
    /// A short description for logs, without secrets.
    fn describe(&self) -> String;
}

/// A stream of deliveries.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the subscription was closed (broker gone, shut down).
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>>;
}

/// One message handed to a consumer, to be settled exactly once. A delivery dropped without
/// being settled goes back to its lane (as it would if the consumer died).
pub struct Delivery {
    pub message: JobMessage,
    /// True when the message was delivered before and not acknowledged (its consumer died or
    /// handed it back).
    pub redelivered: bool,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    /// Done with it: the message is removed.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.settle(Outcome::Ack).await
    }

    /// Hand it back to its lane, for another try.
    pub async fn requeue(self) -> Result<(), QueueError> {
        self.settle.settle(Outcome::Requeue).await
    }

    /// Give up on it: the message goes to the dead-letter queue.
    pub async fn dead_letter(self) -> Result<(), QueueError> {
        self.settle.settle(Outcome::DeadLetter).await
    }
}

/// The models of a subscription, each once, in the order given (a lane consumed twice would
/// get two prefetch windows, and RabbitMQ refuses a consumer tag used twice on a channel).
fn distinct_models(models: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    models
        .iter()
        .filter(|model| seen.insert(model.as_str()))
        .cloned()
        .collect()
}

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ack,
    Requeue,
    DeadLetter,
}

#[async_trait]
trait Settle: Send + Sync {
    async fn settle(&self, outcome: Outcome) -> Result<(), QueueError>;
}
