//! Idempotency keys in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::PostgresJobStore;
use crate::db::{Begin, DbError, IdempotencyStore, NewIdempotencyKey, StoredResponse};
use crate::tenant::TenantId;

#[async_trait]
impl IdempotencyStore for PostgresJobStore {
    async fn begin(&self, request: &NewIdempotencyKey) -> Result<Begin, DbError> {
        // Take the key when it is new, expired, or held by a request that died in progress.
        // A claim taken over from a dead process keeps its `created_at`: the retry is the same
        // use of the key.
        let taken: Option<(DateTime<Utc>,)> = sqlx::query_as(
            "insert into idempotency_keys (tenant_id, key, method, path, request_sha256, \
                 expires_at, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $8, $8) \
             on conflict (tenant_id, key) do update set method = excluded.method, \
                 path = excluded.path, request_sha256 = excluded.request_sha256, \
                 status_code = null, response_headers = null, response_body = null, \
                 created_at = case when idempotency_keys.expires_at < $8 then $8 \
                     else idempotency_keys.created_at end, \
                 updated_at = $8, expires_at = excluded.expires_at \
             where idempotency_keys.expires_at < $8 \
                 or (idempotency_keys.status_code is null \
                     and idempotency_keys.updated_at < $7 \
                     and idempotency_keys.request_sha256 = excluded.request_sha256) \
             returning created_at",
        )
        .bind(request.tenant_id.0)
        .bind(&request.key)
        .bind(&request.method)
        .bind(&request.path)
        .bind(&request.request_sha256)
        .bind(request.expires_at)
        .bind(request.stale_before)
        .bind(request.now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((since,)) = taken {
            return Ok(Begin::New { since });
        }
        type Row = (
            String,
            String,
            String,
            Option<i32>,
            Option<Json<Vec<(String, String)>>>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = sqlx::query_as(
            "select method, path, request_sha256, status_code, response_headers, \
                 response_body \
             from idempotency_keys where tenant_id = $1 and key = $2",
        )
        .bind(request.tenant_id.0)
        .bind(&request.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((method, path, sha, status, headers, body)) = row else {
            // Purged between the two statements: a new request after all.
            return Box::pin(self.begin(request)).await;
        };
        Ok(crate::db::idempotency::outcome(
            request,
            (&method, &path, &sha),
            status.map(|s| StoredResponse {
                status: u16::try_from(s).unwrap_or(500),
                headers: headers.map(|h| h.0).unwrap_or_default(),
                body: body.unwrap_or_default(),
            }),
        ))
    }

    async fn keep_alive(
        &self,
        tenant: TenantId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "update idempotency_keys set updated_at = $3 \
             where tenant_id = $1 and key = $2 and status_code is null",
        )
        .bind(tenant.0)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete(
        &self,
        tenant: TenantId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), DbError> {
        sqlx::query(
            "update idempotency_keys set status_code = $3, response_headers = $4, \
                 response_body = $5, updated_at = $6 where tenant_id = $1 and key = $2",
        )
        .bind(tenant.0)
        .bind(key)
        .bind(i32::from(response.status))
        .bind(Json(&response.headers))
        .bind(&response.body)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(&self, tenant: TenantId, key: &str) -> Result<(), DbError> {
        sqlx::query(
            "update idempotency_keys set updated_at = to_timestamp(0) \
             where tenant_id = $1 and key = $2 and status_code is null",
        )
        .bind(tenant.0)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        let done = sqlx::query("delete from idempotency_keys where expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
