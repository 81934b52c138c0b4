//! `GET /v1/models` and `GET /v1/models/{id}`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use medinform_core::registry::manifest::{InputSpec, Metrics, Modality, Task};
use medinform_core::registry::{Model, ModelStatus, Stage};
use medinform_core::tenant::Scope;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, AppState, ErrorCode};

/// A registry entry as the API shows it. Fields read from the manifest are absent when the
/// manifest itself is unusable (the `reason` says why).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelResponse {
    pub id: String,
    /// `ready` (loaded here, or by the workers that serve it) or `unavailable`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ModelSpec>,
    pub links: ModelLinks,
}

/// What the manifest declares.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelSpec {
    pub version: String,
    pub name: String,
    pub description: String,
    #[schema(value_type = String, example = "blood_smear_cell")]
    pub modality: Modality,
    #[schema(value_type = String, example = "binary")]
    pub task: Task,
    /// Class labels in the model's output order.
    pub labels: Vec<String>,
    /// The class a screening programme looks for.
    pub finding: String,
    /// The decision threshold in force (a site's override, or the manifest's).
    pub threshold: f64,
    /// `screening` only when the held-out metrics meet `minimum`; `research` results must not
    /// guide care.
    pub stage: Stage,
    /// What the screening stage requires of `metrics` (each at least this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<BTreeMap<String, f64>>,
    /// Whether results carry a heatmap (`GET /v1/jobs/{id}/heatmap.png`).
    pub heatmap: bool,
    /// Pictures of the held-out evaluation (ROC curve, calibration, confusion matrix).
    pub figures: Vec<FigureLink>,
    /// The network input and the preprocessing that produces it (models/README.md).
    #[schema(value_type = Object)]
    pub input: InputSpec,
    /// Measured on held-out data, as the model card states.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Metrics>,
}

/// One figure of a model: what it shows and where to fetch it (a PNG).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FigureLink {
    pub title: String,
    #[schema(example = "/v1/models/tuberculosis/figures/roc.png")]
    pub url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelLinks {
    #[serde(rename = "self")]
    pub this: String,
}

/// One model with its card.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelDetailResponse {
    #[serde(flatten)]
    pub model: ModelResponse,
    /// The model card (Markdown).
    pub card: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelResponse>,
}

impl From<&Model> for ModelResponse {
    fn from(model: &Model) -> Self {
        let (status, reason) = match model.status() {
            ModelStatus::Ready | ModelStatus::NotLoaded => ("ready", None),
            ModelStatus::Unavailable { reason } => ("unavailable", Some(reason.clone())),
        };
        let spec = model.manifest().map(|manifest| ModelSpec {
            version: manifest.version.clone(),
            name: manifest.name.clone(),
            description: manifest.description.clone(),
            modality: manifest.modality,
            task: manifest.task,
            labels: manifest.output.labels.clone(),
            finding: manifest.decision.finding_name().to_owned(),
            threshold: model.threshold().unwrap_or(manifest.decision.threshold),
            stage: manifest.stage,
            minimum: manifest.minimum.clone(),
            heatmap: model.has_heatmap(),
            figures: model
                .figures()
                .iter()
                .map(|(figure, _)| FigureLink {
                    title: figure.title.clone(),
                    url: format!("/v1/models/{}/figures/{}", model.id(), figure.name()),
                })
                .collect(),
            input: manifest.input.clone(),
            metrics: manifest.metrics.clone(),
        });
        Self {
            id: model.id().to_string(),
            status,
            reason,
            spec,
            links: ModelLinks {
                this: format!("/v1/models/{}", model.id()),
            },
        }
    }
}

/// `GET /v1/models`: every model of the registry, ready or not.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    summary = "List the screening models",
    responses(
        (status = 200, description = "Every model, ready or unavailable (with the reason).", body = ModelList),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(ModelList {
        models: state
            .registry
            .list()
            .iter()
            .map(|m| ModelResponse::from(m.as_ref()))
            .collect(),
    }))
}

/// `GET /v1/models/{id}`: one model with its card.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "models",
    summary = "One model, with its model card",
    params(("id" = String, Path, description = "The model id", example = "tuberculosis")),
    responses(
        (status = 200, description = "The model and its card (Markdown).", body = ModelDetailResponse),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
        (status = 404, description = "`model_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelDetailResponse>, ApiError> {
    caller.require(Scope::Read)?;
    let model = find(&state, &id)?;
    Ok(Json(ModelDetailResponse {
        model: ModelResponse::from(model.as_ref()),
        card: model.card().map(str::to_string),
    }))
}

fn find(state: &AppState, id: &str) -> Result<std::sync::Arc<Model>, ApiError> {
    state.registry.get(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!("There is no model {id:?}."),
        )
    })
}

/// `GET /v1/models/{id}/figures/{name}`: one of the model's figures.
#[utoipa::path(
    get,
    path = "/v1/models/{id}/figures/{name}",
    tag = "models",
    summary = "A figure of a model's held-out evaluation",
    params(
        ("id" = String, Path, description = "The model id", example = "tuberculosis"),
        ("name" = String, Path, description = "The figure's file name, as its `url` ends", example = "roc.png"),
    ),
    responses(
        (status = 200, description = "The PNG.", content_type = "image/png"),
        (status = 403, description = "`insufficient_scope` (needs `read`)", body = crate::ErrorBody),
        (status = 404, description = "`model_not_found`, `figure_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn figure(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let model = find(&state, &id)?;
    // Only a declared figure is served: the name is never used as a path.
    let path = model
        .figures()
        .iter()
        .find(|(figure, _)| figure.name() == name)
        .map(|(_, path)| path.clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::FigureNotFound,
                format!("Model {id} has no figure {name:?}; GET /v1/models/{id} lists them."),
            )
        })?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading {}: {e}", path.display())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}
