//! How clients see a job: the body of `GET /v1/jobs/{id}`, of list pages, and the `data` of
//! webhook payloads, so that a laboratory system reads one shape wherever a job reaches it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::imaging::DicomAttributes;
use crate::job::{BatchId, Job, JobFailure, JobId, JobStatus, Priority, ScreeningResult};

/// A job as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    /// The model that screens (or screened) the image.
    #[schema(example = "malaria")]
    pub model: String,
    /// The model version in force when the job was accepted.
    #[schema(example = "1.0.0")]
    pub model_version: String,
    pub status: JobStatus,
    /// The lane it waits in: `interactive` goes ahead of `bulk` (a batch's images).
    pub priority: Priority,
    /// The batch (screening session) the job belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    /// A patient or sample reference given by the client, echoed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_reference: Option<String>,
    /// Where the image was taken, as the client said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Free-form labels given by the client.
    pub tags: Vec<String>,
    /// The study the image belongs to, when it came as a DICOM file: its identifiers, and
    /// patient identity only as the tenant's `dicom.patient_data` allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom: Option<DicomAttributes>,
    /// The job is not run if no worker has started it by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the model said (a `succeeded` job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ScreeningResult>,
    /// Why the job did not succeed (a `failed` or `canceled` job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
    pub links: JobLinks,
}

/// Where to find more.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobLinks {
    /// This job.
    #[serde(rename = "self")]
    pub this: String,
    /// The model, with its card.
    pub model: String,
    /// The uploaded image.
    pub image: String,
    /// The heatmap over the image (a result with a map).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<String>,
    /// The image rendered as a PNG, for an image a browser cannot show (a DICOM file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            links: JobLinks {
                this: format!("/v1/jobs/{}", job.id),
                model: format!("/v1/models/{}", job.model),
                image: format!("/v1/jobs/{}/image", job.id),
                heatmap: job
                    .result
                    .as_ref()
                    .and_then(|r| r.heatmap.as_ref())
                    .map(|_| format!("/v1/jobs/{}/heatmap.png", job.id)),
                preview: job
                    .dicom
                    .as_ref()
                    .map(|_| format!("/v1/jobs/{}/image.png", job.id)),
            },
            id: job.id,
            model: job.model,
            model_version: job.model_version,
            status: job.status,
            priority: job.priority,
            batch_id: job.batch_id,
            client_reference: job.client_reference,
            site: job.site,
            tags: job.tags,
            dicom: job.dicom,
            deadline: job.deadline,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            // A queued job may carry the error of an attempt that will be retried: only a
            // job that ended without a result shows one.
            error: job
                .error
                .filter(|_| matches!(job.status, JobStatus::Failed | JobStatus::Canceled)),
            result: job.result,
        }
    }
}
