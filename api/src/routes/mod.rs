//! Routes, one module per resource.

pub(crate) mod auth;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod models;

use axum::Router;
use axum::routing::{get, post};

use crate::{ApiError, AppState, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/auth/whoami", get(auth::whoami))
        .route("/v1/jobs", post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such resource.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed on this resource.",
    )
}
