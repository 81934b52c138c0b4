//! A running MedInform (API + worker + re-publisher) on port 0, with either backend set:
//! - embedded: a SQLite file, a local folder and the in-process queue, in a temp dir;
//! - distributed: a fresh PostgreSQL database, a RabbitMQ prefix of its own and a key prefix of
//!   its own in the S3 bucket of `MEDINFORM_TEST_S3_*` (infra/test starts a Garage for it).

mod fhir;
mod receiver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use medinform_api::http::HttpTimeouts;
use medinform_api::{App, AuthMode, Authenticator, Overrides, RateLimit, Role};
use medinform_core::app::Backends;
use medinform_core::config::{
    Config, DicomConfig, JobsConfig, S3Config, StorageBackend, WebhooksConfig,
};
use medinform_core::db::{
    Begin, DbError, IdempotencyStore, NewIdempotencyKey, NewJob, SqliteJobStore, StoredResponse,
    create_api_key,
};
use medinform_core::imaging::ImageLimits;
use medinform_core::job::JobId;
use medinform_core::queue::{JobMessage, JobQueue, MemoryQueue, QueueError, Subscription};
use medinform_core::registry::{Registry, RegistryOptions, Stage};
use medinform_core::storage::{
    BlobStore, EmbeddedBlobStore, LocalBlobStore, StorageError, StoredObject, image_key, sha256_hex,
};
use medinform_core::tenant::Scope;
use medinform_core::webhooks::install_crypto_provider;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use fhir::validate_r4_bundle;
pub use receiver::{Received, Receiver};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The project's Python (pynetdicom, fhir.resources): `$MEDINFORM_PYTHON`, else the
/// repository's `.venv`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("MEDINFORM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run infra/setup-python.sh --dev or set MEDINFORM_PYTHON",
        python.display()
    );
    python
}

/// `../shared` beside the repository.
pub fn shared_dir() -> PathBuf {
    let dir = repo_root().join("../shared");
    assert!(
        dir.is_dir(),
        "{} is missing: the tests read real images from it",
        dir.display()
    );
    dir
}

/// Real NIH blood-smear cell images (RGB PNG).
pub fn cell_images() -> Vec<(String, Vec<u8>)> {
    let dir = shared_dir().join("models/medinform-original/malaria/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no PNG in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// A registry of the repository's malaria model plus `retired`, a model whose weights are
/// missing.
pub fn test_registry_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let malaria = repo_root().join("models/malaria");
    let target = dir.path().join("malaria");
    std::fs::create_dir(&target).unwrap();
    copy_folder(&malaria, &target);
    assert!(
        target.join("model.onnx").is_file(),
        "models/malaria/model.onnx is missing"
    );
    let manifest = std::fs::read_to_string(malaria.join("manifest.toml")).unwrap();
    let retired = dir.path().join("retired");
    std::fs::create_dir(&retired).unwrap();
    std::fs::write(
        retired.join("manifest.toml"),
        manifest.replacen("id = \"malaria\"", "id = \"retired\"", 1),
    )
    .unwrap();
    dir
}

/// Adds to a test registry a copy of the shipped malaria model named `id`, in `stage`: a
/// screening copy declares a minimum its measured accuracy meets.
pub fn add_malaria_copy(registry: &Path, id: &str, stage: Stage) {
    let target = registry.join(id);
    std::fs::create_dir(&target).unwrap();
    copy_folder(&repo_root().join("models/malaria"), &target);
    let path = target.join("manifest.toml");
    let mut manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest.insert("id".into(), id.into());
    manifest.insert("stage".into(), stage.as_str().into());
    if stage == Stage::Screening {
        let accuracy = manifest["metrics"]["accuracy"].as_float().unwrap();
        let minimum = toml::Table::from_iter([("accuracy".to_owned(), accuracy.into())]);
        manifest.insert("minimum".into(), minimum.into());
    }
    std::fs::write(&path, toml::to_string(&manifest).unwrap()).unwrap();
}

/// Adds to a test registry a copy of the repository's model `id`, as it is shipped.
pub fn add_model(registry: &Path, id: &str) {
    let target = registry.join(id);
    std::fs::create_dir(&target).unwrap();
    copy_folder(&repo_root().join("models").join(id), &target);
}

/// Copies the files of `from` (and of its sub-folders, such as `figures/`) into `to`.
fn copy_folder(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_folder(&path, &target);
        } else {
            std::fs::copy(&path, target).unwrap();
        }
    }
}

pub fn load_registry(dir: &Path) -> Registry {
    let options = RegistryOptions {
        execution_provider: medinform_core::registry::ExecutionProvider::Cpu,
        intra_threads: 1,
        ..RegistryOptions::new(dir)
    };
    Registry::load(&options).unwrap()
}

pub enum Kind {
    Embedded,
    Distributed,
}

/// Replaces a backend with a wrapper around it.
pub type Wrap<T> = Box<dyn FnOnce(Arc<T>) -> Arc<T> + Send>;

/// Knobs a test may turn before start.
pub struct Options {
    pub kind: Kind,
    pub limits: ImageLimits,
    pub jobs: JobsConfig,
    /// Wraps the blob store (fault injection).
    pub wrap_blobs: Option<Wrap<dyn BlobStore>>,
    /// Wraps the queue (fault injection).
    pub wrap_queue: Option<Wrap<dyn JobQueue>>,
    /// Wraps the idempotency store (fault injection).
    pub wrap_idempotency: Option<Wrap<dyn IdempotencyStore>>,
    /// Start the worker (false: jobs stay queued).
    pub worker: bool,
    /// How long idempotency keys live, and the claim of an unanswered request.
    pub idempotency_ttl: Duration,
    pub idempotency_lease: Duration,
    /// The web app folder (None: a folder that does not exist).
    pub web_dir: Option<PathBuf>,
    /// Refuse requests without an API key (false: they act as the `local` tenant, as the
    /// embedded mode on loopback does).
    pub require_keys: bool,
    /// Per-key rate limit (none by default: tests poll fast).
    pub rate_limit: RateLimit,
    /// Run the webhook dispatcher with these settings (`None`: no webhooks are sent; the API
    /// then checks webhook URLs with the defaults).
    pub webhooks: Option<WebhooksConfig>,
    /// Start on the data a stopped app left ([`TestApp::stop_keeping_data`]), as a restarted
    /// process would.
    pub data: Option<AppData>,
    /// `models.allow_research`.
    pub allow_research: bool,
    /// The model registry (None: [`test_registry_dir`]).
    pub registry_dir: Option<tempfile::TempDir>,
    /// Connection timeouts (the production defaults unless a test sets them).
    pub timeouts: HttpTimeouts,
    /// Serve `/metrics` on a port of its own (`metrics.listen`) instead of the API's.
    pub metrics_listener: bool,
    /// Keep the rate limit's buckets in the database (as `medinform api` on PostgreSQL does),
    /// not in the process.
    pub shared_rate_limit: bool,
    /// What DICOM uploads keep of patient identity (`dicom.*`).
    pub dicom: DicomConfig,
}

/// The database, images and queue names of a stopped app, for the next one.
pub enum AppData {
    Embedded(tempfile::TempDir),
    Distributed(Box<Config>),
}

/// Webhook settings for tests: receivers on loopback, retries after a second, quick polling.
pub fn test_webhooks() -> WebhooksConfig {
    WebhooksConfig {
        timeout_secs: 5,
        retry_schedule_secs: vec![1, 1, 1],
        allow_private_targets: true,
        poll_interval_ms: 50,
        ..WebhooksConfig::default()
    }
}

impl Options {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            limits: ImageLimits::default(),
            jobs: JobsConfig {
                max_attempts: 3,
                lease_secs: 60,
                republish_unconfirmed_after_secs: 1,
                republish_stale_after_secs: 3600,
                sweep_interval_secs: 1,
                // No bound unless a test sets one.
                max_backlog: 0,
                max_backlog_per_tenant: 0,
            },
            wrap_blobs: None,
            wrap_queue: None,
            wrap_idempotency: None,
            worker: true,
            idempotency_ttl: Duration::from_secs(3600),
            idempotency_lease: Duration::from_secs(10),
            web_dir: None,
            require_keys: false,
            rate_limit: RateLimit::NONE,
            webhooks: None,
            data: None,
            allow_research: true,
            registry_dir: None,
            timeouts: HttpTimeouts::default(),
            metrics_listener: false,
            shared_rate_limit: false,
            dicom: DicomConfig::default(),
        }
    }
}

/// Runs each `async fn(Kind)` on both backend sets, as the tests `<name>::embedded` and
/// `<name>::distributed`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn embedded() {
                    super::$test($crate::support::Kind::Embedded).await;
                }

                #[tokio::test]
                async fn distributed() {
                    super::$test($crate::support::Kind::Distributed).await;
                }
            }
        )*
    };
}

pub struct TestApp {
    pub base: String,
    /// `http://<metrics.listen>` when [`Options::metrics_listener`] is set.
    pub metrics_base: Option<String>,
    pub http: reqwest::Client,
    pub backends: Backends,
    /// The in-process queue of an embedded app.
    pub memory_queue: Option<Arc<MemoryQueue>>,
    /// The local image folder of an embedded app.
    pub image_dir: Option<PathBuf>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    app: Option<App>,
    data: tempfile::TempDir,
    /// The distributed configuration (database, queue prefix, S3 prefix), kept for a restart.
    distributed: Option<Box<Config>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl TestApp {
    /// The keys of the objects under `prefix` in the app's blob store (in an embedded app,
    /// files and the images its database keeps alike).
    pub async fn stored_keys(&self, prefix: &str) -> Vec<String> {
        let objects = self
            .backends
            .blobs
            .list(prefix, None, 10_000)
            .await
            .unwrap();
        objects.into_iter().map(|object| object.key).collect()
    }

    pub async fn start(kind: Kind) -> Self {
        Self::start_with(Options::new(kind)).await
    }

    pub async fn start_with(options: Options) -> Self {
        install_crypto_provider();
        let (data, distributed) = match (options.data, &options.kind) {
            (Some(AppData::Embedded(dir)), _) => (dir, None),
            (Some(AppData::Distributed(config)), _) => (tempfile::tempdir().unwrap(), Some(config)),
            (None, Kind::Embedded) => (tempfile::tempdir().unwrap(), None),
            (None, Kind::Distributed) => (
                tempfile::tempdir().unwrap(),
                Some(Box::new(distributed_config().await)),
            ),
        };
        let registry_dir = options.registry_dir.unwrap_or_else(test_registry_dir);
        let registry = Arc::new(load_registry(registry_dir.path()));
        let mut memory_queue = None;
        let mut image_dir = None;
        let mut backends = match options.kind {
            Kind::Embedded => {
                let db = format!("sqlite://{}", data.path().join("medinform.db").display());
                let images = data.path().join("images");
                let queue = Arc::new(MemoryQueue::new());
                memory_queue = Some(queue.clone());
                image_dir = Some(images.clone());
                let db = SqliteJobStore::connect(&db, 4).await.unwrap();
                let files = LocalBlobStore::open(images).await.unwrap();
                Backends::new(
                    db.clone(),
                    Arc::new(EmbeddedBlobStore::new(db, files)),
                    queue,
                )
            }
            Kind::Distributed => Backends::connect(distributed.as_deref().unwrap())
                .await
                .unwrap(),
        };
        if let Some(wrap) = options.wrap_blobs {
            backends.blobs = wrap(backends.blobs);
        }
        if let Some(wrap) = options.wrap_queue {
            backends.queue = wrap(backends.queue);
        }
        if let Some(wrap) = options.wrap_idempotency {
            backends.idempotency = wrap(backends.idempotency);
        }
        let mut config = distributed.as_deref().cloned().unwrap_or_default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.shutdown_grace_secs = 5;
        config.server.idempotency_ttl_secs = whole_secs(options.idempotency_ttl);
        config.server.idempotency_lease_secs = whole_secs(options.idempotency_lease);
        config.server.header_read_timeout_secs = whole_secs(options.timeouts.header_read);
        config.server.body_read_timeout_secs = whole_secs(options.timeouts.body_read);
        config.server.web_dir = options
            .web_dir
            .unwrap_or_else(|| data.path().join("no-web-app"));
        config.limits.max_upload_bytes = options.limits.max_bytes;
        config.limits.max_image_pixels = options.limits.max_pixels;
        config.limits.max_decoded_bytes = options.limits.max_decoded_bytes;
        config.jobs = options.jobs;
        config.worker.batch_window_ms = 5;
        config.models.allow_research = options.allow_research;
        config.webhooks = options.webhooks.clone().unwrap_or_default();
        config.dicom = options.dicom;
        if options.metrics_listener {
            config.metrics.listen = "127.0.0.1:0".into();
        }
        let overrides = Overrides {
            backends: Some(backends.clone()),
            registry: Some(registry.clone()),
            // The mode is passed, not derived from the address: every test app is on loopback.
            authenticator: Some({
                let mode = if options.require_keys {
                    AuthMode::KeysRequired
                } else {
                    AuthMode::Anonymous
                };
                let tenants = backends.tenants.clone();
                if options.shared_rate_limit {
                    Authenticator::with_shared_limit(mode, tenants, options.rate_limit)
                } else {
                    Authenticator::new(mode, tenants, options.rate_limit)
                }
            }),
            without_worker: !options.worker,
            without_dispatcher: options.webhooks.is_none(),
        };
        let app = App::build(&config, Role::Both, overrides).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let metrics_base = app.metrics_addr().map(|addr| format!("http://{addr}"));
        Self {
            base,
            metrics_base,
            http: reqwest::Client::new(),
            backends,
            memory_queue,
            image_dir,
            registry,
            shutdown: app.shutdown(),
            app: Some(app),
            data,
            distributed,
            _dirs: vec![registry_dir],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Where the DICOM C-STORE service listens (set `options.dicom.listen` to `127.0.0.1:0`).
    pub fn dicom_addr(&self) -> std::net::SocketAddr {
        self.app
            .as_ref()
            .and_then(App::dicom_addr)
            .expect("a DICOM service: set options.dicom.listen")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Makes an API key for the tenant called `tenant` (created if new) with `scopes`.
    pub async fn create_key(&self, tenant: &str, scopes: &[Scope]) -> String {
        create_api_key(self.backends.tenants.as_ref(), tenant, "test key", scopes)
            .await
            .unwrap()
            .secret
            .expose()
            .to_owned()
    }

    /// A request to `path` with `Authorization: Bearer <key>`.
    pub fn request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(key)
    }

    /// `GET path` with `key`.
    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        send(self.request_as(key, reqwest::Method::GET, path)).await
    }

    /// `POST /v1/jobs` with `model` and `image` fields, with `key`.
    pub async fn submit_as(
        &self,
        key: &str,
        model: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> (u16, Value) {
        send(
            self.request_as(key, reqwest::Method::POST, "/v1/jobs")
                .multipart(image_form(model, name, bytes)),
        )
        .await
    }

    /// A request with a JSON body (or none); the status and the JSON answered (`null` for none).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, json)
    }

    /// `POST /v1/jobs` with `model` and `image` fields.
    pub async fn submit(&self, model: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        self.post_form(image_form(model, name, bytes)).await
    }

    /// `POST /v1/jobs` with any multipart form.
    pub async fn post_form(&self, form: reqwest::multipart::Form) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `POST` a JSON body (with an `Idempotency-Key` when given).
    pub async fn post_json(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `POST` a multipart form to any path.
    pub async fn post_form_to(&self, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Polls the job until it is final (`succeeded`, `failed` or `canceled`).
    pub async fn wait_finished(&self, id: &str) -> Value {
        self.wait_final(None, id).await
    }

    /// [`TestApp::wait_finished`] for a job of `key`'s tenant.
    pub async fn wait_finished_as(&self, key: &str, id: &str) -> Value {
        self.wait_final(Some(key), id).await
    }

    async fn wait_final(&self, key: Option<&str>, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let path = format!("/v1/jobs/{id}");
        loop {
            let (status, job) = match key {
                Some(key) => self.get_as(key, &path).await,
                None => self.get(&path).await,
            };
            assert_eq!(status, 200, "{job}");
            if ["succeeded", "failed", "canceled"].contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not finish: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a second process of this (distributed) deployment starts on, for
    /// [`Options::data`]: the same database, queue prefix and S3 prefix, while this one runs.
    pub fn another_process(&self) -> AppData {
        AppData::Distributed(self.distributed.clone().expect("a distributed app"))
    }

    /// Stops API, worker and re-publisher and returns what each ended with.
    pub async fn stop(mut self) -> Vec<anyhow::Result<()>> {
        self.shutdown.cancel();
        match self.app.take() {
            Some(app) => app.join().await,
            None => Vec::new(),
        }
    }

    /// Stops the app like [`TestApp::stop`] (every task must end cleanly) and hands back its
    /// data for [`Options::data`].
    pub async fn stop_keeping_data(mut self) -> AppData {
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        let distributed = self.distributed.take();
        for outcome in self.stop().await {
            outcome.unwrap();
        }
        match distributed {
            Some(config) => AppData::Distributed(config),
            None => AppData::Embedded(data),
        }
    }
}

/// A form with `model` and one `image` file.
pub fn image_form(model: &str, name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("model", model.to_owned())
        .part(
            "image",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        )
}

/// Sends a request and reads its status and JSON body.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A test's duration as the whole seconds of a setting (at least 1).
fn whole_secs(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with infra/test, which starts an S3 server and sets it")
    })
}

/// A configuration on a fresh PostgreSQL database, its own RabbitMQ prefix and S3 key prefix.
async fn distributed_config() -> Config {
    let admin_url = env_or(
        "MEDINFORM_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let name = format!("medinform_api_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a database URL with a path");

    let mut config = Config::default();
    config.database.url = format!("{base}/{name}");
    config.queue.url = env_or(
        "MEDINFORM_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    );
    config.queue.prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    config.storage.backend = StorageBackend::S3;
    config.storage.s3 = S3Config {
        endpoint: required_env("MEDINFORM_TEST_S3_ENDPOINT"),
        bucket: required_env("MEDINFORM_TEST_S3_BUCKET"),
        region: env_or("MEDINFORM_TEST_S3_REGION", "garage"),
        access_key_id: required_env("MEDINFORM_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: required_env("MEDINFORM_TEST_S3_SECRET_ACCESS_KEY"),
        force_path_style: true,
        prefix: format!("test-{}/", uuid::Uuid::new_v4().simple()),
    };
    config
}

/// A queue whose first `failures` publishes fail, as when the broker is down.
pub struct FlakyQueue {
    pub inner: Arc<dyn JobQueue>,
    pub failures: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl JobQueue for FlakyQueue {
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::Backend(anyhow::anyhow!(
                "connection refused (injected)"
            )));
        }
        self.inner.publish(message).await
    }
    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        self.inner.subscribe(models, prefetch).await
    }
    async fn check(&self) -> Result<(), QueueError> {
        self.inner.check().await
    }
    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
}

/// A blob store that stores but cannot read back, as when storage is unreachable for workers.
pub struct UnreadableBlobs {
    pub inner: Arc<dyn BlobStore>,
}

#[async_trait]
impl BlobStore for UnreadableBlobs {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        self.inner.put(key, bytes, content_type).await
    }
    async fn get(&self, _key: &str) -> Result<Bytes, StorageError> {
        Err(StorageError::Backend(anyhow::anyhow!(
            "connection reset (injected)"
        )))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError> {
        self.inner.list(prefix, start_after, limit).await
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }
    fn describe(&self) -> String {
        format!("unreadable {}", self.inner.describe())
    }
}

/// A blob store that answers a put only some time after the object is stored, as a slow
/// network round trip would: a request dropped in that window has stored its image.
pub struct SlowAnsweringBlobs {
    pub inner: Arc<dyn BlobStore>,
    pub delay: Duration,
}

#[async_trait]
impl BlobStore for SlowAnsweringBlobs {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        self.inner.put(key, bytes, content_type).await?;
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError> {
        self.inner.list(prefix, start_after, limit).await
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }
    fn describe(&self) -> String {
        format!("slow {}", self.inner.describe())
    }
}

/// A queue whose first subscription closes after `deliveries_before_close` deliveries, as when
/// the broker goes away, and whose next `failing_subscribes` subscriptions fail, as while it is
/// down; publishing is left alone.
pub struct BrokerOutage {
    pub inner: Arc<dyn JobQueue>,
    pub deliveries_before_close: usize,
    pub failing_subscribes: std::sync::atomic::AtomicUsize,
    /// Subscriptions asked for so far.
    pub subscribes: Arc<std::sync::atomic::AtomicUsize>,
}

struct ClosingSubscription {
    inner: Option<Box<dyn Subscription>>,
    left: usize,
}

#[async_trait]
impl Subscription for ClosingSubscription {
    async fn next(&mut self) -> Option<Result<medinform_core::queue::Delivery, QueueError>> {
        if self.left == 0 {
            // Gone: what it held unacknowledged goes back, as a closed connection's would.
            self.inner = None;
            return None;
        }
        let delivery = self.inner.as_mut()?.next().await;
        self.left -= 1;
        delivery
    }
}

#[async_trait]
impl JobQueue for BrokerOutage {
    async fn publish(&self, message: &JobMessage) -> Result<(), QueueError> {
        self.inner.publish(message).await
    }
    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        use std::sync::atomic::Ordering;
        let n = self.subscribes.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            return Ok(Box::new(ClosingSubscription {
                inner: Some(self.inner.subscribe(models, prefetch).await?),
                left: self.deliveries_before_close,
            }));
        }
        if self
            .failing_subscribes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::Backend(anyhow::anyhow!(
                "connection refused (injected)"
            )));
        }
        self.inner.subscribe(models, prefetch).await
    }
    async fn check(&self) -> Result<(), QueueError> {
        self.inner.check().await
    }
    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }
    fn describe(&self) -> String {
        format!("outage-prone {}", self.inner.describe())
    }
}

/// An idempotency store whose process "dies" before it keeps the first response of each key:
/// that `complete` call never returns (and the request's claim is no longer kept alive), as
/// when the process is killed after the jobs were committed.
pub struct DiesBeforeAnswering {
    pub inner: Arc<dyn IdempotencyStore>,
    pub died: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait]
impl IdempotencyStore for DiesBeforeAnswering {
    async fn begin(&self, request: &NewIdempotencyKey) -> Result<Begin, DbError> {
        self.inner.begin(request).await
    }
    async fn keep_alive(
        &self,
        tenant: medinform_core::tenant::TenantId,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbError> {
        self.inner.keep_alive(tenant, key, now).await
    }
    async fn complete(
        &self,
        tenant: medinform_core::tenant::TenantId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), DbError> {
        let first = self.died.lock().unwrap().insert(key.to_owned());
        if first {
            std::future::pending::<()>().await;
        }
        self.inner.complete(tenant, key, response).await
    }
    async fn release(
        &self,
        tenant: medinform_core::tenant::TenantId,
        key: &str,
    ) -> Result<(), DbError> {
        self.inner.release(tenant, key).await
    }
    async fn purge_idempotency_keys(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, DbError> {
        self.inner.purge_idempotency_keys(now).await
    }
}

/// A `malaria` job of tenant `local` for the image `sha256` (`image_bytes` long), as the API
/// records it.
pub fn malaria_job(model_version: &str, sha256: String, image_bytes: i64) -> NewJob {
    NewJob {
        id: JobId::new(),
        tenant_id: medinform_core::tenant::TenantId::LOCAL,
        batch_id: None,
        model: "malaria".into(),
        model_version: model_version.into(),
        image_key: image_key(&sha256),
        image_sha256: sha256,
        image_content_type: "image/png".into(),
        image_bytes,
        client_reference: None,
        site: None,
        tags: Vec::new(),
        deadline: None,
        webhook_url: None,
        priority: Default::default(),
        submission_key: None,
        dicom: None,
    }
}

/// Stores `bytes`, records a queued `malaria` job for them and publishes it, as another API
/// process would (nothing is prepared for this process's worker).
pub async fn published_job(app: &TestApp, bytes: Vec<u8>) -> JobId {
    let sha = sha256_hex(&bytes);
    let size = bytes.len() as i64;
    app.backends
        .blobs
        .put(&image_key(&sha), bytes.into(), "image/png")
        .await
        .unwrap();
    let version = app
        .registry
        .get("malaria")
        .unwrap()
        .version()
        .unwrap()
        .to_owned();
    let id = app
        .backends
        .jobs
        .insert(&malaria_job(&version, sha, size))
        .await
        .unwrap()
        .id;
    app.backends
        .queue
        .publish(&JobMessage::screen(id, "malaria"))
        .await
        .unwrap();
    id
}
