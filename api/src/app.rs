//! One MedInform process, wired from its configuration: the HTTP API, the DICOM C-STORE
//! service, the worker, and the background tasks its role runs (re-publisher, webhook
//! dispatcher, orphan sweep).
//!
//! `medinform serve|api|worker|dicom` and every API test build it here, so that the tests
//! exercise the production wiring; a test changes only what [`Overrides`] lets it
//! (fault-injecting backends, a test registry, the authentication mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medinform_core::app::Backends;
use medinform_core::config::{Config, StorageBackend};
use medinform_core::registry::{Registry, RegistryOptions};
use medinform_core::republish::Republisher;
use medinform_core::storage::sweep::OrphanSweeper;
use medinform_core::webhooks::Dispatcher;
use medinform_worker::{Worker, WorkerSettings};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dicom::scp::DicomServer;
use crate::http::HttpTimeouts;
use crate::idempotency::IdempotencySettings;
use crate::telemetry::MetricsServer;
use crate::{Admission, ApiServer, AppState, Authenticator};

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API alone (`medinform api`): workers run elsewhere.
    Api,
    /// A worker alone (`medinform worker`), with the re-publisher, the webhook dispatcher and
    /// the orphan sweep.
    Worker,
    /// Both in one process (`medinform serve`).
    Both,
    /// The DICOM C-STORE service alone (`medinform dicom`): workers run elsewhere.
    Dicom,
}

impl Role {
    fn has_api(self) -> bool {
        matches!(self, Self::Api | Self::Both)
    }

    fn has_worker(self) -> bool {
        matches!(self, Self::Worker | Self::Both)
    }

    /// Whether the DICOM C-STORE service runs, where `dicom.listen` is set.
    fn has_dicom(self) -> bool {
        self != Self::Worker
    }
}

/// What a caller may put in place of what the configuration would build.
#[derive(Default)]
pub struct Overrides {
    /// Backends already connected (tests wrap them to inject faults). Default: connected from
    /// the configuration.
    pub backends: Option<Backends>,
    /// Default: loaded from `models.dir`.
    pub registry: Option<Arc<Registry>>,
    /// Default: [`Authenticator::from_config`].
    pub authenticator: Option<Authenticator>,
    /// Leave out the worker and the re-publisher although the role has them (jobs stay
    /// queued).
    pub without_worker: bool,
    /// Leave out the webhook dispatcher although the role has it (nothing is delivered).
    pub without_dispatcher: bool,
}

/// A running process: its tasks run until [`App::shutdown`] or until one of them ends.
pub struct App {
    pub backends: Backends,
    pub registry: Arc<Registry>,
    addr: Option<SocketAddr>,
    dicom_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl App {
    /// Connects (unless given) and migrates the backends, loads the registry, binds the API
    /// and starts every task of `role`.
    pub async fn build(config: &Config, role: Role, overrides: Overrides) -> anyhow::Result<Self> {
        let backends = match overrides.backends {
            Some(backends) => backends,
            None => {
                prepare_data_dir(config)?;
                Backends::connect(config).await?
            }
        };
        backends.migrate().await?;
        // Before the registry loads: its models' metrics are recorded as they load.
        medinform_core::metrics::install(config.metrics.per_tenant);
        let registry = match overrides.registry {
            Some(registry) => registry,
            None => Arc::new(load_registry(config, role.has_worker())?),
        };
        check_dicom_routes(config, &registry)?;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if role.has_worker() && !overrides.without_worker {
            let republisher = Republisher::new(
                backends.jobs.clone(),
                backends.queue.clone(),
                config.jobs.clone(),
            );
            // Before the worker starts, so that it never claims what this takes back.
            republisher
                .recover()
                .await
                .context("taking back the jobs of the previous process")?;
            tasks.spawn(ok_when_done(republisher.run(shutdown.clone())));
            let sweeper = OrphanSweeper::new(
                backends.blobs.clone(),
                backends.jobs.clone(),
                Duration::from_secs(config.storage.orphan_grace_secs),
                Duration::from_secs(config.storage.sweep_interval_secs),
            );
            tasks.spawn(ok_when_done(sweeper.run(shutdown.clone())));
            let worker = Worker::new(
                backends.clone(),
                registry.clone(),
                WorkerSettings {
                    worker: config.worker.clone(),
                    jobs: config.jobs.clone(),
                    limits: config.limits.image_limits(),
                },
            );
            let stop = shutdown.clone();
            tasks.spawn(async move { worker.run(stop).await.context("worker") });
        }
        if role.has_worker() && !overrides.without_dispatcher {
            let dispatcher = Dispatcher::new(backends.webhooks.clone(), config.webhooks.clone())?
                .with_batches(backends.batches.clone(), registry.clone());
            tasks.spawn(ok_when_done(dispatcher.run(shutdown.clone())));
        }
        let mut metrics_addr = None;
        if let Some(listen) = config.metrics.listen_addr()? {
            let server = MetricsServer::bind(listen, backends.clone()).await?;
            metrics_addr = Some(server.local_addr()?);
            let stop = shutdown.clone();
            tasks.spawn(async move { server.serve(stop).await.context("metrics") });
        }
        let mut addr = None;
        let mut dicom_addr = None;
        let dicom_listen = config.dicom.listen_addr()?.filter(|_| role.has_dicom());
        if role.has_api() || dicom_listen.is_some() {
            let authenticator = overrides
                .authenticator
                .unwrap_or_else(|| Authenticator::from_config(config, backends.tenants.clone()));
            let state = app_state(config, backends.clone(), registry.clone(), authenticator);
            let grace = Duration::from_secs(config.server.shutdown_grace_secs);
            if let Some(listen) = dicom_listen {
                let server = DicomServer::bind(listen, state.clone()).await?;
                dicom_addr = Some(server.local_addr()?);
                let stop = shutdown.clone();
                tasks.spawn(async move { server.serve(stop, grace).await.context("DICOM") });
            }
            if role.has_api() {
                let server = ApiServer::bind(config.server.listen, state).await?;
                addr = Some(server.local_addr()?);
                let stop = shutdown.clone();
                tasks.spawn(async move { server.serve(stop, grace).await.context("API") });
            }
        }
        Ok(Self {
            backends,
            registry,
            addr,
            dicom_addr,
            metrics_addr,
            shutdown,
            tasks,
        })
    }

    /// Where the API listens (`None` for a worker).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Where the DICOM C-STORE service listens when `dicom.listen` is set (`None` for a
    /// worker).
    pub fn dicom_addr(&self) -> Option<SocketAddr> {
        self.dicom_addr
    }

    /// Where `/metrics` listens when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Cancelling it stops the process: the API finishes what is in flight, the DICOM service
    /// the operation of each association (then releases it), the worker hands back what it
    /// has not started.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for every task. The first to end (with an error, or after shutdown) stops the
    /// others; the outcome is the first error, if any.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        for result in self.join().await {
            if let Err(e) = result {
                tracing::error!(error = %format!("{e:#}"), "stopping");
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }

    /// Like [`App::run`], with what each task ended with.
    pub async fn join(mut self) -> Vec<anyhow::Result<()>> {
        let mut outcomes = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            if !self.shutdown.is_cancelled() {
                self.shutdown.cancel();
            }
            outcomes.push(done.context("a task panicked").and_then(|r| r));
        }
        outcomes
    }
}

/// What every handler shares, from the configuration.
fn app_state(
    config: &Config,
    backends: Backends,
    registry: Arc<Registry>,
    authenticator: Authenticator,
) -> AppState {
    AppState {
        backends,
        registry,
        allow_research: config.models.allow_research,
        limits: config.limits.image_limits(),
        max_request_bytes: config.limits.max_request_bytes,
        idempotency: IdempotencySettings {
            ttl: Duration::from_secs(config.server.idempotency_ttl_secs),
            lease: Duration::from_secs(config.server.idempotency_lease_secs),
        },
        web_dir: config.server.web_dir.clone(),
        auth: Arc::new(authenticator),
        admission: Arc::new(Admission::new(
            config.jobs.max_backlog,
            config.jobs.max_backlog_per_tenant,
        )),
        webhooks: config.webhooks.clone(),
        timeouts: HttpTimeouts {
            header_read: Duration::from_secs(config.server.header_read_timeout_secs),
            body_read: Duration::from_secs(config.server.body_read_timeout_secs),
        },
        metrics_here: config.metrics.listen.is_empty(),
        dicom: Arc::new(config.dicom.clone()),
    }
}

/// Refuses to start with a DICOM routing rule that names a model the registry does not have: a
/// typo would otherwise fail every instance it routes.
fn check_dicom_routes(config: &Config, registry: &Registry) -> anyhow::Result<()> {
    for (i, route) in config.dicom.routes.iter().enumerate() {
        if let Some(unknown) = route.models.iter().find(|m| registry.get(m).is_none()) {
            anyhow::bail!(
                "dicom.routes[{i}] names the model {unknown:?}, which is not in {} (GET /v1/models lists them)",
                config.models.dir.display()
            );
        }
    }
    Ok(())
}

/// Loads the registry. A process without a worker never runs a model: it reads the manifests
/// and checks that the weights are there, without loading them.
pub fn load_registry(config: &Config, load_sessions: bool) -> anyhow::Result<Registry> {
    // Before any of the bulk lane's threads (ONNX Runtime's among them) starts.
    medinform_core::cpu::set_bulk_nice(config.inference.bulk_nice);
    let library = &config.inference.onnxruntime_library;
    let options = RegistryOptions {
        thresholds: config.models.thresholds.clone(),
        execution_provider: config.inference.execution_provider,
        intra_threads: config.inference.threads,
        spinning: config.inference.spinning,
        onnxruntime_library: (!library.as_os_str().is_empty()).then(|| library.clone()),
        only: if load_sessions {
            (!config.worker.models.is_empty()).then(|| config.worker.models.clone())
        } else {
            Some(Vec::new())
        },
        ..RegistryOptions::new(&config.models.dir)
    };
    Registry::load(&options)
}

/// Creates `data_dir` when an embedded backend keeps its files there.
pub fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    if config.database_url().starts_with("sqlite:")
        || config.storage.backend == StorageBackend::Local
    {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    }
    Ok(())
}

/// Ok(()) once a task that cannot fail is done.
async fn ok_when_done(task: impl Future<Output = ()>) -> anyhow::Result<()> {
    task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use medinform_core::config::DicomRoute;

    use super::*;

    #[test]
    fn a_dicom_route_to_a_model_that_is_not_there_stops_the_start() {
        let models = tempfile::tempdir().unwrap();
        let registry = Registry::load(&RegistryOptions::new(models.path())).unwrap();
        let mut config = Config::default();
        config.models.dir = models.path().to_owned();
        config.dicom.routes = vec![DicomRoute {
            modalities: vec!["CR".into()],
            body_parts: Vec::new(),
            models: vec!["tuberkulosis".into()],
        }];
        let err = check_dicom_routes(&config, &registry)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dicom.routes[0]") && err.contains("\"tuberkulosis\""),
            "{err}"
        );
        config.dicom.routes.clear();
        check_dicom_routes(&config, &registry).unwrap();
    }
}
