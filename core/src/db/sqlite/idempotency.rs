//! Idempotency keys in SQLite.

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{SqliteJobStore, millis, time};
use crate::db::{Begin, DbError, IdempotencyStore, NewIdempotencyKey, StoredResponse};
use crate::tenant::TenantId;

#[async_trait]
impl IdempotencyStore for SqliteJobStore {
    async fn begin(&self, request: &NewIdempotencyKey) -> Result<Begin, DbError> {
        let now = millis(request.now);
        // Take the key when it is new, expired, or held by a request that died in progress. A
        // claim taken over from a dead process keeps its `created_at`: the same use of the key.
        let taken: Option<(i64,)> = sqlx::query_as(
            "insert into idempotency_keys (tenant_id, key, method, path, request_sha256, \
                 created_at, updated_at, expires_at) values (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) \
             on conflict (tenant_id, key) do update set method = excluded.method, \
                 path = excluded.path, request_sha256 = excluded.request_sha256, \
                 status_code = null, response_headers = null, response_body = null, \
                 created_at = case when idempotency_keys.expires_at < ?6 then ?6 \
                     else idempotency_keys.created_at end, \
                 updated_at = ?6, expires_at = excluded.expires_at \
             where idempotency_keys.expires_at < ?6 \
                 or (idempotency_keys.status_code is null \
                     and idempotency_keys.updated_at < ?8 \
                     and idempotency_keys.request_sha256 = excluded.request_sha256) \
             returning created_at",
        )
        .bind(request.tenant_id.to_string())
        .bind(&request.key)
        .bind(&request.method)
        .bind(&request.path)
        .bind(&request.request_sha256)
        .bind(now)
        .bind(millis(request.expires_at))
        .bind(millis(request.stale_before))
        .fetch_optional(&self.pool)
        .await?;
        if let Some((since,)) = taken {
            return Ok(Begin::New {
                since: time(since)?,
            });
        }
        type Row = (
            String,
            String,
            String,
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = sqlx::query_as(
            "select method, path, request_sha256, status_code, response_headers, response_body \
             from idempotency_keys where tenant_id = ?1 and key = ?2",
        )
        .bind(request.tenant_id.to_string())
        .bind(&request.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((method, path, sha, status, headers, body)) = row else {
            // Purged between the two statements: a new request after all.
            return Box::pin(self.begin(request)).await;
        };
        let response = match status {
            Some(status) => Some(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                headers: headers
                    .map(|h| serde_json::from_str(&h))
                    .transpose()
                    .context("stored response headers")?
                    .unwrap_or_default(),
                body: body.unwrap_or_default(),
            }),
            None => None,
        };
        Ok(crate::db::idempotency::outcome(
            request,
            (&method, &path, &sha),
            response,
        ))
    }

    async fn keep_alive(
        &self,
        tenant: TenantId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "update idempotency_keys set updated_at = ?3 \
             where tenant_id = ?1 and key = ?2 and status_code is null",
        )
        .bind(tenant.to_string())
        .bind(key)
        .bind(millis(now))
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
            "update idempotency_keys set status_code = ?3, response_headers = ?4, \
                 response_body = ?5, updated_at = ?6 where tenant_id = ?1 and key = ?2",
        )
        .bind(tenant.to_string())
        .bind(key)
        .bind(i64::from(response.status))
        .bind(serde_json::to_string(&response.headers).context("encoding headers")?)
        .bind(&response.body)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(&self, tenant: TenantId, key: &str) -> Result<(), DbError> {
        sqlx::query(
            "update idempotency_keys set updated_at = 0 \
             where tenant_id = ?1 and key = ?2 and status_code is null",
        )
        .bind(tenant.to_string())
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        let done = sqlx::query("delete from idempotency_keys where expires_at < ?1")
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
