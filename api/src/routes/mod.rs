//! Routes, one module per resource.

pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod models;
pub(crate) mod webhooks;

use axum::Router;
use axum::routing::{get, post};

use crate::{ApiError, AppState, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/jobs", post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/signing-secret",
            post(webhooks::rotate_signing_secret),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhook-deliveries/{id}", get(webhooks::delivery))
        .route("/v1/webhook-deliveries/{id}/replay", post(webhooks::replay))
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
