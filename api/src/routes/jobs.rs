//! `/v1/jobs`: submit one image, poll a job, list and filter jobs, cancel one, fetch its image.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use medinform_core::db::{Cancel, JobFilter};
use medinform_core::job::{BatchId, Job, JobFailure, JobId, JobStatus, Priority};
use medinform_core::queue::bulk_rank;
use medinform_core::storage::StorageError;
use medinform_core::tenant::Scope;
use medinform_core::view::JobView;
use medinform_core::webhooks::{TargetPolicy, check_webhook_url};
use serde::{Deserialize, Serialize};

use super::submit::{self, Metadata};
use crate::auth::Caller;
use crate::extract::{self, JobPath};
use crate::fields;
use crate::idempotency::SubmissionKey;
use crate::{ApiError, AppState, ErrorCode};

/// The upload form of `POST /v1/jobs` (multipart/form-data). An optional field is left out, or
/// sent empty; text is trimmed, and refused with a control character in it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; read field by field below.
pub struct JobForm {
    /// A model id (`GET /v1/models`).
    #[schema(example = "malaria")]
    model: String,
    /// The image file: PNG, JPEG, BMP, TIFF, WebP or DICOM (Part 10, single frame).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// A patient or sample reference (up to 200 characters), echoed back; never logged.
    #[schema(required = false, schema_with = fields::schema::form_text)]
    client_reference: String,
    /// Where the image was taken (up to 200 characters).
    #[schema(required = false, schema_with = fields::schema::form_text)]
    site: String,
    /// Comma-separated tags (the field may be repeated): at most 20, each of up to 50 characters.
    #[schema(required = false, schema_with = fields::schema::form_tags)]
    tags: String,
    /// Add the job to this batch (of the same model).
    #[schema(required = false, format = Uuid)]
    batch_id: String,
    /// Also deliver this job's events here (http or https, up to 2048 characters), signed with
    /// the tenant's signing secret.
    #[schema(
        required = false,
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    webhook_url: String,
    /// RFC 3339, in the future: if no worker has started the job by then, it is canceled, not
    /// run.
    #[schema(required = false, format = DateTime)]
    deadline: String,
    /// `interactive` (the default: a worker takes it before any job of a drive) or `bulk` (it
    /// waits its turn with the drives' images).
    #[schema(required = false, schema_with = fields::schema::form_priority)]
    priority: String,
}

/// The image file itself, as the body of `POST /v1/jobs` (its fields then in the query).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Describes the body for the OpenAPI document; read as bytes.
pub struct ImageBody(Vec<u8>);

/// `POST /v1/jobs`: validate, store, record, publish; `202 Accepted` with the job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Submit an image to screen",
    description = "The upload is checked before anything is stored (backlog under \
                   `jobs.max_backlog`, model ready, size, format, pixel count, a full decode); \
                   the image is kept under its SHA-256, the job recorded as `queued` and \
                   published to the workers. Send an `Idempotency-Key` header to make a retry \
                   safe.\n\n\
                   Two ways to send it: a multipart/form-data form (the fields below), or the \
                   image itself as the body (`Content-Type` `image/*`, `application/dicom` or \
                   `application/octet-stream`; the bytes decide the format) with the form's \
                   text fields in the query string (`?model=malaria&tags=a&tags=b`). The query \
                   is read only for an image sent as the body.",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first response"),
    ),
    request_body(content(
        (inline(JobForm) = "multipart/form-data"),
        (inline(ImageBody) = "application/octet-stream"),
    )),
    responses(
        (status = 202, description = "Accepted and queued; `Location` names the job.", body = JobView),
        (status = 400, description = "`empty_file`, `missing_field`, `invalid_field`, `invalid_client_reference`, `invalid_multipart`, `invalid_batch_id`", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`, `api_key_revoked`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope`", body = crate::ErrorBody),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
        (status = 409, description = "`batch_model_mismatch`, `idempotency_key_reused`, `idempotency_request_in_progress`", body = crate::ErrorBody),
        (status = 413, description = "`image_too_large`", body = crate::ErrorBody),
        (status = 415, description = "`not_an_image`, `unsupported_image_format`, `unsupported_transfer_syntax`", body = crate::ErrorBody),
        (status = 422, description = "`corrupt_image`, `image_dimensions_too_large`, `multiframe_not_supported`, `no_pixel_data`, `modality_mismatch`, `unknown_model`, `model_research_only`, `webhook_url_not_allowed`", body = crate::ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`)", body = crate::ErrorBody),
        (status = 503, description = "`model_unavailable`, `queue_full`, `service_unavailable` (the last two with `Retry-After`)", body = crate::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    submission: Option<Extension<SubmissionKey>>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let media_type = crate::http::media_type(request.headers()).unwrap_or_default();
    let raw = is_image_itself(&media_type);
    if !raw && media_type != "multipart/form-data" {
        return Err(ApiError::new(
            ErrorCode::InvalidMultipart,
            "Expected a multipart/form-data upload, or the image itself as the body (Content-Type \
             image/*, application/dicom or application/octet-stream) with `model` in the query.",
        ));
    }
    caller.require(Scope::Submit)?;
    // The lane is in the form, read below: the tenant's jobs are counted now only for a
    // per-tenant bound, and for a bulk upload once the form says so.
    let counted = crate::admission::check_backlog(&state, caller.tenant, 1, false).await?;

    let mut upload = Upload::default();
    if raw {
        upload.read_raw(&state, request).await?;
    } else {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(submit::not_multipart)?;
        upload.read_form(&state, form).await?;
    }
    let Upload {
        model,
        image,
        batch_id,
        mut metadata,
    } = upload;
    let model = model.filter(|m| !m.is_empty()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingField,
            "The upload names no model: send a `model` field (in the query for an image sent \
             as the body).",
        )
    })?;
    let image = image
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField, "The form has no `image` file."))?;

    if let Some(url) = &metadata.webhook_url {
        let policy = TargetPolicy::from(&state.webhooks);
        metadata.webhook_url = Some(check_webhook_url(url, policy).await?);
    }
    if let Some(batch_id) = batch_id {
        let batch = super::batches::open_for(&state, &caller, batch_id, &model).await?;
        // A job of a batch is taken where its batch is, unless the client says otherwise.
        metadata.site = metadata.site.or(batch.site);
    }
    if metadata.priority == Priority::Bulk {
        let queued = match counted {
            Some(queued) => queued,
            None => crate::admission::tenant_backlog(&state, caller.tenant).await?,
        };
        metadata.rank = bulk_rank(queued);
    }
    let ready = submit::ready_model(&state, &model)?;
    let submission_key = submission.map(|Extension(key)| key.whole());
    let job = submit::accept(
        &state,
        &caller,
        &ready,
        batch_id,
        image,
        metadata,
        submission_key,
    )
    .await?;
    if let Some(batch_id) = batch_id {
        state.backends.batches.reopen_batch(batch_id).await?;
    }

    let response = JobView::from(job);
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&response.links.this) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, Json(response)))
}

/// What an upload carries, from a form or from the query and body.
#[derive(Default)]
struct Upload {
    model: Option<String>,
    image: Option<Bytes>,
    batch_id: Option<BatchId>,
    metadata: Metadata,
}

impl Upload {
    /// A text field, by its name; unknown fields are ignored, so that clients can send more
    /// than we read.
    fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        match name {
            "model" => self.model = Some(value),
            "batch_id" => self.batch_id = Some(extract::batch_id(&value)?),
            _ => {
                self.metadata.set(name, value)?;
            }
        }
        Ok(())
    }

    /// A multipart/form-data upload: the `image` file and text fields.
    async fn read_form(&mut self, state: &AppState, mut form: Multipart) -> Result<(), ApiError> {
        while let Some(field) = form.next_field().await.map_err(submit::multipart_error)? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            if name == "image" {
                self.image = Some(submit::read_image(field, state.limits.max_bytes).await?);
            } else {
                let value = submit::read_text(field, &name).await?;
                self.set(&name, value)?;
            }
        }
        Ok(())
    }

    /// The image as the request body, the fields in the query string (`tags` may repeat).
    async fn read_raw(&mut self, state: &AppState, request: Request) -> Result<(), ApiError> {
        let Query(fields) =
            Query::<Vec<(String, String)>>::try_from_uri(request.uri()).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidField,
                    format!("The query string cannot be read: {e}"),
                )
            })?;
        for (name, value) in fields {
            if name != "image" {
                let value = submit::clean_text(&name, &value)?;
                self.set(&name, value)?;
            }
        }
        self.image = Some(submit::read_body(request.into_body(), state.limits.max_bytes).await?);
        Ok(())
    }
}

/// Whether a body of `media_type` is the image itself: `image/*`, `application/dicom` or
/// `application/octet-stream` (the bytes decide the format either way).
fn is_image_itself(media_type: &str) -> bool {
    media_type.starts_with("image/")
        || media_type == "application/dicom"
        || media_type == "application/octet-stream"
}

pub(crate) fn job_not_found(id: JobId) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("There is no job {id}."))
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
    JobPath(id): JobPath,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(find_job(&state, &caller, id).await?.into()))
}

/// The filters and page of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this model.
    model: Option<String>,
    /// Only jobs of this batch.
    #[param(value_type = Option<String>, format = Uuid)]
    batch_id: Option<String>,
    /// Only jobs with exactly this client reference.
    client_reference: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    created_before: Option<String>,
    /// Jobs per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/jobs`: the tenant's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "List jobs, newest first, with filters",
    description = "Cursor pagination: pages stay stable while jobs are added (new jobs appear \
                   before the first page, never between pages).",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs.", body = JobPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`", body = crate::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("{e}")))?;
    let limit = extract::page_limit(query.limit)?;
    let filter = JobFilter {
        status: query
            .status
            .as_deref()
            .map(str::parse::<JobStatus>)
            .transpose()
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e))?,
        model: query.model.filter(|m| !m.is_empty()),
        batch_id: query
            .batch_id
            .as_deref()
            .map(extract::batch_id)
            .transpose()?,
        client_reference: query.client_reference.filter(|r| !r.is_empty()),
        created_after: query.created_after.as_deref().map(time).transpose()?,
        created_before: query.created_before.as_deref().map(time).transpose()?,
        before: query
            .cursor
            .as_deref()
            .map(|c| extract::decode_cursor(c).map(JobId))
            .transpose()?,
    };
    // One more than asked tells whether there is a next page.
    let mut jobs = state
        .backends
        .jobs
        .list(caller.tenant, &filter, limit + 1)
        .await?;
    let next_cursor = if jobs.len() as i64 > limit {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| extract::encode_cursor(j.id.0))
    } else {
        None
    };
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

fn time(value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{value:?} is not an RFC 3339 time such as 2026-12-01T08:00:00Z."),
            )
        })
}

/// `POST /v1/jobs/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job that has not started",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, now `canceled`.", body = JobView),
        (status = 404, description = "`job_not_found`", body = crate::ErrorBody),
        (status = 409, description = "`job_not_cancelable`: it has started or finished", body = crate::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Scope::Submit)?;
    match state
        .backends
        .jobs
        .cancel(caller.tenant, id, &JobFailure::canceled_by_client())
        .await?
    {
        Cancel::Canceled(job) => {
            tracing::info!(job_id = %id, "job canceled");
            medinform_core::metrics::job_finished(&job, JobStatus::Canceled);
            Ok(Json(job.into()))
        }
        Cancel::NotCancelable(job) => Err(ApiError::new(
            ErrorCode::JobNotCancelable,
            format!(
                "The job is {}; only a queued job can be canceled.",
                job.status
            ),
        )),
        Cancel::Missing => Err(job_not_found(id)),
    }
}

/// `GET /v1/jobs/{id}/image`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/image",
    tag = "jobs",
    summary = "The uploaded image of a job",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The image bytes, with their content type.", content_type = "image/*"),
        (status = 404, description = "`job_not_found`, `image_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn image(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let job = find_job(&state, &caller, id).await?;
    let bytes = stored_image(&state, &job).await?;
    Ok((
        [
            (header::CONTENT_TYPE, job.image_content_type),
            // Content-addressed: the bytes behind a job never change.
            (
                header::CACHE_CONTROL,
                "private, max-age=86400, immutable".to_owned(),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}

/// The caller's job `id`, or 404 `job_not_found`.
pub(crate) async fn find_job(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<Job, ApiError> {
    state
        .backends
        .jobs
        .find(caller.tenant, id)
        .await?
        .ok_or_else(|| job_not_found(id))
}

/// The bytes of a job's uploaded image.
pub(crate) async fn stored_image(state: &AppState, job: &Job) -> Result<Bytes, ApiError> {
    match state.backends.blobs.get(&job.image_key).await {
        Ok(bytes) => Ok(bytes),
        Err(StorageError::NotFound(_)) => Err(ApiError::new(
            ErrorCode::ImageNotFound,
            "The job's image is no longer in storage.",
        )),
        Err(e) => Err(e.into()),
    }
}
