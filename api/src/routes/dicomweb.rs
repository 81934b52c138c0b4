//! DICOMweb STOW-RS (PS3.18 10.5, Store Instances): `POST /dicomweb/studies` and
//! `POST /dicomweb/studies/{study}`, as a PACS forwards studies. Each instance is stored and
//! routed to models by `dicom.routes` ([`crate::dicom`]); the answer is the standard Store
//! Instances Response in DICOM JSON.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use medinform_core::tenant::Scope;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::dicom::{Ingest, Outcome};
use crate::{ApiError, AppState, ErrorCode};

/// The media type of the response (PS3.18 8.7.3.5.4).
const DICOM_JSON: &str = "application/dicom+json";

/// The private block MedInform writes into each Referenced SOP Sequence item: the jobs that
/// screen the instance, and whether a rule routed it (PS3.5 7.8.1 private data elements).
const PRIVATE_CREATOR: &str = "MEDINFORM 1.0";

/// `POST /dicomweb/studies`.
#[utoipa::path(
    post,
    path = "/dicomweb/studies",
    tag = "dicom",
    summary = "DICOMweb STOW-RS: store instances",
    description = "Takes `multipart/related; type=\"application/dicom\"`, one DICOM Part 10 \
                   instance a part. Each is routed by `dicom.routes` to the models that screen \
                   it, one job per model in the batch of its study and model; an instance no \
                   rule takes is stored and reported, not screened. Answers the Store Instances \
                   Response (DICOM JSON): ReferencedSOPSequence (0008,1199) for the stored \
                   instances, each with MedInform's private attributes (0099,xx10) the job URLs \
                   and (0099,xx11) `SCREENED` or `NOT_ROUTED`; FailedSOPSequence (0008,1198) with \
                   a Failure Reason (0008,1197). 200: all stored; 202: some failed; 409: none \
                   stored. `Link` headers name the studies' batches.",
    request_body(content = Vec<u8>, content_type = "multipart/related"),
    responses(
        (status = 200, description = "Every instance stored.", content_type = "application/dicom+json"),
        (status = 202, description = "Some instances stored, some failed.", content_type = "application/dicom+json"),
        (status = 400, description = "`invalid_multipart`", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`, `api_key_revoked`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `submit`)", body = crate::ErrorBody),
        (status = 409, description = "No instance stored (each with its Failure Reason).", content_type = "application/dicom+json"),
        (status = 413, description = "`image_too_large`, `request_too_large`", body = crate::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = crate::ErrorBody),
    )
)]
pub async fn store(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    store_instances(state, caller, None, request).await
}

/// `POST /dicomweb/studies/{study}`.
#[utoipa::path(
    post,
    path = "/dicomweb/studies/{study}",
    tag = "dicom",
    summary = "DICOMweb STOW-RS: store instances of one study",
    description = "As `POST /dicomweb/studies`; an instance of another study fails with reason \
                   A900.",
    params(("study" = String, Path, description = "The Study Instance UID")),
    request_body(content = Vec<u8>, content_type = "multipart/related"),
    responses(
        (status = 200, description = "Every instance stored.", content_type = "application/dicom+json"),
        (status = 202, description = "Some instances stored, some failed.", content_type = "application/dicom+json"),
        (status = 400, description = "`invalid_multipart`", body = crate::ErrorBody),
        (status = 401, description = "`unauthorized`, `api_key_revoked`", body = crate::ErrorBody),
        (status = 403, description = "`insufficient_scope` (needs `submit`)", body = crate::ErrorBody),
        (status = 409, description = "No instance stored (each with its Failure Reason).", content_type = "application/dicom+json"),
        (status = 413, description = "`image_too_large`, `request_too_large`", body = crate::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = crate::ErrorBody),
    )
)]
pub async fn store_in_study(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    store_instances(state, caller, Some(study), request).await
}

async fn store_instances(
    state: AppState,
    caller: Caller,
    study: Option<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Submit)?;
    let boundary = related_boundary(request.headers())?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(state.max_request_bytes as u64)
            .per_field(state.limits.max_bytes as u64),
    );
    let stream = request.into_body().into_data_stream();
    let mut parts = multer::Multipart::with_constraints(stream, boundary, constraints);

    let mut ingest = Ingest::new(state, caller, study);
    let mut outcomes = Vec::new();
    while let Some(mut part) = parts.next_field().await.map_err(multipart_error)? {
        let declared = part.content_type().map(|m| m.essence_str().to_owned());
        let mut bytes = BytesMut::new();
        while let Some(chunk) = part.chunk().await.map_err(multipart_error)? {
            bytes.extend_from_slice(&chunk);
        }
        let outcome = match declared.as_deref() {
            None | Some("application/dicom") => ingest.take(bytes.freeze()).await,
            Some(other) => Outcome::Failed {
                instance: Default::default(),
                reason: crate::dicom::FailureReason::CannotUnderstand,
                message: format!(
                    "A part of type {other} is not a DICOM instance (application/dicom)."
                ),
            },
        };
        outcomes.push(outcome);
    }
    if outcomes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidMultipart,
            "The request holds no instance: send one application/dicom part per instance.",
        ));
    }

    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stored { .. }))
        .count();
    let status = match stored {
        0 => StatusCode::CONFLICT,
        n if n == outcomes.len() => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    for batch in ingest.batches() {
        if let Ok(link) = HeaderValue::from_str(&format!("</v1/batches/{batch}>; rel=\"related\""))
        {
            headers.append(header::LINK, link);
        }
    }
    let body =
        serde_json::to_vec(&response(&outcomes)).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((status, headers, Body::from(body)).into_response())
}

/// The boundary of a `multipart/related; type="application/dicom"` body.
fn related_boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let refuse = |why: &str| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary: {why}."
            ),
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refuse("the request has no Content-Type"))?;
    let mime: mime::Mime = content_type
        .parse()
        .map_err(|_| refuse(&format!("{content_type:?} is not a media type")))?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != "related" {
        return Err(refuse(&format!("the request is {}", mime.essence_str())));
    }
    if let Some(kind) = mime.get_param("type")
        && !kind.as_str().eq_ignore_ascii_case("application/dicom")
    {
        return Err(refuse(&format!(
            "its parts are {} (application/dicom+json and +xml metadata with bulk data are not taken)",
            kind.as_str()
        )));
    }
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or_else(|| refuse("the Content-Type names no boundary"))
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => ApiError::new(
            ErrorCode::RequestTooLarge,
            "The request is over `limits.max_request_bytes`: send the study in several requests.",
        ),
        multer::Error::FieldSizeExceeded { .. } => ApiError::new(
            ErrorCode::ImageTooLarge,
            "An instance is over `limits.max_upload_bytes`.",
        ),
        e if crate::http::body_timed_out(&e) => crate::http::request_timeout(),
        e => ApiError::new(
            ErrorCode::InvalidMultipart,
            format!("The body is not a valid multipart/related request: {e}"),
        ),
    }
}

/// A DICOM JSON attribute (PS3.18 F.2).
fn attribute(vr: &str, values: impl IntoIterator<Item = Value>) -> Value {
    let values: Vec<Value> = values.into_iter().collect();
    if values.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

fn uid(value: &Option<String>) -> Value {
    attribute("UI", value.iter().map(|v| json!(v)))
}

/// The Store Instances Response Module (PS3.18 Table 10.5.3-1) in DICOM JSON.
fn response(outcomes: &[Outcome]) -> Value {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Stored { instance, jobs } => {
                let mut item = Map::new();
                item.insert("00081150".into(), uid(&instance.sop_class_uid));
                item.insert("00081155".into(), uid(&instance.sop_instance_uid));
                item.insert("00990010".into(), attribute("LO", [json!(PRIVATE_CREATOR)]));
                item.insert(
                    "00991010".into(),
                    attribute(
                        "LO",
                        jobs.iter().map(|j| json!(format!("/v1/jobs/{}", j.id))),
                    ),
                );
                let routed = if jobs.is_empty() {
                    "NOT_ROUTED"
                } else {
                    "SCREENED"
                };
                item.insert("00991011".into(), attribute("CS", [json!(routed)]));
                referenced.push(Value::Object(item));
            }
            Outcome::Failed {
                instance,
                reason,
                message,
            } => {
                let mut item = Map::new();
                item.insert("00081150".into(), uid(&instance.sop_class_uid));
                item.insert("00081155".into(), uid(&instance.sop_instance_uid));
                item.insert("00081197".into(), attribute("US", [json!(reason.code())]));
                // Error Comment (0000,0902) is a C-STORE status field; here the reason in
                // words goes in MedInform's private block.
                item.insert("00990010".into(), attribute("LO", [json!(PRIVATE_CREATOR)]));
                item.insert("00991012".into(), attribute("LT", [json!(message)]));
                failed.push(Value::Object(item));
            }
        }
    }
    let mut body = Map::new();
    if !failed.is_empty() {
        body.insert("00081198".into(), attribute("SQ", failed));
    }
    if !referenced.is_empty() {
        body.insert("00081199".into(), attribute("SQ", referenced));
    }
    Value::Object(body)
}
