//! Webhook store: endpoints, signing secrets and the outbox of deliveries with their attempts.
//!
//! Every method a client reaches takes the tenant: another tenant's endpoint or delivery is
//! `None`, as if it did not exist.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::DbError;
use crate::job::{Job, JobId};
use crate::tenant::TenantId;
use crate::webhooks::{
    Attempt, Delivery, DeliveryId, Endpoint, EndpointId, EventType, PayloadFormat, Secret,
    SigningKeys,
};

/// An endpoint to register.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub event_types: Vec<EventType>,
    pub payload_format: PayloadFormat,
    pub description: Option<String>,
    pub enabled: bool,
    pub secret: Secret,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub payload_format: Option<PayloadFormat>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    /// Enabling clears the reason the service disabled it for.
    pub enabled: Option<bool>,
}

/// A delivery to store, pending and due at once.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub endpoint_id: Option<EndpointId>,
    pub url: String,
    pub event_type: EventType,
    pub payload: String,
    pub payload_format: PayloadFormat,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    Failed,
}

/// The result of a replay request.
#[derive(Debug, Clone)]
pub enum Replay {
    /// The delivery is pending again, due now.
    Scheduled(Delivery),
    /// It is not `failed` (pending or succeeded): nothing to replay.
    NotFailed(Delivery),
    NotFound,
}

/// A store of webhook endpoints and deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<Endpoint, DbError>;
    /// The tenant's endpoints, oldest first.
    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>, DbError>;
    async fn find_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<Endpoint>, DbError>;
    async fn update_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        update: &EndpointUpdate,
    ) -> Result<Option<Endpoint>, DbError>;
    /// Makes `secret` current; the old one keeps signing until `previous_until`.
    async fn rotate_endpoint_secret(
        &self,
        tenant: TenantId,
        id: EndpointId,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, DbError>;
    /// Deletes the endpoint with its deliveries; false when there was none.
    async fn delete_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<bool, DbError>;
    /// Disables an endpoint on the service's own account (a `410 Gone`), saying why.
    async fn disable_endpoint(&self, id: EndpointId, reason: &str) -> Result<(), DbError>;

    /// Creates the tenant's signing secret, or rotates it (the old one keeps signing until
    /// `previous_until`).
    async fn rotate_signing_secret(
        &self,
        tenant: TenantId,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<SigningKeys, DbError>;
    /// The tenant's signing secret, created (unseen until rotated) when it has none yet.
    async fn signing_keys(&self, tenant: TenantId) -> Result<SigningKeys, DbError>;

    /// Finished jobs whose event is not fanned out yet, oldest first.
    async fn jobs_awaiting_events(&self, limit: i64) -> Result<Vec<Job>, DbError>;
    /// In one transaction: stamps the job's event as fanned out and stores `deliveries`. False
    /// (and nothing stored) when another dispatcher stamped it first.
    async fn enqueue_job_events(
        &self,
        tenant: TenantId,
        job: JobId,
        deliveries: &[NewDelivery],
    ) -> Result<bool, DbError>;

    /// Takes up to `limit` pending deliveries due by now, leasing each for `lease` so that no
    /// other dispatcher sends the same attempt.
    async fn claim_due_deliveries(
        &self,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Delivery>, DbError>;
    /// Records attempt number `delivery.attempts + 1` and what follows, if the delivery still
    /// has `attempts_before` attempts (else another dispatcher recorded it: false).
    async fn record_attempt(
        &self,
        id: &DeliveryId,
        attempts_before: i32,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, DbError>;

    /// A page of the endpoint's deliveries, newest first, older than `before` when given.
    async fn list_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        before: Option<&DeliveryId>,
        limit: i64,
    ) -> Result<Vec<Delivery>, DbError>;
    async fn find_delivery(
        &self,
        tenant: TenantId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, DbError>;
    /// The delivery's attempts, oldest first.
    async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, DbError>;
    /// Makes a failed delivery pending again, due now, with the same id and payload.
    async fn replay_delivery(&self, tenant: TenantId, id: &DeliveryId) -> Result<Replay, DbError>;
    /// Deliveries not yet answered for good (`pending`), over every tenant (metrics).
    async fn count_pending_deliveries(&self) -> Result<i64, DbError>;
}
