//! The one error type of the API. Client errors carry a stable machine-readable `code`;
//! internal errors are logged once with their cause chain and answered with an opaque 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medinform_core::db::DbError;
use medinform_core::imaging::ImageRejection;
use medinform_core::queue::QueueError;
use medinform_core::storage::StorageError;
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error with its status, stable code and a message a person can act on.
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// A dependency is down; the client may retry.
    #[error("service unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// Anything else: a bug or an unexpected failure.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<ImageRejection> for ApiError {
    fn from(rejection: ImageRejection) -> Self {
        let status = match rejection.code() {
            "image_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported_image_format" | "not_an_image" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "image_dimensions_too_large" | "corrupt_image" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::client(status, rejection.code(), rejection.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::Unavailable(e.into())
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
        let (status, code, message) = match self {
            Self::Client {
                status,
                code,
                message,
            } => (status, code, message),
            Self::Unavailable(e) => {
                tracing::error!(error = %format!("{e:#}"), "dependency unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "A storage, database or queue service is unavailable; nothing was stored. \
                     Retry in a moment."
                        .to_string(),
                )
            }
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Something went wrong on our side; it has been logged.".to_string(),
                )
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
