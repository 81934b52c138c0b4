//! What every submission shares, one image or a batch of them: reading multipart fields, the
//! client's metadata and its checks, and accepting one image (validate, store, record,
//! publish).

use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use medinform_core::cpu;
use medinform_core::db::NewJob;
use medinform_core::imaging::{self, DicomAttributes, PatientData, dicom};
use medinform_core::job::{BatchId, Job, JobId, Priority};
use medinform_core::queue::JobMessage;
use medinform_core::registry::{Model, Stage};
use medinform_core::storage::{image_key, sha256_hex};
use medinform_core::tenant::TenantId;

use crate::auth::Caller;
use crate::fields::{self, ClientReference, ShortText, Tags};
use crate::{ApiError, AppState, ErrorCode};

/// What a client says about an image besides the image itself. Stored with the job and echoed
/// back; never logged (it may identify a patient).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub client_reference: Option<String>,
    pub site: Option<String>,
    pub tags: Tags,
    pub deadline: Option<DateTime<Utc>>,
    pub webhook_url: Option<String>,
    /// The lane: interactive unless the client asks for `priority=bulk`; a batch's images are
    /// bulk.
    pub priority: Priority,
    /// The place in the bulk lane, from the tenant's backlog ([`medinform_core::queue::bulk_rank`]); not a field of
    /// the form.
    pub rank: u8,
}

impl Metadata {
    /// Takes one form field into the metadata; false when `name` is not a metadata field.
    pub fn set(&mut self, name: &str, value: String) -> Result<bool, ApiError> {
        match name {
            "client_reference" => {
                self.client_reference = ClientReference::parse(&value)?.map(String::from);
            }
            "site" => self.site = ShortText::parse("site", &value)?.map(String::from),
            "tags" => self.tags.add_list(&value)?,
            "deadline" => self.deadline = fields::deadline(&value)?,
            // Checked when the job is accepted (`check_webhook_url`).
            "webhook_url" => self.webhook_url = Some(value).filter(|v| !v.is_empty()),
            "priority" => {
                self.priority = value.parse().map_err(|why: String| {
                    ApiError::new(ErrorCode::InvalidField, format!("priority: {why}."))
                })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The model `id` if it exists and can run, with its version.
pub fn ready_model(state: &AppState, id: &str) -> Result<(Arc<Model>, String), ApiError> {
    let model = state.registry.get(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownModel,
            format!("There is no model {id:?}; GET /v1/models lists them."),
        )
    })?;
    let (true, Some(version)) = (model.is_available(), model.version()) else {
        let reason = model.status().reason().unwrap_or("no usable manifest");
        return Err(ApiError::new(
            ErrorCode::ModelUnavailable,
            format!(
                "The {} model is not available on this server: {reason}.",
                model.id()
            ),
        ));
    };
    if model.stage() == Stage::Research && !state.allow_research {
        return Err(ApiError::new(
            ErrorCode::ModelResearchOnly,
            format!(
                "The {} model is for research use only (its held-out figures do not meet its screening minimum), and this server does not run research models.",
                model.id()
            ),
        ));
    }
    let version = version.to_owned();
    Ok((model, version))
}

/// Validates the image (and, where the model runs in this process, prepares its input for the
/// worker), stores it under its content address, records a `queued` job and publishes it.
/// Nothing is stored for an image that is refused. With a `submission_key`
/// ([`crate::idempotency::SubmissionKey`]) that a job already carries, that job is answered and
/// nothing new is created.
pub async fn accept(
    state: &AppState,
    caller: &Caller,
    (model, model_version): &(Arc<Model>, String),
    batch_id: Option<BatchId>,
    image: Bytes,
    metadata: Metadata,
    submission_key: Option<String>,
) -> Result<Job, ApiError> {
    // A DICOM file's patient identity is kept, pseudonymized or dropped by the tenant's rule.
    let patient_data = if dicom::is_dicom(&image) {
        Some(patient_data(state, caller.tenant).await?)
    } else {
        None
    };
    // Decoding and hashing are CPU work: off the async runtime, at the lane's CPU priority.
    // Where the model runs in this process, the decoded image becomes its input now, so the
    // worker does not decode it again.
    let limits = state.limits;
    let runs_here = model.clone();
    let policy = state.dicom.clone();
    let (info, image, sha256, dicom) = cpu::run(metadata.priority, move || {
        let (info, img) = imaging::decode_with_info(&image, &limits)?;
        runs_here.check_dicom(&img)?;
        let (stored, dicom) = match (img.dicom.as_deref(), patient_data) {
            (Some(attributes), Some(rule)) => {
                let (stored, attributes) =
                    dicom::apply_patient_data(&image, attributes, rule, &policy.pseudonym_key)?;
                (stored.map(Bytes::from).unwrap_or(image), Some(attributes))
            }
            _ => (image, None),
        };
        let sha256 = sha256_hex(&stored);
        runs_here.prepare_ahead(&sha256, &img);
        Ok::<_, imaging::ImageRejection>((info, stored, sha256, dicom))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))??;

    // From the first write on, the work runs in a task of its own: a client that goes away
    // mid-request drops this handler, never the task, so an image is never left stored without
    // its job, and a job never without its message.
    let record = record(
        state.clone(),
        caller.tenant,
        model.id().to_owned(),
        model_version.clone(),
        batch_id,
        image,
        sha256,
        info.content_type,
        dicom,
        metadata,
        submission_key,
    );
    tokio::spawn(record)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
}

/// Stores a checked image, records its `queued` job and publishes it.
#[allow(clippy::too_many_arguments)] // One call site, each argument a part of the job.
async fn record(
    state: AppState,
    tenant: TenantId,
    model: String,
    model_version: String,
    batch_id: Option<BatchId>,
    image: Bytes,
    sha256: String,
    content_type: &'static str,
    dicom: Option<DicomAttributes>,
    metadata: Metadata,
    submission_key: Option<String>,
) -> Result<Job, ApiError> {
    let key = image_key(&sha256);
    let image_bytes = i64::try_from(image.len()).unwrap_or(i64::MAX);
    let metadata_rank = metadata.rank;
    let id = JobId::new();
    let new_job = NewJob {
        id,
        tenant_id: tenant,
        batch_id,
        model,
        model_version,
        image_key: key,
        image_sha256: sha256,
        image_content_type: content_type.to_owned(),
        image_bytes,
        client_reference: metadata.client_reference,
        site: metadata.site,
        tags: metadata.tags.into(),
        deadline: metadata.deadline,
        webhook_url: metadata.webhook_url,
        priority: metadata.priority,
        submission_key,
        dicom,
    };
    // The image is durable before, or with, the job that names it.
    let job = match state.backends.blobs.beside_jobs(image.len()) {
        Some(db) => db.insert_with_image(&new_job, image).await?,
        None => {
            let blobs = &state.backends.blobs;
            blobs.put(&new_job.image_key, image, content_type).await?;
            state.backends.jobs.insert(&new_job).await?
        }
    };
    if job.id != id {
        // Created by an earlier attempt of this request, which published it or left that to
        // the re-publisher.
        return Ok(job);
    }
    tracing::debug!(job_id = %job.id, model = %job.model, "job queued");
    medinform_core::metrics::job_accepted(&job);

    // The row is committed: from here the job cannot be lost. A failed publish is logged and
    // left to the re-publisher, which finds unconfirmed jobs.
    match state
        .backends
        .queue
        .publish(&JobMessage::screen_in(
            job.id,
            &job.model,
            job.priority,
            metadata_rank,
        ))
        .await
    {
        // Recording the publish only spares the re-publisher a duplicate message: the answer
        // does not wait for it.
        Ok(()) => {
            let jobs = state.backends.jobs.clone();
            let id = job.id;
            tokio::spawn(async move {
                if let Err(e) = jobs.mark_published(id).await {
                    tracing::warn!(job_id = %id, error = %e, "could not record the publish");
                }
            });
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "publish failed; the re-publisher will retry");
        }
    }
    Ok(job)
}

/// The tenant's `dicom.patient_data` rule (by its name, over the default).
pub(crate) async fn patient_data(
    state: &AppState,
    tenant: TenantId,
) -> Result<PatientData, ApiError> {
    if state.dicom.patient_data_by_tenant.is_empty() {
        return Ok(state.dicom.patient_data);
    }
    let name = state.backends.tenants.tenant(tenant).await?.map(|t| t.name);
    Ok(match name {
        Some(name) => state.dicom.patient_data_for(&name),
        None => state.dicom.patient_data,
    })
}

/// A text field, trimmed; control characters are refused.
pub async fn read_text(field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let bytes = field.bytes().await.map_err(multipart_error)?;
    clean_text(name, &fields::utf8(name, &bytes)?)
}

/// A field's text (from a form or a query string), trimmed; control characters are refused.
pub fn clean_text(name: &str, text: &str) -> Result<String, ApiError> {
    let text = text.trim().to_owned();
    if text.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("The `{name}` field contains control characters."),
        ));
    }
    Ok(text)
}

/// A file field, read chunk by chunk and refused as soon as it passes `max_bytes`.
pub async fn read_image(field: Field<'_>, max_bytes: usize) -> Result<Bytes, ApiError> {
    read_limited(field, max_bytes, multipart_error).await
}

/// A request body that is the image itself, read as [`read_image`] reads a file field.
pub async fn read_body(body: axum::body::Body, max_bytes: usize) -> Result<Bytes, ApiError> {
    read_limited(body.into_data_stream(), max_bytes, |e: axum::Error| {
        if crate::http::body_timed_out(&e) {
            crate::http::request_timeout()
        } else {
            ApiError::new(
                ErrorCode::InvalidMultipart,
                format!("The request body could not be read: {e}"),
            )
        }
    })
    .await
}

/// Bytes of `chunks`, refused with `image_too_large` as soon as they pass `max_bytes`.
async fn read_limited<E>(
    chunks: impl Stream<Item = Result<Bytes, E>>,
    max_bytes: usize,
    error: impl Fn(E) -> ApiError,
) -> Result<Bytes, ApiError> {
    let mut chunks = std::pin::pin!(chunks);
    let mut image = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(&error)?;
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

/// A multipart stream error: over the body limit, or malformed.
pub fn multipart_error(e: MultipartError) -> ApiError {
    if crate::http::body_timed_out(&e) {
        return crate::http::request_timeout();
    }
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

/// The rejection of an extractor that wanted multipart/form-data.
pub fn not_multipart(e: axum::extract::multipart::MultipartRejection) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidMultipart,
        format!("Expected a multipart/form-data upload: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields_are_checked() {
        let mut meta = Metadata::default();
        assert!(meta.set("site", " Camp 7 ".into()).unwrap());
        assert_eq!(meta.site.as_deref(), Some("Camp 7"));
        assert!(meta.set("tags", "follow-up, hiv+ ,".into()).unwrap());
        assert!(meta.set("tags", "night-shift".into()).unwrap());
        assert_eq!(
            Vec::<String>::from(meta.tags.clone()),
            ["follow-up", "hiv+", "night-shift"]
        );
        assert!(!meta.set("model", "malaria".into()).unwrap());
        let code = |name: &str, value: &str| {
            Metadata::default()
                .set(name, value.into())
                .unwrap_err()
                .code()
                .as_str()
        };
        assert_eq!(code("deadline", "tomorrow"), "invalid_field");
        assert_eq!(code("deadline", "2001-01-01T00:00:00Z"), "invalid_field");
        assert_eq!(
            code("client_reference", &"x".repeat(201)),
            "invalid_client_reference"
        );
        assert_eq!(code("tags", &"t".repeat(51)), "invalid_field");
        let many = (0..21).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(code("tags", &many), "invalid_field");
        let mut meta = Metadata::default();
        meta.set("deadline", "2999-01-01T10:00:00+02:00".into())
            .unwrap();
        assert_eq!(
            meta.deadline.unwrap().to_rfc3339(),
            "2999-01-01T08:00:00+00:00"
        );
    }
}
