//! Configuration: built-in defaults (the embedded mode), overridden by a TOML file, overridden by
//! `MEDINFORM_*` environment variables, overridden by command-line flags.
//!
//! Every setting is documented in `medinform.example.toml` at the repository root. An environment
//! variable names a setting by its path in upper case joined with `_`:
//! `MEDINFORM_STORAGE_S3_ENDPOINT` sets `storage.s3.endpoint`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::imaging::{ImageLimits, PatientData};
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
    pub metrics: MetricsConfig,
    pub dicom: DicomConfig,
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
            metrics: MetricsConfig::default(),
            dicom: DicomConfig::default(),
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
    /// Seconds after which a request with an `Idempotency-Key` that is still unanswered, and
    /// whose process stopped keeping its claim alive, is taken to have died: a retry then runs
    /// it again, and finds the jobs it had already created. A batch that such a request was
    /// adding images to, which stays open while it runs, is let go after as long.
    pub idempotency_lease_secs: u64,
    /// Seconds a connection may take to send a request's headers; it also bounds how long an
    /// idle connection (a new one, or a kept-alive one between requests) stays open.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may go without sending any bytes before the request is answered
    /// 408 `request_timeout` and the connection closed.
    pub body_read_timeout_secs: u64,
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
            idempotency_lease_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
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
    /// Folder of the local backend; empty means `<data_dir>/images`. With a SQLite database,
    /// images of up to [`crate::storage::INLINE_MAX_BYTES`] are kept in the database instead
    /// ([`crate::storage::EmbeddedBlobStore`]).
    pub path: PathBuf,
    pub s3: S3Config,
    /// Seconds an image that no job refers to is kept before the orphan sweep deletes it (an
    /// upload whose job was never recorded: the process died between the two).
    pub orphan_grace_secs: u64,
    /// Seconds between orphan sweeps, run by worker processes; 0: never.
    pub sweep_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Local,
            path: PathBuf::new(),
            s3: S3Config::default(),
            orphan_grace_secs: 24 * 3600,
            sweep_interval_secs: 3600,
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
    /// Whether jobs may use models whose manifest declares `stage = "research"`; a site that
    /// screens for care sets this to false and such jobs answer 422 `model_research_only`.
    pub allow_research: bool,
    /// Per-site decision thresholds, by model id; they override the manifests'.
    pub thresholds: HashMap<String, f64>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./models"),
            allow_research: true,
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
    /// Whether ONNX Runtime's idle intra-op threads spin waiting for the next run (its own
    /// default) instead of sleeping. Spinning makes each run a little faster and burns the CPU
    /// between runs that the API, the decoders and the database need when they share the cores.
    pub spinning: bool,
    /// How many steps below the process (0-19, Linux) the bulk lane's threads are scheduled:
    /// a drive's decoding and model runs ([`crate::cpu`]). 0 shares the cores as equals; 10
    /// gives a clinic's work about nine tenths of them while a drive runs, at the cost of the
    /// drive's CPU efficiency when the cores are contended.
    pub bulk_nice: i32,
    /// Path of `libonnxruntime.so`; empty means `ORT_DYLIB_PATH` or the project's `.venv`.
    pub onnxruntime_library: PathBuf,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            execution_provider: ExecutionProvider::default(),
            threads: 0,
            spinning: false,
            bulk_nice: 0,
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
    /// Queued jobs of one tenant past which its submissions are refused the same way, so that
    /// one programme's drive cannot fill the backlog that every tenant shares; 0: no bound of
    /// its own.
    pub max_backlog_per_tenant: u64,
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
            max_backlog_per_tenant: 0,
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
    /// Largest decoded image, in bytes (pixels x channels x bytes per sample); refused from
    /// the header, before decoding.
    pub max_decoded_bytes: u64,
    /// The bytes that images being decoded may hold at once in one process (API and worker);
    /// further decodes wait for room.
    pub max_decoding_bytes: u64,
    /// Largest request that carries many images (`POST /v1/batches`, `/v1/batches/{id}/jobs`).
    pub max_request_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 20 * 1024 * 1024,
            max_image_pixels: 50_000_000,
            max_decoded_bytes: 200 * 1024 * 1024,
            max_decoding_bytes: 512 * 1024 * 1024,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate address for `GET /metrics` (and `/healthz`), such as `0.0.0.0:9090`; empty:
    /// `/metrics` is served on `server.listen` by the processes that have the API, and a
    /// `medinform worker` exports none.
    pub listen: String,
    /// Label the job counters with the tenant as well as the model: one series per tenant and
    /// model, for deployments with tens of tenants, not thousands.
    pub per_tenant: bool,
}

impl MetricsConfig {
    /// The separate metrics address, if one is set.
    pub fn listen_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        optional_addr("metrics.listen", &self.listen, "0.0.0.0:9090")
    }
}

/// DICOM: patient identity in DICOM uploads, the routing of instances that PACS and modalities
/// send (DICOMweb STOW-RS, DIMSE C-STORE), and the C-STORE service.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomConfig {
    /// `keep`, `pseudonymize` or `drop` (the default): what a job records of the Patient ID and
    /// whether the stored object is de-identified.
    pub patient_data: PatientData,
    /// `patient_data` for a tenant, by tenant name, over the default.
    pub patient_data_by_tenant: HashMap<String, PatientData>,
    /// The key of the keyed hash (HMAC-SHA256) that turns a Patient ID into its pseudonym;
    /// required (32 characters or more) where any tenant pseudonymizes. A secret.
    pub pseudonym_key: String,
    /// Which models screen an instance that arrives by STOW-RS or C-STORE: every rule that
    /// matches adds its models; an instance no rule matches is stored and reported, not
    /// screened.
    pub routes: Vec<DicomRoute>,
    /// The address of the DICOM C-STORE and C-ECHO service (`0.0.0.0:11112`); empty: none.
    pub listen: String,
    /// The AE title the C-STORE service answers to.
    pub ae_title: String,
    /// The calling AE titles whose associations are accepted, each with the tenant its
    /// instances belong to.
    pub callers: HashMap<String, String>,
    /// Associations served at once; more wait for a free one.
    pub max_associations: usize,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            patient_data: PatientData::default(),
            patient_data_by_tenant: HashMap::new(),
            pseudonym_key: String::new(),
            routes: Vec::new(),
            listen: String::new(),
            ae_title: "MEDINFORM".to_owned(),
            callers: HashMap::new(),
            max_associations: 16,
        }
    }
}

/// A routing rule: instances of these modalities and body parts go to these models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomRoute {
    /// Modality (0008,0060) values the rule takes (`CR`, `DX`); empty: any.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Body Part Examined (0018,0015) values the rule takes (`CHEST`); `""` stands for an
    /// instance that gives none; empty: any.
    #[serde(default)]
    pub body_parts: Vec<String>,
    /// The models that screen a matching instance.
    pub models: Vec<String>,
}

impl DicomRoute {
    /// Whether an instance of this modality and body part matches.
    pub fn matches(&self, modality: Option<&str>, body_part: Option<&str>) -> bool {
        let any_of = |values: &[String], value: Option<&str>| {
            values.is_empty()
                || values
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(value.unwrap_or("")))
        };
        any_of(&self.modalities, modality) && any_of(&self.body_parts, body_part)
    }
}

impl fmt::Debug for DicomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DicomConfig")
            .field("patient_data", &self.patient_data)
            .field("patient_data_by_tenant", &self.patient_data_by_tenant)
            .field("pseudonym_key", &"***")
            .field("routes", &self.routes)
            .field("listen", &self.listen)
            .field("ae_title", &self.ae_title)
            .field("callers", &self.callers)
            .field("max_associations", &self.max_associations)
            .finish()
    }
}

impl DicomConfig {
    /// The models that screen an instance of this modality and body part (each once, in the
    /// order of the rules).
    pub fn route(&self, modality: Option<&str>, body_part: Option<&str>) -> Vec<&str> {
        let mut models: Vec<&str> = Vec::new();
        for route in self
            .routes
            .iter()
            .filter(|r| r.matches(modality, body_part))
        {
            for model in &route.models {
                if !models.contains(&model.as_str()) {
                    models.push(model);
                }
            }
        }
        models
    }

    /// The C-STORE service's address, if one is set.
    pub fn listen_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        optional_addr("dicom.listen", &self.listen, "0.0.0.0:11112")
    }

    /// The rule for the tenant named `tenant`.
    /// Tenant names are matched without regard to case, as `MEDINFORM_*` variables name them.
    pub fn patient_data_for(&self, tenant: &str) -> PatientData {
        self.patient_data_by_tenant
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(tenant))
            .map_or(self.patient_data, |(_, rule)| *rule)
    }

    /// The tenant whose instances a calling AE title sends, if it is accepted. AE titles are
    /// matched without regard to case or trailing spaces (`MEDINFORM_*` variables are read in
    /// lower case).
    pub fn caller_tenant(&self, calling_ae_title: &str) -> Option<&str> {
        let calling = calling_ae_title.trim();
        self.callers
            .iter()
            .find(|(title, _)| title.trim().eq_ignore_ascii_case(calling))
            .map(|(_, tenant)| tenant.as_str())
    }

    fn validate(&self) -> anyhow::Result<()> {
        let pseudonymizes = std::iter::once(&self.patient_data)
            .chain(self.patient_data_by_tenant.values())
            .any(|p| *p == PatientData::Pseudonymize);
        self.listen_addr()?;
        // PS3.8 9.3.2: 1 to 16 characters of the default repertoire, not all spaces, no backslash.
        let ae_title_ok = |t: &str| {
            (1..=16).contains(&t.len())
                && !t.trim().is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_graphic() && c != '\\' || c == ' ')
        };
        if !ae_title_ok(&self.ae_title) {
            bail!(
                "dicom.ae_title must be 1 to 16 printable ASCII characters, got {:?}",
                self.ae_title
            );
        }
        if let Some(bad) = self.callers.keys().find(|t| !ae_title_ok(t)) {
            bail!("dicom.callers: {bad:?} is not an AE title (1 to 16 printable ASCII characters)");
        }
        if !(1..=1024).contains(&self.max_associations) {
            bail!("dicom.max_associations must be between 1 and 1024");
        }
        if let Some(i) = self.routes.iter().position(|r| r.models.is_empty()) {
            bail!("dicom.routes[{i}] names no models");
        }
        if pseudonymizes && self.pseudonym_key.chars().count() < 32 {
            bail!(
                "dicom.pseudonym_key must be set, 32 characters or more, where dicom.patient_data \
                 (or a tenant's in dicom.patient_data_by_tenant) is \"pseudonymize\""
            );
        }
        Ok(())
    }
}

impl LimitsConfig {
    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_bytes: self.max_upload_bytes,
            max_pixels: self.max_image_pixels,
            max_decoded_bytes: self.max_decoded_bytes,
        }
    }
}

/// The address a `listen` setting names; `None` when it is empty.
fn optional_addr(setting: &str, value: &str, example: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse() {
        Ok(addr) => Ok(Some(addr)),
        Err(_) => bail!("{setting} must be empty or an address such as {example}, got {value:?}"),
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

mod load;
#[cfg(test)]
mod tests;
