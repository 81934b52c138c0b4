//! `GET /metrics` (Prometheus text format), the layer that counts and times HTTP requests, and
//! the separate metrics listener (`metrics.listen`), which every role can run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medinform_core::app::Backends;
use medinform_core::metrics::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::HttpTimeouts;

/// The Prometheus text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Metrics",
    description = "Every metric of this process in the Prometheus text format (the README \
                   lists them). Served here unless `metrics.listen` names a separate address.",
    security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4",
        body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(backends): State<Backends>) -> Response {
    let body = medinform_core::metrics::scrape(&backends).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Counts and times every request by its route template (`/v1/jobs/{id}`, never the path a
/// client sent: that would make a series per job), method and status.
pub async fn layer(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// The methods the API knows; any other is `other` (a client cannot add series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `metrics.listen`: `/metrics` and `/healthz` on an address of their own, bound but not yet
/// serving.
pub struct MetricsServer {
    listener: TcpListener,
    backends: Backends,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, backends: Backends) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.listen {addr}"))?;
        Ok(Self { listener, backends })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "metrics listening");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(crate::routes::health::healthz))
            .with_state(self.backends);
        let timeouts = HttpTimeouts {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
        };
        crate::http::serve(
            self.listener,
            app,
            timeouts,
            shutdown,
            Duration::from_secs(1),
        )
        .await;
        Ok(())
    }
}
