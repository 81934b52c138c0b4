//! The bounded backlog: past `jobs.max_backlog` queued jobs, submissions are refused with 503
//! `queue_full` and `Retry-After` before anything is stored, instead of piling up.
//!
//! The count is read from the job store at most once a second; jobs this process admits in
//! between are added to it, so that a burst cannot overshoot the bound by more than what other
//! API processes admit in that second.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::{ApiError, AppState, ErrorCode};

/// How long a count of the queued jobs is trusted.
const COUNT_TTL: Duration = Duration::from_secs(1);
/// What a refused client is told to wait: long enough for workers to take a share of the
/// backlog.
const RETRY_AFTER_SECS: u64 = 10;

/// The backlog bound and the last count of queued jobs.
#[derive(Debug)]
pub struct Admission {
    max_backlog: u64,
    /// The count, when it was read, plus what was admitted since.
    count: Mutex<Option<(Instant, u64)>>,
}

impl Admission {
    /// A bound of `max_backlog` queued jobs; 0: no bound.
    pub fn new(max_backlog: u64) -> Self {
        Self {
            max_backlog,
            count: Mutex::new(None),
        }
    }
}

/// Refuses `new_jobs` more jobs with 503 `queue_full` when the backlog would pass
/// `jobs.max_backlog`. Submission handlers call it before they store anything.
pub async fn check_backlog(state: &AppState, new_jobs: usize) -> Result<(), ApiError> {
    let admission = &state.admission;
    if admission.max_backlog == 0 {
        return Ok(());
    }
    let new_jobs = u64::try_from(new_jobs).unwrap_or(u64::MAX);
    // One refresh at a time: a burst waits for one count instead of making one each.
    let mut count = admission.count.lock().await;
    let queued = match *count {
        Some((read_at, queued)) if read_at.elapsed() < COUNT_TTL => queued,
        _ => {
            let queued = state.backends.jobs.count_queued().await?;
            let queued = u64::try_from(queued).unwrap_or(0);
            *count = Some((Instant::now(), queued));
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
        return Err(ApiError::retry_after(
            ErrorCode::QueueFull,
            format!(
                "The queue is full ({queued} jobs waiting, at most {} allowed); nothing was \
                 stored. Retry in {RETRY_AFTER_SECS} seconds.",
                admission.max_backlog
            ),
            RETRY_AFTER_SECS,
        ));
    }
    if let Some((_, queued)) = count.as_mut() {
        *queued = queued.saturating_add(new_jobs);
    }
    Ok(())
}
