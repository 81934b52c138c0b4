//! Request and response bodies of the webhook routes.

use chrono::{DateTime, Utc};
use medinform_core::job::{BatchId, JobId};
use medinform_core::webhooks::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, EventType, PayloadFormat,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

use super::MAX_DESCRIPTION_CHARS;
use crate::fields;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are POSTed: http or https, not a private address unless the server
    /// allows it (`webhooks.allow_private_targets`); up to 2048 characters.
    #[schema(
        example = "https://lab.example.org/medinform/events",
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: String,
    /// The events to deliver (at least one).
    #[schema(min_items = 1)]
    pub event_types: Vec<EventType>,
    /// What job deliveries carry: `medinform` (the default: `{"type", "timestamp", "data"}`)
    /// or `fhir-r4` (the job's FHIR R4 Bundle, as `GET /v1/jobs/{id}/fhir` answers it).
    /// `batch.completed` deliveries are `medinform` whatever it says.
    pub payload_format: Option<PayloadFormat>,
    /// Up to 500 characters, not counting surrounding whitespace (which is trimmed).
    #[schema(schema_with = description_schema)]
    pub description: Option<String>,
    /// Deliver at once (default true).
    pub enabled: Option<bool>,
}

/// `PATCH /v1/webhooks/{id}`: the fields given change, the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    /// As in `POST /v1/webhooks`.
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub event_types: Option<Vec<EventType>>,
    /// As in `POST /v1/webhooks`; deliveries made before the change keep their format.
    pub payload_format: Option<PayloadFormat>,
    /// As in `POST /v1/webhooks`; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = description_schema)]
    pub description: Option<Option<String>>,
    /// `true` re-enables an endpoint the service disabled (a `410 Gone`).
    pub enabled: Option<bool>,
}

/// An endpoint's description as `checked_description` takes it: `null`, or text of at most
/// [`MAX_DESCRIPTION_CHARS`] characters once trimmed.
fn description_schema() -> Object {
    let body = format!(r"[\s\S]{{0,{MAX_DESCRIPTION_CHARS}}}");
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(fields::schema::trimmed_pattern(&body)))
        .build()
}

/// A field that is present (`Some`, maybe `Some(None)` for `null`) or absent (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A webhook endpoint; its secret is shown only when it is made or rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub id: EndpointId,
    pub url: String,
    pub event_types: Vec<EventType>,
    /// What its job deliveries carry.
    pub payload_format: PayloadFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the service disabled it (it answered `410 Gone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub links: WebhookLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub deliveries: String,
}

impl From<Endpoint> for WebhookResponse {
    fn from(e: Endpoint) -> Self {
        Self {
            links: WebhookLinks {
                this: format!("/v1/webhooks/{}", e.id),
                deliveries: format!("/v1/webhooks/{}/deliveries", e.id),
            },
            id: e.id,
            url: e.url,
            event_types: e.event_types,
            payload_format: e.payload_format,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its new secret: the answer of create and rotate-secret, the only times the
/// secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecretResponse {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// `whsec_…`: the base64 after `whsec_` is the HMAC-SHA256 key. Shown only here.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
    /// Until then the previous secret signs too (after a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookListResponse {
    pub webhooks: Vec<WebhookResponse>,
}

/// `POST /v1/webhooks/signing-secret`: the tenant's secret for per-job `webhook_url`s.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretResponse {
    /// `whsec_…`, shown only here.
    pub secret: String,
    /// Until then the previous secret signs too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// One event on its way to one URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// The `webhook-id` header, the same on every attempt.
    pub id: DeliveryId,
    /// Absent for a delivery to a job's own `webhook_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<EndpointId>,
    pub url: String,
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    /// What its payload is (`fhir-r4`: a FHIR Bundle, sent as `application/fhir+json`).
    pub payload_format: PayloadFormat,
    pub status: DeliveryStatus,
    /// Attempts made so far (`attempts` of the detail lists them).
    pub attempt_count: i32,
    /// When the next attempt is due (a pending delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub links: DeliveryLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub replay: String,
}

impl From<&Delivery> for DeliveryResponse {
    fn from(d: &Delivery) -> Self {
        Self {
            links: DeliveryLinks {
                this: format!("/v1/webhook-deliveries/{}", d.id),
                replay: format!("/v1/webhook-deliveries/{}/replay", d.id),
            },
            id: d.id.clone(),
            endpoint_id: d.endpoint_id,
            url: d.url.clone(),
            event_type: d.event_type,
            job_id: d.job_id,
            batch_id: d.batch_id,
            payload_format: d.payload_format,
            status: d.status,
            attempt_count: d.attempts,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// `GET /v1/webhooks/{id}/deliveries`: newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryListResponse {
    pub deliveries: Vec<DeliveryResponse>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/webhook-deliveries/{id}`: the delivery, what it sends and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetailResponse {
    #[serde(flatten)]
    pub delivery: DeliveryResponse,
    /// The JSON body sent on every attempt: `{"type", "timestamp", "data"}`, or for a `fhir-r4`
    /// delivery the job's FHIR Bundle.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

/// The query of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    #[test]
    fn the_description_pattern_accepts_what_the_route_does() {
        let pattern = description_schema().pattern.unwrap();
        let regex = Regex::new(&pattern).unwrap();
        let mut values: Vec<String> = ["", " ", "lab", "\tlab\n", "a\nb", "\u{7}"]
            .map(String::from)
            .to_vec();
        for n in [499, 500, 501] {
            values.push("x".repeat(n));
            values.push(format!(" \r{}\u{3000}", "é".repeat(n)));
        }
        for value in values {
            assert_eq!(
                regex.is_match(&value),
                super::super::checked_description(Some(value.clone())).is_ok(),
                "pattern and route disagree on {value:?}"
            );
        }
    }
}
