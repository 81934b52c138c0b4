//! The dispatcher: fans finished jobs out into stored deliveries, then sends the due ones,
//! records every attempt and schedules the next.
//!
//! Runs where the re-publisher runs (`medinform serve`, `medinform worker`); several processes
//! may run one each: the store leases every delivery to one of them per attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::schedule::{next_delay, parse_retry_after};
use super::target::{GuardedResolver, TargetPolicy, is_allowed_address, literal_ip, parse_url};
use super::{
    Attempt, Delivery, DeliveryId, Endpoint, EventType, Payload, PayloadFormat, SigningKeys,
};
use crate::config::WebhooksConfig;
use crate::db::{AttemptOutcome, BatchStore, NewDelivery, WebhookStore};
use crate::job::Job;
use crate::registry::Registry;
use crate::tenant::TenantId;
use crate::view::JobView;

/// Jobs fanned out per store query; the loop takes the rest.
const FAN_OUT_BATCH: i64 = 200;
/// The most of a response body kept with an attempt.
const EXCERPT_BYTES: usize = 1024;
/// How much longer than the send timeout a delivery stays leased to the dispatcher sending it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The header that names a delivery's event, which a `fhir-r4` body does not say.
const EVENT_TYPE_HEADER: &str = "medinform-event-type";

/// Makes ring the process's rustls crypto provider, which reqwest then uses for `https`
/// webhooks (ring is what sqlx, lapin and the S3 client use already). Harmless when a provider
/// is installed: that one stays.
pub fn install_crypto_provider() {
    // An error only says that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What one [`Dispatcher::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Deliveries stored for newly finished jobs.
    pub enqueued: usize,
    /// Delivery attempts made.
    pub attempted: usize,
}

/// Sends webhooks; see the module documentation.
#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn WebhookStore>,
    /// Batches and the models that say what their findings are, for `batch.completed`.
    batches: Option<(Arc<dyn BatchStore>, Arc<Registry>)>,
    config: WebhooksConfig,
    policy: TargetPolicy,
    client: reqwest::Client,
}

impl Dispatcher {
    /// A dispatcher on `store` with its HTTP client: no redirects, no proxies, the configured
    /// timeout and, unless private targets are allowed, a resolver that refuses private
    /// addresses.
    pub fn new(store: Arc<dyn WebhookStore>, config: WebhooksConfig) -> anyhow::Result<Self> {
        install_crypto_provider();
        let policy = TargetPolicy::from(&config);
        let timeout = Duration::from_secs(config.timeout_secs);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("MedInform-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !policy.allow_private {
            builder = builder.dns_resolver(GuardedResolver);
        }
        let client = builder
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            store,
            batches: None,
            config,
            policy,
            client,
        })
    }

    /// Also announces completed batches (`batch.completed`), with their findings.
    pub fn with_batches(mut self, batches: Arc<dyn BatchStore>, registry: Arc<Registry>) -> Self {
        self.batches = Some((batches, registry));
        self
    }

    /// Ticks every `webhooks.poll_interval_ms` until `shutdown`. A tick in progress is let
    /// finish (its sends are bounded by `webhooks.timeout_secs`); no new one starts.
    pub async fn run(self, shutdown: CancellationToken) {
        let pause = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            let busy = match self.tick().await {
                Ok(tick) => tick.attempted >= self.config.max_concurrent_sends,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "webhook dispatch failed");
                    false
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            // A full round means more are due: go on at once.
            if !busy {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// One round: fan finished jobs out into deliveries, then send up to
    /// `webhooks.max_concurrent_sends` due deliveries at once and record their attempts.
    pub async fn tick(&self) -> anyhow::Result<Tick> {
        let enqueued = self.fan_out().await.context("fanning out job events")?;
        let due = self
            .store
            .claim_due_deliveries(
                Duration::from_secs(self.config.timeout_secs) + LEASE_MARGIN,
                i64::try_from(self.config.max_concurrent_sends).unwrap_or(i64::MAX),
            )
            .await
            .context("claiming due deliveries")?;
        let attempted = due.len();
        futures::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
        Ok(Tick {
            enqueued,
            attempted,
        })
    }

    /// Stores one delivery per enabled endpoint that takes the event (and one for the job's own
    /// `webhook_url`) for every finished job not fanned out yet.
    async fn fan_out(&self) -> anyhow::Result<usize> {
        let mut endpoints: HashMap<TenantId, Vec<Endpoint>> = HashMap::new();
        let mut enqueued = 0;
        loop {
            let jobs = self.store.jobs_awaiting_events(FAN_OUT_BATCH).await?;
            let count = jobs.len();
            for job in jobs {
                let Some(event) = EventType::for_job(job.status) else {
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    endpoints.entry(job.tenant_id)
                {
                    slot.insert(self.store.list_endpoints(job.tenant_id).await?);
                }
                let (tenant, id, webhook_url) = (job.tenant_id, job.id, job.webhook_url.clone());
                let tenant_endpoints = &endpoints[&tenant];
                // The Bundle is made only for a job that an endpoint wants it of.
                let fhir = if tenant_endpoints
                    .iter()
                    .any(|e| takes(e, event) && e.payload_format == PayloadFormat::FhirR4)
                {
                    Some(self.fhir_payload(&job)?)
                } else {
                    None
                };
                let view = JobView::from(job);
                let payload = serde_json::to_string(&Payload {
                    event_type: event,
                    timestamp: Utc::now(),
                    data: &view,
                })
                .context("encoding a webhook payload")?;
                let mut deliveries: Vec<NewDelivery> =
                    subscribed(tenant_endpoints, event, &payload, fhir.as_deref());
                if let Some(url) = webhook_url {
                    deliveries.push(NewDelivery {
                        id: DeliveryId::new(),
                        endpoint_id: None,
                        url,
                        event_type: event,
                        payload,
                        payload_format: PayloadFormat::MedInform,
                    });
                }
                if self
                    .store
                    .enqueue_job_events(tenant, id, &deliveries)
                    .await?
                {
                    enqueued += deliveries.len();
                }
            }
            if count < FAN_OUT_BATCH as usize {
                break;
            }
        }
        if let Some((batches, registry)) = &self.batches {
            enqueued += self
                .fan_out_batches(batches.as_ref(), registry, &mut endpoints)
                .await?;
        }
        Ok(enqueued)
    }

    /// The job's FHIR R4 Bundle, as sent, with what the registry knows of its model.
    fn fhir_payload(&self, job: &Job) -> anyhow::Result<String> {
        let bundle = match &self.batches {
            Some((_, registry)) => crate::fhir::job_bundle_with(job, registry),
            None => crate::fhir::job_bundle(job, None),
        }
        .context("making a job's FHIR report")?;
        serde_json::to_string(&bundle).context("encoding a FHIR webhook payload")
    }

    /// Marks the batches whose jobs are all final as completed, and stores their
    /// `batch.completed` deliveries (data: the batch view, with its counts and findings).
    async fn fan_out_batches(
        &self,
        batches: &dyn BatchStore,
        registry: &Registry,
        endpoints: &mut HashMap<TenantId, Vec<Endpoint>>,
    ) -> anyhow::Result<usize> {
        batches.complete_batches().await?;
        let mut enqueued = 0;
        loop {
            let due = batches.batches_awaiting_events(FAN_OUT_BATCH).await?;
            let count = due.len();
            for batch in due {
                let (tenant, id) = (batch.tenant_id, batch.id);
                if let std::collections::hash_map::Entry::Vacant(slot) = endpoints.entry(tenant) {
                    slot.insert(self.store.list_endpoints(tenant).await?);
                }
                let view = crate::batch::view(batches, registry, batch).await?;
                let event = EventType::BatchCompleted;
                let payload = serde_json::to_string(&Payload {
                    event_type: event,
                    timestamp: Utc::now(),
                    data: &view,
                })
                .context("encoding a webhook payload")?;
                // A batch has no FHIR form: every endpoint gets the MedInform payload.
                let deliveries: Vec<NewDelivery> =
                    subscribed(&endpoints[&tenant], event, &payload, None);
                if batches
                    .enqueue_batch_events(tenant, id, &deliveries)
                    .await?
                {
                    enqueued += deliveries.len();
                }
            }
            if count < FAN_OUT_BATCH as usize {
                return Ok(enqueued);
            }
        }
    }

    /// Makes one attempt and records it; failures are logged (the lease runs out and another
    /// round tries again).
    async fn deliver(&self, delivery: Delivery) {
        let span = tracing::info_span!(
            "webhook_delivery",
            delivery_id = %delivery.id,
            endpoint_id = ?delivery.endpoint_id.map(|e| e.0),
            attempt = delivery.attempts + 1,
        );
        let outcome = tracing::Instrument::instrument(self.try_deliver(&delivery), span).await;
        if let Err(e) = outcome {
            tracing::warn!(delivery_id = %delivery.id, error = %format!("{e:#}"), "webhook attempt not recorded");
        }
    }

    async fn try_deliver(&self, delivery: &Delivery) -> anyhow::Result<()> {
        let keys = match delivery.endpoint_id {
            Some(id) => match self.store.find_endpoint(delivery.tenant_id, id).await? {
                Some(endpoint) if endpoint.enabled => endpoint.keys,
                Some(endpoint) => {
                    let why = endpoint
                        .disabled_reason
                        .unwrap_or_else(|| "disabled by its owner".into());
                    return self
                        .give_up(delivery, format!("the endpoint is disabled: {why}"))
                        .await;
                }
                // Deleted with its deliveries: nothing left to record.
                None => return Ok(()),
            },
            None => self.store.signing_keys(delivery.tenant_id).await?,
        };
        let (attempt, retry_after) = self.send(delivery, &keys).await;
        let status = attempt.response_status;
        let outcome = match status {
            Some(200..=299) => AttemptOutcome::Succeeded,
            Some(410) => AttemptOutcome::Failed,
            _ => match next_delay(
                &self.config.retry_schedule_secs,
                delivery.attempts + 1,
                retry_after,
                &mut rand::rng(),
            ) {
                Some(delay) => AttemptOutcome::Retry(
                    attempt.attempted_at
                        + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX),
                ),
                None => AttemptOutcome::Failed,
            },
        };
        // The endpoint is disabled before the delivery is recorded as failed, so that whoever
        // reads the failed delivery also reads the disabled endpoint.
        if let (Some(410), Some(endpoint)) = (status, delivery.endpoint_id) {
            let reason = format!(
                "The receiver answered 410 Gone at {}; re-enable the endpoint once it accepts \
                 deliveries again.",
                attempt.attempted_at.to_rfc3339()
            );
            self.store.disable_endpoint(endpoint, &reason).await?;
            tracing::warn!(endpoint_id = %endpoint, "endpoint disabled: it answered 410 Gone");
        }
        let recorded = self
            .store
            .record_attempt(&delivery.id, delivery.attempts, &attempt, outcome)
            .await?;
        if !recorded {
            tracing::warn!("another dispatcher recorded this attempt first");
            return Ok(());
        }
        match (outcome, status) {
            (AttemptOutcome::Succeeded, _) => {
                crate::metrics::webhook_attempt("delivered", Some(delivery.created_at));
            }
            (AttemptOutcome::Failed, _) => crate::metrics::webhook_attempt("gave_up", None),
            (AttemptOutcome::Retry(_), Some(_)) => {
                crate::metrics::webhook_attempt("rejected", None);
            }
            (AttemptOutcome::Retry(_), None) => {
                crate::metrics::webhook_attempt("unreachable", None);
            }
        }
        tracing::info!(
            status = ?status,
            latency_ms = attempt.latency_ms,
            error = attempt.error.as_deref(),
            outcome = ?outcome,
            "webhook attempt"
        );
        Ok(())
    }

    /// Records an attempt that was not made, and fails the delivery.
    async fn give_up(&self, delivery: &Delivery, why: String) -> anyhow::Result<()> {
        let attempt = Attempt {
            attempted_at: Utc::now(),
            response_status: None,
            latency_ms: 0,
            response_excerpt: None,
            error: Some(why),
        };
        self.store
            .record_attempt(
                &delivery.id,
                delivery.attempts,
                &attempt,
                AttemptOutcome::Failed,
            )
            .await?;
        crate::metrics::webhook_attempt("disabled", None);
        tracing::info!(
            error = attempt.error.as_deref(),
            "webhook delivery given up"
        );
        Ok(())
    }

    /// POSTs the payload, signed; returns the attempt and the `Retry-After` asked for.
    async fn send(&self, delivery: &Delivery, keys: &SigningKeys) -> (Attempt, Option<Duration>) {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let failed = |error: String| Attempt {
            attempted_at,
            response_status: None,
            latency_ms: elapsed_ms(started),
            response_excerpt: None,
            error: Some(error),
        };
        // An IP literal is never resolved, so the resolver cannot refuse it: check it here.
        if !self.policy.allow_private {
            let url = match parse_url(&delivery.url) {
                Ok(url) => url,
                Err(e) => return (failed(e.0), None),
            };
            if let Some(ip) = literal_ip(&url).filter(|ip| !is_allowed_address(*ip)) {
                return (
                    failed(format!(
                        "refused: {ip} is a loopback, private or link-local address, which \
                         webhooks.allow_private_targets does not allow"
                    )),
                    None,
                );
            }
        }
        let timestamp = attempted_at.timestamp();
        let signature = keys.signature_header(
            delivery.id.as_str(),
            timestamp,
            &delivery.payload,
            attempted_at,
        );
        let sent = self
            .client
            .post(&delivery.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                delivery.payload_format.content_type(),
            )
            .header(EVENT_TYPE_HEADER, delivery.event_type.as_str())
            .header("webhook-id", delivery.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return (failed(error_chain(e)), None),
        };
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let mut body = Vec::new();
        while body.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(EXCERPT_BYTES);
        let excerpt = String::from_utf8_lossy(&body).into_owned();
        let attempt = Attempt {
            attempted_at,
            response_status: Some(i32::from(response.status().as_u16())),
            latency_ms: elapsed_ms(started),
            response_excerpt: Some(excerpt).filter(|e| !e.is_empty()),
            error: None,
        };
        (attempt, retry_after)
    }
}

/// Whether `endpoint` is sent `event`.
fn takes(endpoint: &Endpoint, event: EventType) -> bool {
    endpoint.enabled && endpoint.event_types.contains(&event)
}

/// One delivery to each enabled endpoint that takes `event`: `fhir` (the job's Bundle) to the
/// `fhir-r4` endpoints when there is one, `payload` to the others.
fn subscribed(
    endpoints: &[Endpoint],
    event: EventType,
    payload: &str,
    fhir: Option<&str>,
) -> Vec<NewDelivery> {
    endpoints
        .iter()
        .filter(|e| takes(e, event))
        .map(|e| {
            let (payload_format, payload) = match (e.payload_format, fhir) {
                (PayloadFormat::FhirR4, Some(bundle)) => (PayloadFormat::FhirR4, bundle),
                _ => (PayloadFormat::MedInform, payload),
            };
            NewDelivery {
                id: DeliveryId::new(),
                endpoint_id: Some(e.id),
                url: e.url.clone(),
                event_type: event,
                payload: payload.to_owned(),
                payload_format,
            }
        })
        .collect()
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The error and its causes, without the URL (it may carry a receiver's token).
fn error_chain(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
