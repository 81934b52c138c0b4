//! Routes, one module per resource.

pub(crate) mod auth;
pub(crate) mod batches;
pub(crate) mod export;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod models;
mod submit;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::{ApiError, AppState, ErrorCode};

/// Every route; `max_request_bytes` is the body limit of the routes that take many images.
pub fn router(max_request_bytes: usize) -> Router<AppState> {
    let many = DefaultBodyLimit::max(max_request_bytes);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/auth/whoami", get(auth::whoami))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/image", get(jobs::image))
        .route(
            "/v1/batches",
            post(batches::create).layer(many).get(batches::list),
        )
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/jobs", post(batches::add_jobs).layer(many))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/batches/{id}/export.csv", get(export::csv))
        .route("/v1/batches/{id}/export.json", get(export::json))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/docs", get(crate::docs::page))
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed on this resource.",
    )
}
