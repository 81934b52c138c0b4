//! The one error type of the API. Client errors carry a stable machine-readable [`ErrorCode`];
//! internal errors are logged once with their cause chain and answered with an opaque 500.
//!
//! Every code the API can answer is a variant of [`ErrorCode`], with its HTTP status and a
//! description: the OpenAPI document lists them from here, so the spec cannot miss one.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medinform_core::db::DbError;
use medinform_core::fhir::NotFinished;
use medinform_core::imaging::ImageRejection;
use medinform_core::queue::QueueError;
use medinform_core::storage::StorageError;
use medinform_core::webhooks::UrlRefused;
use serde::Serialize;
use utoipa::ToSchema;

/// Declares [`ErrorCode`]: variant, wire code, HTTP status, when it is answered.
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident, $doc:literal;)*) => {
        /// A stable, machine-readable error code. Clients match on it; it never changes meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status,)* }
            }

            /// When it is answered.
            pub fn description(self) -> &'static str {
                match self { $(Self::$variant => $doc,)* }
            }
        }
    };
}

error_codes! {
    EmptyFile = "empty_file", BAD_REQUEST, "The uploaded file is empty.";
    MissingField = "missing_field", BAD_REQUEST, "A required form or JSON field is absent.";
    InvalidField = "invalid_field", BAD_REQUEST, "A field has a value that is not accepted (the message names it).";
    InvalidClientReference = "invalid_client_reference", BAD_REQUEST, "`client_reference` is longer than 200 characters.";
    InvalidMultipart = "invalid_multipart", BAD_REQUEST, "The body is not a valid multipart/form-data upload.";
    InvalidJson = "invalid_json", BAD_REQUEST, "The body is not the JSON document this endpoint expects.";
    InvalidRequest = "invalid_request", BAD_REQUEST, "The request cannot be read as HTTP this API takes (e.g. a path that is not valid UTF-8); the message says what.";
    InvalidJobId = "invalid_job_id", BAD_REQUEST, "The job id in the path is not a UUID.";
    InvalidBatchId = "invalid_batch_id", BAD_REQUEST, "The batch id is not a UUID.";
    InvalidId = "invalid_id", BAD_REQUEST, "An id in the path is not a UUID.";
    InvalidQuery = "invalid_query", BAD_REQUEST, "A query parameter has a value that is not accepted.";
    InvalidCursor = "invalid_cursor", BAD_REQUEST, "The pagination cursor was not made by this API.";
    InvalidIdempotencyKey = "invalid_idempotency_key", BAD_REQUEST, "The Idempotency-Key header is empty, too long (over 255 characters) or not printable ASCII.";
    Unauthorized = "unauthorized", UNAUTHORIZED, "No API key, or an unknown one: send `Authorization: Bearer <key>`.";
    ApiKeyRevoked = "api_key_revoked", UNAUTHORIZED, "The API key was revoked.";
    InsufficientScope = "insufficient_scope", FORBIDDEN, "The API key lacks the scope this operation needs.";
    NotFound = "not_found", NOT_FOUND, "No such resource.";
    JobNotFound = "job_not_found", NOT_FOUND, "No such job for this tenant.";
    BatchNotFound = "batch_not_found", NOT_FOUND, "No such batch for this tenant.";
    ModelNotFound = "model_not_found", NOT_FOUND, "No such model.";
    WebhookNotFound = "webhook_not_found", NOT_FOUND, "No such webhook endpoint for this tenant.";
    DeliveryNotFound = "delivery_not_found", NOT_FOUND, "No such webhook delivery for this tenant.";
    ImageNotFound = "image_not_found", NOT_FOUND, "The job's image is no longer in storage.";
    HeatmapUnavailable = "heatmap_unavailable", NOT_FOUND, "The job has no heatmap: it has not succeeded, or its model computes none.";
    FigureNotFound = "figure_not_found", NOT_FOUND, "The model declares no figure of this name.";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "The method is not allowed on this resource.";
    JobNotCancelable = "job_not_cancelable", CONFLICT, "The job has started or finished; only a queued job can be canceled.";
    JobNotFinished = "job_not_finished", CONFLICT, "The job is queued or processing; its FHIR report exists once it has finished.";
    BatchModelMismatch = "batch_model_mismatch", CONFLICT, "The batch screens another model than the one asked for.";
    DeliveryNotReplayable = "delivery_not_replayable", CONFLICT, "Only a failed webhook delivery can be replayed; this one is pending or succeeded.";
    IdempotencyKeyReused = "idempotency_key_reused", CONFLICT, "The Idempotency-Key was used before with another request body or path.";
    IdempotencyRequestInProgress = "idempotency_request_in_progress", CONFLICT, "A request with this Idempotency-Key is still being handled; retry shortly.";
    Conflict = "conflict", CONFLICT, "The request conflicts with what is stored (a value that must be unique is taken, or what it refers to is gone); nothing was changed.";
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT, "The request body stopped arriving for `server.body_read_timeout_secs`; the connection is closed.";
    ImageTooLarge = "image_too_large", PAYLOAD_TOO_LARGE, "The upload is over `limits.max_upload_bytes`.";
    RequestTooLarge = "request_too_large", PAYLOAD_TOO_LARGE, "The request body is over this endpoint's limit.";
    NotAnImage = "not_an_image", UNSUPPORTED_MEDIA_TYPE, "The file is not an image.";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The request's Content-Type is not one this endpoint takes (STOW-RS: multipart/related; type=\"application/dicom\").";
    UnsupportedImageFormat = "unsupported_image_format", UNSUPPORTED_MEDIA_TYPE, "An image format that is not accepted (GIF, HEIF, ...; a DICOM image with a pixel layout that is not read): PNG, JPEG, BMP, TIFF, WebP and DICOM are.";
    UnsupportedTransferSyntax = "unsupported_transfer_syntax", UNSUPPORTED_MEDIA_TYPE, "The DICOM file's transfer syntax is not decoded (JPEG-LS, HTJ2K, video, big endian); the message names its UID.";
    MultiframeNotSupported = "multiframe_not_supported", UNPROCESSABLE_ENTITY, "The DICOM object holds more than one frame.";
    NoPixelData = "no_pixel_data", UNPROCESSABLE_ENTITY, "The DICOM file holds no pixel data (a report, a structured document).";
    ModalityMismatch = "modality_mismatch", UNPROCESSABLE_ENTITY, "The DICOM image's Modality or Body Part Examined is not one the model screens.";
    CorruptImage = "corrupt_image", UNPROCESSABLE_ENTITY, "The image is truncated or damaged.";
    ImageDimensionsTooLarge = "image_dimensions_too_large", UNPROCESSABLE_ENTITY, "The image has more pixels than `limits.max_image_pixels` (refused from its header).";
    UnknownModel = "unknown_model", UNPROCESSABLE_ENTITY, "No model with this id.";
    ModelResearchOnly = "model_research_only", UNPROCESSABLE_ENTITY, "The model is in the research stage (its held-out figures do not meet its declared minimum) and this server takes screening models only (`models.allow_research = false`).";
    WebhookUrlNotAllowed = "webhook_url_not_allowed", UNPROCESSABLE_ENTITY, "The webhook URL is not http(s), or resolves to a loopback, private or link-local address that the configuration does not allow.";
    RequestHeadersTooLarge = "request_headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request has more than 100 headers.";
    RateLimited = "rate_limited", TOO_MANY_REQUESTS, "The API key sent more requests than its rate limit; retry after `Retry-After` seconds.";
    InternalError = "internal_error", INTERNAL_SERVER_ERROR, "Something failed on the server; it has been logged.";
    ModelUnavailable = "model_unavailable", SERVICE_UNAVAILABLE, "The model cannot run on this server (its weights are missing or it cannot load); it never guesses.";
    QueueFull = "queue_full", SERVICE_UNAVAILABLE, "The backlog of queued jobs is over `jobs.max_backlog`; retry after `Retry-After` seconds.";
    ServiceUnavailable = "service_unavailable", SERVICE_UNAVAILABLE, "A database, storage or queue service is unreachable; nothing was stored. Retry after `Retry-After` seconds.";
}

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error with its stable code and a message a person can act on.
    #[error("{message}")]
    Client {
        code: ErrorCode,
        message: String,
        /// Seconds for `Retry-After` (rate limits, a full queue).
        retry_after: Option<u64>,
    },
    /// A dependency is down; the client may retry.
    #[error("service unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// Anything else: a bug or an unexpected failure.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (listed in the API description).
    #[schema(value_type = String, example = "image_too_large")]
    pub code: &'static str,
    /// What went wrong and what to do, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A client error that tells the client when to retry.
    pub fn retry_after(code: ErrorCode, message: impl Into<String>, seconds: u64) -> Self {
        Self::Client {
            code,
            message: message.into(),
            retry_after: Some(seconds),
        }
    }

    /// The code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl From<ImageRejection> for ApiError {
    fn from(rejection: ImageRejection) -> Self {
        let code = match rejection {
            ImageRejection::EmptyFile => ErrorCode::EmptyFile,
            ImageRejection::ImageTooLarge { .. } => ErrorCode::ImageTooLarge,
            ImageRejection::UnsupportedImageFormat { .. } => ErrorCode::UnsupportedImageFormat,
            ImageRejection::NotAnImage => ErrorCode::NotAnImage,
            ImageRejection::CorruptImage { .. } => ErrorCode::CorruptImage,
            ImageRejection::ImageDimensionsTooLarge { .. }
            | ImageRejection::DecodedTooLarge { .. } => ErrorCode::ImageDimensionsTooLarge,
            ImageRejection::UnsupportedTransferSyntax { .. } => {
                ErrorCode::UnsupportedTransferSyntax
            }
            ImageRejection::MultiframeNotSupported { .. } => ErrorCode::MultiframeNotSupported,
            ImageRejection::NoPixelData => ErrorCode::NoPixelData,
            ImageRejection::UnsupportedDicomImage { .. } => ErrorCode::UnsupportedImageFormat,
            ImageRejection::ModalityMismatch { .. } => ErrorCode::ModalityMismatch,
        };
        Self::new(code, rejection.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(e) => Self::Unavailable(e),
            DbError::Conflict { constraint, source } => {
                tracing::info!(constraint, error = %format!("{source:#}"), "write refused by a constraint");
                Self::new(
                    ErrorCode::Conflict,
                    "The request conflicts with what is stored; nothing was changed.",
                )
            }
            DbError::Corrupt(e) => Self::Internal(e),
        }
    }
}

impl From<NotFinished> for ApiError {
    fn from(unfinished: NotFinished) -> Self {
        Self::new(
            ErrorCode::JobNotFinished,
            format!(
                "The job is {}; its FHIR report exists once it has finished (succeeded, failed \
                 or canceled).",
                unfinished.status
            ),
        )
    }
}

impl From<UrlRefused> for ApiError {
    fn from(refused: UrlRefused) -> Self {
        let code = match refused {
            UrlRefused::TooLong => ErrorCode::InvalidField,
            UrlRefused::Target(_) => ErrorCode::WebhookUrlNotAllowed,
        };
        Self::new(code, refused.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let (message, retry_after) = match self {
            Self::Client {
                message,
                retry_after,
                ..
            } => (message, retry_after),
            Self::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "dependency unavailable");
                (
                    "A storage, database or queue service is unavailable; nothing was stored. \
                     Retry in a moment."
                        .to_string(),
                    Some(5),
                )
            }
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                (
                    "Something went wrong on our side; it has been logged.".to_string(),
                    None,
                )
            }
        };
        let mut response = (
            code.status(),
            Json(ErrorBody {
                error: ErrorDetail {
                    code: code.as_str(),
                    message,
                },
            }),
        )
            .into_response();
        let retry_after = retry_after.or((code.status() == StatusCode::SERVICE_UNAVAILABLE
            && code != ErrorCode::ModelUnavailable)
            .then_some(5));
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if code.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_client_or_server_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s} is not snake_case"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{s}"
            );
        }
    }
}
