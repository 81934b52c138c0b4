//! The re-publisher: no accepted job is lost when its publish failed or its broker lost it.
//! Run on both deployments: PostgreSQL with RabbitMQ, and SQLite with the in-process queue.

use std::time::Duration;

use medinform_core::config::JobsConfig;
use medinform_core::db::Claim;
use medinform_core::job::JobStatus;
use medinform_core::queue::JobMessage;
use medinform_core::republish::Republisher;

use crate::support::{
    QueueKind, StoreKind, TestJobStore, TestQueue, expect_delivery, expect_no_delivery, models,
    new_job,
};

macro_rules! each_deployment {
    ($($name:ident),* $(,)?) => {
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    use crate::support::{QueueKind, StoreKind};
                    super::$name(StoreKind::Postgres, QueueKind::RabbitMq).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    use crate::support::{QueueKind, StoreKind};
                    super::$name(StoreKind::Sqlite, QueueKind::Memory).await;
                }
            )*
        }
    };
}

each_deployment!(
    a_job_never_published_is_published_once_old_enough,
    a_confirmed_fresh_job_is_not_published_again,
    a_confirmed_job_left_queued_too_long_is_published_again,
    a_job_whose_lease_ran_out_is_taken_back_and_published,
    the_start_up_sweep_publishes_every_queued_job,
);

/// Seconds before a never-confirmed job is published again, in these tests.
const UNCONFIRMED_AFTER: Duration = Duration::from_secs(1);

fn config(stale_after_secs: u64) -> JobsConfig {
    JobsConfig {
        republish_unconfirmed_after_secs: UNCONFIRMED_AFTER.as_secs(),
        republish_stale_after_secs: stale_after_secs,
        ..JobsConfig::default()
    }
}

struct Deployment {
    db: TestJobStore,
    q: TestQueue,
    republisher: Republisher,
}

async fn deployment(store: StoreKind, queue: QueueKind, stale_after_secs: u64) -> Deployment {
    let db = TestJobStore::new(store).await;
    let q = TestQueue::new(queue).await;
    let republisher = Republisher::new(db.store.clone(), q.queue.clone(), config(stale_after_secs));
    Deployment { db, q, republisher }
}

async fn past(age: Duration) {
    tokio::time::sleep(age + Duration::from_millis(200)).await;
}

async fn a_job_never_published_is_published_once_old_enough(store: StoreKind, queue: QueueKind) {
    let d = deployment(store, queue, 3600).await;
    // The API committed the row, then its publish failed.
    let job = d.db.store.insert(&new_job("malaria")).await.unwrap();
    let mut subscription = d.q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();

    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0, "too young");
    expect_no_delivery(&mut subscription).await;

    past(UNCONFIRMED_AFTER).await;
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 1);
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message, JobMessage::screen(job.id, "malaria"));
    delivery.ack().await.unwrap();

    // Confirmed now: later sweeps leave it alone.
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0);
    expect_no_delivery(&mut subscription).await;
}

async fn a_confirmed_fresh_job_is_not_published_again(store: StoreKind, queue: QueueKind) {
    let d = deployment(store, queue, 3600).await;
    let job = d.db.store.insert(&new_job("malaria")).await.unwrap();
    let message = JobMessage::screen(job.id, "malaria");
    d.q.queue.publish(&message).await.unwrap();
    d.db.store.mark_published(job.id).await.unwrap();
    let mut subscription = d.q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();

    past(UNCONFIRMED_AFTER).await;
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0);
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message, message, "the one original message");
    delivery.ack().await.unwrap();
    expect_no_delivery(&mut subscription).await;
}

async fn a_confirmed_job_left_queued_too_long_is_published_again(
    store: StoreKind,
    queue: QueueKind,
) {
    // A broker that lost the message (restarted without its disk): after `stale_after` the
    // still-queued job is published again.
    let d = deployment(store, queue, 1).await;
    let job = d.db.store.insert(&new_job("tuberculosis")).await.unwrap();
    d.db.store.mark_published(job.id).await.unwrap();
    let mut subscription =
        d.q.queue
            .subscribe(&models(&["tuberculosis"]), 4)
            .await
            .unwrap();
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0);
    past(Duration::from_secs(1)).await;
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 1);
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message, JobMessage::screen(job.id, "tuberculosis"));
    delivery.ack().await.unwrap();
}

async fn a_job_whose_lease_ran_out_is_taken_back_and_published(store: StoreKind, queue: QueueKind) {
    let d = deployment(store, queue, 3600).await;
    let job = d.db.store.insert(&new_job("malaria")).await.unwrap();
    d.db.store.mark_published(job.id).await.unwrap();
    // A worker took it and died; its lease runs out.
    let claim =
        d.db.store
            .claim(job.id, Duration::from_millis(1), false)
            .await
            .unwrap();
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
    let mut subscription = d.q.queue.subscribe(&models(&["malaria"]), 4).await.unwrap();
    past(UNCONFIRMED_AFTER).await;
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 1);
    assert_eq!(
        d.db.store.get(job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let delivery = expect_delivery(&mut subscription).await;
    assert_eq!(delivery.message.job_id(), job.id);
    delivery.ack().await.unwrap();
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0);
}

async fn the_start_up_sweep_publishes_every_queued_job(store: StoreKind, queue: QueueKind) {
    let d = deployment(store, queue, 3600).await;
    let fresh = d.db.store.insert(&new_job("malaria")).await.unwrap();
    let confirmed = d.db.store.insert(&new_job("malaria")).await.unwrap();
    d.db.store.mark_published(confirmed.id).await.unwrap();
    let processing = d.db.store.insert(&new_job("malaria")).await.unwrap();
    d.db.store
        .claim(processing.id, Duration::from_secs(300), false)
        .await
        .unwrap();
    let mut subscription =
        d.q.queue
            .subscribe(&models(&["malaria"]), 10)
            .await
            .unwrap();

    // What a single process with the in-process queue does when it starts: every job that is
    // not finished was lost with the previous process's queue. It takes what was stamped before
    // the millisecond it starts in (what it publishes itself is stamped later, and never taken
    // twice); the previous process's jobs are that old, and so must these be.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(d.republisher.sweep(true).await.unwrap(), 3);
    let mut got = Vec::new();
    for _ in 0..3 {
        let delivery = expect_delivery(&mut subscription).await;
        got.push(delivery.message.job_id());
        delivery.ack().await.unwrap();
    }
    got.sort();
    let mut expected = vec![fresh.id, confirmed.id, processing.id];
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(d.republisher.sweep(false).await.unwrap(), 0);
    expect_no_delivery(&mut subscription).await;
}
