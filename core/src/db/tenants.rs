//! Tenant store: tenants and their API keys (stored as a prefix and a SHA-256, never the key).

use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DbError;
use crate::tenant::keys::ApiKeySecret;
use crate::tenant::{self, ApiKey, Scope, Tenant, TenantId};

/// How precisely a key's last use is kept: a key used again within this time is not written
/// again, so that a busy screening drive does not write a row on every request.
pub const KEY_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// Longest key label.
const MAX_KEY_NAME_CHARS: usize = 200;

/// A key to store: what identifies it, never the key itself.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    /// `mik_1a2b3c4d`.
    pub prefix: String,
    /// SHA-256 (lowercase hex) of the whole key.
    pub secret_sha256: String,
    pub scopes: Vec<Scope>,
}

/// A store of tenants and API keys (the same database, and object, as the job store).
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// The tenant called `name`, created if there is none.
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, DbError>;
    /// The tenant called `name`, if there is one.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, DbError>;
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, DbError>;
    /// Stores a key. `None` when its prefix (or hash) is taken: make another key.
    async fn insert_key(&self, key: &NewApiKey) -> Result<Option<ApiKey>, DbError>;
    /// The key whose whole text hashes to `secret_sha256`, revoked or not.
    async fn authenticate(&self, secret_sha256: &str) -> Result<Option<ApiKey>, DbError>;
    /// Revokes the key with this prefix (a revoked key keeps its first revocation time).
    /// `None`: no such key.
    async fn revoke_key(&self, prefix: &str) -> Result<Option<ApiKey>, DbError>;
    /// The keys of `tenant`, or of every tenant; oldest first.
    async fn list_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>, DbError>;
    /// Records that the key was used `at`, unless a use less than [`KEY_USE_RESOLUTION`]
    /// before is recorded already.
    async fn record_key_use(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbError>;
    /// Takes a token from the shared bucket `name` at `now` (one statement, so concurrent
    /// processes take each token once). `None`: taken; `Some(wait)`: the bucket is empty and
    /// its next token comes after `wait`.
    async fn take_token(
        &self,
        name: &str,
        bucket: TokenBucket,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, DbError>;
    /// Deletes the buckets untouched since `before` (full again, the same as none).
    async fn purge_token_buckets(&self, before: DateTime<Utc>) -> Result<u64, DbError>;
}

/// A token bucket: holds up to `capacity` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub per_second: f64,
    pub capacity: f64,
}

impl TokenBucket {
    /// The wait for the next token of a bucket that holds `tokens` (< 1).
    pub fn wait_for_token(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }
}

/// A key just made: its record, and the whole key, which exists only here.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: ApiKey,
    pub secret: ApiKeySecret,
}

/// Makes an API key for the tenant called `tenant_name` (created if missing) and stores its
/// hash. The returned secret is the only copy of the key.
pub async fn create_api_key(
    store: &dyn TenantStore,
    tenant_name: &str,
    name: &str,
    scopes: &[Scope],
) -> anyhow::Result<CreatedKey> {
    tenant::validate_tenant_name(tenant_name).map_err(anyhow::Error::msg)?;
    if name.chars().count() > MAX_KEY_NAME_CHARS || name.chars().any(char::is_control) {
        bail!(
            "the key name must be at most {MAX_KEY_NAME_CHARS} characters, without control characters"
        );
    }
    if scopes.is_empty() {
        bail!("a key needs at least one scope (submit, read or admin)");
    }
    let tenant = store.ensure_tenant(tenant_name).await?;
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    // Two keys share a prefix once in about 4 billion: make another one then.
    for _ in 0..5 {
        let secret = ApiKeySecret::generate();
        let new = NewApiKey {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            name: name.to_string(),
            prefix: secret.prefix().to_string(),
            secret_sha256: secret.sha256(),
            scopes: scopes.clone(),
        };
        if let Some(record) = store.insert_key(&new).await? {
            return Ok(CreatedKey { record, secret });
        }
    }
    Err(anyhow::anyhow!("every generated key prefix was taken")).context("creating an API key")
}

/// Decodes a stored scope list; an unknown scope in the database is an error.
pub(super) fn decode_scopes(scopes: Vec<String>) -> Result<Vec<Scope>, DbError> {
    scopes
        .iter()
        .map(|s| {
            s.parse::<Scope>()
                .map_err(|e| DbError::Corrupt(anyhow::anyhow!(e)))
        })
        .collect()
}

/// The scopes as they are stored: a JSON array of names.
pub(super) fn encode_scopes(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}
