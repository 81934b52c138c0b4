//! The OpenAPI 3 document, generated from the handlers' and types' annotations, at
//! `/openapi.json`; and `/docs`, a reference page rendered from it.
//!
//! Every error code of [`ErrorCode`] is listed in the document (the `ErrorDetail.code` enum and
//! the API description's table), so the spec and the code cannot drift apart.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::ErrorCode;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MedInform API",
        description = "Screens medical images with neural networks: upload an image, poll its \
                       job or receive a signed webhook, read the result with its probabilities. \
                       A screening aid, not a diagnosis.",
        license(name = "MIT")
    ),
    paths(
        routes::auth::whoami,
        routes::jobs::create,
        routes::jobs::list,
        routes::jobs::get,
        routes::jobs::cancel,
        routes::jobs::image,
        routes::heatmap::heatmap_png,
        routes::batches::create,
        routes::batches::list,
        routes::batches::get,
        routes::batches::add_jobs,
        routes::batches::cancel,
        routes::export::csv,
        routes::export::json,
        routes::models::list,
        routes::models::get,
        routes::models::figure,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::get,
        routes::webhooks::update,
        routes::webhooks::delete,
        routes::webhooks::rotate_secret,
        routes::webhooks::rotate_signing_secret,
        routes::webhooks::deliveries,
        routes::webhooks::delivery,
        routes::webhooks::replay,
        routes::health::healthz,
        routes::health::readyz,
    ),
    components(schemas(crate::ErrorBody, crate::ErrorDetail)),
    modifiers(&Security, &ErrorCodes, &CommonResponses),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "auth", description = "Who an API key acts for."),
        (name = "jobs", description = "One image screened by one model."),
        (name = "batches", description = "Screening sessions: many images, progress, findings, exports."),
        (name = "models", description = "The screening models, their status and cards."),
        (name = "webhooks", description = "Signed deliveries of job and batch events (Standard Webhooks), with every attempt recorded."),
        (name = "health", description = "Liveness and readiness for orchestrators."),
    )
)]
pub struct ApiDoc;

/// Bearer keys (`Authorization: Bearer mik_…`) or the `X-API-Key` header.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mik_<prefix>_<secret>")
                    .description(Some(
                        "An API key, made with `medinform keys create`. Not needed by the \
                         embedded single-machine mode on loopback.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Lists every [`ErrorCode`] as the enum of `ErrorDetail.code` and as a table in the description.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut table = String::from(
            "\n\n## Errors\n\nEvery error answers `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` \
             with one of these stable codes:\n\n| status | code | when |\n| --- | --- | --- |\n",
        );
        for code in ErrorCode::ALL {
            table.push_str(&format!(
                "| {} | `{}` | {} |\n",
                code.status().as_u16(),
                code.as_str(),
                code.description()
            ));
        }
        let description = openapi.info.description.get_or_insert_with(String::new);
        description.push_str(&table);

        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        if let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail") {
            detail.properties.insert(
                "code".to_string(),
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(codes))
                    .description(Some("A stable machine-readable code."))
                    .into(),
            );
        }
    }
}

/// The answers that operations give besides their own, added here once instead of on every
/// handler, so that no handler can forget them: on every `/v1/` operation, no or a bad key, a
/// missing scope, the rate limit, too many headers, an unreadable request; on every `POST`, the
/// `Idempotency-Key` answers and a body that stops arriving or is too large; on every path with
/// an id, the malformed id.
struct CommonResponses;

impl CommonResponses {
    /// The codes an id in `path` is refused with.
    fn id_code(path: &str) -> Option<&'static str> {
        if path.starts_with("/v1/jobs/{id}") {
            Some("`invalid_job_id`")
        } else if path.starts_with("/v1/batches/{id}") {
            Some("`invalid_batch_id`")
        } else if path.starts_with("/v1/webhooks/{id}")
            || path.starts_with("/v1/webhook-deliveries/{id}")
        {
            Some("`invalid_id`")
        } else {
            None
        }
    }
}

/// Documents `codes` under `status`: appended to the description of a response already there,
/// or a new `ErrorBody` response.
fn add_codes(operation: &mut utoipa::openapi::path::Operation, status: &str, codes: &str) {
    use utoipa::openapi::RefOr;

    let responses = &mut operation.responses.responses;
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            for code in codes.split(", ") {
                let name = code.split(' ').next().unwrap_or(code);
                if !response.description.contains(name) {
                    response.description = format!("{}, {code}", response.description);
                }
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            responses.insert(
                status.to_owned(),
                utoipa::openapi::ResponseBuilder::new()
                    .description(codes)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .into(),
            );
        }
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let every = [
            ("400", "`invalid_request`"),
            ("401", "`unauthorized`, `api_key_revoked`"),
            ("403", "`insufficient_scope`"),
            ("429", "`rate_limited` (with `Retry-After`)"),
            ("431", "`request_headers_too_large`"),
        ];
        let posts = [
            ("400", "`invalid_idempotency_key`"),
            ("408", "`request_timeout`"),
            (
                "409",
                "`idempotency_key_reused`, `idempotency_request_in_progress`",
            ),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let id_code = Self::id_code(path);
            if let Some(post) = item.post.as_mut() {
                for (status, codes) in posts {
                    add_codes(post, status, codes);
                }
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, codes) in every {
                    add_codes(operation, status, codes);
                }
                if let Some(code) = id_code {
                    add_codes(operation, "400", code);
                }
            }
        }
    }
}

/// The document as JSON, built and serialised once per process.
pub fn document() -> Result<&'static serde_json::Value, crate::ApiError> {
    static DOCUMENT: LazyLock<Result<serde_json::Value, String>> =
        LazyLock::new(|| serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string()));
    DOCUMENT.as_ref().map_err(|e| {
        crate::ApiError::Internal(anyhow::anyhow!(
            "the OpenAPI document does not serialise: {e}"
        ))
    })
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Result<Json<serde_json::Value>, crate::ApiError> {
    document().map(|doc| Json(doc.clone()))
}
