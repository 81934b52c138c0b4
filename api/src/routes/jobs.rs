//! `POST /v1/jobs` and `GET /v1/jobs/{id}`.

use axum::Json;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use medinform_core::db::NewJob;
use medinform_core::imaging;
use medinform_core::job::JobId;
use medinform_core::queue::JobMessage;
use medinform_core::storage::{image_key, sha256_hex};
use medinform_core::tenant::Scope;
use medinform_core::view::JobView;

use crate::auth::Caller;
use crate::{ApiError, AppState, ErrorCode};

/// Longest accepted client reference.
const MAX_REFERENCE_CHARS: usize = 200;

/// The upload form of `POST /v1/jobs` (multipart/form-data).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; read field by field below.
pub struct JobForm {
    /// A model id (`GET /v1/models`).
    #[schema(example = "malaria")]
    model: String,
    /// The image file: PNG, JPEG, BMP, TIFF or WebP.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// A patient or sample reference (up to 200 characters), echoed back; never logged.
    client_reference: Option<String>,
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
                    return Err(ApiError::new(
                        ErrorCode::InvalidClientReference,
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
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField, "The form has no `model` field."))?;
    let image = image
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField, "The form has no `image` file."))?;
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
            Err(ApiError::new(
                ErrorCode::InvalidField,
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
    ApiError::new(
        ErrorCode::ImageTooLarge,
        format!(
            "The image is larger than the limit of {} bytes ({:.1} MiB).",
            max_bytes,
            max_bytes as f64 / (1024.0 * 1024.0)
        ),
    )
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::ImageTooLarge,
            "The upload is larger than the limit.",
        );
    }
    ApiError::new(
        ErrorCode::InvalidMultipart,
        format!("The request is not a valid multipart/form-data upload: {e}"),
    )
}

/// `POST /v1/jobs`: validate, store, record, publish; `202 Accepted` with the job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Submit an image to screen",
    description = "The upload is checked before anything is stored (backlog under \
                   `jobs.max_backlog`, model ready, size, format, pixel count, a full decode); \
                   the image is kept under its SHA-256, the job recorded as `queued` and \
                   published to the workers.",
    request_body(content = inline(JobForm), content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Accepted and queued; `Location` names the job.", body = JobView),
        (status = 400, description = "`empty_file`, `missing_field`, `invalid_field`, `invalid_client_reference`, `invalid_multipart`", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`, `api_key_revoked`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope`", body = crate::ErrorBody),
        (status = 413, description = "`image_too_large`", body = crate::ErrorBody),
        (status = 415, description = "`not_an_image`, `unsupported_image_format`", body = crate::ErrorBody),
        (status = 422, description = "`corrupt_image`, `image_dimensions_too_large`, `unknown_model`", body = crate::ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`)", body = crate::ErrorBody),
        (status = 503, description = "`model_unavailable`, `queue_full`, `service_unavailable` (the last two with `Retry-After`)", body = crate::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let form = form.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidMultipart,
            format!("Expected a multipart/form-data upload: {e}"),
        )
    })?;
    caller.require(Scope::Submit)?;
    crate::admission::check_backlog(&state, 1).await?;
    let upload = read_upload(form, state.limits.max_bytes).await?;

    let model = state.registry.get(&upload.model).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownModel,
            format!(
                "There is no model {:?}; GET /v1/models lists them.",
                upload.model
            ),
        )
    })?;
    let (true, Some(model_version)) = (model.is_available(), model.version()) else {
        let reason = model.status().reason().unwrap_or("no usable manifest");
        return Err(ApiError::new(
            ErrorCode::ModelUnavailable,
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
            tenant_id: caller.tenant,
            batch_id: None,
            model: model.id().to_string(),
            model_version,
            image_key: key,
            image_sha256: sha256,
            image_content_type: info.content_type.to_string(),
            image_bytes,
            client_reference: upload.client_reference,
            site: None,
            tags: Vec::new(),
            deadline: None,
            webhook_url: None,
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

    let response = JobView::from(job);
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&response.links.this) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(response)))
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "Poll a job",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, with its result once it succeeded.", body = JobView),
        (status = 400, description = "`invalid_job_id`", body = crate::ErrorBody),
        (status = 404, description = "`job_not_found` (also another tenant's job)", body = crate::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Scope::Read)?;
    let id: JobId = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJobId,
            format!("{id:?} is not a job id (a UUID)."),
        )
    })?;
    let job = state
        .backends
        .jobs
        .find(caller.tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::JobNotFound, format!("There is no job {id}.")))?;
    Ok(Json(job.into()))
}
