//! Configuration: built-in defaults (the embedded mode), overridden by a TOML file, overridden by
//! `MEDINFORM_*` environment variables, overridden by command-line flags.
//!
//! Every setting is documented in `medinform.example.toml` at the repository root. An environment
//! variable names a setting by its path in upper case joined with `_`:
//! `MEDINFORM_STORAGE_S3_ENDPOINT` sets `storage.s3.endpoint`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::imaging::ImageLimits;
use crate::registry::ExecutionProvider;

/// The prefix of every environment variable that configures MedInform.
pub const ENV_PREFIX: &str = "MEDINFORM_";

/// All settings of one MedInform process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded defaults keep their files (SQLite database, images).
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub queue: QueueConfig,
    pub storage: StorageConfig,
    pub models: ModelsConfig,
    pub inference: InferenceConfig,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            queue: QueueConfig::default(),
            storage: StorageConfig::default(),
            models: ModelsConfig::default(),
            inference: InferenceConfig::default(),
            worker: WorkerConfig::default(),
            jobs: JobsConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Seconds the API waits for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds an `Idempotency-Key` is remembered.
    pub idempotency_ttl_secs: u64,
    /// The built web app (`frontend/dist`), served at `/`. Without an `index.html` there, `/`
    /// answers a page that says how to build it.
    pub web_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 30,
            idempotency_ttl_secs: 24 * 3600,
            web_dir: PathBuf::from("./frontend/dist"),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://…`; empty means `sqlite://<data_dir>/medinform.db`.
    pub url: String,
    /// Connections in the pool (0: a default that suits the backend).
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// `amqp://…` for RabbitMQ; empty means the in-process queue (one process only).
    pub url: String,
    /// Prefix of every exchange and queue name, so that deployments can share a broker.
    pub prefix: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: "medinform".into(),
        }
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Which blob store holds the uploaded images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Folder of the local backend; empty means `<data_dir>/images`.
    pub path: PathBuf,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Local,
            path: PathBuf::new(),
            s3: S3Config::default(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL (Garage, MinIO); empty means AWS S3 for `region`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (Garage, MinIO).
    pub force_path_style: bool,
    /// Prefix of every object key (several deployments can share a bucket).
    pub prefix: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            force_path_style: true,
            prefix: String::new(),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// The model registry: a folder per model.
    pub dir: PathBuf,
    /// Per-site decision thresholds, by model id; they override the manifests'.
    pub thresholds: HashMap<String, f64>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./models"),
            thresholds: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// `cpu`, `cuda` (fall back to CPU with a warning when CUDA is absent) or `auto`.
    pub execution_provider: ExecutionProvider,
    /// ONNX Runtime intra-op threads per model (0: ONNX Runtime's default).
    pub threads: usize,
    /// Path of `libonnxruntime.so`; empty means `ORT_DYLIB_PATH` or the project's `.venv`.
    pub onnxruntime_library: PathBuf,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            execution_provider: ExecutionProvider::Cpu,
            threads: 0,
            onnxruntime_library: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Model ids this worker serves (comma-separated in the environment); empty means all.
    pub models: Vec<String>,
    /// Messages a worker holds unacknowledged at once, per model lane (RabbitMQ prefetch).
    pub prefetch: u16,
    /// Most images in one model run.
    pub max_batch: usize,
    /// How long a batch waits for more jobs once its first job arrived, in milliseconds.
    pub batch_window_ms: u64,
    /// Batches decoded and run at the same time.
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            prefetch: 32,
            max_batch: 16,
            batch_window_ms: 20,
            concurrency: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Attempts before a job that keeps failing is marked `failed` and dead-lettered.
    pub max_attempts: i32,
    /// Seconds a worker may hold a job in `processing` before it is taken back.
    pub lease_secs: u64,
    /// Seconds after which a job whose publish was never confirmed is published again.
    pub republish_unconfirmed_after_secs: u64,
    /// Seconds after which a confirmed but still queued job is published again (a lost broker).
    pub republish_stale_after_secs: u64,
    /// How often the re-publisher looks, in seconds.
    pub sweep_interval_secs: u64,
    /// Queued jobs (over every tenant) past which submissions are refused with 503
    /// `queue_full` and `Retry-After`; 0: no bound.
    pub max_backlog: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            lease_secs: 300,
            republish_unconfirmed_after_secs: 10,
            republish_stale_after_secs: 3600,
            sweep_interval_secs: 5,
            max_backlog: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: usize,
    /// Largest accepted image, in pixels (width x height); refused before decoding.
    pub max_image_pixels: u64,
    /// Largest request that carries many images (`POST /v1/batches`, `/v1/batches/{id}/jobs`).
    pub max_request_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 20 * 1024 * 1024,
            max_image_pixels: 50_000_000,
            max_request_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Let requests without an API key act as the `local` tenant. Takes effect only in the
    /// embedded mode (in-process queue) listening on a loopback address; keys are required
    /// everywhere else.
    pub allow_anonymous: bool,
    /// Requests per minute per API key (the anonymous caller is one key); 0: no limit.
    pub rate_limit_per_minute: u32,
    /// Requests a key may make at once above its steady rate.
    pub rate_limit_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            rate_limit_per_minute: 600,
            rate_limit_burst: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Seconds a receiver has to answer one delivery attempt.
    pub timeout_secs: u64,
    /// Seconds before each retry of a failed attempt (±20 % jitter); after the last one the
    /// delivery is `failed`. The default spreads 8 attempts over about 28 hours.
    pub retry_schedule_secs: Vec<u64>,
    /// Allow targets on loopback, private or link-local addresses (a lab system on the local
    /// network). Off by default: webhooks must not reach into the service's own network.
    pub allow_private_targets: bool,
    /// Seconds a rotated-out secret keeps signing alongside the new one.
    pub secret_overlap_secs: u64,
    /// How often the dispatcher looks for finished jobs and due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Deliveries sent at the same time by one process.
    pub max_concurrent_sends: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 15,
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18000, 36000, 36000],
            allow_private_targets: false,
            secret_overlap_secs: 86400,
            poll_interval_ms: 1000,
            max_concurrent_sends: 16,
        }
    }
}

impl WebhooksConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=300).contains(&self.timeout_secs) {
            bail!("webhooks.timeout_secs must be between 1 and 300");
        }
        if self.retry_schedule_secs.len() > 50 {
            bail!("webhooks.retry_schedule_secs has more than 50 retries");
        }
        if let Some(bad) = self
            .retry_schedule_secs
            .iter()
            .find(|s| !(1..=7 * 24 * 3600).contains(*s))
        {
            bail!("webhooks.retry_schedule_secs: {bad} is not between 1 and 604800 (a week)");
        }
        if self.secret_overlap_secs > 30 * 24 * 3600 {
            bail!("webhooks.secret_overlap_secs must be at most 2592000 (30 days)");
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            bail!("webhooks.poll_interval_ms must be between 10 and 60000");
        }
        if !(1..=1024).contains(&self.max_concurrent_sends) {
            bail!("webhooks.max_concurrent_sends must be between 1 and 1024");
        }
        Ok(())
    }
}

impl LimitsConfig {
    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_bytes: self.max_upload_bytes,
            max_pixels: self.max_image_pixels,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `MEDINFORM_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let toml::Value::Table(mut tree) =
            toml::Value::try_from(Config::default()).context("default configuration")?
        else {
            bail!("the default configuration is not a table");
        };
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading configuration file {}", file.display()))?;
            let from_file: toml::Table = text
                .parse()
                .with_context(|| format!("parsing configuration file {}", file.display()))?;
            merge(&mut tree, from_file);
        }
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix(ENV_PREFIX)
                    .is_some_and(|name| !is_process_variable(name))
            })
            .collect();
        env.sort();
        for (name, value) in env {
            apply_env(&mut tree, &name[ENV_PREFIX.len()..], &value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        let config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot, naming the setting at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        let db = self.database_url();
        if !(db.starts_with("postgres://")
            || db.starts_with("postgresql://")
            || db.starts_with("sqlite:"))
        {
            bail!("database.url must start with postgres:// or sqlite:, got {db:?}");
        }
        if !(self.queue.url.is_empty()
            || self.queue.url.starts_with("amqp://")
            || self.queue.url.starts_with("amqps://"))
        {
            bail!("queue.url must be empty (in-process queue) or an amqp:// URL");
        }
        if self.storage.backend == StorageBackend::S3 && self.storage.s3.bucket.is_empty() {
            bail!("storage.s3.bucket is required when storage.backend = \"s3\"");
        }
        if !(1..=7 * 24 * 3600).contains(&self.jobs.lease_secs) {
            bail!("jobs.lease_secs must be between 1 and 604800 (a week)");
        }
        if self.server.idempotency_ttl_secs == 0 {
            bail!("server.idempotency_ttl_secs must be at least 1");
        }
        if self.limits.max_request_bytes < self.limits.max_upload_bytes {
            bail!("limits.max_request_bytes must be at least limits.max_upload_bytes");
        }
        if self.jobs.max_attempts < 1 {
            bail!("jobs.max_attempts must be at least 1");
        }
        if self.worker.max_batch == 0 || self.worker.concurrency == 0 || self.worker.prefetch == 0 {
            bail!("worker.max_batch, worker.concurrency and worker.prefetch must be at least 1");
        }
        if self.auth.rate_limit_per_minute > 0 && self.auth.rate_limit_burst == 0 {
            bail!(
                "auth.rate_limit_burst must be at least 1 when auth.rate_limit_per_minute is set \
                 (0 disables the rate limit)"
            );
        }
        for (model, threshold) in &self.models.thresholds {
            if !(*threshold > 0.0 && *threshold < 1.0) {
                bail!("models.thresholds.{model} must be between 0 and 1, got {threshold}");
            }
        }
        self.webhooks.validate()
    }

    /// The database URL in force (the embedded SQLite file when none is set).
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("medinform.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The folder of the local blob store.
    pub fn storage_path(&self) -> PathBuf {
        if self.storage.path.as_os_str().is_empty() {
            self.data_dir.join("images")
        } else {
            self.storage.path.clone()
        }
    }

    /// True when every backend is the embedded one: the process must run API and worker together.
    pub fn is_embedded_queue(&self) -> bool {
        self.queue.url.is_empty()
    }
}

/// Shows scheme, host and path of a URL but never its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(overlay)) => merge(base, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets the setting that `name` (upper case, `_`-joined path) denotes. Keys contain `_` too, so
/// the path is found by matching the known keys of each table level.
/// `MEDINFORM_*` variables that are not settings: read by the command line (`CONFIG`,
/// `LOG`, `LOG_FORMAT`), by the scripts and training (`PYTHON`, `BOOTSTRAP_PYTHON`,
/// `TRAIN_THREADS`), by docker-compose.yml (`HTTP_PORT`, `S3_BUCKET`) or by the test suite
/// (`TEST_*`) or by the benchmarks (`BENCH_*`).
fn is_process_variable(name: &str) -> bool {
    matches!(
        name,
        "CONFIG"
            | "LOG"
            | "LOG_FORMAT"
            | "PYTHON"
            | "BOOTSTRAP_PYTHON"
            | "TRAIN_THREADS"
            | "HTTP_PORT"
            | "S3_BUCKET"
    ) || name.starts_with("TEST_")
        || name.starts_with("BENCH_")
}

fn apply_env(tree: &mut toml::Table, name: &str, value: &str) -> anyhow::Result<()> {
    let lower = name.to_ascii_lowercase();
    let mut keys: Vec<&String> = tree.keys().collect();
    // Longest key first, so `max_upload_bytes` wins over a shorter key that is its prefix.
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for key in keys {
        if lower == *key {
            let key = key.clone();
            let parsed = parse_env_value(tree.get(&key), value);
            tree.insert(key, parsed);
            return Ok(());
        }
        if let Some(rest) = lower.strip_prefix(&format!("{key}_")) {
            let key = key.clone();
            let rest_upper = rest.to_ascii_uppercase();
            return match tree.get_mut(&key) {
                Some(toml::Value::Table(inner)) => apply_env(inner, &rest_upper, value),
                _ => bail!("{key} is not a section"),
            };
        }
    }
    // A map section (such as models.thresholds) takes any key.
    if tree.is_empty() || tree.values().all(|v| !v.is_table()) {
        tree.insert(lower, parse_env_value(None, value));
        return Ok(());
    }
    bail!("no such setting")
}

fn parse_env_value(current: Option<&toml::Value>, value: &str) -> toml::Value {
    match current {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        // A list of numbers (such as webhooks.retry_schedule_secs) stays one.
        Some(toml::Value::Array(items)) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| match (items.first(), s.parse::<i64>()) {
                    (Some(toml::Value::Integer(_)), Ok(n)) => toml::Value::Integer(n),
                    _ => toml::Value::String(s.to_string()),
                })
                .collect(),
        ),
        _ => value
            .parse::<toml::Value>()
            .ok()
            .or_else(|| {
                format!("v = {value}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
            })
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.database_url(), "sqlite://./data/medinform.db");
        assert!(config.is_embedded_queue());
        assert_eq!(config.storage.backend, StorageBackend::Local);
        assert_eq!(config.storage_path(), PathBuf::from("./data/images"));
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("medinform.toml");
        std::fs::write(
            &file,
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"from-file\"\n[worker]\nmax_batch = 4\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("MEDINFORM_STORAGE_S3_BUCKET", "from-env"),
                ("MEDINFORM_STORAGE_S3_FORCE_PATH_STYLE", "false"),
                ("MEDINFORM_LIMITS_MAX_UPLOAD_BYTES", "1024"),
                ("MEDINFORM_WORKER_MODELS", "malaria, tuberculosis"),
                ("MEDINFORM_MODELS_THRESHOLDS_TUBERCULOSIS", "0.35"),
                ("MEDINFORM_DATA_DIR", "/var/lib/medinform"),
                ("OTHER_VARIABLE", "ignored"),
                ("MEDINFORM_CONFIG", "read by the command line"),
                ("MEDINFORM_LOG", "debug"),
                ("MEDINFORM_TEST_DATABASE_URL", "read by the tests"),
                ("MEDINFORM_PYTHON", "read by the tests and scripts"),
            ]),
        )
        .unwrap();
        assert_eq!(config.storage.backend, StorageBackend::S3);
        assert_eq!(config.storage.s3.bucket, "from-env");
        assert!(!config.storage.s3.force_path_style);
        assert_eq!(config.limits.max_upload_bytes, 1024);
        assert_eq!(config.worker.max_batch, 4);
        assert_eq!(config.worker.models, vec!["malaria", "tuberculosis"]);
        assert_eq!(config.models.thresholds["tuberculosis"], 0.35);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/medinform"));
    }

    #[test]
    fn webhook_settings_load_from_the_environment_and_are_checked() {
        let config = Config::load(
            None,
            env(&[
                ("MEDINFORM_WEBHOOKS_RETRY_SCHEDULE_SECS", "1, 2,3"),
                ("MEDINFORM_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(config.webhooks.retry_schedule_secs, vec![1, 2, 3]);
        assert!(config.webhooks.allow_private_targets);
        let err = Config::load(None, env(&[("MEDINFORM_WEBHOOKS_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("webhooks.timeout_secs"),
            "{err:#}"
        );
        let err = Config::load(
            None,
            env(&[("MEDINFORM_WEBHOOKS_RETRY_SCHEDULE_SECS", "5,0")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("webhooks.retry_schedule_secs"),
            "{err:#}"
        );
    }

    #[test]
    fn the_example_file_documents_every_setting_with_its_default() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../medinform.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let documented: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(
            documented, defaults,
            "medinform.example.toml is out of date"
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let err = Config::load(None, env(&[("MEDINFORM_QUEUE_URL", "redis://x")])).unwrap_err();
        assert!(format!("{err:#}").contains("queue.url"), "{err:#}");
        let err = Config::load(None, env(&[("MEDINFORM_NO_SUCH_THING", "1")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("MEDINFORM_NO_SUCH_THING"),
            "{err:#}"
        );
        let err = Config::load(None, env(&[("MEDINFORM_WORKER_PREFETCH", "lots")])).unwrap_err();
        assert!(format!("{err:#}").contains("prefetch"), "{err:#}");
        let err = Config::load(None, env(&[("MEDINFORM_AUTH_RATE_LIMIT_BURST", "0")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("auth.rate_limit_burst"),
            "{err:#}"
        );
        let config = Config::load(
            None,
            env(&[
                ("MEDINFORM_AUTH_ALLOW_ANONYMOUS", "false"),
                ("MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE", "0"),
                ("MEDINFORM_AUTH_RATE_LIMIT_BURST", "0"),
                ("MEDINFORM_JOBS_MAX_BACKLOG", "25"),
            ]),
        )
        .unwrap();
        assert!(!config.auth.allow_anonymous);
        assert_eq!(config.auth.rate_limit_per_minute, 0);
        assert_eq!(config.jobs.max_backlog, 25);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut config = Config::default();
        config.storage.s3.secret_access_key = "s3cr3t".into();
        config.database.url = "postgres://app:hunter2@db/medinform".into();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:***@db/medinform"));
    }
}
