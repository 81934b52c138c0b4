//! Batches in SQLite.

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{JOB_COLUMNS, JobRow, SqliteJobStore, millis, time};
use crate::batch::{Batch, NewBatch, TallyRow};
use crate::db::{BatchStore, DbError, NewDelivery};
use crate::job::{BatchId, Job, JobFailure};
use crate::tenant::TenantId;

const BATCH_COLUMNS: &str = "id, tenant_id, model, site, campaign, operator, client_reference, \
     tags, created_at, updated_at, completed_at";

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: String,
    tenant_id: String,
    model: String,
    site: Option<String>,
    campaign: Option<String>,
    operator: Option<String>,
    client_reference: Option<String>,
    tags: String,
    created_at: i64,
    updated_at: i64,
    completed_at: Option<i64>,
}

impl TryFrom<BatchRow> for Batch {
    type Error = DbError;
    fn try_from(row: BatchRow) -> Result<Self, DbError> {
        Ok(Batch {
            id: BatchId::from_str(&row.id).context("batch id")?,
            tenant_id: TenantId::from_str(&row.tenant_id).context("tenant id")?,
            model: row.model,
            site: row.site,
            campaign: row.campaign,
            operator: row.operator,
            client_reference: row.client_reference,
            tags: serde_json::from_str(&row.tags).context("stored tags")?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            completed_at: row.completed_at.map(time).transpose()?,
        })
    }
}

#[async_trait]
impl BatchStore for SqliteJobStore {
    async fn insert_batch(&self, batch: &NewBatch) -> Result<Batch, DbError> {
        let row: Option<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "insert into batches (id, tenant_id, model, site, campaign, operator, \
             client_reference, tags, created_at, updated_at, submission_key) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) \
             on conflict (tenant_id, submission_key) do nothing returning {BATCH_COLUMNS}"
        )))
        .bind(batch.id.to_string())
        .bind(batch.tenant_id.to_string())
        .bind(&batch.model)
        .bind(&batch.site)
        .bind(&batch.campaign)
        .bind(&batch.operator)
        .bind(&batch.client_reference)
        .bind(serde_json::to_string(&batch.tags).context("encoding tags")?)
        .bind(millis(Utc::now()))
        .bind(&batch.submission_key)
        .fetch_optional(&self.pool)
        .await?;
        let row = match row {
            Some(row) => row,
            // Opened by the same request before a retry: that batch.
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select {BATCH_COLUMNS} from batches \
                     where tenant_id = ?1 and submission_key = ?2"
                )))
                .bind(batch.tenant_id.to_string())
                .bind(&batch.submission_key)
                .fetch_one(&self.pool)
                .await?
            }
        };
        row.try_into()
    }

    async fn find_batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<Batch>, DbError> {
        let row: Option<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches where id = ?1 and tenant_id = ?2"
        )))
        .bind(id.to_string())
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Batch::try_from).transpose()
    }

    async fn list_batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: i64,
    ) -> Result<Vec<Batch>, DbError> {
        let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches where tenant_id = ?1 \
                 and (?2 is null or id < ?2) order by id desc limit ?3"
        )))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Batch::try_from).collect()
    }

    async fn batch_tallies(&self, id: BatchId) -> Result<Vec<TallyRow>, DbError> {
        let rows: Vec<(String, Option<String>, Option<bool>, i64)> = sqlx::query_as(
            "select status, json_extract(result, '$.label'), \
                 json_extract(result, '$.positive'), count(*) \
             from jobs where batch_id = ?1 group by 1, 2, 3",
        )
        .bind(id.to_string())
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
            "select {JOB_COLUMNS} from jobs where batch_id = ?1 order by id"
        )))
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    async fn reopen_batch(&self, id: BatchId) -> Result<(), DbError> {
        sqlx::query(
            "update batches set completed_at = null, events_enqueued_at = null, \
                 updated_at = ?2 where id = ?1",
        )
        .bind(id.to_string())
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn hold_batch(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError> {
        // A hold whose time has passed is of a holder that died: its count is dropped.
        sqlx::query(
            "update batches set \
                 receivers = case when receiving_until < ?2 then 1 else receivers + 1 end, \
                 receiving_until = max(coalesce(receiving_until, ?3), ?3) \
             where id = ?1",
        )
        .bind(id.to_string())
        .bind(millis(Utc::now()))
        .bind(millis(until))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn keep_batch_held(&self, id: BatchId, until: DateTime<Utc>) -> Result<(), DbError> {
        sqlx::query(
            "update batches set receiving_until = max(coalesce(receiving_until, ?2), ?2) \
             where id = ?1",
        )
        .bind(id.to_string())
        .bind(millis(until))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_batch(&self, id: BatchId) -> Result<(), DbError> {
        sqlx::query("update batches set receivers = max(receivers - 1, 0) where id = ?1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn complete_batches(&self) -> Result<u64, DbError> {
        let done = sqlx::query(
            "update batches set completed_at = ?1, updated_at = ?1 \
             where completed_at is null \
                 and (receivers = 0 or receiving_until < ?1) \
                 and exists (select 1 from jobs where jobs.batch_id = batches.id) \
                 and not exists (select 1 from jobs where jobs.batch_id = batches.id \
                     and jobs.status in ('queued', 'processing'))",
        )
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn batches_awaiting_events(&self, limit: i64) -> Result<Vec<Batch>, DbError> {
        let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {BATCH_COLUMNS} from batches \
             where completed_at is not null and events_enqueued_at is null \
             order by completed_at limit ?1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Batch::try_from).collect()
    }

    async fn enqueue_batch_events(
        &self,
        tenant: TenantId,
        batch: BatchId,
        deliveries: &[NewDelivery],
    ) -> Result<bool, DbError> {
        let now = millis(Utc::now());
        let mut tx = self.pool.begin().await?;
        let stamped = sqlx::query(
            "update batches set events_enqueued_at = ?2 \
             where id = ?1 and events_enqueued_at is null and completed_at is not null",
        )
        .bind(batch.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if stamped.rows_affected() == 0 {
            return Ok(false);
        }
        let about = (None, Some(batch.to_string()));
        super::webhooks::insert_deliveries(&mut tx, tenant, about, deliveries, now).await?;
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
            "update jobs set status = 'canceled', error_code = ?3, error_message = ?4, \
                 finished_at = ?5, updated_at = ?5 \
             where batch_id = ?1 and tenant_id = ?2 and status = 'queued'",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(failure.code.as_str())
        .bind(&failure.message)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
