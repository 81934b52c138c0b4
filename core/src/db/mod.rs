//! Job store: the source of truth for job state.
//!
//! The state machine (`queued → processing → succeeded | failed`, and back from `processing` to
//! `queued` for a retry or when a lease runs out) lives here, in single conditional statements,
//! so that two workers racing for one job cannot both win and a result is written once.

mod batches;
mod idempotency;
mod postgres;
mod sqlite;
mod tenants;
mod webhooks;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::imaging::DicomAttributes;
use crate::job::{
    BatchId, FailureCode, Job, JobFailure, JobId, JobStatus, Priority, ScreeningResult,
};
use crate::tenant::TenantId;

pub use batches::BatchStore;
pub use idempotency::{Begin, IdempotencyStore, NewIdempotencyKey, StoredResponse};
pub use postgres::PostgresJobStore;
pub use sqlite::SqliteJobStore;
pub use tenants::{
    CreatedKey, KEY_USE_RESOLUTION, NewApiKey, TenantStore, TokenBucket, create_api_key,
};
pub use webhooks::{
    AttemptOutcome, EndpointUpdate, NewDelivery, NewEndpoint, Replay, WebhookStore,
};

/// Errors of a store, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, or refused to work now (connections, timeouts, a locked
    /// file, a full disk): a retry later may succeed (the API answers 503).
    #[error("database unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// A constraint refused the write: a unique value taken, a referenced row missing (the API
    /// answers 409 unless the route knows the constraint better).
    #[error("constraint {constraint} refused the write: {source:#}")]
    Conflict {
        constraint: String,
        source: anyhow::Error,
    },
    /// What is stored cannot be read as it should be, or a value cannot be stored as it is: a
    /// damaged database or a bug, never the caller's fault (the API answers 500).
    #[error("corrupt or invalid data: {0:#}")]
    Corrupt(#[from] anyhow::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &e {
            sqlx::Error::Database(db)
                if matches!(
                    db.kind(),
                    ErrorKind::UniqueViolation
                        | ErrorKind::ForeignKeyViolation
                        | ErrorKind::NotNullViolation
                        | ErrorKind::CheckViolation
                ) =>
            {
                Self::Conflict {
                    constraint: db.constraint().unwrap_or("unnamed").to_owned(),
                    source: e.into(),
                }
            }
            sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::Encode(_)
            | sqlx::Error::RowNotFound => Self::Corrupt(e.into()),
            _ => Self::Unavailable(e.into()),
        }
    }
}

/// What the API knows of a job when it creates it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub batch_id: Option<BatchId>,
    pub model: String,
    pub model_version: String,
    pub image_key: String,
    pub image_sha256: String,
    pub image_content_type: String,
    pub image_bytes: i64,
    pub client_reference: Option<String>,
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub deadline: Option<DateTime<Utc>>,
    pub webhook_url: Option<String>,
    /// The lane it waits in.
    pub priority: Priority,
    /// Set when the request that creates the job carries an `Idempotency-Key`: a job with the
    /// same tenant and submission key is not created again, and the insert answers it instead.
    pub submission_key: Option<String>,
    /// The identifiers of the study, when the image came as a DICOM file (patient identity as
    /// the tenant's `dicom.patient_data` allows).
    pub dicom: Option<DicomAttributes>,
}

/// The outcome of a worker's attempt to take a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The job is this worker's until its lease ends; `job.attempts` is the fencing token to
    /// finish it with.
    Claimed(Job),
    /// The job is finished (a redelivered or duplicate message): nothing to do.
    Finished(Job),
    /// Another worker holds a live lease on it.
    Busy,
    /// No such job (a message that outlived its job, or another deployment's message).
    Missing,
}

/// Which jobs a listing shows; every filter is optional. Newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub model: Option<String>,
    pub batch_id: Option<BatchId>,
    pub client_reference: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs older than this one (the cursor of the previous page).
    pub before: Option<JobId>,
}

/// The outcome of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// The job was queued and is now `canceled`.
    Canceled(Job),
    /// The job has started or finished: it is left as it is.
    NotCancelable(Job),
    /// No such job for this tenant.
    Missing,
}

/// The code and message of a job whose deadline passed before a worker took it.
pub fn deadline_failure() -> JobFailure {
    JobFailure::new(
        FailureCode::DeadlineExceeded,
        "No worker started the job before its deadline, so it was not run; submit it again if \
         the result is still needed.",
    )
}

/// A job to publish (again): its id and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republish {
    pub id: JobId,
    pub model: String,
    pub priority: Priority,
}

/// A store of jobs.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Applies the migrations that are not applied yet.
    async fn migrate(&self) -> Result<(), DbError>;
    /// Inserts a `queued` job.
    async fn insert(&self, job: &NewJob) -> Result<Job, DbError>;
    async fn get(&self, id: JobId) -> Result<Option<Job>, DbError>;
    /// The job if it belongs to `tenant` (another tenant's job is `None`, as if absent).
    async fn find(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>, DbError>;
    /// The tenant's jobs that pass `filter`, newest first, at most `limit`.
    async fn list(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        limit: i64,
    ) -> Result<Vec<Job>, DbError>;
    /// Cancels the tenant's job if it is still `queued`.
    async fn cancel(
        &self,
        tenant: TenantId,
        id: JobId,
        failure: &JobFailure,
    ) -> Result<Cancel, DbError>;
    /// Cancels every never-started `queued` job whose deadline is before `now`
    /// ([`deadline_failure`]); returns how many.
    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, DbError>;
    /// Records that the queue confirmed the job's message.
    async fn mark_published(&self, id: JobId) -> Result<(), DbError>;
    /// Takes a job for processing. A `processing` job is taken over when its lease has ended,
    /// or when `take_over` is set (the message was redelivered: its previous holder is gone).
    /// A `queued` job whose deadline has passed is canceled instead ([`Claim::Finished`]).
    async fn claim(&self, id: JobId, lease: Duration, take_over: bool) -> Result<Claim, DbError>;
    /// Claims a worker's batch, each job as [`JobStore::claim`] would (`(id, take_over)`), in
    /// one round trip for the jobs that can simply be taken; the answers are in the order of
    /// `jobs`. An error answers for the whole batch. `lane` is the lane the batch came from:
    /// the embedded store commits an interactive batch's writes ahead of a drive's.
    async fn claim_many(
        &self,
        jobs: &[(JobId, bool)],
        lease: Duration,
        lane: Priority,
    ) -> Result<Vec<Claim>, DbError>;
    /// Writes a batch's results, each as [`JobStore::succeed`] would (`(id, attempt, result)`),
    /// in one round trip; the answers are in the order of `results`. `lane` as for
    /// [`JobStore::claim_many`].
    async fn succeed_many(
        &self,
        results: &[(JobId, i32, &ScreeningResult)],
        lane: Priority,
    ) -> Result<Vec<bool>, DbError>;
    /// Writes the result, if the claim `attempt` still holds. False: someone else took over.
    async fn succeed(
        &self,
        id: JobId,
        attempt: i32,
        result: &ScreeningResult,
    ) -> Result<bool, DbError>;
    /// Marks the job `failed`, if the claim `attempt` still holds.
    async fn fail(&self, id: JobId, attempt: i32, failure: &JobFailure) -> Result<bool, DbError>;
    /// Hands the job back to `queued` for another attempt, keeping the error seen.
    async fn release(&self, id: JobId, attempt: i32, failure: &JobFailure)
    -> Result<bool, DbError>;
    /// Takes back `processing` jobs whose lease ended before `now` (all of them when `now` is
    /// `None`: a single-process deployment at start-up), making them `queued` and unpublished.
    async fn reclaim_expired(&self, now: Option<DateTime<Utc>>) -> Result<u64, DbError>;
    /// `queued` jobs to publish (again): never confirmed and created before
    /// `unconfirmed_before`, or confirmed before `stale_before`. Oldest first.
    async fn due_for_publish(
        &self,
        unconfirmed_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Republish>, DbError>;
    /// How many jobs wait for a worker (`queued`), over every tenant: the backlog that
    /// `jobs.max_backlog` bounds.
    async fn count_queued(&self) -> Result<i64, DbError>;
    /// How many of `tenant`'s jobs wait for a worker (`jobs.max_backlog_per_tenant`).
    async fn count_queued_for(&self, tenant: TenantId) -> Result<i64, DbError>;
    /// The jobs waiting for a worker per model and lane (interactive first), with when the
    /// oldest was accepted (metrics).
    async fn queued_by_model(&self) -> Result<Vec<QueuedModel>, DbError>;
    /// Which of the image `keys` some job refers to (the orphan sweep keeps those).
    async fn referenced_images(&self, keys: &[String]) -> Result<Vec<String>, DbError>;
    /// Answers whether the database is reachable (readiness).
    async fn check(&self) -> Result<(), DbError>;
    /// A short description for logs, without secrets.
    fn describe(&self) -> String;
}

/// One lane's backlog: a model's `queued` jobs of one priority, and when the oldest of them was
/// accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedModel {
    pub model: String,
    pub priority: Priority,
    pub jobs: i64,
    pub oldest: DateTime<Utc>,
}

/// A job whose publish is to be recorded, gathered with others into one statement by each
/// store, and where its caller waits for that statement's commit.
type PublishRecord = (JobId, tokio::sync::oneshot::Sender<Result<(), String>>);

/// What the caller of a gathered publish record is told: committed, or why not.
async fn publish_committed(
    answer: tokio::sync::oneshot::Receiver<Result<(), String>>,
) -> Result<(), DbError> {
    match answer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(DbError::Unavailable(anyhow::Error::msg(message))),
        Err(_) => Err(DbError::Unavailable(anyhow::anyhow!(
            "the publish record was dropped"
        ))),
    }
}

/// The answers of [`JobStore::claim_many`] in the order asked: the jobs one bulk statement took
/// (`taken`), and for the others (finished, held, missing, past their deadline) what a claim of
/// their own answers, which is rare enough to be done one by one.
async fn claims_in_order(
    store: &(impl JobStore + ?Sized),
    jobs: &[(JobId, bool)],
    taken: Vec<Job>,
    lease: Duration,
) -> Result<Vec<Claim>, DbError> {
    let mut taken: std::collections::HashMap<JobId, Job> =
        taken.into_iter().map(|job| (job.id, job)).collect();
    let mut claims = Vec::with_capacity(jobs.len());
    for &(id, take_over) in jobs {
        claims.push(match taken.remove(&id) {
            Some(job) => Claim::Claimed(job),
            None => store.claim(id, lease, take_over).await?,
        });
    }
    Ok(claims)
}

/// The longest lease a claim takes: a longer one is a setting gone wrong, and is cut to this
/// rather than make every claim fail (PostgreSQL intervals end near 292 years) or overflow the
/// lease's end time (SQLite).
const MAX_LEASE: chrono::TimeDelta = chrono::TimeDelta::days(3650);

/// A lease as a chrono duration in whole microseconds (what a PostgreSQL interval holds; a
/// finer one is refused there), at most [`MAX_LEASE`].
fn lease_duration(lease: Duration) -> chrono::TimeDelta {
    let micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    chrono::TimeDelta::microseconds(micros.min(MAX_LEASE.num_microseconds().unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases, schedules and deadlines are compared with times the application passes in (as
    /// the SQLite store does), so the PostgreSQL store must never read the database's clock:
    /// mixing the two lets a skewed clock take over live leases or delay due work.
    #[test]
    fn the_postgres_store_reads_only_the_application_clock() {
        for (file, source) in [
            ("postgres.rs", include_str!("postgres.rs")),
            ("postgres/batches.rs", include_str!("postgres/batches.rs")),
            (
                "postgres/idempotency.rs",
                include_str!("postgres/idempotency.rs"),
            ),
            ("postgres/tenants.rs", include_str!("postgres/tenants.rs")),
            ("postgres/webhooks.rs", include_str!("postgres/webhooks.rs")),
        ] {
            // SQL's `now()`, not Rust's `Utc::now()`.
            let sql_now = source
                .match_indices("now()")
                .any(|(at, _)| !source[..at].ends_with("::"));
            assert!(!sql_now, "{file} reads the database clock: now()");
            for clock in ["current_timestamp", "clock_timestamp", "localtimestamp"] {
                assert!(
                    !source.contains(clock),
                    "{file} reads the database clock: {clock}"
                );
            }
        }
    }

    #[test]
    fn leases_are_whole_microseconds_and_bounded() {
        assert_eq!(
            lease_duration(Duration::from_secs(300)),
            chrono::TimeDelta::seconds(300)
        );
        assert_eq!(
            lease_duration(Duration::from_nanos(1_500)),
            chrono::TimeDelta::microseconds(1)
        );
        assert_eq!(lease_duration(Duration::from_secs(u64::MAX)), MAX_LEASE);
        assert_eq!(lease_duration(Duration::MAX), MAX_LEASE);
    }
}
