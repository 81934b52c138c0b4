//! The OpenAPI 3 document, generated from the handlers' and types' annotations, at
//! `/openapi.json`; and `/docs`, a reference page rendered from it.
//!
//! Every error code of [`ErrorCode`] is listed in the document (the `ErrorDetail.code` enum and
//! the API description's table), so the spec and the code cannot drift apart.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Schema};
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
        routes::fhir::job_bundle,
        routes::heatmap::heatmap_png,
        routes::heatmap::image_png,
        routes::batches::create,
        routes::batches::list,
        routes::batches::get,
        routes::batches::add_jobs,
        routes::batches::cancel,
        routes::dicomweb::store,
        routes::dicomweb::store_in_study,
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
        crate::telemetry::metrics,
    ),
    components(schemas(crate::ErrorBody, crate::ErrorDetail)),
    modifiers(&Security, &ErrorCodes, &CommonResponses),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "auth", description = "Who an API key acts for."),
        (name = "jobs", description = "One image screened by one model."),
        (name = "batches", description = "Screening sessions: many images, progress, findings, exports."),
        (name = "models", description = "The screening models, their status and cards."),
        (name = "dicom", description = "DICOMweb STOW-RS: instances as a PACS forwards them, routed to models by `dicom.routes`."),
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
                    .schema_type(Type::String)
                    .enum_values(Some(codes))
                    .description(Some("A stable machine-readable code."))
                    .into(),
            );
        }
    }
}

/// What operations share, added here once instead of on every handler, so that no handler can
/// forget it: on every `/v1/` operation, the answers to no or a bad key, a missing scope, the
/// rate limit, too many headers, an unreadable request; on every `POST`, the `Idempotency-Key`
/// header (the idempotency layer reads it on every `POST`) and its answers, and a body that stops
/// arriving or is too large; on every path with an id, the id's form on the `id` parameter and
/// the answer to a malformed one; on every list, the form of its `limit` and `cursor`.
struct CommonResponses;

/// A delivery id (`DeliveryId`): `msg_` and 32 lowercase hex digits, all that it parses.
const DELIVERY_ID_PATTERN: &str = "^msg_[0-9a-f]{32}$";

/// What an `{id}` in a path must be, and the code that refuses anything else.
struct PathId {
    code: &'static str,
    schema: Schema,
}

impl CommonResponses {
    /// The id in `path`, if it has one.
    fn path_id(path: &str) -> Option<PathId> {
        let uuid = |code| PathId {
            code,
            schema: ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .into(),
        };
        if path.starts_with("/v1/jobs/{id}") {
            Some(uuid("`invalid_job_id`"))
        } else if path.starts_with("/v1/batches/{id}") {
            Some(uuid("`invalid_batch_id`"))
        } else if path.starts_with("/v1/webhooks/{id}") {
            Some(uuid("`invalid_id`"))
        } else if path.starts_with("/v1/webhook-deliveries/{id}") {
            Some(PathId {
                code: "`invalid_id`",
                schema: ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(DELIVERY_ID_PATTERN))
                    .into(),
            })
        } else {
            None
        }
    }
}

/// Gives the operation's parameter `name` in `location` the schema `schema`.
fn set_schema(operation: &mut Operation, name: &str, location: ParameterIn, schema: &Schema) {
    let parameters = operation.parameters.iter_mut().flatten();
    for parameter in parameters.filter(|p| p.name == name && p.parameter_in == location) {
        parameter.schema = Some(RefOr::T(schema.clone()));
    }
}

/// The `Idempotency-Key` header, as `crate::idempotency` checks it: 1 to 255 printable ASCII
/// characters without spaces.
fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retried request return the first response (with `Idempotent-Replayed: \
             true`) for `server.idempotency_ttl_secs`; the same key with another request is a \
             409.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(crate::idempotency::MAX_KEY_LEN))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}

/// Declares the `Idempotency-Key` header on a `POST`, in place of a declaration of its own.
fn set_idempotency_key(post: &mut Operation) {
    let parameters = post.parameters.get_or_insert_with(Vec::new);
    parameters.retain(|p| {
        !(p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("Idempotency-Key"))
    });
    parameters.push(idempotency_key());
}

/// The `limit` and `cursor` of a list: a page of 1 to 200 ([`crate::extract::page_limit`]), and
/// the `next_cursor` of the previous page (a delivery id for deliveries,
/// [`crate::extract::decode_cursor`]'s form for the others).
fn set_page_schemas(path: &str, list: &mut Operation) {
    let limit = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(crate::extract::MAX_LIMIT))
        .into();
    set_schema(list, "limit", ParameterIn::Query, &limit);
    let pattern = if path.ends_with("/deliveries") {
        DELIVERY_ID_PATTERN
    } else {
        crate::extract::CURSOR_PATTERN
    };
    let cursor = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .into();
    set_schema(list, "cursor", ParameterIn::Query, &cursor);
}

/// Documents `codes` under `status`: appended to the description of a response already there,
/// or a new `ErrorBody` response.
fn add_codes(operation: &mut Operation, status: &str, codes: &str) {
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
            let path_id = Self::path_id(path);
            if let Some(post) = item.post.as_mut() {
                for (status, codes) in posts {
                    add_codes(post, status, codes);
                }
                set_idempotency_key(post);
            }
            if let Some(list) = item.get.as_mut() {
                set_page_schemas(path, list);
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
                if let Some(id) = &path_id {
                    add_codes(operation, "400", id.code);
                    set_schema(operation, "id", ParameterIn::Path, &id.schema);
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
