//! Building a [`Config`]: defaults, then a TOML file, then `MEDINFORM_*` variables; then the
//! checks that serde cannot make.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Config, ENV_PREFIX, StorageBackend};

impl Config {
    /// Defaults, then the TOML file (if any), then `MEDINFORM_*` variables from `env`. A
    /// variable that names no setting and resembles none is logged and ignored
    /// ([`Config::load_noting`]).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let (config, ignored) = Self::load_noting(file, env)?;
        for note in ignored {
            tracing::warn!("{note}");
        }
        Ok(config)
    }

    /// [`Config::load`], with what it says of each `MEDINFORM_*` variable it ignored: one that
    /// names no setting, is no likely typo of one and is not of a section (another program's
    /// variable, or a Kubernetes service link such as `MEDINFORM_SERVICE_HOST`). A likely typo
    /// (`MEDINFORM_LIMITS_MAX_UPLOD_BYTES`, `MEDINFORM_QUEUE_ULR`) is an error that names the
    /// setting it resembles: a setting silently left at its default is worse than a refusal.
    pub fn load_noting(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let toml::Value::Table(mut tree) =
            toml::Value::try_from(Config::default()).context("default configuration")?
        else {
            bail!("the default configuration is not a table");
        };
        let settings = setting_names(&tree);
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
        let mut ignored = Vec::new();
        for (name, value) in env {
            let applied = apply_env(&mut tree, &name[ENV_PREFIX.len()..], &value)
                .with_context(|| format!("environment variable {name}"))?;
            if !applied {
                ignored.push(unknown_variable(&name, &settings)?);
            }
        }
        let config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok((config, ignored))
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
        if self.server.idempotency_lease_secs == 0 {
            bail!("server.idempotency_lease_secs must be at least 1");
        }
        if self.server.header_read_timeout_secs == 0 || self.server.body_read_timeout_secs == 0 {
            bail!(
                "server.header_read_timeout_secs and server.body_read_timeout_secs must be at least 1"
            );
        }
        if self.limits.max_request_bytes < self.limits.max_upload_bytes {
            bail!("limits.max_request_bytes must be at least limits.max_upload_bytes");
        }
        if self.limits.max_decoded_bytes == 0
            || self.limits.max_decoding_bytes < self.limits.max_decoded_bytes
        {
            bail!(
                "limits.max_decoding_bytes must be at least limits.max_decoded_bytes, which must be at least 1"
            );
        }
        if !(0..=19).contains(&self.inference.bulk_nice) {
            bail!(
                "inference.bulk_nice must be between 0 and 19, got {}",
                self.inference.bulk_nice
            );
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
        self.metrics.listen_addr()?;
        self.dicom.validate()?;
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

pub(super) fn merge(base: &mut toml::Table, overlay: toml::Table) {
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

/// Sets the setting that `name` (a `MEDINFORM_` variable without its prefix, e.g.
/// `LIMITS_MAX_UPLOAD_BYTES`) names in `tree`, the defaults and file as a TOML table: the name is
/// matched against the table's keys, longest first, descending into sections at each `_`; the
/// value is parsed to the type the setting has (a string stays a string, a list splits on
/// commas). False: the name matches no setting (a map section such as `models.thresholds`
/// takes any key); an error: it names a setting but not as one (a value as a section).
pub(super) fn apply_env(tree: &mut toml::Table, name: &str, value: &str) -> anyhow::Result<bool> {
    apply_env_in(tree, "", name, value)
}

/// The sections that take any key: a model id, a tenant name, an AE title.
const MAP_SECTIONS: &[&str] = &[
    "models.thresholds",
    "dicom.patient_data_by_tenant",
    "dicom.callers",
];

/// [`apply_env`] in the table at `path` (`models`, `storage.s3`; empty: the root).
fn apply_env_in(
    tree: &mut toml::Table,
    path: &str,
    name: &str,
    value: &str,
) -> anyhow::Result<bool> {
    let lower = name.to_ascii_lowercase();
    let mut keys: Vec<&String> = tree.keys().collect();
    // Longest key first, so `max_upload_bytes` wins over a shorter key that is its prefix.
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for key in keys {
        if lower == *key {
            let key = key.clone();
            let parsed = parse_env_value(tree.get(&key), value);
            tree.insert(key, parsed);
            return Ok(true);
        }
        if let Some(rest) = lower.strip_prefix(&format!("{key}_")) {
            let key = key.clone();
            let rest_upper = rest.to_ascii_uppercase();
            return match tree.get_mut(&key) {
                Some(toml::Value::Table(inner)) => {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    apply_env_in(inner, &path, &rest_upper, value)
                }
                _ => bail!("{key} is not a section"),
            };
        }
    }
    if MAP_SECTIONS.contains(&path) {
        tree.insert(lower, parse_env_value(None, value));
        return Ok(true);
    }
    Ok(false)
}

/// The variable of every setting of `tree` (the defaults), such as `LIMITS_MAX_UPLOAD_BYTES`;
/// a map section (`models.thresholds`) counts as one name.
fn setting_names(tree: &toml::Table) -> Vec<String> {
    let mut names = Vec::new();
    for (key, value) in tree {
        let name = key.to_ascii_uppercase();
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => names.extend(
                setting_names(inner)
                    .into_iter()
                    .map(|rest| format!("{name}_{rest}")),
            ),
            _ => names.push(name),
        }
    }
    names
}

/// Why a `MEDINFORM_*` variable that names no setting is ignored (the note logged), or the
/// error that refuses it: a likely typo of a setting, or a name in a section of the settings.
fn unknown_variable(variable: &str, settings: &[String]) -> anyhow::Result<String> {
    let name = &variable[ENV_PREFIX.len()..];
    if is_service_link(name) {
        return Ok(format!(
            "environment variable {variable} ignored: it looks like a Kubernetes service link, \
             not a setting (set enableServiceLinks: false on the pod)"
        ));
    }
    let closest = settings
        .iter()
        .map(|setting| (strsim::damerau_levenshtein(name, setting), setting))
        .min();
    if let Some((distance, setting)) = closest
        && distance <= (setting.len() / 6).max(2)
    {
        bail!(
            "environment variable {variable}: no such setting; did you mean {ENV_PREFIX}{setting}? \
             (medinform.example.toml lists every setting)"
        );
    }
    let section = name.split('_').next().unwrap_or_default();
    let in_section: Vec<&String> = settings
        .iter()
        .filter(|s| s.split('_').next() == Some(section) && s.contains('_'))
        .collect();
    if !in_section.is_empty() {
        bail!(
            "environment variable {variable}: no such setting in [{}]; its settings are {}",
            section.to_ascii_lowercase(),
            in_section
                .iter()
                .map(|s| format!("{ENV_PREFIX}{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(format!(
        "environment variable {variable} ignored: it names no setting and resembles none \
         (another program's variable?)"
    ))
}

/// Whether `name` (after `MEDINFORM_`) has the shape of the variables Kubernetes gives a pod
/// for a Service named `medinform` or `medinform-*`: `SERVICE_HOST`, `SERVICE_PORT`,
/// `SERVICE_PORT_HTTP`, `PORT`, `PORT_8080_TCP`, `PORT_8080_TCP_ADDR`, `API_SERVICE_HOST`, ...
fn is_service_link(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    let service = parts
        .iter()
        .position(|p| *p == "SERVICE" || *p == "PORT")
        .map(|at| &parts[at..]);
    match service {
        Some(["SERVICE", "HOST"] | ["SERVICE", "PORT", ..] | ["PORT"]) => true,
        Some(["PORT", port, protocol, rest @ ..]) => {
            port.chars().all(|c| c.is_ascii_digit())
                && matches!(*protocol, "TCP" | "UDP" | "SCTP")
                && matches!(rest, [] | ["PROTO" | "PORT" | "ADDR"])
        }
        _ => false,
    }
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
