//! `POST /v1/jobs` and `GET /v1/jobs/{id}`.

use axum::Json;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use medinform_core::db::NewJob;
use medinform_core::imaging;
use medinform_core::job::{Job, JobFailure, JobId, JobStatus, ScreeningResult};
use medinform_core::queue::JobMessage;
use medinform_core::storage::{image_key, sha256_hex};
use serde::Serialize;

use crate::{ApiError, AppState};

/// Longest accepted client reference.
const MAX_REFERENCE_CHARS: usize = 200;

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobResponse {
    pub id: JobId,
    pub model: String,
    pub model_version: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ScreeningResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
    pub links: JobLinks,
}

#[derive(Debug, Serialize)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub model: String,
}

impl From<Job> for JobResponse {
    fn from(job: Job) -> Self {
        Self {
            links: JobLinks {
                this: format!("/v1/jobs/{}", job.id),
                model: format!("/v1/models/{}", job.model),
            },
            id: job.id,
            model: job.model,
            model_version: job.model_version,
            status: job.status,
            client_reference: job.client_reference,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            // A queued job may carry the error of an attempt that will be retried: only a
            // failed job shows one.
            error: job.error.filter(|_| job.status == JobStatus::Failed),
            result: job.result,
        }
    }
}

/// The fields of the upload form.
struct Upload {
    model: String,
    image: Bytes,
    client_reference: Option<String>,
}

/// Reads the form. The image is read chunk by chunk and refused as soon as it passes the limit.
async fn read_upload(mut form: Multipart, max_bytes: usize) -> Result<Upload, ApiError> {
    let mut model = None;
    let mut image = None;
    let mut client_reference = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("model") => model = Some(read_text(field, "model").await?),
            Some("client_reference") => {
                let reference = read_text(field, "client_reference").await?;
                if reference.chars().count() > MAX_REFERENCE_CHARS {
                    return Err(ApiError::bad_request(
                        "invalid_client_reference",
                        format!(
                            "client_reference is longer than {MAX_REFERENCE_CHARS} characters."
                        ),
                    ));
                }
                client_reference = Some(reference).filter(|r| !r.is_empty());
            }
            Some("image") => image = Some(read_image(field, max_bytes).await?),
            // Unknown fields are ignored, so that clients can send more than we read.
            _ => {}
        }
    }
    let model = model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "The form has no `model` field."))?;
    let image = image
        .ok_or_else(|| ApiError::bad_request("missing_field", "The form has no `image` file."))?;
    Ok(Upload {
        model,
        image,
        client_reference,
    })
}

async fn read_text(field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let text = field.text().await.map_err(multipart_error)?;
    Ok(text.trim().to_string()).and_then(|t| {
        if t.chars().any(char::is_control) {
            Err(ApiError::bad_request(
                "invalid_field",
                format!("The `{name}` field contains control characters."),
            ))
        } else {
            Ok(t)
        }
    })
}

async fn read_image(mut field: Field<'_>, max_bytes: usize) -> Result<Bytes, ApiError> {
    let mut image = BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if image.len() + chunk.len() > max_bytes {
            return Err(too_large(max_bytes));
        }
        image.extend_from_slice(&chunk);
    }
    Ok(image.freeze())
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "image_too_large",
        format!(
            "The image is larger than the limit of {} bytes ({:.1} MiB).",
            max_bytes,
            max_bytes as f64 / (1024.0 * 1024.0)
        ),
    )
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            "The upload is larger than the limit.",
        );
    }
    ApiError::bad_request(
        "invalid_multipart",
        format!("The request is not a valid multipart/form-data upload: {e}"),
    )
}

/// `POST /v1/jobs`: validate, store, record, publish; `202 Accepted` with the job.
pub async fn create(
    State(state): State<AppState>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let form = form.map_err(|e| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("Expected a multipart/form-data upload: {e}"),
        )
    })?;
    let upload = read_upload(form, state.limits.max_bytes).await?;

    let model = state.registry.get(&upload.model).ok_or_else(|| {
        ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_model",
            format!(
                "There is no model {:?}; GET /v1/models lists them.",
                upload.model
            ),
        )
    })?;
    let (true, Some(model_version)) = (model.is_available(), model.version()) else {
        let reason = model.status().reason().unwrap_or("no usable manifest");
        return Err(ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!(
                "The {} model is not available on this server: {reason}.",
                model.id()
            ),
        ));
    };
    let model_version = model_version.to_string();

    // Decoding is CPU work: off the async runtime.
    let limits = state.limits;
    let image = upload.image.clone();
    let info = tokio::task::spawn_blocking(move || imaging::validate(&image, &limits))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;

    let sha256 = sha256_hex(&upload.image);
    let key = image_key(&sha256);
    let image_bytes = i64::try_from(upload.image.len()).unwrap_or(i64::MAX);
    state
        .backends
        .blobs
        .put(&key, upload.image, info.content_type)
        .await?;
    let job = state
        .backends
        .jobs
        .insert(&NewJob {
            id: JobId::new(),
            model: model.id().to_string(),
            model_version,
            image_key: key,
            image_sha256: sha256,
            image_content_type: info.content_type.to_string(),
            image_bytes,
            client_reference: upload.client_reference,
        })
        .await?;
    tracing::info!(job_id = %job.id, model = %job.model, "job queued");

    // The row is committed: from here the job cannot be lost. A failed publish is logged and
    // left to the re-publisher, which finds unconfirmed jobs.
    match state
        .backends
        .queue
        .publish(&JobMessage::screen(job.id, &job.model))
        .await
    {
        Ok(()) => {
            if let Err(e) = state.backends.jobs.mark_published(job.id).await {
                tracing::warn!(job_id = %job.id, error = %e, "could not record the publish");
            }
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "publish failed; the re-publisher will retry");
        }
    }

    let response = JobResponse::from(job);
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&response.links.this) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(response)))
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobResponse>, ApiError> {
    let id: JobId = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_job_id",
            format!("{id:?} is not a job id (a UUID)."),
        )
    })?;
    let job =
        state.backends.jobs.get(id).await?.ok_or_else(|| {
            ApiError::not_found("job_not_found", format!("There is no job {id}."))
        })?;
    Ok(Json(job.into()))
}
