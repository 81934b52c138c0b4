//! No job lost, none done twice: redeliveries, dead workers, corrupt images, restarts.

use std::time::Duration;

use medinform_core::app::Backends;
use medinform_core::db::Claim;
use medinform_core::job::{Job, JobId, JobStatus};
use medinform_core::queue::JobMessage;
use medinform_core::storage::sweep::OrphanSweeper;
use medinform_core::storage::{image_key, sha256_hex};
use tokio_util::sync::CancellationToken;

use crate::support::{Kind, Options, TestApp, cell_images, malaria_job, published_job};

/// A worker on `backends` with the test jobs settings of `kind`, until `shutdown`.
fn spawn_worker(
    backends: &Backends,
    registry: std::sync::Arc<medinform_core::registry::Registry>,
    kind: Kind,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let worker = medinform_worker::Worker::new(
        backends.clone(),
        registry,
        medinform_worker::WorkerSettings {
            worker: Default::default(),
            jobs: Options::new(kind).jobs,
            limits: Default::default(),
        },
    );
    tokio::spawn(worker.run(shutdown.clone()))
}

/// Polls the store until the job is `succeeded` or `failed` (30 s at most).
async fn wait_final(backends: &Backends, id: JobId, what: &str) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = backends.jobs.get(id).await.unwrap().unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {job:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_redelivered_message_for_a_finished_job_changes_nothing(kind: Kind) {
    let app = TestApp::start(kind).await;
    let (name, bytes) = cell_images().remove(0);
    let (_, body) = app.submit("malaria", &name, bytes).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let first = app.wait_finished(&id).await;
    assert_eq!(first["status"], "succeeded");

    let job_id: JobId = id.parse().unwrap();
    for _ in 0..3 {
        app.backends
            .queue
            .publish(&JobMessage::screen(job_id, "malaria"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, again) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(again, first, "a finished job changed");
    let stored = app.backends.jobs.get(job_id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "the job was run more than once");
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_for_a_finished_job_changes_nothing_embedded() {
    a_redelivered_message_for_a_finished_job_changes_nothing(Kind::Embedded).await;
}

#[tokio::test]
async fn a_redelivered_message_for_a_finished_job_changes_nothing_distributed() {
    a_redelivered_message_for_a_finished_job_changes_nothing(Kind::Distributed).await;
}

async fn a_corrupt_image_fails_at_once_and_is_dead_lettered(kind: Kind) {
    let app = TestApp::start(kind).await;
    // A PNG cut in half: its header is fine, its pixels are not.
    let (_, bytes) = cell_images().remove(0);
    let truncated = bytes[..bytes.len() / 2].to_vec();
    let id = published_job(&app, truncated).await;
    let job = app.wait_finished(&id.to_string()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "corrupt_image", "{job}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains("upload"),
        "{job}"
    );
    let stored = app.backends.jobs.get(id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 1, "a corrupt image is not retried");
    if let Some(queue) = &app.memory_queue {
        assert_eq!(
            queue.dead_letters(),
            vec![JobMessage::screen(id, "malaria")]
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_corrupt_image_fails_at_once_and_is_dead_lettered_embedded() {
    a_corrupt_image_fails_at_once_and_is_dead_lettered(Kind::Embedded).await;
}

#[tokio::test]
async fn a_corrupt_image_fails_at_once_and_is_dead_lettered_distributed() {
    a_corrupt_image_fails_at_once_and_is_dead_lettered(Kind::Distributed).await;
}

/// A worker that claimed a job and died: its message comes back (unacknowledged), the new
/// worker takes the job over, and the result is written once.
#[tokio::test]
async fn a_job_left_by_a_dead_worker_is_taken_over() {
    let mut options = Options::new(Kind::Distributed);
    options.worker = false;
    let idle = TestApp::start_with(options).await;
    let (_, bytes) = cell_images().remove(3);
    let id = published_job(&idle, bytes).await;

    // The doomed worker: receives the message, claims the job, and dies holding both.
    {
        let mut subscription = idle
            .backends
            .queue
            .subscribe(&["malaria".to_owned()], 1)
            .await
            .unwrap();
        let delivery = subscription.next().await.unwrap().unwrap();
        assert_eq!(delivery.message.job_id(), id);
        let claim = idle
            .backends
            .jobs
            .claim(id, Duration::from_secs(600), false)
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
        std::mem::forget(delivery); // never settled
    }
    let job = idle.backends.jobs.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Processing);

    // A healthy worker on the same backends picks the redelivered message up.
    let backends = idle.backends.clone();
    let registry = idle.registry.clone();
    let shutdown = CancellationToken::new();
    let running = spawn_worker(&backends, registry, Kind::Distributed, &shutdown);
    let job = wait_final(&backends, id, "the job was not taken over").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 2);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    idle.stop().await;
}

/// The embedded queue lives in memory: a restart finds the jobs the previous process had
/// accepted and screens them.
#[tokio::test]
async fn jobs_queued_before_a_restart_are_screened_after_it() {
    let data = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", data.path().join("medinform.db").display());
    let images = data.path().join("images");
    let open = || async {
        medinform_core::app::Backends::new(
            medinform_core::db::SqliteJobStore::connect(&db, 2)
                .await
                .unwrap(),
            std::sync::Arc::new(
                medinform_core::storage::LocalBlobStore::open(images.clone())
                    .await
                    .unwrap(),
            ),
            std::sync::Arc::new(medinform_core::queue::MemoryQueue::new()),
        )
    };
    // Before: a job accepted, its message in a queue that then vanished with the process.
    let before = open().await;
    before.migrate().await.unwrap();
    let (_, bytes) = cell_images().remove(4);
    let sha = sha256_hex(&bytes);
    before
        .blobs
        .put(&image_key(&sha), bytes.into(), "image/png")
        .await
        .unwrap();
    let registry_dir = crate::support::test_registry_dir();
    let registry = std::sync::Arc::new(crate::support::load_registry(registry_dir.path()));
    let id = before
        .jobs
        .insert(&malaria_job(
            registry.get("malaria").unwrap().version().unwrap(),
            sha,
            1,
        ))
        .await
        .unwrap()
        .id;
    before.jobs.mark_published(id).await.unwrap();
    drop(before);

    // After: a new process on the same files.
    let after = open().await;
    let shutdown = CancellationToken::new();
    let republisher = medinform_core::republish::Republisher::new(
        after.jobs.clone(),
        after.queue.clone(),
        Options::new(Kind::Embedded).jobs,
    );
    republisher.recover().await.unwrap();
    let sweeping = tokio::spawn(republisher.run(shutdown.clone()));
    let running = spawn_worker(&after, registry, Kind::Embedded, &shutdown);
    let job = wait_final(&after, id, "not screened after restart").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    shutdown.cancel();
    running.await.unwrap().unwrap();
    sweeping.await.unwrap();
}

/// The worker outlives a broker outage: its subscription closes, subscribing fails for a while,
/// then it consumes again and every job is screened; nothing in the process stops.
async fn the_worker_reconnects_after_the_broker_goes_away(kind: Kind) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let subscribes = Arc::new(AtomicUsize::new(0));
    let counter = subscribes.clone();
    let app = TestApp::start_with(Options {
        wrap_queue: Some(Box::new(move |inner| {
            Arc::new(crate::support::BrokerOutage {
                inner,
                deliveries_before_close: 1,
                failing_subscribes: AtomicUsize::new(2),
                subscribes: counter,
            })
        })),
        ..Options::new(kind)
    })
    .await;
    let images = cell_images();
    let mut ids = Vec::new();
    for (name, bytes) in images.iter().cycle().take(6) {
        let (status, job) = app.submit("malaria", name, bytes.clone()).await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = app.wait_finished(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    // One subscription that closed, two refused, one that consumed the rest.
    assert!(subscribes.load(Ordering::SeqCst) >= 4);
    for outcome in app.stop().await {
        outcome.expect("every task of the process ran until it was stopped");
    }
}

crate::on_both_backends!(
    the_worker_reconnects_after_the_broker_goes_away,
    images_no_job_refers_to_are_swept_after_the_grace_period,
);

/// An image stored by a process that died before recording its job is deleted once the grace
/// period has passed; images that jobs refer to are kept.
async fn images_no_job_refers_to_are_swept_after_the_grace_period(kind: Kind) {
    let mut options = Options::new(kind);
    options.worker = false;
    let app = TestApp::start_with(options).await;
    let mut images = cell_images();
    let (name, bytes) = images.remove(0);
    let (status, job) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let (_, orphan) = images.remove(0);
    let orphan_key = image_key(&sha256_hex(&orphan));
    app.backends
        .blobs
        .put(&orphan_key, orphan.into(), "image/png")
        .await
        .unwrap();

    let grace = Duration::from_secs(3600);
    let sweeper = OrphanSweeper::new(
        app.backends.blobs.clone(),
        app.backends.jobs.clone(),
        grace,
        Duration::ZERO,
    );
    let now = chrono::Utc::now();
    let report = sweeper.sweep(now).await.unwrap();
    assert_eq!(
        (report.examined, report.deleted),
        (2, 0),
        "within the grace period"
    );
    let report = sweeper.sweep(now + 2 * grace).await.unwrap();
    assert_eq!((report.examined, report.deleted), (2, 1));
    assert!(matches!(
        app.backends.blobs.get(&orphan_key).await,
        Err(medinform_core::storage::StorageError::NotFound(_))
    ));
    let id = job["id"].as_str().unwrap();
    let image = app
        .http
        .get(app.url(&format!("/v1/jobs/{id}/image")))
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200, "the job's image was kept");
    let report = sweeper.sweep(now + 2 * grace).await.unwrap();
    assert_eq!((report.examined, report.deleted), (1, 0));
    app.stop().await;
}

/// A row the service cannot read is a fault to investigate (500), not an outage to wait out
/// (503 with `Retry-After`).
#[tokio::test]
async fn a_stored_row_that_cannot_be_read_answers_500_not_503() {
    let mut options = Options::new(Kind::Embedded);
    options.worker = false;
    let app = TestApp::start_with(options).await;
    let (name, bytes) = cell_images().remove(0);
    let (status, job) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let db = app
        .image_dir
        .as_ref()
        .unwrap()
        .with_file_name("medinform.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("update jobs set tags = 'not json' where id = ?1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let response = app
        .http
        .get(app.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("retry-after").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal_error");
    app.stop().await;
}
