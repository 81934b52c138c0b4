//! Webhook endpoints, signing secrets and deliveries in SQLite (ids as text, times in Unix
//! milliseconds, JSON as text). One writer at a time: a claim is one statement, so two
//! dispatchers on one file never take the same delivery.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{JOB_COLUMNS, JobRow, SqliteJobStore, millis, time};
use crate::db::{
    AttemptOutcome, DbError, EndpointUpdate, NewDelivery, NewEndpoint, Replay, WebhookStore,
    lease_duration,
};
use crate::job::{BatchId, Job, JobId};
use crate::tenant::TenantId;
use crate::webhooks::{
    Attempt, Delivery, DeliveryId, Endpoint, EndpointId, EventType, PayloadFormat, Secret,
    SigningKeys,
};

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, event_types, payload_format, description, \
     enabled, disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, \
     updated_at";

const DELIVERY_COLUMNS: &str = "id, tenant_id, endpoint_id, url, event_type, job_id, batch_id, \
     payload, payload_format, status, attempts, next_attempt_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    tenant_id: String,
    url: String,
    event_types: String,
    payload_format: String,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

fn keys(
    secret: &str,
    previous: Option<String>,
    until: Option<i64>,
) -> Result<SigningKeys, DbError> {
    let parse = |s: &str| {
        Secret::parse(s)
            .ok_or_else(|| DbError::Corrupt(anyhow::anyhow!("a stored secret is malformed")))
    };
    Ok(SigningKeys {
        current: parse(secret)?,
        previous: previous.as_deref().map(parse).transpose()?,
        previous_expires_at: until.map(time).transpose()?,
    })
}

fn payload_format(stored: &str) -> Result<PayloadFormat, DbError> {
    stored
        .parse()
        .map_err(|e: String| DbError::Corrupt(anyhow::anyhow!(e)))
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = DbError;
    fn try_from(row: EndpointRow) -> Result<Self, DbError> {
        Ok(Endpoint {
            id: EndpointId::from_str(&row.id).context("endpoint id")?,
            tenant_id: TenantId::from_str(&row.tenant_id).context("tenant id")?,
            url: row.url,
            event_types: serde_json::from_str(&row.event_types).context("stored event types")?,
            payload_format: payload_format(&row.payload_format)?,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            keys: keys(
                &row.secret,
                row.previous_secret,
                row.previous_secret_expires_at,
            )?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    tenant_id: String,
    endpoint_id: Option<String>,
    url: String,
    event_type: String,
    job_id: Option<String>,
    batch_id: Option<String>,
    payload: String,
    payload_format: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = DbError;
    fn try_from(row: DeliveryRow) -> Result<Self, DbError> {
        Ok(Delivery {
            id: row.id.parse().map_err(anyhow::Error::msg)?,
            tenant_id: TenantId::from_str(&row.tenant_id).context("tenant id")?,
            endpoint_id: row
                .endpoint_id
                .map(|e| EndpointId::from_str(&e))
                .transpose()
                .context("endpoint id")?,
            url: row.url,
            event_type: row.event_type.parse().map_err(anyhow::Error::msg)?,
            job_id: row
                .job_id
                .map(|j| JobId::from_str(&j))
                .transpose()
                .context("job id")?,
            batch_id: row
                .batch_id
                .map(|b| BatchId::from_str(&b))
                .transpose()
                .context("batch id")?,
            payload: row.payload,
            payload_format: payload_format(&row.payload_format)?,
            status: row.status.parse().map_err(anyhow::Error::msg)?,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at.map(time).transpose()?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempted_at: i64,
    response_status: Option<i32>,
    latency_ms: i64,
    response_excerpt: Option<String>,
    error: Option<String>,
}

fn event_types_json(types: &[EventType]) -> Result<String, DbError> {
    Ok(serde_json::to_string(types).context("encoding event types")?)
}

fn now_ms() -> i64 {
    millis(Utc::now())
}

#[async_trait]
impl WebhookStore for SqliteJobStore {
    async fn create_endpoint(&self, e: &NewEndpoint) -> Result<Endpoint, DbError> {
        let row: EndpointRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into webhook_endpoints (id, tenant_id, url, event_types, description, \
                 enabled, secret, created_at, updated_at, payload_format) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9) returning {ENDPOINT_COLUMNS}"
        )))
        .bind(e.id.to_string())
        .bind(e.tenant_id.to_string())
        .bind(&e.url)
        .bind(event_types_json(&e.event_types)?)
        .bind(&e.description)
        .bind(e.enabled)
        .bind(e.secret.expose())
        .bind(now_ms())
        .bind(e.payload_format.as_str())
        .fetch_one(&self.pool)
        .await?;
        row.try_into()
    }

    async fn list_endpoints(&self, tenant: TenantId) -> Result<Vec<Endpoint>, DbError> {
        let rows: Vec<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ENDPOINT_COLUMNS} from webhook_endpoints where tenant_id = ?1 order by id"
        )))
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Endpoint::try_from).collect()
    }

    async fn find_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Option<Endpoint>, DbError> {
        let row: Option<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ENDPOINT_COLUMNS} from webhook_endpoints where id = ?1 and tenant_id = ?2"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Endpoint::try_from).transpose()
    }

    async fn update_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        u: &EndpointUpdate,
    ) -> Result<Option<Endpoint>, DbError> {
        let row: Option<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update webhook_endpoints set url = coalesce(?3, url), \
                 event_types = coalesce(?4, event_types), \
                 description = case when ?5 then ?6 else description end, \
                 enabled = coalesce(?7, enabled), \
                 disabled_reason = case when ?7 then null else disabled_reason end, \
                 updated_at = ?8, payload_format = coalesce(?9, payload_format) \
             where id = ?1 and tenant_id = ?2 returning {ENDPOINT_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(&u.url)
        .bind(u.event_types.as_deref().map(event_types_json).transpose()?)
        .bind(u.description.is_some())
        .bind(u.description.clone().flatten())
        .bind(u.enabled)
        .bind(now_ms())
        .bind(u.payload_format.map(PayloadFormat::as_str))
        .fetch_optional(&self.pool)
        .await?;
        row.map(Endpoint::try_from).transpose()
    }

    async fn rotate_endpoint_secret(
        &self,
        tenant: TenantId,
        id: EndpointId,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, DbError> {
        let row: Option<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update webhook_endpoints set previous_secret = secret, secret = ?3, \
                 previous_secret_expires_at = ?4, updated_at = ?5 \
             where id = ?1 and tenant_id = ?2 returning {ENDPOINT_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(secret.expose())
        .bind(millis(previous_until))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Endpoint::try_from).transpose()
    }

    async fn delete_endpoint(&self, tenant: TenantId, id: EndpointId) -> Result<bool, DbError> {
        let done = sqlx::query("delete from webhook_endpoints where id = ?1 and tenant_id = ?2")
            .bind(id.to_string())
            .bind(tenant.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn disable_endpoint(&self, id: EndpointId, reason: &str) -> Result<(), DbError> {
        sqlx::query(
            "update webhook_endpoints set enabled = 0, disabled_reason = ?2, updated_at = ?3 \
             where id = ?1",
        )
        .bind(id.to_string())
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rotate_signing_secret(
        &self,
        tenant: TenantId,
        secret: &Secret,
        previous_until: DateTime<Utc>,
    ) -> Result<SigningKeys, DbError> {
        let (current, previous, until): (String, Option<String>, Option<i64>) = sqlx::query_as(
            "insert into webhook_signing_secrets (tenant_id, secret, created_at, updated_at) \
             values (?1, ?2, ?4, ?4) \
             on conflict (tenant_id) do update set secret = excluded.secret, \
                 previous_secret = webhook_signing_secrets.secret, \
                 previous_secret_expires_at = ?3, updated_at = ?4 \
             returning secret, previous_secret, previous_secret_expires_at",
        )
        .bind(tenant.to_string())
        .bind(secret.expose())
        .bind(millis(previous_until))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        keys(&current, previous, until)
    }

    async fn signing_keys(&self, tenant: TenantId) -> Result<SigningKeys, DbError> {
        sqlx::query(
            "insert into webhook_signing_secrets (tenant_id, secret, created_at, updated_at) \
             values (?1, ?2, ?3, ?3) on conflict (tenant_id) do nothing",
        )
        .bind(tenant.to_string())
        .bind(Secret::generate().expose())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let (current, previous, until): (String, Option<String>, Option<i64>) = sqlx::query_as(
            "select secret, previous_secret, previous_secret_expires_at \
             from webhook_signing_secrets where tenant_id = ?1",
        )
        .bind(tenant.to_string())
        .fetch_one(&self.pool)
        .await?;
        keys(&current, previous, until)
    }

    async fn jobs_awaiting_events(&self, limit: i64) -> Result<Vec<Job>, DbError> {
        let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where events_enqueued_at is null \
                 and status in ('succeeded', 'failed', 'canceled') \
             order by finished_at limit ?1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn enqueue_job_events(
        &self,
        tenant: TenantId,
        job: JobId,
        deliveries: &[NewDelivery],
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let stamped = sqlx::query(
            "update jobs set events_enqueued_at = ?2 where id = ?1 and events_enqueued_at is null",
        )
        .bind(job.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if stamped.rows_affected() == 0 {
            return Ok(false);
        }
        insert_deliveries(
            &mut tx,
            tenant,
            (Some(job.to_string()), None),
            deliveries,
            now,
        )
        .await?;
        tx.commit().await.context("committing job events")?;
        Ok(true)
    }

    async fn claim_due_deliveries(
        &self,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Delivery>, DbError> {
        let now = Utc::now();
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update webhook_deliveries set lease_expires_at = ?1 \
             where id in (select id from webhook_deliveries \
                 where status = 'pending' and next_attempt_at <= ?2 \
                     and (lease_expires_at is null or lease_expires_at < ?2) \
                 order by next_attempt_at limit ?3) \
             returning {DELIVERY_COLUMNS}"
        )))
        .bind(millis(now + lease_duration(lease)))
        .bind(millis(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn record_attempt(
        &self,
        id: &DeliveryId,
        attempts_before: i32,
        a: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, DbError> {
        let (status, next) = match outcome {
            AttemptOutcome::Succeeded => ("succeeded", None),
            AttemptOutcome::Retry(at) => ("pending", Some(millis(at))),
            AttemptOutcome::Failed => ("failed", None),
        };
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "update webhook_deliveries set attempts = attempts + 1, status = ?3, \
                 next_attempt_at = ?4, lease_expires_at = null, updated_at = ?5 \
             where id = ?1 and attempts = ?2 and status = 'pending'",
        )
        .bind(id.as_str())
        .bind(attempts_before)
        .bind(status)
        .bind(next)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "insert into webhook_attempts (delivery_id, attempted_at, response_status, \
                 latency_ms, response_excerpt, error) values (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id.as_str())
        .bind(millis(a.attempted_at))
        .bind(a.response_status)
        .bind(a.latency_ms)
        .bind(&a.response_excerpt)
        .bind(&a.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("committing a webhook attempt")?;
        Ok(true)
    }

    async fn list_deliveries(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        before: Option<&DeliveryId>,
        limit: i64,
    ) -> Result<Vec<Delivery>, DbError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries \
             where tenant_id = ?1 and endpoint_id = ?2 and (?3 is null or id < ?3) \
             order by id desc limit ?4"
        )))
        .bind(tenant.to_string())
        .bind(endpoint.to_string())
        .bind(before.map(DeliveryId::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    async fn find_delivery(
        &self,
        tenant: TenantId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, DbError> {
        let row: Option<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries where id = ?1 and tenant_id = ?2"
        )))
        .bind(id.as_str())
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Delivery::try_from).transpose()
    }

    async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, DbError> {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "select attempted_at, response_status, latency_ms, response_excerpt, error \
             from webhook_attempts where delivery_id = ?1 order by id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Attempt {
                    attempted_at: time(r.attempted_at)?,
                    response_status: r.response_status,
                    latency_ms: r.latency_ms,
                    response_excerpt: r.response_excerpt,
                    error: r.error,
                })
            })
            .collect()
    }

    async fn replay_delivery(&self, tenant: TenantId, id: &DeliveryId) -> Result<Replay, DbError> {
        let now = now_ms();
        let row: Option<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update webhook_deliveries set status = 'pending', next_attempt_at = ?3, \
                 lease_expires_at = null, updated_at = ?3 \
             where id = ?1 and tenant_id = ?2 and status = 'failed' \
             returning {DELIVERY_COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(tenant.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Replay::Scheduled(row.try_into()?));
        }
        Ok(match self.find_delivery(tenant, id).await? {
            Some(delivery) => Replay::NotFailed(delivery),
            None => Replay::NotFound,
        })
    }

    async fn count_pending_deliveries(&self) -> Result<i64, DbError> {
        let (count,): (i64,) =
            sqlx::query_as("select count(*) from webhook_deliveries where status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }
}

/// Stores `deliveries` of one event, about a job or a batch, due at `now` (in the caller's
/// transaction).
pub(super) async fn insert_deliveries(
    tx: &mut sqlx::SqliteConnection,
    tenant: TenantId,
    (job, batch): (Option<String>, Option<String>),
    deliveries: &[NewDelivery],
    now: i64,
) -> Result<(), DbError> {
    for d in deliveries {
        sqlx::query(
            "insert into webhook_deliveries (id, tenant_id, endpoint_id, url, event_type, \
                 job_id, batch_id, payload, payload_format, status, next_attempt_at, \
                 created_at, updated_at) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, 'pending', ?9, ?9, ?9)",
        )
        .bind(d.id.as_str())
        .bind(tenant.to_string())
        .bind(d.endpoint_id.map(|e| e.to_string()))
        .bind(&d.url)
        .bind(d.event_type.as_str())
        .bind(&job)
        .bind(&batch)
        .bind(&d.payload)
        .bind(now)
        .bind(d.payload_format.as_str())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
