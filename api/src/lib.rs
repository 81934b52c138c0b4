//! The MedInform HTTP API.
//!
//! `POST /v1/jobs` validates an upload, stores it under its content address, records a `queued`
//! job and publishes its message; `GET /v1/jobs/{id}` answers its state and result;
//! `GET /v1/models` lists the registry; `/healthz` and `/readyz` are for orchestrators. Every
//! other path serves the web app (`server.web_dir`).
//! Everything under `/v1/` acts for the tenant of an API key ([`auth`]), within a per-key rate
//! limit; submissions are refused while the backlog is full ([`admission`]).

pub mod admission;
pub mod app;
pub mod auth;
mod dicom;
mod docs;
mod error;
mod extract;
mod fields;
mod hold;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod rate_limit;
mod routes;
pub mod telemetry;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use medinform_core::app::Backends;
use medinform_core::config::{DicomConfig, WebhooksConfig};
use medinform_core::imaging::ImageLimits;
use medinform_core::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::http::HttpTimeouts;
use crate::idempotency::IdempotencySettings;

pub use admission::Admission;
pub use app::{App, Overrides, Role};
pub use auth::{AuthMode, Authenticator};
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};
pub use rate_limit::RateLimit;

/// Multipart framing and the small text fields around the image.
const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub backends: Backends,
    pub registry: Arc<Registry>,
    /// Whether jobs may use research-stage models (`models.allow_research`).
    pub allow_research: bool,
    pub limits: ImageLimits,
    /// The body limit of the routes that take many images in one request.
    pub max_request_bytes: usize,
    pub idempotency: IdempotencySettings,
    /// The built web app, served at `/` (`server.web_dir`).
    pub web_dir: PathBuf,
    /// API keys, anonymous mode and the per-key rate limit.
    pub auth: Arc<Authenticator>,
    /// The bound on queued jobs (`jobs.max_backlog`).
    pub admission: Arc<Admission>,
    /// Which webhook targets are allowed, how long a rotated-out secret keeps signing.
    pub webhooks: WebhooksConfig,
    /// How long a connection may take over headers and body (`server.*_timeout_secs`).
    pub timeouts: HttpTimeouts,
    /// Whether `GET /metrics` is served here (not when `metrics.listen` names its own address).
    pub metrics_here: bool,
    /// What DICOM uploads keep of patient identity (`dicom.*`).
    pub dicom: Arc<DicomConfig>,
}

impl axum::extract::FromRef<AppState> for Backends {
    fn from_ref(state: &AppState) -> Self {
        state.backends.clone()
    }
}

/// Builds the router (tests call this too).
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_bytes + FORM_OVERHEAD_BYTES;
    let mut routes = routes::router(state.max_request_bytes)
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(docs::page));
    if state.metrics_here {
        routes = routes.route("/metrics", get(telemetry::metrics));
    }
    // Layers run outermost (last) first: metrics, trace, JSON errors, header count, body
    // timeout, body limit, authentication, idempotency.
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.timeouts.body_read,
            http::body_read_timeout,
        ))
        .layer(axum::middleware::from_fn(http::limit_headers))
        .layer(axum::middleware::from_fn(http::json_errors))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(telemetry::layer))
        .with_state(state)
}

/// A bound, not yet serving, API (so that tests can bind port 0 and learn the address).
pub struct ApiServer {
    listener: TcpListener,
    state: AppState,
}

impl ApiServer {
    pub async fn bind(addr: SocketAddr, state: AppState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`, then stops accepting and lets in-flight requests finish for up
    /// to `grace`.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "API listening");
        tokio::spawn(purge_idempotency_keys(self.state.clone(), shutdown.clone()));
        let timeouts = self.state.timeouts;
        http::serve(self.listener, router(self.state), timeouts, shutdown, grace).await;
        tracing::info!("API stopped");
        Ok(())
    }
}

/// Deletes expired idempotency keys every few minutes until `shutdown`.
async fn purge_idempotency_keys(state: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match state
            .backends
            .idempotency
            .purge_idempotency_keys(chrono::Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired idempotency keys"),
        }
        match state.auth.purge_rate_buckets().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(buckets = n, "full rate-limit buckets deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete full rate-limit buckets"),
        }
    }
}
