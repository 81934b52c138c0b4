//! The distributed job queue: RabbitMQ.
//!
//! Topology (all names start with the configured prefix, `medinform` by default):
//! - `medinform.jobs`: a durable direct exchange; a message's routing key is its model id
//!   (interactive) or `bulk.<model id>`.
//! - `medinform.jobs.<model>`: the model's interactive lane, a durable queue bound with the model
//!   id, so that a worker consumes only the models it serves (a GPU worker for the heavy ones,
//!   CPU workers for the light ones). Its dead letters go to `medinform.dead`.
//! - `medinform.bulk.<model>`: the model's bulk lane, a durable priority queue
//!   (`x-max-priority` [`MAX_RANK`]) bound with `bulk.<model>`; a message's AMQP priority is its
//!   rank, so a tenant with a short backlog overtakes a drive's deep one. A worker consumes
//!   both lanes, each with its own prefetch window, and runs interactive jobs first.
//! - `medinform.dead`: a durable fanout exchange and its durable queue `medinform.dead`, where
//!   messages that kept failing end up for a person to look at.
//!
//! Whoever publishes first to a model declares its lane, so a message published before any
//! worker started is kept, not dropped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::SelectAll;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::Mutex;

use super::{Delivery, JobMessage, JobQueue, MAX_RANK, Outcome, QueueError, Settle, Subscription};
use crate::job::Priority;

/// One AMQP connection per process, one confirm-mode channel for publishing, and a channel per
/// subscription. A broken connection is replaced on the next use.
pub struct RabbitMqQueue {
    url: String,
    prefix: String,
    publisher: Mutex<Option<Publisher>>,
}

struct Publisher {
    connection: Connection,
    channel: Channel,
    /// Lanes (queue names) already declared on this connection.
    declared: HashSet<String>,
}

impl std::fmt::Debug for RabbitMqQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqQueue")
            .field("url", &crate::config::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RabbitMqQueue {
    /// Connects, and declares the shared part of the topology. Fails when the broker cannot be
    /// reached, so that a misconfigured process stops at start-up with a clear message.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let queue = Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            publisher: Mutex::new(None),
        };
        let mut publisher = queue.publisher.lock().await;
        *publisher = Some(queue.open_publisher().await?);
        drop(publisher);
        Ok(queue)
    }

    fn exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The queue of `model`'s lane `priority`.
    fn lane(&self, model: &str, priority: Priority) -> String {
        match priority {
            Priority::Interactive => format!("{}.jobs.{model}", self.prefix),
            Priority::Bulk => format!("{}.bulk.{model}", self.prefix),
        }
    }

    /// The routing key of `model`'s lane `priority` on the jobs exchange.
    fn routing_key(model: &str, priority: Priority) -> String {
        match priority {
            Priority::Interactive => model.to_owned(),
            Priority::Bulk => format!("bulk.{model}"),
        }
    }

    /// The dead-letter queue (and exchange) name.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    async fn open_channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .with_context(|| {
                format!(
                    "connecting to RabbitMQ at {}",
                    crate::config::redact_url(&self.url)
                )
            })?;
        let channel = connection
            .create_channel()
            .await
            .context("opening an AMQP channel")?;
        self.declare_shared(&channel).await?;
        Ok((connection, channel))
    }

    async fn open_publisher(&self) -> anyhow::Result<Publisher> {
        let (connection, channel) = self.open_channel().await?;
        // Publisher confirms: `publish` returns only once the broker has the message.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(Publisher {
            connection,
            channel,
            declared: HashSet::new(),
        })
    }

    async fn declare_shared(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .context("declaring the jobs exchange")?;
        let dead = self.dead_letter_queue();
        channel
            .exchange_declare(
                dead.clone().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await
            .context("declaring the dead-letter exchange")?;
        channel
            .queue_declare(
                dead.clone().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .context("declaring the dead-letter queue")?;
        channel
            .queue_bind(
                dead.clone().into(),
                dead.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the dead-letter queue")?;
        Ok(())
    }

    async fn declare_lane(
        &self,
        channel: &Channel,
        model: &str,
        priority: Priority,
    ) -> anyhow::Result<()> {
        let lane = self.lane(model, priority);
        let mut arguments = FieldTable::default();
        // `basic.nack` without requeue sends the message here instead of dropping it.
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_queue().into()),
        );
        if priority == Priority::Bulk {
            arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(MAX_RANK));
        }
        channel
            .queue_declare(
                lane.clone().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .with_context(|| format!("declaring queue {lane}"))?;
        channel
            .queue_bind(
                lane.clone().into(),
                self.exchange().into(),
                Self::routing_key(model, priority).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding queue {lane}"))?;
        Ok(())
    }

    async fn try_publish(
        &self,
        publisher: &mut Publisher,
        message: &JobMessage,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let (model, priority) = (message.model(), message.priority());
        let lane = self.lane(model, priority);
        if !publisher.declared.contains(&lane) {
            self.declare_lane(&publisher.channel, model, priority)
                .await?;
            publisher.declared.insert(lane.clone());
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent: survives a broker restart
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message.job_id().to_string()));
        if priority == Priority::Bulk {
            properties = properties.with_priority(message.rank());
        }
        let confirm = publisher
            .channel
            .basic_publish(
                self.exchange().into(),
                Self::routing_key(model, priority).into(),
                // mandatory: an unroutable message comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .context("publishing")?
            .await
            .context("waiting for the publisher confirm")?;
        anyhow::ensure!(confirm.is_ack(), "RabbitMQ refused the message (nack)");
        anyhow::ensure!(
            confirm.take_message().is_none(),
            "RabbitMQ could not route the message to queue {lane}"
        );
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RabbitMqQueue {
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(message).context("encoding the message")?;
        let mut guard = self.publisher.lock().await;
        // One retry on a fresh connection: the previous one may have died since its last use.
        for attempt in 0..2 {
            let healthy = guard.as_ref().is_some_and(|p| {
                p.connection.status().connected() && p.channel.status().connected()
            });
            if !healthy {
                *guard = Some(self.open_publisher().await?);
            }
            let publisher = guard.as_mut().expect("publisher was just opened");
            match self.try_publish(publisher, message, &payload).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 => {
                    tracing::warn!(error = %format!("{e:#}"), "publish failed; reconnecting");
                    *guard = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        let (connection, channel) = self.open_channel().await?;
        // Per consumer, that is per lane (RabbitMQ's `global` prefetch, one window for the
        // whole channel, is deprecated and refused by default since RabbitMQ 4.3).
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch")?;
        let mut consumers = SelectAll::new();
        for model in &super::distinct_models(models) {
            for priority in [Priority::Interactive, Priority::Bulk] {
                self.declare_lane(&channel, model, priority).await?;
                let lane = self.lane(model, priority);
                let consumer: Consumer = channel
                    .basic_consume(
                        lane.clone().into(),
                        format!(
                            "medinform-worker-{}-{model}-{}",
                            std::process::id(),
                            priority.as_str()
                        )
                        .into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("consuming {lane}"))?;
                consumers.push(consumer);
            }
        }
        Ok(Box::new(RabbitMqSubscription {
            _connection: connection,
            _channel: channel,
            consumers,
        }))
    }

    async fn check(&self) -> Result<(), QueueError> {
        let mut guard = self.publisher.lock().await;
        let healthy = guard
            .as_ref()
            .is_some_and(|p| p.connection.status().connected() && p.channel.status().connected());
        if !healthy {
            *guard = Some(self.open_publisher().await?);
        }
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "RabbitMQ at {} (prefix {})",
            crate::config::redact_url(&self.url),
            self.prefix
        )
    }
}

struct RabbitMqSubscription {
    // Kept so that the connection and channel live as long as the subscription; closing them
    // hands every unacknowledged delivery back to the broker.
    _connection: Connection,
    _channel: Channel,
    consumers: SelectAll<Consumer>,
}

#[async_trait]
impl Subscription for RabbitMqSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        loop {
            let delivery = match self.consumers.next().await? {
                Ok(delivery) => delivery,
                Err(e) => {
                    return Some(Err(anyhow::Error::new(e)
                        .context("receiving from RabbitMQ")
                        .into()));
                }
            };
            match serde_json::from_slice::<JobMessage>(&delivery.data) {
                Ok(message) => {
                    return Some(Ok(Delivery {
                        message,
                        redelivered: delivery.redelivered,
                        settle: Box::new(RabbitMqSettle {
                            acker: delivery.acker,
                            settled: AtomicBool::new(false),
                        }),
                    }));
                }
                Err(e) => {
                    // Not ours to interpret: keep it for a person, never loop on it.
                    tracing::error!(error = %e, "undecodable message dead-lettered");
                    let nack = BasicNackOptions {
                        requeue: false,
                        ..BasicNackOptions::default()
                    };
                    if let Err(e) = delivery.acker.nack(nack).await {
                        return Some(Err(anyhow::Error::new(e)
                            .context("dead-lettering an undecodable message")
                            .into()));
                    }
                }
            }
        }
    }
}

struct RabbitMqSettle {
    acker: lapin::Acker,
    settled: AtomicBool,
}

#[async_trait]
impl Settle for RabbitMqSettle {
    async fn settle(&self, outcome: Outcome) -> Result<(), QueueError> {
        self.settled.store(true, Ordering::SeqCst);
        let result = match outcome {
            Outcome::Ack => self.acker.ack(BasicAckOptions::default()).await,
            Outcome::Requeue | Outcome::DeadLetter => {
                self.acker
                    .nack(BasicNackOptions {
                        requeue: outcome == Outcome::Requeue,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        // `false`: the channel closed first, and RabbitMQ has already put the message back.
        if !result.context("settling a delivery")? {
            return Err(anyhow::anyhow!(
                "the channel closed before the delivery was settled; RabbitMQ redelivers it"
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for RabbitMqSettle {
    /// A delivery dropped unsettled goes back to its lane now, not when the channel closes
    /// (until then it would hold one of the subscription's prefetch slots).
    fn drop(&mut self) {
        if self.settled.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the channel closes with it, which requeues the message
        };
        let acker = self.acker.clone();
        runtime.spawn(async move {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(e) = acker.nack(requeue).await {
                tracing::warn!(error = %e, "could not hand back a dropped delivery");
            }
        });
    }
}
