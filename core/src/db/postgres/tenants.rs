//! Tenants and API keys in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::PostgresJobStore;
use crate::db::tenants::{decode_scopes, encode_scopes};
use crate::db::{DbError, KEY_USE_RESOLUTION, NewApiKey, TenantStore, TokenBucket};
use crate::tenant::{ApiKey, Tenant, TenantId};

const KEY_SELECT: &str = "select k.id, k.tenant_id, t.name as tenant_name, k.name, k.prefix, \
     k.scopes, k.created_at, k.last_used_at, k.revoked_at \
     from api_keys k join tenants t on t.id = k.tenant_id";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Tenant {
            id: TenantId(row.id),
            name: row.name,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    tenant_id: Uuid,
    tenant_name: String,
    name: String,
    prefix: String,
    scopes: Json<Vec<String>>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = DbError;
    fn try_from(row: KeyRow) -> Result<Self, DbError> {
        Ok(ApiKey {
            id: row.id,
            tenant_id: TenantId(row.tenant_id),
            tenant_name: row.tenant_name,
            name: row.name,
            prefix: row.prefix,
            scopes: decode_scopes(row.scopes.0)?,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        })
    }
}

impl PostgresJobStore {
    async fn key_where(&self, condition: &str, value: &str) -> Result<Option<ApiKey>, DbError> {
        let row: Option<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{KEY_SELECT} where {condition}"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ApiKey::try_from).transpose()
    }
}

#[async_trait]
impl TenantStore for PostgresJobStore {
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, DbError> {
        sqlx::query("insert into tenants (id, name) values ($1, $2) on conflict (name) do nothing")
            .bind(Uuid::now_v7())
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.tenant_by_name(name).await?.ok_or_else(|| {
            DbError::Corrupt(anyhow::anyhow!("tenant {name:?} vanished after its insert"))
        })
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, DbError> {
        let row: Option<TenantRow> =
            sqlx::query_as("select id, name, created_at from tenants where name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Tenant::from))
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, DbError> {
        let row: Option<TenantRow> =
            sqlx::query_as("select id, name, created_at from tenants where id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Tenant::from))
    }

    async fn insert_key(&self, key: &NewApiKey) -> Result<Option<ApiKey>, DbError> {
        let inserted = sqlx::query(
            "insert into api_keys (id, tenant_id, name, prefix, secret_sha256, scopes) \
             values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        )
        .bind(key.id)
        .bind(key.tenant_id.0)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.secret_sha256)
        .bind(Json(encode_scopes(&key.scopes)))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        self.key_where("k.prefix = $1", &key.prefix).await
    }

    async fn authenticate(&self, secret_sha256: &str) -> Result<Option<ApiKey>, DbError> {
        self.key_where("k.secret_sha256 = $1", secret_sha256).await
    }

    async fn revoke_key(&self, prefix: &str) -> Result<Option<ApiKey>, DbError> {
        sqlx::query(
            "update api_keys set revoked_at = coalesce(revoked_at, $2), updated_at = $2 \
             where prefix = $1",
        )
        .bind(prefix)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        self.key_where("k.prefix = $1", prefix).await
    }

    async fn list_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>, DbError> {
        let rows: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{KEY_SELECT} where $1::uuid is null or k.tenant_id = $1 \
             order by k.created_at, k.id"
        )))
        .bind(tenant.map(|t| t.0))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn record_key_use(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), DbError> {
        let resolution = chrono::TimeDelta::from_std(KEY_USE_RESOLUTION)
            .map_err(|e| DbError::Corrupt(e.into()))?;
        sqlx::query(
            "update api_keys set last_used_at = $2 \
             where id = $1 and (last_used_at is null or last_used_at < $3)",
        )
        .bind(id)
        .bind(at)
        .bind(at - resolution)
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
        // The bucket as it stands at `now`: refilled since its last use (never backwards: the
        // processes' clocks may differ a little), at most full.
        const REFILLED: &str = "least($3, b.tokens + greatest(0, \
             extract(epoch from ($4 - b.updated_at))::float8) * $2)";
        let taken: Option<(f64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into rate_limit_buckets as b (name, tokens, updated_at) \
             values ($1, $3 - 1, $4) \
             on conflict (name) do update \
                 set tokens = {REFILLED} - 1, updated_at = greatest(b.updated_at, $4) \
                 where {REFILLED} >= 1 \
             returning tokens"
        )))
        .bind(name)
        .bind(bucket.per_second)
        .bind(bucket.capacity)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let (tokens,): (f64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {REFILLED} from rate_limit_buckets b where name = $1"
        )))
        .bind(name)
        .bind(bucket.per_second)
        .bind(bucket.capacity)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(bucket.wait_for_token(tokens)))
    }

    async fn purge_token_buckets(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        let done = sqlx::query("delete from rate_limit_buckets where updated_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
