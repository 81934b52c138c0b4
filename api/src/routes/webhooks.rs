//! `/v1/webhooks` (endpoints, their deliveries, the tenant's signing secret) and
//! `/v1/webhook-deliveries` (one delivery with its attempts; replay). Admin scope.

pub(crate) mod views;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use medinform_core::db::{EndpointUpdate, NewEndpoint, Replay};
use medinform_core::tenant::Scope;
use medinform_core::webhooks::{
    DeliveryId, EndpointId, EventType, Secret, SigningKeys, TargetPolicy, check_webhook_url,
};

use self::views::{
    CreateWebhookRequest, DeliveriesQuery, DeliveryDetailResponse, DeliveryListResponse,
    DeliveryResponse, SigningSecretResponse, UpdateWebhookRequest, WebhookListResponse,
    WebhookResponse, WebhookWithSecretResponse,
};
use crate::auth::Caller;
use crate::{ApiError, AppState, ErrorCode};

/// Longest accepted webhook URL and description.
const MAX_DESCRIPTION_CHARS: usize = 500;

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(crate::http::json_rejection)
}

fn endpoint_id(id: &str) -> Result<EndpointId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("{id:?} is not a webhook id (a UUID)."),
        )
    })
}

fn delivery_id(id: &str) -> Result<DeliveryId, ApiError> {
    id.parse()
        .map_err(|e: String| ApiError::new(ErrorCode::InvalidId, e))
}

fn webhook_not_found(id: EndpointId) -> ApiError {
    ApiError::new(
        ErrorCode::WebhookNotFound,
        format!("There is no webhook {id}."),
    )
}

fn delivery_not_found(id: &DeliveryId) -> ApiError {
    ApiError::new(
        ErrorCode::DeliveryNotFound,
        format!("There is no webhook delivery {id}."),
    )
}

fn checked_event_types(mut types: Vec<EventType>) -> Result<Vec<EventType>, ApiError> {
    let mut seen = Vec::with_capacity(types.len());
    types.retain(|t| {
        let new = !seen.contains(t);
        seen.push(*t);
        new
    });
    if types.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "event_types must name at least one event (job.succeeded, job.failed, \
             job.canceled, batch.completed).",
        ));
    }
    Ok(types)
}

fn checked_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    let d = d.map(|d| d.trim().to_string()).filter(|d| !d.is_empty());
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("description is longer than {MAX_DESCRIPTION_CHARS} characters."),
        ));
    }
    Ok(d)
}

fn overlap_end(state: &AppState) -> chrono::DateTime<Utc> {
    let secs = i64::try_from(state.webhooks.secret_overlap_secs).unwrap_or(i64::MAX);
    Utc::now() + chrono::TimeDelta::try_seconds(secs).unwrap_or(chrono::TimeDelta::MAX)
}

fn with_secret(webhook: WebhookResponse, keys: &SigningKeys) -> WebhookWithSecretResponse {
    WebhookWithSecretResponse {
        webhook,
        secret: keys.current.expose().to_string(),
        previous_secret_expires_at: keys.previous.as_ref().and(keys.previous_expires_at),
    }
}

/// `POST /v1/webhooks`.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "Register a webhook endpoint",
    description = "Deliveries are POSTed as JSON `{\"type\", \"timestamp\", \"data\"}` (or, \
                   with `payload_format: fhir-r4`, a job's events as its FHIR R4 Bundle, \
                   `application/fhir+json`) and signed as the Standard Webhooks specification \
                   says (`webhook-id`, `webhook-timestamp`, `webhook-signature`); \
                   `medinform-event-type` names the event. The secret is shown only in this \
                   answer.",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Registered.", body = WebhookWithSecretResponse),
        (status = 400, description = "`invalid_json`, `invalid_field`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope`", body = crate::ErrorBody),
        (status = 422, description = "`webhook_url_not_allowed`", body = crate::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateWebhookRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<WebhookWithSecretResponse>), ApiError> {
    caller.require(Scope::Admin)?;
    let body = json(body)?;
    let url = check_webhook_url(&body.url, TargetPolicy::from(&state.webhooks)).await?;
    let secret = Secret::generate();
    let endpoint = state
        .backends
        .webhooks
        .create_endpoint(&NewEndpoint {
            id: EndpointId::new(),
            tenant_id: caller.tenant,
            url,
            event_types: checked_event_types(body.event_types)?,
            payload_format: body.payload_format.unwrap_or_default(),
            description: checked_description(body.description)?,
            enabled: body.enabled.unwrap_or(true),
            secret,
        })
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint registered");
    let keys = endpoint.keys.clone();
    Ok((
        StatusCode::CREATED,
        Json(with_secret(endpoint.into(), &keys)),
    ))
}

/// `GET /v1/webhooks`.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "List the webhook endpoints",
    responses(
        (status = 200, description = "Oldest first, without secrets.", body = WebhookListResponse),
        (status = 403, description = "`insufficient_scope`", body = crate::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookListResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let endpoints = state
        .backends
        .webhooks
        .list_endpoints(caller.tenant)
        .await?;
    Ok(Json(WebhookListResponse {
        webhooks: endpoints.into_iter().map(Into::into).collect(),
    }))
}

/// `GET /v1/webhooks/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Get a webhook endpoint",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The endpoint, without its secret.", body = WebhookResponse),
        (status = 400, description = "`invalid_id`", body = crate::ErrorBody),
        (status = 404, description = "`webhook_not_found` (also another tenant's)", body = crate::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let endpoint = state
        .backends
        .webhooks
        .find_endpoint(caller.tenant, id)
        .await?;
    Ok(Json(endpoint.ok_or_else(|| webhook_not_found(id))?.into()))
}

/// `PATCH /v1/webhooks/{id}`.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook endpoint",
    description = "`enabled: true` re-enables an endpoint that the service disabled after a \
                   `410 Gone`.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = UpdateWebhookRequest,
    responses(
        (status = 200, description = "The endpoint as changed.", body = WebhookResponse),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_field`", body = crate::ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = crate::ErrorBody),
        (status = 422, description = "`webhook_url_not_allowed`", body = crate::ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<UpdateWebhookRequest>, JsonRejection>,
) -> Result<Json<WebhookResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let body = json(body)?;
    let url = match &body.url {
        Some(url) => Some(check_webhook_url(url, TargetPolicy::from(&state.webhooks)).await?),
        None => None,
    };
    let update = EndpointUpdate {
        url,
        event_types: body.event_types.map(checked_event_types).transpose()?,
        payload_format: body.payload_format,
        description: body.description.map(checked_description).transpose()?,
        enabled: body.enabled,
    };
    let endpoint = state
        .backends
        .webhooks
        .update_endpoint(caller.tenant, id, &update)
        .await?;
    Ok(Json(endpoint.ok_or_else(|| webhook_not_found(id))?.into()))
}

/// `DELETE /v1/webhooks/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint and its deliveries",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`invalid_id`", body = crate::ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    if state
        .backends
        .webhooks
        .delete_endpoint(caller.tenant, id)
        .await?
    {
        tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(webhook_not_found(id))
    }
}

/// `POST /v1/webhooks/{id}/rotate-secret`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate an endpoint's secret",
    description = "The new secret is shown only in this answer; the old one keeps signing \
                   alongside it (a second `v1,` signature) until `previous_secret_expires_at` \
                   (`webhooks.secret_overlap_secs`).",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "Rotated.", body = WebhookWithSecretResponse),
        (status = 404, description = "`webhook_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecretResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let endpoint = state
        .backends
        .webhooks
        .rotate_endpoint_secret(caller.tenant, id, &Secret::generate(), overlap_end(&state))
        .await?
        .ok_or_else(|| webhook_not_found(id))?;
    tracing::info!(endpoint_id = %id, "webhook secret rotated");
    let keys = endpoint.keys.clone();
    Ok(Json(with_secret(endpoint.into(), &keys)))
}

/// `POST /v1/webhooks/signing-secret`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/signing-secret",
    tag = "webhooks",
    summary = "Create or rotate the tenant's signing secret",
    description = "Signs deliveries to a job's own `webhook_url`. Shown only in this answer; a \
                   rotated-out secret keeps signing alongside for `webhooks.secret_overlap_secs`.",
    responses(
        (status = 200, description = "The new secret.", body = SigningSecretResponse),
        (status = 403, description = "`insufficient_scope`", body = crate::ErrorBody),
    )
)]
pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SigningSecretResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = state
        .backends
        .webhooks
        .rotate_signing_secret(caller.tenant, &Secret::generate(), overlap_end(&state))
        .await?;
    tracing::info!(tenant = %caller.tenant, "webhook signing secret rotated");
    Ok(Json(SigningSecretResponse {
        secret: keys.current.expose().to_string(),
        previous_secret_expires_at: keys.previous.as_ref().and(keys.previous_expires_at),
    }))
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "List an endpoint's deliveries",
    params(("id" = String, Path, description = "The webhook id"), DeliveriesQuery),
    responses(
        (status = 200, description = "Newest first.", body = DeliveryListResponse),
        (status = 400, description = "`invalid_id`, `invalid_query`, `invalid_cursor`", body = crate::ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryListResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = endpoint_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let limit = crate::extract::page_limit(query.limit)?;
    let cursor = query
        .cursor
        .map(|c| {
            c.parse::<DeliveryId>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidCursor,
                    "The cursor was not made by this API.",
                )
            })
        })
        .transpose()?;
    let store = &state.backends.webhooks;
    if store.find_endpoint(caller.tenant, id).await?.is_none() {
        return Err(webhook_not_found(id));
    }
    // One more than asked tells whether there is a next page.
    let mut page = store
        .list_deliveries(caller.tenant, id, cursor.as_ref(), limit + 1)
        .await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(Json(DeliveryListResponse {
        deliveries: page.iter().map(DeliveryResponse::from).collect(),
        next_cursor,
    }))
}

/// `GET /v1/webhook-deliveries/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhook-deliveries/{id}",
    tag = "webhooks",
    summary = "Get a delivery with its attempts",
    params(("id" = String, Path, description = "The delivery id (`msg_…`, the `webhook-id` header)")),
    responses(
        (status = 200, description = "The delivery, its payload and every attempt.", body = DeliveryDetailResponse),
        (status = 400, description = "`invalid_id`", body = crate::ErrorBody),
        (status = 404, description = "`delivery_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetailResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = delivery_id(&id)?;
    let store = &state.backends.webhooks;
    let delivery = store
        .find_delivery(caller.tenant, &id)
        .await?
        .ok_or_else(|| delivery_not_found(&id))?;
    let attempts = store.attempts(&id).await?;
    let payload = serde_json::from_str(&delivery.payload)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("a stored payload")))?;
    Ok(Json(DeliveryDetailResponse {
        delivery: DeliveryResponse::from(&delivery),
        payload,
        attempts,
    }))
}

/// `POST /v1/webhook-deliveries/{id}/replay`.
#[utoipa::path(
    post,
    path = "/v1/webhook-deliveries/{id}/replay",
    tag = "webhooks",
    summary = "Replay a failed delivery",
    description = "The delivery becomes `pending`, due now, with the same `webhook-id` and \
                   payload (receivers that saw it before can tell). If it fails again it \
                   resumes what is left of the retry schedule, or fails at once when none is.",
    params(("id" = String, Path, description = "The delivery id")),
    responses(
        (status = 202, description = "Scheduled.", body = DeliveryResponse),
        (status = 404, description = "`delivery_not_found`", body = crate::ErrorBody),
        (status = 409, description = "`delivery_not_replayable`", body = crate::ErrorBody),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryResponse>), ApiError> {
    caller.require(Scope::Admin)?;
    let id = delivery_id(&id)?;
    match state
        .backends
        .webhooks
        .replay_delivery(caller.tenant, &id)
        .await?
    {
        Replay::Scheduled(d) => {
            tracing::info!(delivery_id = %d.id, "webhook delivery replayed");
            Ok((StatusCode::ACCEPTED, Json(DeliveryResponse::from(&d))))
        }
        Replay::NotFailed(d) => Err(ApiError::new(
            ErrorCode::DeliveryNotReplayable,
            format!(
                "Delivery {id} is {}; only a failed delivery can be replayed.",
                d.status.as_str()
            ),
        )),
        Replay::NotFound => Err(delivery_not_found(&id)),
    }
}
