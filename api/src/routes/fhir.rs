//! `GET /v1/jobs/{id}/fhir`: a finished job as an HL7 FHIR R4 Bundle ([`medinform_core::fhir`]).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use medinform_core::fhir;
use medinform_core::tenant::Scope;

use super::jobs::find_job;
use crate::auth::Caller;
use crate::extract::JobPath;
use crate::{ApiError, AppState};

/// `GET /v1/jobs/{id}/fhir`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/fhir",
    tag = "jobs",
    summary = "A finished job as an HL7 FHIR R4 Bundle",
    description = "A `collection` Bundle of the job's `DiagnosticReport` (`final` for a job that \
                   succeeded; `cancelled`, with the reason in `conclusion`, for one that failed \
                   or was canceled), the `Observation`s of its result (the finding's probability, \
                   `POS` or `NEG` at the threshold, with the threshold and the model's stage; one \
                   per class probability) and the `Device` (the model and its version) that made \
                   them. Entries are named by `urn:uuid:`s that stay the same for the job. The \
                   README lists the code systems.",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The Bundle.", content_type = "application/fhir+json", body = Object),
        (status = 400, description = "`invalid_job_id`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
        (status = 404, description = "`job_not_found` (also another tenant's job)", body = crate::ErrorBody),
        (status = 409, description = "`job_not_finished`: it is queued or processing", body = crate::ErrorBody),
    )
)]
pub async fn job_bundle(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let job = find_job(&state, &caller, id).await?;
    let bundle = fhir::job_bundle_with(&job, &state.registry)?;
    let body = serde_json::to_vec(&bundle)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("encoding a FHIR Bundle")))?;
    Ok(([(header::CONTENT_TYPE, fhir::CONTENT_TYPE)], body).into_response())
}
