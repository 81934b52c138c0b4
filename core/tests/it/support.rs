//! Test support for the backend tests: each backend of a concern built fresh for one test, on the
//! real servers (PostgreSQL, RabbitMQ, an S3 server), and taken down again when the test ends.
//!
//! - PostgreSQL: a database of its own per test, created from `MEDINFORM_TEST_DATABASE_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped when the test ends.
//! - RabbitMQ: a queue prefix of its own per test (`test-<uuid>`) on `MEDINFORM_TEST_AMQP_URL`
//!   (default `amqp://guest:guest@127.0.0.1:5672/%2f`); its exchanges and queues are deleted when
//!   the test ends.
//! - S3: a key prefix of its own per test in the bucket of `MEDINFORM_TEST_S3_*`. When
//!   `MEDINFORM_TEST_S3_ENDPOINT` is not set, a throw-away Garage is started once per test binary
//!   with `infra/garage/start-local.sh` and stopped (its folder removed) when the binary exits.
//!
//! A backend that cannot be reached fails the test: nothing is skipped silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use medinform_core::app::Database;
use medinform_core::config::S3Config;
use medinform_core::db::{JobStore, NewJob, PostgresJobStore, SqliteJobStore};
use medinform_core::job::JobId;
use medinform_core::queue::{
    Delivery, JobMessage, JobQueue, MemoryQueue, RabbitMqQueue, Subscription,
};
use medinform_core::storage::{
    BlobStore, EmbeddedBlobStore, LocalBlobStore, S3BlobStore, image_key, sha256_hex,
};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that something does not happen.
pub const QUIET: Duration = Duration::from_millis(500);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `work` to completion on a runtime of its own, on a thread of its own: clean-up from
/// `Drop`, which may run inside a test's runtime (or while a failed test unwinds).
fn run_detached<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let done = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a clean-up runtime")
            .block_on(work);
    })
    .join();
    if done.is_err() {
        eprintln!("test clean-up panicked");
    }
}

// ---------------------------------------------------------------------------------------------
// Job stores

/// The job store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

/// A migrated, empty job store of its own; dropping it removes the database.
pub struct TestJobStore {
    pub store: Arc<dyn JobStore>,
    pub kind: StoreKind,
    // Dropped with the store: the database, or the folder of the SQLite file.
    _database: Option<PostgresDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl TestJobStore {
    pub async fn new(kind: StoreKind) -> Self {
        match kind {
            StoreKind::Postgres => Self::postgres().await,
            StoreKind::Sqlite => Self::sqlite().await,
        }
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> Self {
        Self::of(TestDatabase::postgres().await, StoreKind::Postgres)
    }

    /// A fresh SQLite file in a temporary folder.
    pub async fn sqlite() -> Self {
        Self::of(TestDatabase::sqlite().await, StoreKind::Sqlite)
    }

    fn of(database: TestDatabase, kind: StoreKind) -> Self {
        Self {
            store: database.db,
            kind,
            _database: database._database,
            _dir: database._dir,
        }
    }
}

/// A fresh, migrated PostgreSQL database and its store, for tests of PostgreSQL itself (the
/// database is dropped with the first).
pub async fn postgres_store() -> (PostgresDatabase, PostgresJobStore) {
    let database = PostgresDatabase::create().await;
    let store = PostgresJobStore::connect(&database.url, 8).await.unwrap();
    store.migrate().await.unwrap();
    (database, store)
}

/// A migrated database of its own, with every store.
pub struct TestDatabase {
    pub db: Arc<dyn Database>,
    _database: Option<PostgresDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A fresh PostgreSQL database.
    pub async fn postgres() -> Self {
        let (database, store) = postgres_store().await;
        Self {
            db: Arc::new(store),
            _database: Some(database),
            _dir: None,
        }
    }

    /// A fresh SQLite file in a temporary folder.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("stores.db").display());
        let store = SqliteJobStore::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            db: Arc::new(store),
            _database: None,
            _dir: Some(dir),
        }
    }
}

/// A database created for one test on the PostgreSQL server of `MEDINFORM_TEST_DATABASE_URL`,
/// dropped (connections and all) when this value is dropped, also when the test failed.
pub struct PostgresDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    pub async fn create() -> Self {
        let admin_url = env_or(
            "MEDINFORM_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let name = format!("medinform_core_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin_url} (MEDINFORM_TEST_DATABASE_URL): {e}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await
            .expect("creating the test database");
        admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a database URL with a path");
        Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        run_detached(async move {
            let dropped = async {
                let admin = sqlx::PgPool::connect(&admin_url).await?;
                // `with (force)` ends the connections the test's pool still holds.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop database if exists {name} with (force)"
                )))
                .execute(&admin)
                .await?;
                admin.close().await;
                Ok::<_, sqlx::Error>(())
            };
            if let Err(e) = dropped.await {
                eprintln!("could not drop test database {name}: {e}");
            }
        });
    }
}

/// A job as the API would create it, for `model`.
pub fn new_job(model: &str) -> NewJob {
    let id = JobId::new();
    let sha = sha256_hex(id.to_string().as_bytes());
    NewJob {
        id,
        tenant_id: medinform_core::tenant::TenantId::LOCAL,
        batch_id: None,
        model: model.to_owned(),
        model_version: "1.2.0".to_owned(),
        image_key: image_key(&sha),
        image_sha256: sha,
        image_content_type: "image/png".to_owned(),
        image_bytes: 12_345,
        client_reference: Some("ward-7/patient-42".to_owned()),
        site: Some("Ward 7".to_owned()),
        tags: vec!["follow-up".to_owned()],
        deadline: None,
        webhook_url: None,
        priority: Default::default(),
        submission_key: None,
        dicom: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Blob stores

/// The blob store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Local,
    /// The embedded mode's: small images in a SQLite job database, the rest in a folder.
    Embedded,
    S3,
}

/// A blob store of its own: a fresh folder, or a fresh key prefix in the test bucket.
pub struct TestBlobStore {
    pub store: Arc<dyn BlobStore>,
    /// The folder of a local store (`None` for S3).
    pub root: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    /// The S3 settings, whose key prefix is emptied when the test ends.
    s3: Option<S3Config>,
}

impl Drop for TestBlobStore {
    fn drop(&mut self) {
        let Some(config) = self.s3.take() else {
            return;
        };
        run_detached(async move {
            if let Err(e) = delete_prefix(&config).await {
                eprintln!("could not empty s3 prefix {}: {e:#}", config.prefix);
            }
        });
    }
}

/// Deletes every object under the key prefix of `config`.
async fn delete_prefix(config: &S3Config) -> anyhow::Result<()> {
    let store = S3BlobStore::connect(config)?;
    loop {
        let listed = store
            .client()
            .list_objects_v2()
            .bucket(store.bucket())
            .prefix(&config.prefix)
            .send()
            .await?;
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            store
                .client()
                .delete_object()
                .bucket(store.bucket())
                .key(key)
                .send()
                .await?;
        }
    }
}

impl TestBlobStore {
    pub async fn new(kind: BlobKind) -> Self {
        match kind {
            BlobKind::Local => {
                let dir = tempfile::tempdir().expect("a temporary folder");
                let root = dir.path().join("images");
                let store = LocalBlobStore::open(&root)
                    .await
                    .expect("opening the folder");
                Self {
                    store: Arc::new(store),
                    root: Some(root),
                    _dir: Some(dir),
                    s3: None,
                }
            }
            BlobKind::Embedded => {
                let dir = tempfile::tempdir().expect("a temporary folder");
                let root = dir.path().join("images");
                let files = LocalBlobStore::open(&root)
                    .await
                    .expect("opening the folder");
                let url = format!("sqlite://{}", dir.path().join("medinform.db").display());
                let db = SqliteJobStore::connect(&url, 2)
                    .await
                    .expect("opening the database");
                db.migrate().await.expect("migrating the database");
                Self {
                    store: Arc::new(EmbeddedBlobStore::new(db, files)),
                    root: Some(root),
                    _dir: Some(dir),
                    s3: None,
                }
            }
            BlobKind::S3 => {
                let config = s3_config();
                let store = S3BlobStore::connect(&config).expect("an S3 client");
                Self {
                    store: Arc::new(store),
                    root: None,
                    _dir: None,
                    s3: Some(config),
                }
            }
        }
    }
}

/// The test S3 server's settings with a key prefix of its own (`test-<uuid>/`).
pub fn s3_config() -> S3Config {
    let server = s3_server();
    S3Config {
        endpoint: server["MEDINFORM_TEST_S3_ENDPOINT"].clone(),
        bucket: server["MEDINFORM_TEST_S3_BUCKET"].clone(),
        region: server
            .get("MEDINFORM_TEST_S3_REGION")
            .cloned()
            .unwrap_or_else(|| "garage".to_owned()),
        access_key_id: server["MEDINFORM_TEST_S3_ACCESS_KEY_ID"].clone(),
        secret_access_key: server["MEDINFORM_TEST_S3_SECRET_ACCESS_KEY"].clone(),
        force_path_style: true,
        prefix: format!("test-{}/", uuid::Uuid::new_v4().simple()),
    }
}

const S3_VARIABLES: [&str; 5] = [
    "MEDINFORM_TEST_S3_ENDPOINT",
    "MEDINFORM_TEST_S3_BUCKET",
    "MEDINFORM_TEST_S3_REGION",
    "MEDINFORM_TEST_S3_ACCESS_KEY_ID",
    "MEDINFORM_TEST_S3_SECRET_ACCESS_KEY",
];

/// The `MEDINFORM_TEST_S3_*` settings: from the environment when the endpoint is set there,
/// else from a Garage started for this test binary.
fn s3_server() -> &'static HashMap<String, String> {
    static SERVER: OnceLock<HashMap<String, String>> = OnceLock::new();
    SERVER.get_or_init(|| {
        if std::env::var("MEDINFORM_TEST_S3_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
            S3_VARIABLES
                .iter()
                .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
                .collect()
        } else {
            start_garage()
        }
    })
}

/// Starts a Garage in a temporary folder with `infra/garage/start-local.sh`, and a watchdog that
/// stops it and removes the folder once this test binary has exited.
fn start_garage() -> HashMap<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("medinform-garage-")
        .tempdir()
        .expect("a temporary folder for Garage")
        .keep();
    let infra = repo_root().join("infra/garage");
    let output = Command::new(infra.join("start-local.sh"))
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("running infra/garage/start-local.sh");
    // The watchdog is started even when the start failed: a half-started server is stopped too.
    let watchdog = Command::new("bash")
        .arg("-c")
        .arg(
            r#"trap '' INT HUP TERM
               while kill -0 "$1" 2>/dev/null; do sleep 1; done
               "$2/stop-local.sh" "$3" >/dev/null 2>&1
               rm -rf "$3""#,
        )
        .args(["garage-watchdog", &std::process::id().to_string()])
        .arg(&infra)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = watchdog {
        eprintln!(
            "could not start the Garage watchdog ({e}); stop it with infra/garage/stop-local.sh {}",
            dir.display()
        );
    }
    assert!(
        output.status.success(),
        "infra/garage/start-local.sh failed ({}); set MEDINFORM_TEST_S3_* to use another S3 server",
        output.status
    );
    let env_file = dir.join("s3.env");
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", env_file.display()));
    let settings: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    for name in S3_VARIABLES {
        assert!(
            settings.contains_key(name),
            "{name} missing from {}",
            env_file.display()
        );
    }
    settings
}

// ---------------------------------------------------------------------------------------------
// Job queues

/// The job queue backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Memory,
    RabbitMq,
}

/// The models the queue tests route by; the RabbitMQ clean-up deletes their lanes.
pub const MODELS: [&str; 3] = ["malaria", "tuberculosis", "retinopathy"];

pub fn models(names: &[&str]) -> Vec<String> {
    names.iter().map(|m| m.to_string()).collect()
}

pub fn amqp_url() -> String {
    env_or(
        "MEDINFORM_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// A job queue of its own: a fresh in-process queue, or a fresh prefix on RabbitMQ whose
/// exchanges and queues are deleted when this value is dropped.
pub struct TestQueue {
    pub queue: Arc<dyn JobQueue>,
    pub kind: QueueKind,
    memory: Option<MemoryQueue>,
    rabbitmq: Option<Arc<RabbitMqQueue>>,
    prefix: String,
}

impl TestQueue {
    pub async fn new(kind: QueueKind) -> Self {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        match kind {
            QueueKind::Memory => {
                let memory = MemoryQueue::new();
                Self {
                    queue: Arc::new(memory.clone()),
                    kind,
                    memory: Some(memory),
                    rabbitmq: None,
                    prefix,
                }
            }
            QueueKind::RabbitMq => {
                let url = amqp_url();
                let rabbitmq = Arc::new(
                    RabbitMqQueue::connect(&url, &prefix)
                        .await
                        .unwrap_or_else(|e| panic!("RabbitMQ (MEDINFORM_TEST_AMQP_URL): {e:#}")),
                );
                Self {
                    queue: rabbitmq.clone(),
                    kind,
                    memory: None,
                    rabbitmq: Some(rabbitmq),
                    prefix,
                }
            }
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The RabbitMQ queue itself (RabbitMQ tests only).
    pub fn rabbitmq(&self) -> &RabbitMqQueue {
        self.rabbitmq.as_deref().expect("a RabbitMQ test queue")
    }

    /// Takes what is in the dead-letter queue, waiting until at least `expected` messages are
    /// there (dead-lettering is asynchronous on RabbitMQ) or `PATIENCE` has passed.
    pub async fn take_dead_letters(&self, expected: usize) -> Vec<JobMessage> {
        if let Some(memory) = &self.memory {
            return memory.dead_letters();
        }
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("a raw AMQP connection");
        let channel = connection.create_channel().await.expect("a raw channel");
        let dead = self.rabbitmq().dead_letter_queue();
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while messages.len() < expected && tokio::time::Instant::now() < deadline {
            match channel
                .basic_get(dead.as_str().into(), BasicGetOptions::default())
                .await
                .expect("basic.get on the dead-letter queue")
            {
                Some(message) => {
                    message
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                    messages.push(
                        serde_json::from_slice(&message.delivery.data).expect("a job message"),
                    );
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        connection.close(200, "done".into()).await.ok();
        messages
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        if self.kind != QueueKind::RabbitMq {
            return;
        }
        let prefix = self.prefix.clone();
        run_detached(async move {
            if let Err(e) = delete_topology(&prefix).await {
                eprintln!("could not delete the RabbitMQ topology of {prefix}: {e}");
            }
        });
    }
}

/// Deletes the queues and exchanges of `prefix` (deleting what does not exist is no error).
async fn delete_topology(prefix: &str) -> Result<(), lapin::Error> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut queues: Vec<String> = MODELS
        .iter()
        .map(|model| format!("{prefix}.jobs.{model}"))
        .collect();
    queues.push(format!("{prefix}.dead"));
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [format!("{prefix}.jobs"), format!("{prefix}.dead")] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// The next delivery; fails the test when none comes within `PATIENCE`.
pub async fn expect_delivery(subscription: &mut Box<dyn Subscription>) -> Delivery {
    match tokio::time::timeout(PATIENCE, subscription.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(e))) => panic!("subscription error: {e}"),
        Ok(None) => panic!("the subscription closed"),
        Err(_) => panic!("no delivery within {PATIENCE:?}"),
    }
}

/// Fails the test when a delivery comes within `QUIET`.
pub async fn expect_no_delivery(subscription: &mut Box<dyn Subscription>) {
    if let Ok(delivery) = tokio::time::timeout(QUIET, subscription.next()).await {
        panic!("expected no delivery, got {delivery:?}");
    }
}

/// A TCP proxy to RabbitMQ whose connections can be cut, as a network failure would: what
/// connects through it afterwards gets through again.
pub struct BrokenLink {
    /// The AMQP URL through the proxy.
    pub url: String,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    listener: tokio::task::JoinHandle<()>,
}

impl BrokenLink {
    pub async fn to_rabbitmq() -> Self {
        let url = amqp_url();
        let (scheme, rest) = url.split_once("://").expect("an amqp:// URL");
        let (credentials, rest) = rest.rsplit_once('@').unwrap_or(("", rest));
        let (address, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:5672")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles = connections.clone();
        let listener = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        tokio::io::copy_bidirectional(&mut client, &mut server)
                            .await
                            .ok();
                    }
                });
                handles.lock().unwrap().push(task.abort_handle());
            }
        });
        let at = if credentials.is_empty() {
            String::new()
        } else {
            format!("{credentials}@")
        };
        Self {
            url: format!("{scheme}://{at}127.0.0.1:{port}/{vhost}"),
            connections,
            listener,
        }
    }

    /// Cuts every connection made through the proxy so far.
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for BrokenLink {
    fn drop(&mut self) {
        self.listener.abort();
        self.cut();
    }
}
