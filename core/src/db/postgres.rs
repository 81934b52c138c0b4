//! The distributed job store: PostgreSQL.

mod batches;
mod idempotency;
mod tenants;
mod webhooks;

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Cancel, Claim, DbError, JobFilter, JobStore, NewJob, PublishRecord, QueuedModel, Republish,
    claims_in_order, deadline_failure, lease_duration, publish_committed,
};
use crate::imaging::DicomAttributes;
use crate::job::{
    BatchId, FailureCode, Job, JobFailure, JobId, JobStatus, Priority, ScreeningResult,
};
use crate::tenant::TenantId;

/// Jobs in PostgreSQL; one pool per process.
#[derive(Debug, Clone)]
pub struct PostgresJobStore {
    pool: PgPool,
    published: PublishRecords,
    description: String,
}

/// Publishes to record, gathered: one task writes every publish that arrived while its previous
/// statement ran, in one statement and one commit, instead of a transaction per job (which had
/// been half the write transactions an upload cost the database every API replica shares).
#[derive(Debug, Clone)]
struct PublishRecords {
    waiting: mpsc::UnboundedSender<PublishRecord>,
}

/// The most publishes one statement records.
const MAX_PUBLISH_GROUP: usize = 1_000;

impl PublishRecords {
    /// Starts the task that writes them; it ends when the last clone of the store is dropped.
    fn start(pool: PgPool) -> Self {
        let (waiting, mut queue) = mpsc::unbounded_channel::<PublishRecord>();
        tokio::spawn(async move {
            let mut group = Vec::new();
            while queue.recv_many(&mut group, MAX_PUBLISH_GROUP).await > 0 {
                let ids: Vec<Uuid> = group.iter().map(|(id, _)| id.0).collect();
                // Rows another transaction holds are skipped, never waited for: their holder is
                // claiming or ending the job, which leaves nothing to republish, and a statement
                // that waited for rows a claim locks in another order could deadlock with it.
                // Were the holder to roll back, the job would only be published once more.
                let written = sqlx::query(
                    "update jobs set published_at = $2 where id in \
                         (select id from jobs where id = any($1) and status = 'queued' \
                          for update skip locked)",
                )
                .bind(ids)
                .bind(Utc::now())
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(written.clone());
                }
            }
        });
        Self { waiting }
    }

    /// Records `id`'s publish; returns once that is committed.
    async fn record(&self, id: JobId) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.waiting.send((id, reply)).map_err(|_| {
            DbError::Unavailable(anyhow::anyhow!("the publish records' writer has stopped"))
        })?;
        publish_committed(answer).await
    }
}

const JOB_COLUMNS: &str = "id, tenant_id, batch_id, model, model_version, status, image_key, \
     image_sha256, image_content_type, image_bytes, client_reference, site, tags, deadline, \
     webhook_url, attempts, result, error_code, error_message, created_at, updated_at, \
     started_at, finished_at, priority, dicom";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    batch_id: Option<Uuid>,
    model: String,
    model_version: String,
    status: String,
    priority: String,
    image_key: String,
    image_sha256: String,
    image_content_type: String,
    image_bytes: i64,
    client_reference: Option<String>,
    site: Option<String>,
    tags: Json<Vec<String>>,
    deadline: Option<DateTime<Utc>>,
    webhook_url: Option<String>,
    attempts: i32,
    result: Option<Json<ScreeningResult>>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    dicom: Option<Json<DicomAttributes>>,
}

impl TryFrom<JobRow> for Job {
    type Error = DbError;
    fn try_from(row: JobRow) -> Result<Self, DbError> {
        Ok(Job {
            id: JobId(row.id),
            tenant_id: TenantId(row.tenant_id),
            batch_id: row.batch_id.map(BatchId),
            model: row.model,
            model_version: row.model_version,
            status: row.status.parse().map_err(anyhow::Error::msg)?,
            priority: row.priority.parse().map_err(anyhow::Error::msg)?,
            image_key: row.image_key,
            image_sha256: row.image_sha256,
            image_content_type: row.image_content_type,
            image_bytes: row.image_bytes,
            client_reference: row.client_reference,
            site: row.site,
            tags: row.tags.0,
            deadline: row.deadline,
            webhook_url: row.webhook_url,
            dicom: row.dicom.map(|Json(d)| d),
            attempts: row.attempts,
            result: row.result.map(|Json(r)| r),
            error: row.error_code.map(|code| JobFailure {
                code: FailureCode::parse(&code),
                message: row.error_message.unwrap_or_default(),
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

impl PostgresJobStore {
    /// Connects the pool. Fails when the server cannot be reached.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(if max_connections == 0 {
                10
            } else {
                max_connections
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .with_context(|| {
                format!(
                    "connecting to PostgreSQL at {}",
                    crate::config::redact_url(url)
                )
            })?;
        Ok(Self {
            published: PublishRecords::start(pool.clone()),
            pool,
            description: format!("PostgreSQL at {}", crate::config::redact_url(url)),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl JobStore for PostgresJobStore {
    async fn migrate(&self) -> Result<(), DbError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await
            .context("applying PostgreSQL migrations")?;
        Ok(())
    }

    async fn insert(&self, job: &NewJob) -> Result<Job, DbError> {
        let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into jobs (id, model, model_version, status, image_key, image_sha256, \
             image_content_type, image_bytes, client_reference, tenant_id, batch_id, site, tags, \
             deadline, webhook_url, submission_key, created_at, updated_at, priority, dicom) \
             values ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $16, $17, $18) \
             on conflict (tenant_id, submission_key) do nothing returning {JOB_COLUMNS}"
        )))
        .bind(job.id.0)
        .bind(&job.model)
        .bind(&job.model_version)
        .bind(&job.image_key)
        .bind(&job.image_sha256)
        .bind(&job.image_content_type)
        .bind(job.image_bytes)
        .bind(&job.client_reference)
        .bind(job.tenant_id.0)
        .bind(job.batch_id.map(|b| b.0))
        .bind(&job.site)
        .bind(Json(&job.tags))
        .bind(job.deadline)
        .bind(&job.webhook_url)
        .bind(&job.submission_key)
        .bind(Utc::now())
        .bind(job.priority.as_str())
        .bind(job.dicom.as_ref().map(Json))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return row.try_into();
        }
        // The request that created it is being retried: answer the job it created.
        let row: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where tenant_id = $1 and submission_key = $2"
        )))
        .bind(job.tenant_id.0)
        .bind(&job.submission_key)
        .fetch_one(&self.pool)
        .await?;
        row.try_into()
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, DbError> {
        let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Job::try_from).transpose()
    }

    async fn find(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>, DbError> {
        let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where id = $1 and tenant_id = $2"
        )))
        .bind(id.0)
        .bind(tenant.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Job::try_from).transpose()
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        limit: i64,
    ) -> Result<Vec<Job>, DbError> {
        let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where tenant_id = $1 \
                 and ($2::text is null or status = $2) \
                 and ($3::text is null or model = $3) \
                 and ($4::uuid is null or batch_id = $4) \
                 and ($5::text is null or client_reference = $5) \
                 and ($6::timestamptz is null or created_at >= $6) \
                 and ($7::timestamptz is null or created_at < $7) \
                 and ($8::uuid is null or id < $8) \
             order by id desc limit $9"
        )))
        .bind(tenant.0)
        .bind(filter.status.map(JobStatus::as_str))
        .bind(&filter.model)
        .bind(filter.batch_id.map(|b| b.0))
        .bind(&filter.client_reference)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.before.map(|j| j.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn cancel(
        &self,
        tenant: TenantId,
        id: JobId,
        failure: &JobFailure,
    ) -> Result<Cancel, DbError> {
        let canceled: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update jobs set status = 'canceled', error_code = $3, error_message = $4, \
                 finished_at = $5, updated_at = $5 \
             where id = $1 and tenant_id = $2 and status = 'queued' returning {JOB_COLUMNS}"
        )))
        .bind(id.0)
        .bind(tenant.0)
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(Utc::now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = canceled {
            return Ok(Cancel::Canceled(row.try_into()?));
        }
        Ok(match self.find(tenant, id).await? {
            Some(job) => Cancel::NotCancelable(job),
            None => Cancel::Missing,
        })
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        self.cancel_past_deadline(None, now).await
    }

    async fn mark_published(&self, id: JobId) -> Result<(), DbError> {
        self.published.record(id).await
    }

    async fn claim(&self, id: JobId, lease: Duration, take_over: bool) -> Result<Claim, DbError> {
        self.cancel_past_deadline(Some(id), Utc::now()).await?;
        let claimed: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update jobs set status = 'processing', attempts = attempts + 1, \
                 lease_expires_at = $4 + $2, started_at = coalesce(started_at, $4), \
                 updated_at = $4 \
             where id = $1 and (status = 'queued' or (status = 'processing' \
                 and (lease_expires_at < $4 or $3))) \
             returning {JOB_COLUMNS}"
        )))
        .bind(id.0)
        .bind(lease_duration(lease))
        .bind(take_over)
        .bind(Utc::now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = claimed {
            return Ok(Claim::Claimed(row.try_into()?));
        }
        Ok(match self.get(id).await? {
            None => Claim::Missing,
            Some(job) if job.status.is_final() => Claim::Finished(job),
            Some(_) => Claim::Busy,
        })
    }

    async fn claim_many(
        &self,
        jobs: &[(JobId, bool)],
        lease: Duration,
        _lane: Priority,
    ) -> Result<Vec<Claim>, DbError> {
        let (ids, take_overs): (Vec<Uuid>, Vec<bool>) = jobs
            .iter()
            .map(|&(id, take_over)| (id.0, take_over))
            .unzip();
        let now = Utc::now();
        let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update jobs set status = 'processing', attempts = attempts + 1, \
                 lease_expires_at = $4 + $3, started_at = coalesce(started_at, $4), \
                 updated_at = $4 \
             from unnest($1::uuid[], $2::bool[]) as asked (asked_id, asked_take_over) \
             where id = asked_id and ((status = 'queued' \
                     and (deadline is null or deadline > $4 or started_at is not null)) \
                 or (status = 'processing' and (lease_expires_at < $4 or asked_take_over))) \
             returning {JOB_COLUMNS}"
        )))
        .bind(ids)
        .bind(take_overs)
        .bind(lease_duration(lease))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let taken = rows
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        claims_in_order(self, jobs, taken, lease).await
    }

    async fn succeed_many(
        &self,
        results: &[(JobId, i32, &ScreeningResult)],
        _lane: Priority,
    ) -> Result<Vec<bool>, DbError> {
        let mut ids = Vec::with_capacity(results.len());
        let mut attempts = Vec::with_capacity(results.len());
        let mut values = Vec::with_capacity(results.len());
        for &(id, attempt, result) in results {
            ids.push(id.0);
            attempts.push(attempt);
            values.push(Json(result));
        }
        let written: Vec<(Uuid,)> = sqlx::query_as(
            "update jobs set status = 'succeeded', result = done_result, error_code = null, \
                 error_message = null, lease_expires_at = null, finished_at = $4, \
                 updated_at = $4 \
             from unnest($1::uuid[], $2::int4[], $3::jsonb[]) \
                 as done (done_id, done_attempt, done_result) \
             where id = done_id and status = 'processing' and attempts = done_attempt \
             returning id",
        )
        .bind(ids)
        .bind(attempts)
        .bind(values)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await?;
        let written: std::collections::HashSet<Uuid> =
            written.into_iter().map(|(id,)| id).collect();
        Ok(results
            .iter()
            .map(|(id, _, _)| written.contains(&id.0))
            .collect())
    }

    async fn succeed(
        &self,
        id: JobId,
        attempt: i32,
        result: &ScreeningResult,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "update jobs set status = 'succeeded', result = $3, error_code = null, \
                 error_message = null, lease_expires_at = null, finished_at = $4, \
                 updated_at = $4 \
             where id = $1 and status = 'processing' and attempts = $2",
        )
        .bind(id.0)
        .bind(attempt)
        .bind(Json(result))
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail(&self, id: JobId, attempt: i32, failure: &JobFailure) -> Result<bool, DbError> {
        self.finish_attempt(id, attempt, failure, JobStatus::Failed)
            .await
    }

    async fn release(
        &self,
        id: JobId,
        attempt: i32,
        failure: &JobFailure,
    ) -> Result<bool, DbError> {
        self.finish_attempt(id, attempt, failure, JobStatus::Queued)
            .await
    }

    async fn reclaim_expired(&self, now: Option<DateTime<Utc>>) -> Result<u64, DbError> {
        let done = sqlx::query(
            "update jobs set status = 'queued', lease_expires_at = null, published_at = null, \
                 updated_at = $2 \
             where status = 'processing' and ($1::timestamptz is null or lease_expires_at < $1)",
        )
        .bind(now)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn due_for_publish(
        &self,
        unconfirmed_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Republish>, DbError> {
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "select id, model, priority from jobs where status = 'queued' and \
                 ((published_at is null and created_at < $1) or published_at < $2) \
             order by created_at limit $3",
        )
        .bind(unconfirmed_before)
        .bind(stale_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, model, priority)| {
                Ok(Republish {
                    id: JobId(id),
                    model,
                    priority: priority.parse().map_err(anyhow::Error::msg)?,
                })
            })
            .collect()
    }

    async fn count_queued(&self) -> Result<i64, DbError> {
        let (count,): (i64,) = sqlx::query_as("select count(*) from jobs where status = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }

    async fn count_queued_for(&self, tenant: TenantId) -> Result<i64, DbError> {
        let (count,): (i64,) =
            sqlx::query_as("select count(*) from jobs where status = 'queued' and tenant_id = $1")
                .bind(tenant.0)
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }

    async fn queued_by_model(&self) -> Result<Vec<QueuedModel>, DbError> {
        let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
            "select model, priority, count(*), min(created_at) from jobs where status = 'queued' \
             group by model, priority order by model, priority desc",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(model, priority, jobs, oldest)| {
                Ok(QueuedModel {
                    model,
                    priority: priority.parse().map_err(anyhow::Error::msg)?,
                    jobs,
                    oldest,
                })
            })
            .collect::<Result<_, DbError>>()?)
    }

    async fn referenced_images(&self, keys: &[String]) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("select distinct image_key from jobs where image_key = any($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(key,)| key).collect())
    }

    async fn check(&self) -> Result<(), DbError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

impl PostgresJobStore {
    /// Cancels never-started `queued` jobs (only `only`, when given) whose deadline is at or
    /// before `now`.
    async fn cancel_past_deadline(
        &self,
        only: Option<JobId>,
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let failure = deadline_failure();
        let done = sqlx::query(
            "update jobs set status = 'canceled', error_code = $2, error_message = $3, \
                 finished_at = $5, updated_at = $5 \
             where ($4::uuid is null or id = $4) and status = 'queued' \
                 and started_at is null and deadline <= $1",
        )
        .bind(now)
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(only.map(|id| id.0))
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ends a claim with an error: `failed` for good, or `queued` for another attempt.
    async fn finish_attempt(
        &self,
        id: JobId,
        attempt: i32,
        failure: &JobFailure,
        status: JobStatus,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "update jobs set status = $3, error_code = $4, error_message = $5, \
                 lease_expires_at = null, \
                 published_at = case when $3 = 'queued' then $6 else published_at end, \
                 finished_at = case when $3 = 'failed' then $6 else null end, \
                 updated_at = $6 \
             where id = $1 and status = 'processing' and attempts = $2",
        )
        .bind(id.0)
        .bind(attempt)
        .bind(status.as_str())
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
