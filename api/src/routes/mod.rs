//! Routes, one module per resource.

mod health;
mod jobs;
mod models;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/jobs", post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed on this resource.",
    )
}
