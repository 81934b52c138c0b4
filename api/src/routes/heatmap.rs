//! `GET /v1/jobs/{id}/heatmap.png`: where the network looked, drawn at the image's size; and
//! `GET /v1/jobs/{id}/image.png`: the image itself as a browser can show it (a DICOM file
//! rendered through its windowing).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use image::DynamicImage;
use medinform_core::job::Job;
use medinform_core::tenant::Scope;
use medinform_core::{heatmap, imaging};
use serde::Deserialize;

use super::jobs::{find_job, stored_image};
use crate::auth::Caller;
use crate::extract::JobPath;
use crate::{ApiError, AppState, ErrorCode};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeatmapQuery {
    /// `true` (default): the image with the map blended in (RGB); `false`: the map alone as
    /// RGBA, its alpha the map's value, to lay over the image at any opacity.
    overlay: Option<bool>,
}

/// `GET /v1/jobs/{id}/heatmap.png`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/heatmap.png",
    tag = "jobs",
    summary = "Where the network looked, over the job's image",
    description = "The class activation map of the finding that the model computed with the \
                   result, upsampled to the uploaded image's size and coloured (Turbo: blue = \
                   little evidence for the finding, red = most). It shows which regions pushed \
                   the model towards the finding; it is not a lesion outline.",
    params(("id" = String, Path, description = "The job id"), HeatmapQuery),
    responses(
        (status = 200, description = "A PNG of the image's width and height.", content_type = "image/png"),
        (status = 400, description = "`invalid_job_id`, `invalid_query`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
        (status = 404, description = "`job_not_found`, `heatmap_unavailable` (not succeeded, or the model computes no map), `image_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn heatmap_png(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    query: Result<Query<HeatmapQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("{}; overlay is true or false.", e.body_text()),
        )
    })?;
    let job = find_job(&state, &caller, id).await?;
    let Some(map) = job.result.as_ref().and_then(|r| r.heatmap.clone()) else {
        return Err(ApiError::new(
            ErrorCode::HeatmapUnavailable,
            format!(
                "Job {id} has no heatmap: it is {} and model {} {} {}.",
                job.status,
                job.model,
                job.model_version,
                if job.result.is_some() {
                    "computes no map"
                } else {
                    "has given no result yet"
                }
            ),
        ));
    };
    let overlay = query.overlay.unwrap_or(true);
    rendered_png(&state, &job, move |image| {
        heatmap::render(image, &map, overlay)
    })
    .await
}

/// `GET /v1/jobs/{id}/image.png`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/image.png",
    tag = "jobs",
    summary = "The job's image as a PNG",
    description = "The uploaded image decoded and encoded again as a PNG, for images a browser \
                   cannot show: a DICOM file is rendered as a viewer shows it (Modality LUT, \
                   then the first VOI LUT or window, MONOCHROME1 inverted), at 8 bits.",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "A PNG of the image's width and height.", content_type = "image/png"),
        (status = 400, description = "`invalid_job_id`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
        (status = 404, description = "`job_not_found`, `image_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn image_png(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let job = find_job(&state, &caller, id).await?;
    rendered_png(&state, &job, |image| image.clone()).await
}

/// The job's stored image, decoded, drawn by `draw` and encoded as a PNG.
async fn rendered_png(
    state: &AppState,
    job: &Job,
    draw: impl FnOnce(&DynamicImage) -> DynamicImage + Send + 'static,
) -> Result<Response, ApiError> {
    let bytes = stored_image(state, job).await?;
    let limits = state.limits;
    // Decoding, drawing and encoding are CPU work: off the async runtime.
    let png = tokio::task::spawn_blocking(move || {
        let image = imaging::decode(&bytes, &limits)?;
        heatmap::png(&draw(&image))
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding the PNG: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            // Content-addressed image, and a result that never changes once written.
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        png,
    )
        .into_response())
}
