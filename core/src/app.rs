//! The backends of one process, chosen once at start-up from the configuration.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, StorageBackend};
use crate::db::{JobStore, PostgresJobStore, SqliteJobStore, WebhookStore};
use crate::queue::{JobQueue, MemoryQueue, RabbitMqQueue};
use crate::storage::{BlobStore, LocalBlobStore, S3BlobStore};

/// Job store, blob store and job queue: above this point the code sees only the traits.
#[derive(Clone)]
pub struct Backends {
    pub jobs: Arc<dyn JobStore>,
    /// Webhook endpoints and deliveries: the same database (and store object) as `jobs`.
    pub webhooks: Arc<dyn WebhookStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("jobs", &self.jobs.describe())
            .field("blobs", &self.blobs.describe())
            .field("queue", &self.queue.describe())
            .finish()
    }
}

impl Backends {
    /// Connects every backend the configuration names. Fails, naming the backend, when one is
    /// unreachable: a process that cannot do its work should not start.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config.database_url();
        let (jobs, webhooks): (Arc<dyn JobStore>, Arc<dyn WebhookStore>) = if url
            .starts_with("sqlite:")
        {
            let store =
                Arc::new(SqliteJobStore::connect(&url, config.database.max_connections).await?);
            (store.clone(), store)
        } else {
            let store =
                Arc::new(PostgresJobStore::connect(&url, config.database.max_connections).await?);
            (store.clone(), store)
        };
        let blobs: Arc<dyn BlobStore> = match config.storage.backend {
            StorageBackend::Local => Arc::new(LocalBlobStore::open(config.storage_path()).await?),
            StorageBackend::S3 => Arc::new(S3BlobStore::connect(&config.storage.s3)?),
        };
        let queue: Arc<dyn JobQueue> = if config.queue.url.is_empty() {
            Arc::new(MemoryQueue::new())
        } else {
            Arc::new(RabbitMqQueue::connect(&config.queue.url, &config.queue.prefix).await?)
        };
        let backends = Self {
            jobs,
            webhooks,
            blobs,
            queue,
        };
        tracing::info!(
            jobs = %backends.jobs.describe(),
            blobs = %backends.blobs.describe(),
            queue = %backends.queue.describe(),
            "backends connected"
        );
        Ok(backends)
    }

    /// Applies the database migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.jobs.migrate().await.context("migrating the database")
    }
}
