//! Webhooks: signed, durable deliveries of job and batch events (Standard Webhooks v1).
//!
//! A finished job is fanned out, in one transaction, into one stored delivery per matching
//! endpoint (and one for the job's own `webhook_url`); the [`Dispatcher`] then sends each,
//! records every attempt and retries on a growing schedule. Nothing is sent that was not stored
//! first, so a restart loses none.

mod dispatcher;
mod schedule;
mod signing;
mod target;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::job::{BatchId, JobId, JobStatus};
use crate::tenant::TenantId;

pub use dispatcher::{Dispatcher, install_crypto_provider};
pub use schedule::{next_delay, parse_retry_after};
pub use signing::{Secret, SigningKeys, sign};
pub use target::{
    MAX_URL_CHARS, TargetPolicy, TargetRefused, UrlRefused, check_target, check_webhook_url,
    is_allowed_address,
};

crate::id::uuid_id! {
    /// The id of a webhook endpoint.
    EndpointId
}

/// The id of a delivery: the `webhook-id` header, `msg_` + a UUID v7 in hex, so that ids sort by
/// creation time. The same on every attempt, so that receivers can deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "msg_0190f2a1b2c37d4e8f9a0b1c2d3e4f50")]
pub struct DeliveryId(String);

impl DeliveryId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(format!("msg_{}", Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DeliveryId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeliveryId {
    type Err = String;
    /// Accepts only ids this service makes (`msg_` + 32 lowercase hex digits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("msg_") {
            Some(hex)
                if hex.len() == 32
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Self(s.to_string()))
            }
            _ => Err(format!(
                "{s:?} is not a delivery id (msg_ and 32 hex digits)"
            )),
        }
    }
}

/// What happened, as announced to endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.canceled")]
    JobCanceled,
    #[serde(rename = "batch.completed")]
    BatchCompleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobSucceeded => "job.succeeded",
            Self::JobFailed => "job.failed",
            Self::JobCanceled => "job.canceled",
            Self::BatchCompleted => "batch.completed",
        }
    }

    /// The event a job that ended with `status` announces (none while it runs).
    pub fn for_job(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Succeeded => Some(Self::JobSucceeded),
            JobStatus::Failed => Some(Self::JobFailed),
            JobStatus::Canceled => Some(Self::JobCanceled),
            JobStatus::Queued | JobStatus::Processing => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "job.succeeded" => Ok(Self::JobSucceeded),
            "job.failed" => Ok(Self::JobFailed),
            "job.canceled" => Ok(Self::JobCanceled),
            "batch.completed" => Ok(Self::BatchCompleted),
            other => Err(format!("unknown event type {other:?}")),
        }
    }
}

/// What the deliveries of an endpoint carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum PayloadFormat {
    /// The JSON event `{"type", "timestamp", "data"}` ([`Payload`]).
    #[default]
    #[serde(rename = "medinform")]
    MedInform,
    /// A job's event as the job's HL7 FHIR R4 Bundle ([`crate::fhir`]), the body of
    /// `GET /v1/jobs/{id}/fhir`; a batch's event stays `medinform`.
    #[serde(rename = "fhir-r4")]
    FhirR4,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MedInform => "medinform",
            Self::FhirR4 => "fhir-r4",
        }
    }

    /// The `Content-Type` a payload of this format is sent with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::MedInform => "application/json",
            Self::FhirR4 => crate::fhir::CONTENT_TYPE,
        }
    }
}

impl FromStr for PayloadFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "medinform" => Ok(Self::MedInform),
            "fhir-r4" => Ok(Self::FhirR4),
            other => Err(format!("unknown payload format {other:?}")),
        }
    }
}

/// A registered receiver of a tenant's events.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub event_types: Vec<EventType>,
    /// What its job deliveries carry.
    pub payload_format: PayloadFormat,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the service disabled it (a `410 Gone`).
    pub disabled_reason: Option<String>,
    pub keys: SigningKeys,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Succeeded,
    /// Given up: the schedule ran out, the receiver answered 410 Gone, or the endpoint went away.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown delivery status {other:?}")),
        }
    }
}

/// One event on its way to one URL.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    /// `None`: a job's own `webhook_url`, signed with the tenant's signing secret.
    pub endpoint_id: Option<EndpointId>,
    pub url: String,
    pub event_type: EventType,
    pub job_id: Option<JobId>,
    pub batch_id: Option<BatchId>,
    /// The exact bytes signed and sent.
    pub payload: String,
    /// What `payload` is, which says its `Content-Type`.
    pub payload_format: PayloadFormat,
    pub status: DeliveryStatus,
    /// Attempts made so far; also the fencing token of the next one.
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One attempt to deliver, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status answered; absent when no response came.
    pub response_status: Option<i32>,
    pub latency_ms: i64,
    /// The first KiB of the response body.
    pub response_excerpt: Option<String>,
    /// Why no response came (timeout, refused connection, refused address).
    pub error: Option<String>,
}

/// The JSON body of every `medinform` delivery: `{"type", "timestamp", "data"}`.
#[derive(Debug, Serialize)]
pub struct Payload<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub data: &'a T,
}
