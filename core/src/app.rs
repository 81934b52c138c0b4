//! The backends of one process, chosen once at start-up from the configuration.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, StorageBackend};
use crate::db::{
    BatchStore, IdempotencyStore, JobStore, PostgresJobStore, SqliteJobStore, TenantStore,
    WebhookStore,
};
use crate::queue::{JobQueue, MemoryQueue, RabbitMqQueue};
use crate::storage::{BlobStore, EmbeddedBlobStore, LocalBlobStore, S3BlobStore};

/// Job store, blob store and job queue: above this point the code sees only the traits.
#[derive(Clone)]
pub struct Backends {
    pub jobs: Arc<dyn JobStore>,
    /// The same database as `jobs`.
    pub batches: Arc<dyn BatchStore>,
    /// The same database as `jobs`.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Tenants and API keys: the same database as `jobs`.
    pub tenants: Arc<dyn TenantStore>,
    /// Webhook endpoints and deliveries: the same database as `jobs`.
    pub webhooks: Arc<dyn WebhookStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn JobQueue>,
}

/// Everything one database is to the rest of the code.
pub trait Database: JobStore + BatchStore + IdempotencyStore + TenantStore + WebhookStore {}

impl<D: JobStore + BatchStore + IdempotencyStore + TenantStore + WebhookStore> Database for D {}

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
    /// Backends on one database (seen through each of its store traits), a blob store and a
    /// queue.
    pub fn new<D: Database>(db: D, blobs: Arc<dyn BlobStore>, queue: Arc<dyn JobQueue>) -> Self {
        let db = Arc::new(db);
        Self {
            jobs: db.clone(),
            batches: db.clone(),
            idempotency: db.clone(),
            tenants: db.clone(),
            webhooks: db,
            blobs,
            queue,
        }
    }

    /// Connects every backend the configuration names. Fails, naming the backend, when one is
    /// unreachable: a process that cannot do its work should not start.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config.database_url();
        let pool_size = config.database.max_connections;
        let queue: Arc<dyn JobQueue> = if config.queue.url.is_empty() {
            Arc::new(MemoryQueue::new())
        } else {
            Arc::new(RabbitMqQueue::connect(&config.queue.url, &config.queue.prefix).await?)
        };
        let blobs = || async {
            Ok::<Arc<dyn BlobStore>, anyhow::Error>(match config.storage.backend {
                StorageBackend::Local => {
                    Arc::new(LocalBlobStore::open(config.storage_path()).await?)
                }
                StorageBackend::S3 => Arc::new(S3BlobStore::connect(&config.storage.s3)?),
            })
        };
        let backends = if url.starts_with("sqlite:") {
            let db = SqliteJobStore::connect(&url, pool_size).await?;
            let blobs: Arc<dyn BlobStore> = match config.storage.backend {
                // The embedded mode: small images go into the database with their jobs.
                StorageBackend::Local => Arc::new(EmbeddedBlobStore::new(
                    db.clone(),
                    LocalBlobStore::open(config.storage_path()).await?,
                )),
                StorageBackend::S3 => blobs().await?,
            };
            Self::new(db, blobs, queue)
        } else {
            Self::new(
                PostgresJobStore::connect(&url, pool_size).await?,
                blobs().await?,
                queue,
            )
        };
        tracing::info!(
            jobs = %backends.jobs.describe(),
            blobs = %backends.blobs.describe(),
            queue = %backends.queue.describe(),
            "backends connected"
        );
        Ok(backends)
    }

    /// Connects the database alone (for commands that need no storage or queue), as the job
    /// store and the tenant store it also is.
    pub async fn connect_database(
        config: &Config,
    ) -> anyhow::Result<(Arc<dyn JobStore>, Arc<dyn TenantStore>)> {
        let url = config.database_url();
        let max = config.database.max_connections;
        Ok(if url.starts_with("sqlite:") {
            let store = Arc::new(SqliteJobStore::connect(&url, max).await?);
            (store.clone(), store)
        } else {
            let store = Arc::new(PostgresJobStore::connect(&url, max).await?);
            (store.clone(), store)
        })
    }

    /// Applies the database migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.jobs.migrate().await.context("migrating the database")
    }
}
