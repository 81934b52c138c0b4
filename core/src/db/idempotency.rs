//! Idempotency keys: a POST retried with the same `Idempotency-Key` gets the first response.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::DbError;
use crate::tenant::TenantId;

/// A request that carries an idempotency key.
#[derive(Debug, Clone)]
pub struct NewIdempotencyKey {
    pub tenant_id: TenantId,
    pub key: String,
    pub method: String,
    pub path: String,
    /// SHA-256 (hex) of what the request asks (its body, normalised).
    pub request_sha256: String,
    /// The application's clock (the database's is never mixed in).
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// A request in progress whose claim was last kept alive before this is taken to have died
    /// with its process.
    pub stale_before: DateTime<Utc>,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The headers worth replaying (`Content-Type`, `Location`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time (or the key expired): handle it, then [`IdempotencyStore::complete`].
    /// `since` is when this use of the key began: the same after a retry takes over the claim
    /// of a process that died, new once the key expired and is used again.
    New { since: DateTime<Utc> },
    /// Seen before with the same request: answer this.
    Replay(StoredResponse),
    /// Seen before with another body or path.
    Mismatch,
    /// The first request with this key is still being handled.
    InProgress,
}

/// A store of idempotency keys (the same database as the jobs).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Records the key, or says how it was used before.
    async fn begin(&self, request: &NewIdempotencyKey) -> Result<Begin, DbError>;
    /// Keeps the claim of a request still being handled alive (its process is alive).
    async fn keep_alive(
        &self,
        tenant: TenantId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError>;
    /// Keeps the response of the request that [`begin`](Self::begin) answered `New` for.
    async fn complete(
        &self,
        tenant: TenantId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), DbError>;
    /// Lets the claim lapse at once (the request failed on the server side): a retry runs it
    /// again as the same use of the key, finding what the failed attempt created.
    async fn release(&self, tenant: TenantId, key: &str) -> Result<(), DbError>;
    /// Deletes keys that expired before `now`; returns how many.
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, DbError>;
}

/// How a key seen before answers `request`: the same method, path and body replay the stored
/// response (or wait for it); anything else is a misuse of the key.
pub(crate) fn outcome(
    request: &NewIdempotencyKey,
    (method, path, sha256): (&str, &str, &str),
    response: Option<StoredResponse>,
) -> Begin {
    if method != request.method || path != request.path || sha256 != request.request_sha256 {
        return Begin::Mismatch;
    }
    match response {
        Some(response) => Begin::Replay(response),
        None => Begin::InProgress,
    }
}
