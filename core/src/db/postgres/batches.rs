//! Batches in PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{JOB_COLUMNS, JobRow, PostgresJobStore};
use crate::batch::{Batch, NewBatch, TallyRow};
use crate::db::{BatchStore, DbError, NewDelivery};
use crate::job::{BatchId, Job, JobFailure};
use crate::tenant::TenantId;

const BATCH_COLUMNS: &str = "id, tenant_id, model, site, campaign, operator, client_reference, \
     tags, created_at, updated_at, completed_at";

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: Uuid,
    tenant_id: Uuid,
    model: String,
    site: Option<String>,
    campaign: Option<String>,
    operator: Option<String>,
    client_reference: Option<String>,
    tags: Json<Vec<String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl From<BatchRow> for Batch {
    fn from(row: BatchRow) -> Self {
        Batch {
            id: BatchId(row.id),
            tenant_id: TenantId(row.tenant_id),
            model: row.model,
            site: row.site,
            campaign: row.campaign,
            operator: row.operator,
            client_reference: row.client_reference,
            tags: row.tags.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
        }
    }
}

#[async_trait]
impl BatchStore for PostgresJobStore {
    async fn insert_batch(&self, batch: &NewBatch) -> Result<Batch, DbError> {
        let row: Option<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into batches (id, tenant_id, model, site, campaign, operator, \
             client_reference, tags, submission_key, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             on conflict (tenant_id, submission_key) do nothing returning {BATCH_COLUMNS}"
        )))
        .bind(batch.id.0)
        .bind(batch.tenant_id.0)
        .bind(&batch.model)
        .bind(&batch.site)
        .bind(&batch.campaign)
        .bind(&batch.operator)
        .bind(&batch.client_reference)
        .bind(Json(&batch.tags))
        .bind(&batch.submission_key)
        .bind(Utc::now())
        .fetch_optional(&self.pool)
        .await?;
        let row = match row {
            Some(row) => row,
            // Opened by the same request before a retry: that batch.
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select {BATCH_COLUMNS} from batches \
                     where tenant_id = $1 and submission_key = $2"
                )))
                .bind(batch.tenant_id.0)
                .bind(&batch.submission_key)
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(row.into())
    }

    async fn find_batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<Batch>, DbError> {
        let row: Option<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches where id = $1 and tenant_id = $2"
        )))
        .bind(id.0)
        .bind(tenant.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Batch::from))
    }

    async fn list_batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: i64,
    ) -> Result<Vec<Batch>, DbError> {
        let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches where tenant_id = $1 \
                 and ($2::uuid is null or id < $2) order by id desc limit $3"
        )))
        .bind(tenant.0)
        .bind(before.map(|b| b.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Batch::from).collect())
    }

    async fn batch_tallies(&self, id: BatchId) -> Result<Vec<TallyRow>, DbError> {
        let rows: Vec<(String, Option<String>, Option<bool>, i64)> = sqlx::query_as(
            "select status, result->>'label', (result->>'positive')::boolean, count(*) \
             from jobs where batch_id = $1 group by 1, 2, 3",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(status, label, positive, count)| {
                Ok(TallyRow {
                    status: status.parse().map_err(anyhow::Error::msg)?,
                    label,
                    positive,
                    count,
                })
            })
            .collect()
    }

    async fn batch_jobs(&self, id: BatchId) -> Result<Vec<Job>, DbError> {
        let rows: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {JOB_COLUMNS} from jobs where batch_id = $1 order by id"
        )))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn reopen_batch(&self, id: BatchId) -> Result<(), DbError> {
        sqlx::query(
            "update batches set completed_at = null, events_enqueued_at = null, \
                 updated_at = $2 where id = $1",
        )
        .bind(id.0)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn hold_batch(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError> {
        // A hold whose time has passed is of a holder that died: its count is dropped.
        sqlx::query(
            "update batches set \
                 receivers = case when receiving_until < $2 then 1 else receivers + 1 end, \
                 receiving_until = greatest(receiving_until, $3) \
             where id = $1",
        )
        .bind(id.0)
        .bind(Utc::now())
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn keep_batch_held(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError> {
        sqlx::query(
            "update batches set receiving_until = greatest(receiving_until, $2) where id = $1",
        )
        .bind(id.0)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_batch(&self, id: BatchId) -> Result<(), DbError> {
        sqlx::query("update batches set receivers = greatest(receivers - 1, 0) where id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn complete_batches(&self) -> Result<u64, DbError> {
        let done = sqlx::query(
            "update batches set completed_at = $1, updated_at = $1 \
             where completed_at is null \
                 and (receivers = 0 or receiving_until < $1) \
                 and exists (select 1 from jobs where jobs.batch_id = batches.id) \
                 and not exists (select 1 from jobs where jobs.batch_id = batches.id \
                     and jobs.status in ('queued', 'processing'))",
        )
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn batches_awaiting_events(&self, limit: i64) -> Result<Vec<Batch>, DbError> {
        let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches \
             where completed_at is not null and events_enqueued_at is null \
             order by completed_at limit $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Batch::from).collect())
    }

    async fn enqueue_batch_events(
        &self,
        tenant: TenantId,
        batch: BatchId,
        deliveries: &[NewDelivery],
    ) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await?;
        let stamped = sqlx::query(
            "update batches set events_enqueued_at = $2 \
             where id = $1 and events_enqueued_at is null and completed_at is not null",
        )
        .bind(batch.0)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        if stamped.rows_affected() == 0 {
            return Ok(false);
        }
        super::webhooks::insert_deliveries(&mut tx, tenant, (None, Some(batch.0)), deliveries)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_batch(
        &self,
        tenant: TenantId,
        id: BatchId,
        failure: &JobFailure,
    ) -> Result<u64, DbError> {
        let done = sqlx::query(
            "update jobs set status = 'canceled', error_code = $3, error_message = $4, \
                 finished_at = $5, updated_at = $5 \
             where batch_id = $1 and tenant_id = $2 and status = 'queued'",
        )
        .bind(id.0)
        .bind(tenant.0)
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
