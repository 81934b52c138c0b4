//! Tenants and API keys in SQLite (ids as UUID text, times as Unix milliseconds).

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqliteJobStore, millis, time};
use crate::db::tenants::{decode_scopes, encode_scopes};
use crate::db::{DbError, KEY_USE_RESOLUTION, NewApiKey, TenantStore, TokenBucket};
use crate::tenant::{ApiKey, Tenant, TenantId};

const KEY_SELECT: &str = "select k.id, k.tenant_id, t.name as tenant_name, k.name, k.prefix, \
     k.scopes, k.created_at, k.last_used_at, k.revoked_at \
     from api_keys k join tenants t on t.id = k.tenant_id";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    created_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = DbError;
    fn try_from(row: TenantRow) -> Result<Self, DbError> {
        Ok(Tenant {
            id: TenantId::from_str(&row.id).context("tenant id")?,
            name: row.name,
            created_at: time(row.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    tenant_id: String,
    tenant_name: String,
    name: String,
    prefix: String,
    scopes: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = DbError;
    fn try_from(row: KeyRow) -> Result<Self, DbError> {
        Ok(ApiKey {
            id: Uuid::from_str(&row.id).context("API key id")?,
            tenant_id: TenantId::from_str(&row.tenant_id).context("tenant id")?,
            tenant_name: row.tenant_name,
            name: row.name,
            prefix: row.prefix,
            scopes: decode_scopes(serde_json::from_str(&row.scopes).context("stored scopes")?)?,
            created_at: time(row.created_at)?,
            last_used_at: row.last_used_at.map(time).transpose()?,
            revoked_at: row.revoked_at.map(time).transpose()?,
        })
    }
}

impl SqliteJobStore {
    async fn key_where(&self, condition: &str, value: &str) -> Result<Option<ApiKey>, DbError> {
        let row: Option<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{KEY_SELECT} where {condition}"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn tenant_where(&self, condition: &str, value: &str) -> Result<Option<Tenant>, DbError> {
        let row: Option<TenantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select id, name, created_at from tenants where {condition}"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Tenant::try_from).transpose()
    }
}

#[async_trait]
impl TenantStore for SqliteJobStore {
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, DbError> {
        sqlx::query(
            "insert into tenants (id, name, created_at, updated_at) values (?1, ?2, ?3, ?3) \
             on conflict (name) do nothing",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(name)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        self.tenant_by_name(name).await?.ok_or_else(|| {
            DbError::Corrupt(anyhow::anyhow!("tenant {name:?} vanished after its insert"))
        })
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, DbError> {
        self.tenant_where("name = ?1", name).await
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, DbError> {
        self.tenant_where("id = ?1", &id.to_string()).await
    }

    async fn insert_key(&self, key: &NewApiKey) -> Result<Option<ApiKey>, DbError> {
        let inserted = sqlx::query(
            "insert into api_keys (id, tenant_id, name, prefix, secret_sha256, scopes, \
                 created_at, updated_at) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) on conflict do nothing",
        )
        .bind(key.id.to_string())
        .bind(key.tenant_id.to_string())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.secret_sha256)
        .bind(serde_json::to_string(&encode_scopes(&key.scopes)).context("encoding scopes")?)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        self.key_where("k.prefix = ?1", &key.prefix).await
    }

    async fn authenticate(&self, secret_sha256: &str) -> Result<Option<ApiKey>, DbError> {
        self.key_where("k.secret_sha256 = ?1", secret_sha256).await
    }

    async fn revoke_key(&self, prefix: &str) -> Result<Option<ApiKey>, DbError> {
        sqlx::query(
            "update api_keys set revoked_at = coalesce(revoked_at, ?2), updated_at = ?2 \
             where prefix = ?1",
        )
        .bind(prefix)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        self.key_where("k.prefix = ?1", prefix).await
    }

    async fn list_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>, DbError> {
        let rows: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{KEY_SELECT} where ?1 is null or k.tenant_id = ?1 order by k.created_at, k.id"
        )))
        .bind(tenant.map(|t| t.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn record_key_use(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbError> {
        let resolution = i64::try_from(KEY_USE_RESOLUTION.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "update api_keys set last_used_at = ?2 \
             where id = ?1 and (last_used_at is null or last_used_at < ?3)",
        )
        .bind(id.to_string())
        .bind(millis(at))
        .bind(millis(at).saturating_sub(resolution))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_token(
        &self,
        name: &str,
        bucket: TokenBucket,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, DbError> {
        const REFILLED: &str = "min(?3, tokens + max(0, ?4 - updated_at) / 1000.0 * ?2)";
        let taken: Option<(f64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into rate_limit_buckets (name, tokens, updated_at) values (?1, ?3 - 1, ?4) \
             on conflict (name) do update \
                 set tokens = {REFILLED} - 1, updated_at = max(updated_at, ?4) \
                 where {REFILLED} >= 1 \
             returning tokens"
        )))
        .bind(name)
        .bind(bucket.per_second)
        .bind(bucket.capacity)
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let (tokens,): (f64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {REFILLED} from rate_limit_buckets where name = ?1"
        )))
        .bind(name)
        .bind(bucket.per_second)
        .bind(bucket.capacity)
        .bind(millis(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(bucket.wait_for_token(tokens)))
    }

    async fn purge_token_buckets(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        let done = sqlx::query("delete from rate_limit_buckets where updated_at < ?1")
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
