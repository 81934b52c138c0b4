//! Job queue: carries "screen this job" messages from the API to the workers, routed by model.
//!
//! Each model has two lanes: `interactive` (a single upload, which a clinic waits for) and
//! `bulk` (a screening drive's images). A worker takes interactive jobs first; within the bulk
//! lane a message's [`JobMessage::rank`] puts a tenant with a short backlog ahead of one whose
//! drive has queued thousands, so that one programme cannot starve another.
//!
//! A message carries ids only, never image bytes. Delivery is at least once: a worker
//! acknowledges a message after the job's result is written, and handles a message twice
//! harmlessly (the job store decides whether there is still work to do).

mod memory;
mod rabbitmq;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::job::{JobId, Priority};

pub use memory::MemoryQueue;
pub use rabbitmq::RabbitMqQueue;

/// A message on the job queue. Versioned: a new shape gets a new variant, so that workers of
/// the previous release can still read what is in flight during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum JobMessage {
    /// Screen the image of job `job_id` with model `model`. `priority` and `rank` came after
    /// the first release: a message without them is interactive, as all were then.
    #[serde(rename = "screen.v1")]
    ScreenV1 {
        job_id: JobId,
        model: String,
        #[serde(default, skip_serializing_if = "Priority::is_interactive")]
        priority: Priority,
        #[serde(default, skip_serializing_if = "is_zero")]
        rank: u8,
    },
}

fn is_zero(rank: &u8) -> bool {
    *rank == 0
}

/// The highest [`JobMessage::rank`] in the bulk lane (RabbitMQ's `x-max-priority`: few levels,
/// as RabbitMQ advises).
pub const MAX_RANK: u8 = 3;

/// The bulk rank of a job whose tenant has `queued` jobs waiting already: the shorter the
/// tenant's backlog, the sooner its jobs are taken.
pub fn bulk_rank(queued: u64) -> u8 {
    match queued {
        0..100 => 3,
        100..1_000 => 2,
        1_000..10_000 => 1,
        _ => 0,
    }
}

impl JobMessage {
    /// An interactive job's message.
    pub fn screen(job_id: JobId, model: impl Into<String>) -> Self {
        Self::screen_in(job_id, model, Priority::Interactive, 0)
    }

    /// A job's message in lane `priority`, with `rank` within the bulk lane (at most
    /// [`MAX_RANK`]; ignored in the interactive lane).
    pub fn screen_in(
        job_id: JobId,
        model: impl Into<String>,
        priority: Priority,
        rank: u8,
    ) -> Self {
        Self::ScreenV1 {
            job_id,
            model: model.into(),
            priority,
            rank: match priority {
                Priority::Interactive => 0,
                Priority::Bulk => rank.min(MAX_RANK),
            },
        }
    }

    /// The lane it travels in.
    pub fn priority(&self) -> Priority {
        match self {
            Self::ScreenV1 { priority, .. } => *priority,
        }
    }

    /// Its place within the bulk lane: higher goes first.
    pub fn rank(&self) -> u8 {
        match self {
            Self::ScreenV1 { rank, .. } => *rank,
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
    /// Publishes `message` on its model's lane (interactive or bulk) and returns once the broker has taken
    /// responsibility for it (publisher confirm).
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError>;
    /// Starts consuming both lanes of `models`, holding at most `prefetch` unacknowledged
    /// deliveries of each lane at once (RabbitMQ's per-consumer prefetch; a busy model then
    /// never takes the place of another's batch, nor a drive's bulk lane that of a clinic's
    /// upload).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_the_first_release_is_interactive_and_interactive_ones_read_as_before() {
        let id = JobId::new();
        let first: JobMessage = serde_json::from_value(serde_json::json!({
            "type": "screen.v1", "job_id": id, "model": "malaria"
        }))
        .unwrap();
        assert_eq!(first, JobMessage::screen(id, "malaria"));
        assert_eq!(first.priority(), Priority::Interactive);
        // What a worker of the first release reads: the same fields, nothing more.
        assert_eq!(
            serde_json::to_value(JobMessage::screen(id, "malaria")).unwrap(),
            serde_json::json!({"type": "screen.v1", "job_id": id, "model": "malaria"})
        );
        let bulk = JobMessage::screen_in(id, "malaria", Priority::Bulk, 9);
        assert_eq!(bulk.rank(), MAX_RANK);
        let again: JobMessage =
            serde_json::from_slice(&serde_json::to_vec(&bulk).unwrap()).unwrap();
        assert_eq!(again, bulk);
        assert_eq!(
            JobMessage::screen_in(id, "m", Priority::Interactive, 3).rank(),
            0
        );
    }

    #[test]
    fn a_short_backlog_ranks_higher() {
        assert_eq!(bulk_rank(0), MAX_RANK);
        assert!(bulk_rank(500) < bulk_rank(50));
        assert!(bulk_rank(5_000) < bulk_rank(500));
        assert_eq!(bulk_rank(100_000), 0);
    }
}
