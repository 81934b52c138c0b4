//! The bounded backlog: past `jobs.max_backlog` queued jobs, or `jobs.max_backlog_per_tenant`
//! of the caller's tenant, submissions are refused with 503 `queue_full` and `Retry-After`
//! before anything is stored, instead of piling up.
//!
//! Each count is read from the job store at most once a second; jobs this process admits in
//! between are added to it, so that a burst cannot overshoot a bound by more than what other
//! API processes admit in that second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use medinform_core::tenant::TenantId;
use tokio::sync::Mutex;

use crate::{ApiError, AppState, ErrorCode};

/// How long a count of the queued jobs is trusted.
const COUNT_TTL: Duration = Duration::from_secs(1);
/// What a refused client is told to wait: long enough for workers to take a share of the
/// backlog.
const RETRY_AFTER_SECS: u64 = 10;

/// The backlog bounds and the last counts of queued jobs.
#[derive(Debug)]
pub struct Admission {
    max_backlog: u64,
    max_per_tenant: u64,
    /// The count of every tenant's jobs, when it was read, plus what was admitted since.
    count: Mutex<Option<Count>>,
    /// The same per tenant (for the per-tenant bound, and the bulk lane's rank); stale
    /// entries are dropped.
    by_tenant: Mutex<HashMap<TenantId, Count>>,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    read_at: Instant,
    queued: u64,
}

impl Admission {
    /// At most `max_backlog` queued jobs, and `max_per_tenant` of one tenant; 0: no bound.
    pub fn new(max_backlog: u64, max_per_tenant: u64) -> Self {
        Self {
            max_backlog,
            max_per_tenant,
            count: Mutex::new(None),
            by_tenant: Mutex::new(HashMap::new()),
        }
    }
}

/// Refuses `new_jobs` more jobs of `tenant` with 503 `queue_full` when the backlog would pass
/// `jobs.max_backlog`, or the tenant's `jobs.max_backlog_per_tenant`. Submission handlers call
/// it before they store anything. With `bulk` (jobs for the bulk lane), or a per-tenant bound,
/// it answers how many of the tenant's jobs were queued before these, which ranks them in the
/// bulk lane ([`medinform_core::queue::bulk_rank`]); an interactive upload without a per-tenant
/// bound does not count the tenant's jobs at all.
pub async fn check_backlog(
    state: &AppState,
    tenant: TenantId,
    new_jobs: usize,
    bulk: bool,
) -> Result<Option<u64>, ApiError> {
    let admission = &state.admission;
    let new_jobs = u64::try_from(new_jobs).unwrap_or(u64::MAX);
    let tenant_queued = if bulk || admission.max_per_tenant > 0 {
        let mut counts = admission.by_tenant.lock().await;
        let count = tenant_count(&mut counts, state, tenant).await?;
        if admission.max_per_tenant > 0
            && count.queued.saturating_add(new_jobs) > admission.max_per_tenant
        {
            tracing::warn!(
                %tenant,
                queued = count.queued,
                new_jobs,
                max_backlog_per_tenant = admission.max_per_tenant,
                "tenant's backlog full: submission refused"
            );
            return Err(queue_full(format!(
                "This tenant's queue is full ({} jobs waiting, at most {} allowed per tenant); \
                 nothing was stored. Retry in {RETRY_AFTER_SECS} seconds.",
                count.queued, admission.max_per_tenant
            )));
        }
        admit(&mut counts, tenant, count, new_jobs);
        Some(count.queued)
    } else {
        None
    };
    if admission.max_backlog == 0 {
        return Ok(tenant_queued);
    }
    // One refresh at a time: a burst waits for one count instead of making one each.
    let mut count = admission.count.lock().await;
    let queued = match *count {
        Some(count) if count.read_at.elapsed() < COUNT_TTL => count.queued,
        _ => {
            let queued = state.backends.jobs.count_queued().await?;
            let queued = u64::try_from(queued).unwrap_or(0);
            *count = Some(Count {
                read_at: Instant::now(),
                queued,
            });
            queued
        }
    };
    if queued.saturating_add(new_jobs) > admission.max_backlog {
        tracing::warn!(
            queued,
            new_jobs,
            max_backlog = admission.max_backlog,
            "backlog full: submission refused"
        );
        return Err(queue_full(format!(
            "The queue is full ({queued} jobs waiting, at most {} allowed); nothing was \
             stored. Retry in {RETRY_AFTER_SECS} seconds.",
            admission.max_backlog
        )));
    }
    if let Some(count) = count.as_mut() {
        count.queued = count.queued.saturating_add(new_jobs);
    }
    Ok(tenant_queued)
}

/// How many of `tenant`'s jobs were queued before one more bulk job that was admitted already
/// (counted as [`check_backlog`] counts, and this job added to the count).
pub async fn tenant_backlog(state: &AppState, tenant: TenantId) -> Result<u64, ApiError> {
    let mut counts = state.admission.by_tenant.lock().await;
    let count = tenant_count(&mut counts, state, tenant).await?;
    admit(&mut counts, tenant, count, 1);
    Ok(count.queued)
}

/// `tenant`'s count, read from the job store when it is over [`COUNT_TTL`] old (stale counts
/// of other tenants are dropped on the way).
async fn tenant_count(
    counts: &mut HashMap<TenantId, Count>,
    state: &AppState,
    tenant: TenantId,
) -> Result<Count, ApiError> {
    counts.retain(|_, count| count.read_at.elapsed() < COUNT_TTL);
    Ok(match counts.get(&tenant) {
        Some(count) => *count,
        None => Count {
            read_at: Instant::now(),
            queued: u64::try_from(state.backends.jobs.count_queued_for(tenant).await?).unwrap_or(0),
        },
    })
}

/// Adds `new_jobs` admitted to `count` (read at its own time) and keeps it for `tenant`.
fn admit(counts: &mut HashMap<TenantId, Count>, tenant: TenantId, count: Count, new_jobs: u64) {
    counts.insert(
        tenant,
        Count {
            queued: count.queued.saturating_add(new_jobs),
            ..count
        },
    );
}

fn queue_full(message: String) -> ApiError {
    ApiError::retry_after(ErrorCode::QueueFull, message, RETRY_AFTER_SECS)
}
