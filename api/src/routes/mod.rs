//! Routes, one module per resource.

pub(crate) mod auth;
pub(crate) mod batches;
pub(crate) mod dicomweb;
pub(crate) mod export;
pub(crate) mod fhir;
pub(crate) mod health;
pub(crate) mod heatmap;
pub(crate) mod jobs;
pub(crate) mod models;
pub(crate) mod submit;
pub(crate) mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::{ApiError, AppState, ErrorCode};

/// Every route of the API itself (the document that describes them, `/openapi.json` and
/// `/docs`, is added by [`crate::router`], so that routes and document do not depend on each
/// other); `max_request_bytes` is the body limit of the routes that take many images.
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
        .route("/v1/jobs/{id}/fhir", get(fhir::job_bundle))
        .route("/v1/jobs/{id}/heatmap.png", get(heatmap::heatmap_png))
        .route("/v1/jobs/{id}/image.png", get(heatmap::image_png))
        .route(
            "/v1/batches",
            post(batches::create).layer(many).get(batches::list),
        )
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/jobs", post(batches::add_jobs).layer(many))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/batches/{id}/export.csv", get(export::csv))
        .route("/v1/batches/{id}/export.json", get(export::json))
        .route("/dicomweb/studies", post(dicomweb::store))
        .route("/dicomweb/studies/{study}", post(dicomweb::store_in_study))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/v1/models/{id}/figures/{name}", get(models::figure))
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
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed on this resource.",
    )
}
