//! The job queue: the in-process queue and RabbitMQ held to the same tests.

use medinform_core::job::{JobId, Priority};
use medinform_core::queue::{JobMessage, JobQueue, MAX_RANK};

use crate::support::{QueueKind, TestQueue, expect_delivery, expect_no_delivery, models};

macro_rules! each_job_queue {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::QueueKind::Memory).await;
                }
            )*
        }
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::QueueKind::RabbitMq).await;
                }
            )*
        }
    };
}

each_job_queue!(
    a_message_published_before_anyone_subscribed_is_delivered,
    each_model_has_its_own_lane,
    prefetch_bounds_the_unacknowledged_deliveries,
    prefetch_bounds_each_lane_on_its_own,
    a_requeued_message_is_redelivered,
    a_dropped_delivery_is_redelivered,
    closing_a_subscription_hands_its_deliveries_back,
    a_dead_lettered_message_lands_in_the_dead_letter_queue,
    an_acknowledged_message_is_gone,
    a_model_named_twice_is_one_lane,
    a_subscription_to_no_lane_ends_at_once,
    the_bulk_lane_has_a_prefetch_window_of_its_own_and_goes_by_rank,
);

fn screen(model: &str) -> JobMessage {
    JobMessage::screen(JobId::new(), model)
}

async fn a_message_published_before_anyone_subscribed_is_delivered(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    q.queue.check().await.unwrap();
    let message = screen("malaria");
    q.queue.publish(&message).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message, message);
    assert!(!delivery.redelivered);
    delivery.ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;
}

async fn each_model_has_its_own_lane(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let mut malaria = q.queue.subscribe(&models(&["malaria"]), 10).await.unwrap();
    let mut tuberculosis = q
        .queue
        .subscribe(&models(&["tuberculosis"]), 10)
        .await
        .unwrap();
    let mut both = q
        .queue
        .subscribe(&models(&["retinopathy", "malaria"]), 10)
        .await
        .unwrap();
    let tb = screen("tuberculosis");
    q.queue.publish(&tb).await.unwrap();
    let got = expect_delivery(&mut tuberculosis).await;
    assert_eq!(got.message, tb);
    got.ack().await.unwrap();
    expect_no_delivery(&mut malaria).await;

    let eye = screen("retinopathy");
    q.queue.publish(&eye).await.unwrap();
    let got = expect_delivery(&mut both).await;
    assert_eq!(got.message, eye);
    got.ack().await.unwrap();
    expect_no_delivery(&mut malaria).await;
    expect_no_delivery(&mut tuberculosis).await;
}

async fn prefetch_bounds_the_unacknowledged_deliveries(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let sent: Vec<JobMessage> = (0..3).map(|_| screen("malaria")).collect();
    for message in &sent {
        q.queue.publish(message).await.unwrap();
    }
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 2).await.unwrap();
    let first = expect_delivery(&mut subscription).await;
    let second = expect_delivery(&mut subscription).await;
    expect_no_delivery(&mut subscription).await;
    assert_eq!(first.message, sent[0], "first in, first out");
    assert_eq!(second.message, sent[1]);
    first.ack().await.unwrap();
    let third = expect_delivery(&mut subscription).await;
    assert_eq!(third.message, sent[2]);
    second.ack().await.unwrap();
    third.ack().await.unwrap();
}

/// The prefetch window is per lane: a backlog of one model never keeps another model's
/// message from a worker that serves both.
async fn prefetch_bounds_each_lane_on_its_own(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let malaria: Vec<JobMessage> = (0..2).map(|_| screen("malaria")).collect();
    for message in &malaria {
        q.queue.publish(message).await.unwrap();
    }
    let tb = screen("tuberculosis");
    q.queue.publish(&tb).await.unwrap();
    let mut subscription = q
        .queue
        .subscribe(&models(&["malaria", "tuberculosis"]), 1)
        .await
        .unwrap();
    let mut held = vec![
        expect_delivery(&mut subscription).await,
        expect_delivery(&mut subscription).await,
    ];
    expect_no_delivery(&mut subscription).await;
    held.sort_by_key(|d| d.message.model().to_owned());
    assert_eq!(held[0].message, malaria[0]);
    assert_eq!(held[1].message, tb);
    // Acknowledging the tuberculosis job frees nothing for malaria.
    held.pop().unwrap().ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;
    held.pop().unwrap().ack().await.unwrap();
    assert_eq!(expect_delivery(&mut subscription).await.message, malaria[1]);
}

async fn a_requeued_message_is_redelivered(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let message = screen("malaria");
    q.queue.publish(&message).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    let delivery = expect_delivery(&mut subscription).await;
    assert!(!delivery.redelivered);
    delivery.requeue().await.unwrap();
    let again = expect_delivery(&mut subscription).await;
    assert_eq!(again.message, message);
    assert!(again.redelivered);
    again.ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;
}

async fn a_dropped_delivery_is_redelivered(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let message = screen("malaria");
    q.queue.publish(&message).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    drop(expect_delivery(&mut subscription).await);
    let again = expect_delivery(&mut subscription).await;
    assert_eq!(again.message, message);
    assert!(again.redelivered);
    again.ack().await.unwrap();
}

async fn closing_a_subscription_hands_its_deliveries_back(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let message = screen("malaria");
    q.queue.publish(&message).await.unwrap();
    let mut first = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    let held = expect_delivery(&mut first).await;
    // The consumer goes away (its channel closes) while still holding the delivery.
    drop(first);
    let mut second = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    let again = expect_delivery(&mut second).await;
    assert_eq!(again.message, message);
    assert!(again.redelivered);
    // The delivery of the closed subscription can no longer be settled: it was handed back.
    assert!(
        held.ack().await.is_err(),
        "{kind:?}: settled after its subscription closed"
    );
    again.ack().await.unwrap();
    expect_no_delivery(&mut second).await;
}

async fn a_dead_lettered_message_lands_in_the_dead_letter_queue(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let message = screen("malaria");
    let other = screen("tuberculosis");
    q.queue.publish(&message).await.unwrap();
    q.queue.publish(&other).await.unwrap();
    let mut subscription = q
        .queue
        .subscribe(&models(&["malaria", "tuberculosis"]), 2)
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..2 {
        let delivery = expect_delivery(&mut subscription).await;
        dead.push(delivery.message.clone());
        delivery.dead_letter().await.unwrap();
    }
    let mut landed = q.take_dead_letters(2).await;
    landed.sort_by_key(|m| m.job_id());
    dead.sort_by_key(|m| m.job_id());
    assert_eq!(landed, dead);
    expect_no_delivery(&mut subscription).await;
}

async fn an_acknowledged_message_is_gone(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    q.queue.publish(&screen("malaria")).await.unwrap();
    let mut first = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    let delivery = expect_delivery(&mut first).await;
    delivery.ack().await.unwrap();
    drop(first);
    let mut second = q.queue.subscribe(&models(&["malaria"]), 1).await.unwrap();
    expect_no_delivery(&mut second).await;
    assert_eq!(q.take_dead_letters(0).await, vec![]);
}

/// `worker.models = ["malaria", "malaria"]` (a slip in a comma-separated variable) consumes the
/// lane once, with one prefetch window.
async fn a_model_named_twice_is_one_lane(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let sent: Vec<JobMessage> = (0..2).map(|_| screen("malaria")).collect();
    for message in &sent {
        q.queue.publish(message).await.unwrap();
    }
    let mut subscription = q
        .queue
        .subscribe(&models(&["malaria", "malaria"]), 1)
        .await
        .unwrap();
    let first = expect_delivery(&mut subscription).await;
    assert_eq!(first.message, sent[0]);
    expect_no_delivery(&mut subscription).await;
    first.ack().await.unwrap();
    let second = expect_delivery(&mut subscription).await;
    assert_eq!(second.message, sent[1]);
    second.ack().await.unwrap();
}

/// Nothing can ever arrive on a subscription to no lane: it ends rather than waiting forever.
async fn a_subscription_to_no_lane_ends_at_once(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    q.queue.publish(&screen("malaria")).await.unwrap();
    let mut subscription = q.queue.subscribe(&[], 1).await.unwrap();
    let next = tokio::time::timeout(crate::support::PATIENCE, subscription.next()).await;
    assert!(matches!(next, Ok(None)), "{next:?}");
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ only

/// The publisher's channel breaks (here: an operator deleted the exchange, which closes the
/// channel on the next publish); `publish` reconnects, declares the topology again and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publish_reconnects_once_when_its_channel_broke() {
    use lapin::options::ExchangeDeleteOptions;
    let q = TestQueue::new(QueueKind::RabbitMq).await;
    q.queue.publish(&screen("malaria")).await.unwrap();

    let connection = lapin::Connection::connect(&crate::support::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            format!("{}.jobs", q.prefix()).into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let after = screen("malaria");
    q.queue.publish(&after).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    let first = expect_delivery(&mut subscription).await;
    let second = expect_delivery(&mut subscription).await;
    assert_eq!(
        second.message, after,
        "published after the reconnect, and routed"
    );
    first.ack().await.unwrap();
    second.ack().await.unwrap();
    assert!(q.rabbitmq().describe().contains(q.prefix()));
}

/// The publisher's connection to the broker breaks (a network failure between two
/// publishes); the next `publish` reconnects and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publish_reconnects_once_when_its_connection_broke() {
    let link = crate::support::BrokenLink::to_rabbitmq().await;
    let q = TestQueue::new(QueueKind::RabbitMq).await;
    let prefix = q.prefix().to_owned();
    let through_link = medinform_core::queue::RabbitMqQueue::connect(&link.url, &prefix)
        .await
        .unwrap();
    through_link.publish(&screen("malaria")).await.unwrap();

    link.cut();
    let after = screen("malaria");
    through_link.publish(&after).await.unwrap();
    through_link.check().await.unwrap();

    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    let first = expect_delivery(&mut subscription).await;
    let second = expect_delivery(&mut subscription).await;
    assert_eq!(second.message, after);
    first.ack().await.unwrap();
    second.ack().await.unwrap();
}

/// An operator deleted a model's queue: the publisher's memory of having declared it is
/// stale, the unroutable message comes back, and `publish` declares the lane again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publish_declares_a_deleted_lane_again() {
    let q = TestQueue::new(QueueKind::RabbitMq).await;
    q.queue.publish(&screen("malaria")).await.unwrap();
    let connection = lapin::Connection::connect(&crate::support::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            format!("{}.jobs.malaria", q.prefix()).into(),
            Default::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let after = screen("malaria");
    q.queue.publish(&after).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(
        delivery.message, after,
        "the first message went with its queue"
    );
    delivery.ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;
}

/// A message the worker cannot read (another release's, or garbage) is put aside for a person
/// in the dead-letter queue, never delivered and never redelivered in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_an_undecodable_message_is_dead_lettered() {
    let q = TestQueue::new(QueueKind::RabbitMq).await;
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    let connection = lapin::Connection::connect(&crate::support::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            format!("{}.jobs", q.prefix()).into(),
            "malaria".into(),
            Default::default(),
            br#"{"type":"screen.v9","job":"?"}"#,
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();
    let good = screen("malaria");
    q.queue.publish(&good).await.unwrap();

    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message, good, "the unreadable message was skipped");
    delivery.ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;

    let connection = lapin::Connection::connect(&crate::support::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = q.rabbitmq().dead_letter_queue();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let message = loop {
        if let Some(message) = channel
            .basic_get(dead.as_str().into(), Default::default())
            .await
            .unwrap()
        {
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(message.delivery.data, br#"{"type":"screen.v9","job":"?"}"#);
    connection.close(200, "done".into()).await.unwrap();
}

/// A drive's bulk backlog never holds back an interactive job (each lane has its own prefetch
/// window), and within the bulk lane a higher rank (a tenant with a short backlog) goes first,
/// first come first within a rank.
async fn the_bulk_lane_has_a_prefetch_window_of_its_own_and_goes_by_rank(kind: QueueKind) {
    let q = TestQueue::new(kind).await;
    let bulk = |rank| JobMessage::screen_in(JobId::new(), "malaria", Priority::Bulk, rank);
    let deep: Vec<JobMessage> = (0..3).map(|_| bulk(0)).collect();
    let short = [bulk(MAX_RANK), bulk(MAX_RANK)];
    for message in deep.iter().chain(&short) {
        q.queue.publish(message).await.unwrap();
    }
    let clinic = screen("malaria");
    q.queue.publish(&clinic).await.unwrap();
    let mut subscription = q.queue.subscribe(&models(&["malaria"]), 2).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(expect_delivery(&mut subscription).await);
    }
    // Two bulk deliveries fill the bulk window; the interactive lane's is open.
    expect_no_delivery(&mut subscription).await;
    let (interactive, bulk_held): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|d| d.message.priority() == Priority::Interactive);
    assert_eq!(interactive.len(), 1);
    assert_eq!(interactive[0].message, clinic);
    let got: Vec<&JobMessage> = bulk_held.iter().map(|d| &d.message).collect();
    assert_eq!(
        got,
        [&short[0], &short[1]],
        "the higher rank first, in order"
    );
    for delivery in interactive.into_iter().chain(bulk_held) {
        delivery.ack().await.unwrap();
    }
    let mut rest = Vec::new();
    for _ in 0..3 {
        let delivery = expect_delivery(&mut subscription).await;
        rest.push(delivery.message.clone());
        delivery.ack().await.unwrap();
    }
    assert_eq!(rest, deep);
    expect_no_delivery(&mut subscription).await;
}
