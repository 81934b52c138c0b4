//! The OpenAPI 3 document, generated from the handlers' and types' annotations, at
//! `/openapi.json`; and `/docs`, a reference page rendered from it.
//!
//! Every error code of [`ErrorCode`] is listed in the document (the `ErrorDetail.code` enum and
//! the API description's table), so the spec and the code cannot drift apart.

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

/// The answers every `/v1/` operation can give besides its own: no or a bad key, a missing
/// scope, the rate limit. Added here once instead of on every handler.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let common = [
            ("401", "`unauthorized`, `api_key_revoked`"),
            ("403", "`insufficient_scope`"),
            ("429", "`rate_limited` (with `Retry-After`)"),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            utoipa::openapi::ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                            "ErrorBody",
                                        )))
                                        .build(),
                                )
                                .into()
                        });
                }
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
