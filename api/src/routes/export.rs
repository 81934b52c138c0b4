//! `GET /v1/batches/{id}/export.csv` and `.json`: one row per job, positives first, for a
//! programme manager's spreadsheet.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, SecondsFormat, Utc};
use medinform_core::batch::BatchView;
use medinform_core::job::{BatchId, Job, JobId};
use medinform_core::tenant::Scope;
use serde::Serialize;

use super::batches;
use crate::auth::Caller;
use crate::extract::BatchPath;
use crate::{ApiError, AppState, ErrorCode};

/// One job of an export.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportRow {
    pub job_id: JobId,
    pub client_reference: Option<String>,
    pub site: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The predicted label.
    pub label: Option<String>,
    pub finding: Option<String>,
    pub finding_probability: Option<f64>,
    pub threshold: Option<f64>,
    pub positive: Option<bool>,
    /// `screening` or `research` (a research result must not guide care); absent for results
    /// of model versions that declared no stage.
    #[schema(value_type = Option<String>)]
    pub stage: Option<&'static str>,
    pub model: String,
    pub model_version: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failed or canceled job has no result.
    pub error_code: Option<String>,
}

/// A batch's export as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Export {
    pub batch: BatchView,
    pub jobs: Vec<ExportRow>,
}

impl From<Job> for ExportRow {
    fn from(job: Job) -> Self {
        let result = job.result.as_ref();
        Self {
            job_id: job.id,
            status: job.status.as_str(),
            label: result.map(|r| r.label.clone()),
            finding: result.map(|r| r.finding.clone()),
            finding_probability: result.map(|r| r.finding_probability),
            threshold: result.map(|r| r.threshold),
            positive: result.map(|r| r.positive),
            stage: result.and_then(|r| r.stage).map(|s| s.as_str()),
            error_code: job
                .error
                .map(|e| e.code.to_string())
                .filter(|_| job.result.is_none()),
            client_reference: job.client_reference,
            site: job.site,
            tags: job.tags,
            model: job.model,
            model_version: job.model_version,
            created_at: job.created_at,
            finished_at: job.finished_at,
        }
    }
}

/// The batch and its rows: positives first, then negatives, then jobs without a result; each
/// group in the order the jobs were created.
async fn rows(state: &AppState, caller: &Caller, id: BatchId) -> Result<Export, ApiError> {
    caller.require(Scope::Read)?;
    let batch = (state.backends.batches.find_batch(caller.tenant, id).await?).ok_or_else(|| {
        ApiError::new(ErrorCode::BatchNotFound, format!("There is no batch {id}."))
    })?;
    let mut jobs: Vec<ExportRow> = state
        .backends
        .batches
        .batch_jobs(id)
        .await?
        .into_iter()
        .map(ExportRow::from)
        .collect();
    // A stable sort keeps creation order within each group.
    jobs.sort_by_key(|row| match row.positive {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    });
    Ok(Export {
        batch: batches::view(state, batch).await?,
        jobs,
    })
}

/// `GET /v1/batches/{id}/export.json`.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/export.json",
    tag = "batches",
    summary = "The batch's results as JSON, positives first",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch and one row per job.", body = Export),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn json(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<Json<Export>, ApiError> {
    Ok(Json(rows(&state, &caller, id).await?))
}

/// `GET /v1/batches/{id}/export.csv`.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/export.csv",
    tag = "batches",
    summary = "The batch's results as CSV, positives first",
    description = "UTF-8 with a header row; tags are joined with `;`. Cells that a spreadsheet \\
                   would read as a formula are prefixed with `'`.",
    params(("id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "One row per job.", content_type = "text/csv"),
        (status = 404, description = "`batch_not_found`", body = crate::ErrorBody),
    )
)]
pub async fn csv(
    State(state): State<AppState>,
    caller: Caller,
    BatchPath(id): BatchPath,
) -> Result<impl IntoResponse, ApiError> {
    let export = rows(&state, &caller, id).await?;
    let disposition = format!(
        "attachment; filename=\"medinform-batch-{}.csv\"",
        export.batch.id
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        to_csv(&export.jobs),
    ))
}

const CSV_HEADER: [&str; 16] = [
    "job_id",
    "client_reference",
    "site",
    "tags",
    "status",
    "label",
    "finding",
    "finding_probability",
    "threshold",
    "positive",
    "stage",
    "model",
    "model_version",
    "created_at",
    "finished_at",
    "error_code",
];

fn to_csv(rows: &[ExportRow]) -> String {
    let mut out = String::new();
    push_record(&mut out, CSV_HEADER.iter().map(|h| (*h).to_owned()));
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    for row in rows {
        push_record(
            &mut out,
            [
                row.job_id.to_string(),
                row.client_reference.clone().unwrap_or_default(),
                row.site.clone().unwrap_or_default(),
                row.tags.join(";"),
                row.status.to_owned(),
                row.label.clone().unwrap_or_default(),
                row.finding.clone().unwrap_or_default(),
                row.finding_probability
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_default(),
                row.threshold.map(|t| format!("{t:.4}")).unwrap_or_default(),
                row.positive.map(|p| p.to_string()).unwrap_or_default(),
                row.stage.unwrap_or_default().to_owned(),
                row.model.clone(),
                row.model_version.clone(),
                time(&row.created_at),
                row.finished_at.as_ref().map(time).unwrap_or_default(),
                row.error_code.clone().unwrap_or_default(),
            ],
        );
    }
    out
}

/// One CSV record (RFC 4180), with formula cells neutralised.
fn push_record(out: &mut String, cells: impl IntoIterator<Item = String>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(&cell));
    }
    out.push_str("\r\n");
}

fn csv_cell(value: &str) -> String {
    // A cell starting with one of these is run as a formula by spreadsheets (CSV injection);
    // client references and sites are typed by people, so they are neutralised.
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("camp 7"), "camp 7");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
