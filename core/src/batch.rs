//! Batches: a screening session (a site, a campaign, an operator) that jobs of one model are
//! added to, with its progress, its findings and a results export.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{BatchStore, DbError};
use crate::job::{BatchId, JobStatus};
use crate::registry::Registry;
use crate::tenant::TenantId;

/// A batch as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: BatchId,
    pub tenant_id: TenantId,
    pub model: String,
    pub site: Option<String>,
    pub campaign: Option<String>,
    pub operator: Option<String>,
    pub client_reference: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When every job of the batch was final (reset when jobs are added).
    pub completed_at: Option<DateTime<Utc>>,
}

/// What a client gives when it opens a batch.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: BatchId,
    pub tenant_id: TenantId,
    pub model: String,
    pub site: Option<String>,
    pub campaign: Option<String>,
    pub operator: Option<String>,
    pub client_reference: Option<String>,
    pub tags: Vec<String>,
    /// As [`NewJob::submission_key`](crate::db::NewJob::submission_key): a batch with the same
    /// tenant and key is answered instead of opened again.
    pub submission_key: Option<String>,
}

/// Jobs of a batch, counted by status and outcome, as the store groups them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyRow {
    pub status: JobStatus,
    /// The predicted label of a succeeded job.
    pub label: Option<String>,
    /// Whether a succeeded job was positive at its threshold.
    pub positive: Option<bool>,
    pub count: i64,
}

/// How many jobs of a batch are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchCounts {
    pub total: i64,
    pub queued: i64,
    pub processing: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub canceled: i64,
}

/// What the succeeded jobs of a batch found.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Findings {
    /// The class the programme looks for (the model's finding).
    #[schema(example = "Tuberculosis")]
    pub finding: Option<String>,
    /// The threshold in force now (each job records the one it was decided with).
    pub threshold: Option<f64>,
    /// Succeeded jobs whose finding probability reached their threshold.
    pub positive: i64,
    pub negative: i64,
    /// Succeeded jobs by predicted label.
    pub by_label: BTreeMap<String, i64>,
}

/// A batch as clients see it: `GET /v1/batches/{id}` and the `batch.completed` webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    pub id: BatchId,
    #[schema(example = "tuberculosis")]
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_reference: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// When every job was final; `null` while jobs are queued or processing, or a request is
    /// still adding images.
    pub completed_at: Option<DateTime<Utc>>,
    pub counts: BatchCounts,
    pub findings: Findings,
    pub links: BatchLinks,
}

/// Where to find more.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchLinks {
    #[serde(rename = "self")]
    pub this: String,
    /// The batch's jobs, newest first.
    pub jobs: String,
    pub export_csv: String,
    pub export_json: String,
}

impl BatchView {
    /// The view of `batch` from its tallies; `finding` and `threshold` are the model's now.
    pub fn new(
        batch: Batch,
        tallies: &[TallyRow],
        finding: Option<String>,
        threshold: Option<f64>,
    ) -> Self {
        let mut counts = BatchCounts::default();
        let mut findings = Findings {
            finding,
            threshold,
            positive: 0,
            negative: 0,
            by_label: BTreeMap::new(),
        };
        for row in tallies {
            counts.total += row.count;
            match row.status {
                JobStatus::Queued => counts.queued += row.count,
                JobStatus::Processing => counts.processing += row.count,
                JobStatus::Succeeded => counts.succeeded += row.count,
                JobStatus::Failed => counts.failed += row.count,
                JobStatus::Canceled => counts.canceled += row.count,
            }
            if row.status == JobStatus::Succeeded {
                match row.positive {
                    Some(true) => findings.positive += row.count,
                    Some(false) => findings.negative += row.count,
                    None => {}
                }
                if let Some(label) = &row.label {
                    *findings.by_label.entry(label.clone()).or_default() += row.count;
                }
            }
        }
        let id = batch.id;
        Self {
            links: BatchLinks {
                this: format!("/v1/batches/{id}"),
                jobs: format!("/v1/jobs?batch_id={id}"),
                export_csv: format!("/v1/batches/{id}/export.csv"),
                export_json: format!("/v1/batches/{id}/export.json"),
            },
            id,
            model: batch.model,
            site: batch.site,
            campaign: batch.campaign,
            operator: batch.operator,
            client_reference: batch.client_reference,
            tags: batch.tags,
            created_at: batch.created_at,
            completed_at: batch.completed_at,
            counts,
            findings,
        }
    }
}

/// The view of `batch` now: its jobs tallied, with the finding and threshold its model has.
pub async fn view(
    store: &dyn BatchStore,
    registry: &Registry,
    batch: Batch,
) -> Result<BatchView, DbError> {
    let tallies = store.batch_tallies(batch.id).await?;
    let model = registry.get(&batch.model);
    let finding = model
        .as_ref()
        .and_then(|m| m.manifest())
        .map(|m| m.decision.finding_name().to_owned());
    let threshold = model.as_ref().and_then(|m| m.threshold());
    Ok(BatchView::new(batch, &tallies, finding, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_to_counts_and_findings() {
        let batch = Batch {
            id: BatchId::new(),
            tenant_id: TenantId::LOCAL,
            model: "tuberculosis".into(),
            site: Some("Camp 7".into()),
            campaign: None,
            operator: None,
            client_reference: None,
            tags: vec![],
            created_at: Utc::now(),
            updated_at: Utc::now(),
            completed_at: None,
        };
        let row = |status, label: Option<&str>, positive, count| TallyRow {
            status,
            label: label.map(str::to_owned),
            positive,
            count,
        };
        let tallies = [
            row(JobStatus::Succeeded, Some("Tuberculosis"), Some(true), 3),
            row(JobStatus::Succeeded, Some("Normal"), Some(true), 1),
            row(JobStatus::Succeeded, Some("Normal"), Some(false), 5),
            row(JobStatus::Queued, None, None, 2),
            row(JobStatus::Failed, None, None, 1),
            row(JobStatus::Canceled, None, None, 1),
        ];
        let view = BatchView::new(batch, &tallies, Some("Tuberculosis".into()), Some(0.3));
        assert_eq!(
            view.counts,
            BatchCounts {
                total: 13,
                queued: 2,
                processing: 0,
                succeeded: 9,
                failed: 1,
                canceled: 1
            }
        );
        assert_eq!(view.findings.positive, 4);
        assert_eq!(view.findings.negative, 5);
        assert_eq!(view.findings.by_label["Normal"], 6);
        assert_eq!(view.findings.by_label["Tuberculosis"], 3);
        assert!(view.links.export_csv.ends_with("/export.csv"));
    }
}
