//! The embedded job store: a SQLite file.

mod batches;
mod idempotency;
mod images;
mod tenants;
mod webhooks;
mod writer;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use tokio::sync::oneshot;

use self::writer::Writer;

use super::{
    Cancel, Claim, DbError, JobFilter, JobStore, NewJob, PublishRecord, QueuedModel, Republish,
    claims_in_order, deadline_failure, lease_duration, publish_committed,
};
use crate::job::{
    BatchId, FailureCode, Job, JobFailure, JobId, JobStatus, Priority, ScreeningResult,
};
use crate::tenant::TenantId;

/// Jobs in one SQLite file (write-ahead log, so readers never wait for the writer). A job's
/// own writes (recorded, published, claimed, finished) are group-committed by one writer
/// connection ([`writer`]); reads and the rarer writes use the pool.
#[derive(Debug, Clone)]
pub struct SqliteJobStore {
    pool: SqlitePool,
    writer: Writer,
    published: PublishRecords,
    description: String,
}

/// Publishes to record, gathered: every job is published once, and one statement records the
/// publishes that arrived while the previous one waited for the writer, instead of one write
/// each (the writer, not the model, had become what limited throughput on small images).
#[derive(Debug, Clone, Default)]
struct PublishRecords {
    waiting: Arc<std::sync::Mutex<Vec<PublishRecord>>>,
}

impl PublishRecords {
    /// Records `id`'s publish; returns once that is committed.
    async fn record(&self, writer: &Writer, id: JobId) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push((id, reply));
            waiting.len() == 1
        };
        if first {
            // This call writes every publish waiting when its turn in the writer comes (its own
            // included), and answers them once the write is committed.
            let waiting = self.waiting.clone();
            let ran = Arc::new(AtomicBool::new(false));
            let running = ran.clone();
            let written = writer
                .write(Priority::Bulk, move |conn| {
                    Box::pin(async move {
                        running.store(true, Ordering::Release);
                        let taken = std::mem::take(
                            &mut *waiting.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        let ids: Vec<String> = taken.iter().map(|(id, _)| id.to_string()).collect();
                        let ids = serde_json::to_string(&ids).context("encoding job ids")?;
                        sqlx::query(
                            "update jobs set published_at = ?2 \
                             where id in (select value from json_each(?1)) and status = 'queued'",
                        )
                        .bind(ids)
                        .bind(millis(Utc::now()))
                        .execute(&mut *conn)
                        .await?;
                        Ok(taken)
                    })
                })
                .await;
            match written {
                Ok(taken) => {
                    for (_, reply) in taken {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(e) => {
                    // Taken and not committed: their answers were dropped with the statement's
                    // output, which answers them with an error. Never run (the writer stopped):
                    // those waiting for this call are answered here.
                    if !ran.load(Ordering::Acquire) {
                        let message = e.to_string();
                        let left = std::mem::take(
                            &mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        for (_, reply) in left {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                    return Err(e);
                }
            }
        }
        publish_committed(answer).await
    }
}

const JOB_COLUMNS: &str = "id, tenant_id, batch_id, model, model_version, status, image_key, \
     image_sha256, image_content_type, image_bytes, client_reference, site, tags, deadline, \
     webhook_url, attempts, result, error_code, error_message, created_at, updated_at, \
     started_at, finished_at, priority, dicom";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    tenant_id: String,
    batch_id: Option<String>,
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
    tags: String,
    deadline: Option<i64>,
    webhook_url: Option<String>,
    attempts: i32,
    result: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    dicom: Option<String>,
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> Result<DateTime<Utc>, DbError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| DbError::Corrupt(anyhow::anyhow!("timestamp {ms} out of range")))
}

impl TryFrom<JobRow> for Job {
    type Error = DbError;
    fn try_from(row: JobRow) -> Result<Self, DbError> {
        Ok(Job {
            id: JobId::from_str(&row.id).context("job id")?,
            tenant_id: TenantId::from_str(&row.tenant_id).context("tenant id")?,
            batch_id: row
                .batch_id
                .map(|b| BatchId::from_str(&b))
                .transpose()
                .context("batch id")?,
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
            tags: serde_json::from_str(&row.tags).context("stored tags")?,
            deadline: row.deadline.map(time).transpose()?,
            webhook_url: row.webhook_url,
            dicom: row
                .dicom
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .context("stored DICOM attributes")?,
            attempts: row.attempts,
            result: row
                .result
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .context("stored result")?,
            error: row.error_code.map(|code| JobFailure {
                code: FailureCode::parse(&code),
                message: row.error_message.unwrap_or_default(),
            }),
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            started_at: row.started_at.map(time).transpose()?,
            finished_at: row.finished_at.map(time).transpose()?,
        })
    }
}

impl SqliteJobStore {
    /// Opens (and creates) the database file.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("database URL {url}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database folder {}", dir.display()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(if max_connections == 0 {
                4
            } else {
                max_connections
            })
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        Ok(Self {
            pool,
            writer: Writer::start(options),
            published: PublishRecords::default(),
            description: format!("SQLite {url}"),
        })
    }
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn migrate(&self) -> Result<(), DbError> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.pool)
            .await
            .context("applying SQLite migrations")?;
        Ok(())
    }

    async fn insert(&self, job: &NewJob) -> Result<Job, DbError> {
        let job = job.clone();
        self.writer
            .write(job.priority, move |conn| {
                Box::pin(async move { insert_job(conn, &job).await })
            })
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, DbError> {
        let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where id = ?1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Job::try_from).transpose()
    }

    async fn find(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>, DbError> {
        let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where id = ?1 and tenant_id = ?2"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
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
            "select {JOB_COLUMNS} from jobs where tenant_id = ?1 \
                 and (?2 is null or status = ?2) \
                 and (?3 is null or model = ?3) \
                 and (?4 is null or batch_id = ?4) \
                 and (?5 is null or client_reference = ?5) \
                 and (?6 is null or created_at >= ?6) \
                 and (?7 is null or created_at < ?7) \
                 and (?8 is null or id < ?8) \
             order by id desc limit ?9"
        )))
        .bind(tenant.to_string())
        .bind(filter.status.map(JobStatus::as_str))
        .bind(&filter.model)
        .bind(filter.batch_id.map(|b| b.to_string()))
        .bind(&filter.client_reference)
        .bind(filter.created_after.map(millis))
        .bind(filter.created_before.map(millis))
        .bind(filter.before.map(|j| j.to_string()))
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
            "update jobs set status = 'canceled', error_code = ?3, error_message = ?4, \
                 finished_at = ?5, updated_at = ?5 \
             where id = ?1 and tenant_id = ?2 and status = 'queued' returning {JOB_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(millis(Utc::now()))
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
        self.writer
            .write(Priority::Bulk, move |conn| {
                Box::pin(async move { cancel_past_deadline(conn, None, now).await })
            })
            .await
    }

    async fn mark_published(&self, id: JobId) -> Result<(), DbError> {
        self.published.record(&self.writer, id).await
    }

    async fn claim(&self, id: JobId, lease: Duration, take_over: bool) -> Result<Claim, DbError> {
        self.writer
            .write(Priority::Bulk, move |conn| {
                Box::pin(async move { claim_job(conn, id, lease, take_over).await })
            })
            .await
    }

    async fn claim_many(
        &self,
        jobs: &[(JobId, bool)],
        lease: Duration,
        lane: Priority,
    ) -> Result<Vec<Claim>, DbError> {
        let asked: Vec<(String, bool)> = jobs
            .iter()
            .map(|&(id, take_over)| (id.to_string(), take_over))
            .collect();
        let asked = serde_json::to_string(&asked).context("encoding job ids")?;
        let taken = self
            .writer
            .write(lane, move |conn| {
                Box::pin(async move {
                    let now = Utc::now();
                    let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "update jobs set status = 'processing', attempts = attempts + 1, \
                             lease_expires_at = ?3, started_at = coalesce(started_at, ?2), \
                             updated_at = ?2 \
                         from (select value ->> 0 as asked_id, value ->> 1 as asked_take_over \
                               from json_each(?1)) as asked \
                         where id = asked_id and ((status = 'queued' \
                                 and (deadline is null or deadline > ?2 \
                                     or started_at is not null)) \
                             or (status = 'processing' \
                                 and (lease_expires_at < ?2 or asked_take_over))) \
                         returning {JOB_COLUMNS}"
                    )))
                    .bind(asked)
                    .bind(millis(now))
                    .bind(millis(now + lease_duration(lease)))
                    .fetch_all(&mut *conn)
                    .await?;
                    rows.into_iter()
                        .map(Job::try_from)
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .await?;
        claims_in_order(self, jobs, taken, lease).await
    }

    async fn succeed_many(
        &self,
        results: &[(JobId, i32, &ScreeningResult)],
        lane: Priority,
    ) -> Result<Vec<bool>, DbError> {
        let done = results
            .iter()
            .map(|&(id, attempt, result)| {
                Ok((id.to_string(), attempt, serde_json::to_string(result)?))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .context("encoding the results")?;
        let done = serde_json::to_string(&done).context("encoding the results")?;
        let written: Vec<(String,)> = self
            .writer
            .write(lane, move |conn| {
                Box::pin(async move {
                    Ok(sqlx::query_as(
                        "update jobs set status = 'succeeded', result = done_result, \
                             error_code = null, error_message = null, lease_expires_at = null, \
                             finished_at = ?2, updated_at = ?2 \
                         from (select value ->> 0 as done_id, value ->> 1 as done_attempt, \
                                   value ->> 2 as done_result \
                               from json_each(?1)) as done \
                         where id = done_id and status = 'processing' \
                             and attempts = done_attempt \
                         returning id",
                    )
                    .bind(done)
                    .bind(millis(Utc::now()))
                    .fetch_all(&mut *conn)
                    .await?)
                })
            })
            .await?;
        let written: std::collections::HashSet<String> =
            written.into_iter().map(|(id,)| id).collect();
        Ok(results
            .iter()
            .map(|(id, _, _)| written.contains(&id.to_string()))
            .collect())
    }

    async fn succeed(
        &self,
        id: JobId,
        attempt: i32,
        result: &ScreeningResult,
    ) -> Result<bool, DbError> {
        let result = serde_json::to_string(result).context("encoding the result")?;
        self.writer
            .write(Priority::Bulk, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "update jobs set status = 'succeeded', result = ?3, error_code = null, \
                             error_message = null, lease_expires_at = null, finished_at = ?4, \
                             updated_at = ?4 \
                         where id = ?1 and status = 'processing' and attempts = ?2",
                    )
                    .bind(id.to_string())
                    .bind(attempt)
                    .bind(result)
                    .bind(millis(Utc::now()))
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
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
                 updated_at = ?2 \
             where status = 'processing' and (?1 is null or lease_expires_at < ?1)",
        )
        .bind(now.map(millis))
        .bind(millis(Utc::now()))
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
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "select id, model, priority from jobs where status = 'queued' and \
                 ((published_at is null and created_at < ?1) or published_at < ?2) \
             order by created_at limit ?3",
        )
        .bind(millis(unconfirmed_before))
        .bind(millis(stale_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, model, priority)| {
                Ok(Republish {
                    id: JobId::from_str(&id).context("job id")?,
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
            sqlx::query_as("select count(*) from jobs where status = 'queued' and tenant_id = ?1")
                .bind(tenant.to_string())
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }

    async fn queued_by_model(&self) -> Result<Vec<QueuedModel>, DbError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "select model, priority, count(*), min(created_at) from jobs where status = 'queued' \
             group by model, priority order by model, priority desc",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(model, priority, jobs, oldest)| {
                Ok(QueuedModel {
                    model,
                    priority: priority.parse().map_err(anyhow::Error::msg)?,
                    jobs,
                    oldest: time(oldest)?,
                })
            })
            .collect()
    }

    async fn referenced_images(&self, keys: &[String]) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "select distinct image_key from jobs \
             where image_key in (select value from json_each(?1))",
        )
        .bind(serde_json::to_string(keys).context("encoding keys")?)
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

impl SqliteJobStore {
    /// Ends a claim with an error: `failed` for good, or `queued` for another attempt.
    async fn finish_attempt(
        &self,
        id: JobId,
        attempt: i32,
        failure: &JobFailure,
        status: JobStatus,
    ) -> Result<bool, DbError> {
        let failure = failure.clone();
        self.writer
            .write(Priority::Bulk, move |conn| {
                Box::pin(async move {
                    let now = millis(Utc::now());
                    let done = sqlx::query(
                        "update jobs set status = ?3, error_code = ?4, error_message = ?5, \
                             lease_expires_at = null, \
                             published_at = case when ?3 = 'queued' then ?6 else published_at end, \
                             finished_at = case when ?3 = 'failed' then ?6 else null end, \
                             updated_at = ?6 \
                         where id = ?1 and status = 'processing' and attempts = ?2",
                    )
                    .bind(id.to_string())
                    .bind(attempt)
                    .bind(status.as_str())
                    .bind(failure.code.as_str())
                    .bind(&failure.message)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }
}

/// Records a job, or answers the job its submission key already made.
async fn insert_job(conn: &mut SqliteConnection, job: &NewJob) -> Result<Job, DbError> {
    let now = millis(Utc::now());
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into jobs (id, model, model_version, status, image_key, image_sha256, \
         image_content_type, image_bytes, client_reference, created_at, updated_at, \
         tenant_id, batch_id, site, tags, deadline, webhook_url, submission_key, priority, dicom) \
         values (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14, \
         ?15, ?16, ?17, ?18) on conflict (tenant_id, submission_key) do nothing \
         returning {JOB_COLUMNS}"
    )))
    .bind(job.id.to_string())
    .bind(&job.model)
    .bind(&job.model_version)
    .bind(&job.image_key)
    .bind(&job.image_sha256)
    .bind(&job.image_content_type)
    .bind(job.image_bytes)
    .bind(&job.client_reference)
    .bind(now)
    .bind(job.tenant_id.to_string())
    .bind(job.batch_id.map(|b| b.to_string()))
    .bind(&job.site)
    .bind(serde_json::to_string(&job.tags).context("encoding tags")?)
    .bind(job.deadline.map(millis))
    .bind(&job.webhook_url)
    .bind(&job.submission_key)
    .bind(job.priority.as_str())
    .bind(
        job.dicom
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .context("encoding DICOM attributes")?,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return row.try_into();
    }
    // The request that created it is being retried: answer the job it created.
    let row: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {JOB_COLUMNS} from jobs where tenant_id = ?1 and submission_key = ?2"
    )))
    .bind(job.tenant_id.to_string())
    .bind(&job.submission_key)
    .fetch_one(&mut *conn)
    .await?;
    row.try_into()
}

/// Claims a job for `lease`; a never-started job whose deadline has passed is cancelled
/// instead. One statement changes the job either way (the cancel follows only a claim that
/// changed nothing), as [`Writer::write`] needs.
async fn claim_job(
    conn: &mut SqliteConnection,
    id: JobId,
    lease: Duration,
    take_over: bool,
) -> Result<Claim, DbError> {
    let now = Utc::now();
    let claimed: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update jobs set status = 'processing', attempts = attempts + 1, \
             lease_expires_at = ?3, started_at = coalesce(started_at, ?2), updated_at = ?2 \
         where id = ?1 and ((status = 'queued' \
                 and (deadline is null or deadline > ?2 or started_at is not null)) \
             or (status = 'processing' and (lease_expires_at < ?2 or ?4))) \
         returning {JOB_COLUMNS}"
    )))
    .bind(id.to_string())
    .bind(millis(now))
    .bind(millis(now + lease_duration(lease)))
    .bind(take_over)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = claimed {
        return Ok(Claim::Claimed(row.try_into()?));
    }
    cancel_past_deadline(conn, Some(id), now).await?;
    let row: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {JOB_COLUMNS} from jobs where id = ?1"
    )))
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row.map(Job::try_from).transpose()? {
        None => Claim::Missing,
        Some(job) if job.status.is_final() => Claim::Finished(job),
        Some(_) => Claim::Busy,
    })
}

/// Cancels never-started `queued` jobs (only `only`, when given) whose deadline is at or
/// before `now`.
async fn cancel_past_deadline(
    conn: &mut SqliteConnection,
    only: Option<JobId>,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    let failure = deadline_failure();
    let done = sqlx::query(
        "update jobs set status = 'canceled', error_code = ?2, error_message = ?3, \
             finished_at = ?4, updated_at = ?4 \
         where (?5 is null or id = ?5) and status = 'queued' \
             and started_at is null and deadline <= ?1",
    )
    .bind(millis(now))
    .bind(failure.code.as_str())
    .bind(&failure.message)
    .bind(millis(Utc::now()))
    .bind(only.map(|id| id.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
