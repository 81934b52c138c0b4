//! The embedded job queue: in-process lanes, for a single `medinform serve` process; as on
//! RabbitMQ, an interactive and a bulk lane per model, the bulk lane ordered by rank.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Delivery, JobMessage, JobQueue, Outcome, QueueError, Settle, Subscription};
use crate::job::Priority;

/// A lane: a model and its interactive or bulk queue.
type LaneKey = (String, Priority);

#[derive(Debug, Default)]
struct State {
    lanes: HashMap<LaneKey, VecDeque<Envelope>>,
    dead_letters: Vec<JobMessage>,
}

fn lane_of(message: &JobMessage) -> LaneKey {
    (message.model().to_owned(), message.priority())
}

#[derive(Debug)]
struct Envelope {
    message: JobMessage,
    redelivered: bool,
}

/// Lanes in memory with the same delivery semantics as RabbitMQ: prefetch, acknowledgement,
/// redelivery of what a consumer drops, dead letters. Nothing survives the process, which the
/// re-publisher makes up for at start-up ([`JobQueue::is_durable`] is false).
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages that were dead-lettered, oldest first.
    pub fn dead_letters(&self) -> Vec<JobMessage> {
        self.lock().dead_letters.clone()
    }

    /// Messages waiting in the lanes of `model`.
    pub fn pending(&self, model: &str) -> usize {
        let state = self.lock();
        [Priority::Interactive, Priority::Bulk]
            .into_iter()
            .filter_map(|p| state.lanes.get(&(model.to_owned(), p)))
            .map(VecDeque::len)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a delivered message back at the front of its lane, marked redelivered.
    fn requeue(&self, message: JobMessage) {
        self.push(
            Envelope {
                message,
                redelivered: true,
            },
            true,
        );
    }

    /// Puts a message in its lane: a new one behind those of its rank or higher (a bulk lane
    /// is ordered by rank, first come first within a rank), a redelivered one at the front.
    fn push(&self, envelope: Envelope, front: bool) {
        let mut state = self.lock();
        let lane = state.lanes.entry(lane_of(&envelope.message)).or_default();
        if front {
            lane.push_front(envelope);
        } else {
            let rank = envelope.message.rank();
            let at = lane.partition_point(|e| e.message.rank() >= rank);
            lane.insert(at, envelope);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError> {
        self.push(
            Envelope {
                message: message.clone(),
                redelivered: false,
            },
            false,
        );
        Ok(())
    }

    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        Ok(Box::new(MemorySubscription {
            queue: self.clone(),
            // Interactive lanes first: `take` looks at them before any bulk lane.
            lanes: [Priority::Interactive, Priority::Bulk]
                .into_iter()
                .flat_map(|priority| {
                    super::distinct_models(models)
                        .into_iter()
                        .map(move |model| (model, priority))
                })
                .map(|lane| {
                    let credit = Arc::new(Semaphore::new(usize::from(prefetch.max(1))));
                    (lane, credit)
                })
                .collect(),
            next_lane: 0,
            unsettled: Arc::default(),
            next_tag: 0,
        }))
    }

    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "in-process queue".into()
    }
}

/// The deliveries of one subscription not settled yet, by delivery tag (in delivery order).
type Unsettled = Arc<Mutex<BTreeMap<u64, JobMessage>>>;

fn lock_unsettled(unsettled: &Unsettled) -> std::sync::MutexGuard<'_, BTreeMap<u64, JobMessage>> {
    unsettled.lock().unwrap_or_else(|e| e.into_inner())
}

struct MemorySubscription {
    queue: MemoryQueue,
    /// Each lane with its prefetch window: one permit per unacknowledged delivery; the
    /// interactive lanes first.
    lanes: Vec<(LaneKey, Arc<Semaphore>)>,
    /// Round robin over the lanes of a kind, so one busy model cannot starve another.
    next_lane: usize,
    /// Handed back to their lanes when the subscription closes, as RabbitMQ does when a
    /// consumer's channel closes.
    unsettled: Unsettled,
    next_tag: u64,
}

impl MemorySubscription {
    /// The next message of a lane with credit left, and the credit it takes: an interactive
    /// lane's if any has one (round robin over the models), else a bulk lane's.
    fn take(&mut self) -> Option<(Envelope, OwnedSemaphorePermit)> {
        let mut state = self.queue.lock();
        let interactive = self
            .lanes
            .iter()
            .take_while(|((_, p), _)| p.is_interactive())
            .count();
        for (start, len) in [
            (0, interactive),
            (interactive, self.lanes.len() - interactive),
        ] {
            for offset in 0..len {
                let index = start + (self.next_lane + offset) % len;
                let (key, credit) = &self.lanes[index];
                let Some(lane) = state.lanes.get_mut(key).filter(|lane| !lane.is_empty()) else {
                    continue;
                };
                let Ok(permit) = credit.clone().try_acquire_owned() else {
                    continue;
                };
                let envelope = lane.pop_front().expect("the lane is not empty");
                self.next_lane = index - start + 1;
                return Some((envelope, permit));
            }
        }
        None
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        if self.lanes.is_empty() {
            return None; // nothing can ever arrive (as a RabbitMQ channel without consumers)
        }
        loop {
            // Register interest before looking, so that a publish or a settlement between the
            // look and the wait is not missed.
            let changed = self.queue.changed.clone();
            let notified = changed.notified();
            if let Some((envelope, permit)) = self.take() {
                let tag = self.next_tag;
                self.next_tag += 1;
                lock_unsettled(&self.unsettled).insert(tag, envelope.message.clone());
                return Some(Ok(Delivery {
                    redelivered: envelope.redelivered,
                    settle: Box::new(MemorySettle {
                        queue: self.queue.clone(),
                        unsettled: self.unsettled.clone(),
                        tag,
                        permit: Some(permit),
                    }),
                    message: envelope.message,
                }));
            }
            notified.await;
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        let unsettled = std::mem::take(&mut *lock_unsettled(&self.unsettled));
        // Newest first to the front of their lanes, so they keep their order.
        for message in unsettled.into_values().rev() {
            self.queue.requeue(message);
        }
    }
}

/// Settles one delivery: the first settlement takes its message out of `unsettled`.
struct MemorySettle {
    queue: MemoryQueue,
    unsettled: Unsettled,
    tag: u64,
    /// The delivery's place in its lane's prefetch window, freed when it is settled.
    permit: Option<OwnedSemaphorePermit>,
}

impl MemorySettle {
    fn take(&self) -> Option<JobMessage> {
        lock_unsettled(&self.unsettled).remove(&self.tag)
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn settle(&self, outcome: Outcome) -> Result<(), QueueError> {
        let message = self.take().ok_or_else(|| {
            anyhow::anyhow!(
                "the subscription closed before the delivery was settled; it was redelivered"
            )
        })?;
        match outcome {
            Outcome::Ack => {}
            Outcome::Requeue => self.queue.requeue(message),
            Outcome::DeadLetter => self.queue.lock().dead_letters.push(message),
        }
        Ok(())
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if let Some(message) = self.take() {
            self.queue.requeue(message);
        }
        // Credit came back: a subscription waiting for it may take its next delivery.
        drop(self.permit.take());
        self.queue.changed.notify_waiters();
    }
}
