//! `/v1/batches`: screening sessions. A client opens a batch (site, campaign, operator) and adds
//! images to it over time, or sends them all in one request; the batch answers its progress,
//! its findings, and exports its results.

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use medinform_core::batch::{Batch, BatchView, NewBatch};
use medinform_core::job::{BatchId, JobFailure};
use medinform_core::tenant::Scope;
use medinform_core::view::JobView;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

mod images;

use self::images::Images;
pub use self::images::{Rejected, Submitted};
use super::submit;
use crate::auth::Caller;
use crate::extract::{self, BatchPath};
use crate::fields::{self, ClientReference, ShortText, Tags};
use crate::idempotency::SubmissionKey;
use crate::{ApiError, AppState, ErrorCode};

/// `POST /v1/batches` as JSON: open a batch, add images later.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatchRequest {
    /// The model every job of the batch is screened with (`GET /v1/models`).
    #[schema(example = "tuberculosis")]
    pub model: String,
    /// Where the images are taken (up to 200 characters).
    #[schema(example = "Camp 7, Kisumu", schema_with = fields::schema::json_text)]
    pub site: Option<String>,
    /// The campaign (up to 200 characters).
    #[schema(example = "TB drive 2026", schema_with = fields::schema::json_text)]
    pub campaign: Option<String>,
    /// Who runs the session (up to 200 characters).
    #[schema(schema_with = fields::schema::json_text)]
    pub operator: Option<String>,
    /// The client's reference of the batch (up to 200 characters).
    #[schema(schema_with = fields::schema::json_text)]
    pub client_reference: Option<String>,
    /// At most 20 tags of up to 50 characters.
    #[serde(default)]
    #[schema(schema_with = fields::schema::json_tags)]
    pub tags: Vec<String>,
}

/// The multipart form of `POST /v1/batches`: the batch's fields, then its images. A field after
/// the first image is not read.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; read field by field below.
pub struct BatchForm {
    /// The model every job of the batch is screened with (`GET /v1/models`).
    #[schema(example = "tuberculosis")]
    model: String,
    /// Where the images are taken (up to 200 characters).
    #[schema(required = false, schema_with = fields::schema::form_text)]
    site: String,
    /// The campaign (up to 200 characters).
    #[schema(required = false, schema_with = fields::schema::form_text)]
    campaign: String,
    /// Who runs the session (up to 200 characters).
    #[schema(required = false, schema_with = fields::schema::form_text)]
    operator: String,
    /// The client's reference of the batch (up to 200 characters).
    #[schema(required = false, schema_with = fields::schema::form_text)]
    client_reference: String,
    /// Comma-separated tags (the field may be repeated): at most 20, each of up to 50 characters.
    #[schema(required = false, schema_with = fields::schema::form_tags)]
    tags: String,
    /// The image files, each one job, known by its file name as its client reference (up to 200
    /// characters). A refused image is listed in `rejected`.
    #[schema(required = false, schema_with = image_parts)]
    image: Vec<Vec<u8>>,
}

/// The multipart form of `POST /v1/batches/{id}/jobs`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document; read field by field below.
pub struct BatchImagesForm {
    /// The client reference of the image sent next (up to 200 characters); without it, an image
    /// is known by its file name.
    #[schema(required = false, schema_with = fields::schema::form_text)]
    client_reference: String,
    /// The image files, each one job (at least one). A refused image is listed in `rejected`.
    #[schema(schema_with = image_parts)]
    image: Vec<Vec<u8>>,
}

/// The `image` parts of a form: one or more files. Form parts carry no type, so whatever is sent
/// as `image` is a file; one that is not an image is refused on its own, listed in `rejected`.
fn image_parts() -> Schema {
    let file = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
    };
    let files = ArrayBuilder::new().items(file()).min_items(Some(1));
    Schema::OneOf(OneOfBuilder::new().item(file()).item(files).build())
}

/// A batch with the jobs that one request created in it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchSubmitted {
    #[serde(flatten)]
    pub batch: BatchView,
    pub jobs: Vec<JobView>,
    pub rejected: Vec<Rejected>,
}

fn not_found(id: BatchId) -> ApiError {
    ApiError::new(ErrorCode::BatchNotFound, format!("There is no batch {id}."))
}

async fn find(state: &AppState, caller: &Caller, id: BatchId) -> Result<Batch, ApiError> {
    (state.backends.batches.find_batch(caller.tenant, id).await?).ok_or_else(|| not_found(id))
}

/// The caller's batch `id`, which must screen `model`.
pub async fn open_for(
    state: &AppState,
    caller: &Caller,
    id: BatchId,
    model: &str,
) -> Result<Batch, ApiError> {
    let batch = find(state, caller, id).await?;
    if batch.model != model {
        return Err(ApiError::new(
            ErrorCode::BatchModelMismatch,
            format!(
                "Batch {id} screens with the {} model, not {model}.",
                batch.model
            ),
        ));
    }
    Ok(batch)
}

/// The view of a batch, with the finding and threshold its model has now.
pub async fn view(state: &AppState, batch: Batch) -> Result<BatchView, ApiError> {
    Ok(
        medinform_core::batch::view(state.backends.batches.as_ref(), &state.registry, batch)
            .await?,
    )
}

fn short_text(field: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(match value {
        Some(value) => ShortText::parse(field, value)?.map(String::from),
        None => None,
    })
}

fn new_batch(
    caller: &Caller,
    request: CreateBatchRequest,
    submission: Option<&SubmissionKey>,
) -> Result<NewBatch, ApiError> {
    Ok(NewBatch {
        id: BatchId::new(),
        tenant_id: caller.tenant,
        model: request.model,
        site: short_text("site", request.site.as_deref())?,
        campaign: short_text("campaign", request.campaign.as_deref())?,
        operator: short_text("operator", request.operator.as_deref())?,
        client_reference: match request.client_reference.as_deref() {
            Some(value) => ClientReference::parse(value)?.map(String::from),
            None => None,
        },
        tags: Tags::from_list(&request.tags)?.into(),
        submission_key: submission.map(SubmissionKey::whole),
    })
}

/// `POST /v1/batches`.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "batches",
    summary = "Open a batch (JSON), or open one and submit its images (multipart)",
    description = "JSON: opens an empty batch (201); add images with `POST /v1/batches/{id}/jobs` \\
                   or `POST /v1/jobs` with `batch_id`. Multipart: the batch fields, then \\
                   repeated `image` parts (202); a refused image is listed in `rejected` and \\
                   the others are still accepted.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first response")),
    request_body(content(
        (CreateBatchRequest = "application/json"),
        (BatchForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "The batch, opened.", body = BatchView),
        (status = 202, description = "The batch with its jobs, queued.", body = BatchSubmitted),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_json`, `invalid_multipart`", body = crate::ErrorBody),
        (status = 422, description = "`unknown_model`, `model_research_only`", body = crate::ErrorBody),
        (status = 503, description = "`model_unavailable`, `queue_full`, `service_unavailable`", body = crate::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Scope::Submit)?;
    let submission = request.extensions().get::<SubmissionKey>().cloned();
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let Json(body) = Json::<CreateBatchRequest>::from_request(request, &state)
            .await
            .map_err(crate::http::json_rejection)?;
        submit::ready_model(&state, &body.model)?;
        let batch = state
            .backends
            .batches
            .insert_batch(&new_batch(&caller, body, submission.as_ref())?)
            .await?;
        tracing::info!(batch_id = %batch.id, model = %batch.model, "batch opened");
        let view = view(&state, batch).await?;
        return Ok(created(StatusCode::CREATED, &view.links.this.clone(), view));
    }

    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(submit::not_multipart)?;
    let mut fields = CreateBatchRequest::default();
    // Batch fields come before the first image; the batch is opened at the first image.
    let mut open: Option<(Batch, Images)> = None;
    let mut submitted = Submitted::default();
    let mut reference = None;
    while let Some(field) = form.next_field().await.map_err(submit::multipart_error)? {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        if name == "image" {
            if open.is_none() {
                let fields = std::mem::take(&mut fields);
                open = Some(open_batch(&state, &caller, fields, submission.clone()).await?);
            }
            let (_, images) = open.as_mut().expect("opened above");
            images
                .take(&state, &caller, field, reference.take(), &mut submitted)
                .await?;
            continue;
        }
        let value = submit::read_text(field, &name).await?;
        match (open.is_some(), name.as_str()) {
            (false, "model") => fields.model = value,
            (false, "site") => fields.site = Some(value),
            (false, "campaign") => fields.campaign = Some(value),
            (false, "operator") => fields.operator = Some(value),
            (false, "client_reference") => fields.client_reference = Some(value),
            // Checked with the JSON form's tags when the batch opens.
            (false, "tags") => fields.tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            (true, "client_reference") => {
                reference = ClientReference::parse(&value)?.map(String::from);
            }
            _ => {}
        }
    }
    let batch = match open {
        Some((batch, mut images)) => {
            images.finish(&mut submitted).await?;
            batch
        }
        None => open_batch(&state, &caller, fields, submission).await?.0,
    };
    let view = view(&state, batch).await?;
    let location = view.links.this.clone();
    Ok(created(
        StatusCode::ACCEPTED,
        &location,
        BatchSubmitted {
            batch: view,
            jobs: submitted.jobs,
            rejected: submitted.rejected,
        },
    ))
}

/// Opens the batch a multipart request describes, ready to take its images.
async fn open_batch(
    state: &AppState,
    caller: &Caller,
    fields: CreateBatchRequest,
    submission: Option<SubmissionKey>,
) -> Result<(Batch, Images), ApiError> {
    if fields.model.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "The form has no `model` field before its first image.",
        ));
    }
    let ready = submit::ready_model(state, &fields.model)?;
    let batch = state
        .backends
        .batches
        .insert_batch(&new_batch(caller, fields, submission.as_ref())?)
        .await?;
    tracing::info!(batch_id = %batch.id, model = %batch.model, "batch opened");
    let images = Images::open(state, ready, &batch, submission).await?;
    Ok((batch, images))
}

fn created(status: StatusCode, location: &str, body: impl Serialize) -> axum::response::Response {
    (
        status,
        [(header::LOCATION, location.to_owned())],
        Json(body),
    )
        .into_response()
}

/// `POST /v1/batches/{id}/jobs`.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/jobs",
    tag = "batches",
    summary = "Add images to a batch",
    params(
        ("id" = String, Path, description = "The batch id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first response"),
    ),
    request_body(content = BatchImagesForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "The jobs created, and the images refused.", body = Submitted),
        (status = 400, description = "`missing_field` (no image), `invalid_client_reference`, `invalid_field`, `invalid_multipart`", body = crate::ErrorBody),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
        (status = 413, description = "`image_too_large` (the request over `limits.max_request_bytes`)", body = crate::ErrorBody),
        (status = 422, description = "`model_research_only`", body = crate::ErrorBody),
        (status = 503, description = "`model_unavailable`, `queue_full`, `service_unavailable`", body = crate::ErrorBody),
    )
)]
pub async fn add_jobs(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
    submission: Option<Extension<SubmissionKey>>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let batch = find(&state, &caller, id).await?;
    let mut form = form.map_err(submit::not_multipart)?;
    let ready = submit::ready_model(&state, &batch.model)?;
    let mut submitted = Submitted::default();
    Images::open(&state, ready, &batch, submission.map(|Extension(key)| key))
        .await?
        .all(&state, &caller, &mut form, &mut submitted)
        .await?;
    if submitted.jobs.is_empty() && submitted.rejected.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "The form has no `image` part: send one or more images to add to the batch.",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(submitted)))
}

/// `GET /v1/batches/{id}`.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "batches",
    summary = "A batch: progress, findings and export links",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch.", body = BatchView),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<Json<BatchView>, ApiError> {
    caller.require(Scope::Read)?;
    let batch = find(&state, &caller, id).await?;
    Ok(Json(view(&state, batch).await?))
}

/// The page of `GET /v1/batches`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Batches per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of batches.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchPage {
    pub batches: Vec<BatchView>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/batches`.
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "batches",
    summary = "List batches, newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of batches.", body = BatchPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`", body = crate::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BatchPage>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("{e}")))?;
    let limit = extract::page_limit(query.limit)?;
    let before = query
        .cursor
        .as_deref()
        .map(|c| extract::decode_cursor(c).map(BatchId))
        .transpose()?;
    let mut batches = state
        .backends
        .batches
        .list_batches(caller.tenant, before, limit + 1)
        .await?;
    let next_cursor = if batches.len() as i64 > limit {
        batches.truncate(limit as usize);
        batches.last().map(|b| extract::encode_cursor(b.id.0))
    } else {
        None
    };
    let mut views = Vec::with_capacity(batches.len());
    for batch in batches {
        views.push(view(&state, batch).await?);
    }
    Ok(Json(BatchPage {
        batches: views,
        next_cursor,
    }))
}

/// `POST /v1/batches/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/cancel",
    tag = "batches",
    summary = "Cancel the batch's jobs that have not started",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch after the cancel.", body = BatchView),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<Json<BatchView>, ApiError> {
    caller.require(Scope::Submit)?;
    let batch = find(&state, &caller, id).await?;
    let canceled = state
        .backends
        .batches
        .cancel_batch(caller.tenant, batch.id, &JobFailure::canceled_by_client())
        .await?;
    tracing::info!(batch_id = %batch.id, jobs = canceled, "batch canceled");
    medinform_core::metrics::jobs_canceled(&batch.model, batch.tenant_id, canceled);
    Ok(Json(view(&state, batch).await?))
}
