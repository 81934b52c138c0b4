//! Connections: how long a client may take, how many headers it may send, and one JSON shape for
//! every error, whichever layer makes it.
//!
//! - A connection has `server.header_read_timeout_secs` to send a request's headers; the same
//!   timer closes an idle connection, new or kept alive between requests.
//! - A request body that sends nothing for `server.body_read_timeout_secs` ends the request with
//!   408 `request_timeout`, and the connection with it.
//! - More than [`MAX_HEADERS`] headers answer 431 `request_headers_too_large`.
//! - An error response made outside the handlers (an extractor's rejection, a body limit) is
//!   rewritten into `{"error": {"code", "message"}}` with its status kept.

use std::error::Error as StdError;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::{ApiError, ErrorBody, ErrorCode, ErrorDetail};

/// Most headers a request may carry; more answer 431 `request_headers_too_large`.
pub const MAX_HEADERS: usize = 100;
/// Most headers the HTTP parser reads before it answers 431 on its own (with no body): far
/// above [`MAX_HEADERS`], so that every realistic excess gets the JSON answer.
const PARSED_HEADERS: usize = 4096;

/// The connection timeouts (`server.*_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub header_read: Duration,
    pub body_read: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests finish for up to
/// `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_headers(PARSED_HEADERS);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
        }
    }
}

/// Times each request body out after `timeout` without a byte.
pub(crate) async fn body_read_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    next.run(request.map(|body| Body::new(TimeoutBody::new(timeout, body))))
        .await
}

/// Refuses requests with more than [`MAX_HEADERS`] headers.
pub(crate) async fn limit_headers(request: Request, next: Next) -> Response {
    let count = request.headers().len();
    if count > MAX_HEADERS {
        return ApiError::new(
            ErrorCode::RequestHeadersTooLarge,
            format!("The request has {count} headers; at most {MAX_HEADERS} are accepted."),
        )
        .into_response();
    }
    next.run(request).await
}

/// Rewrites an error response that is not JSON (an extractor's rejection, a body limit) into
/// the JSON error shape, keeping its status. A JSON answer of a standard of its own (a STOW-RS
/// `application/dicom+json` response) is left as it is.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = media_type(response.headers()).is_some_and(|essence| {
        essence == "application/json"
            || essence.starts_with("application/") && essence.ends_with("+json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::RequestTooLarge,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::RequestHeadersTooLarge,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::InvalidRequest,
    };
    let message = if text.is_empty() || status.is_server_error() {
        code.description().to_owned()
    } else {
        text
    };
    let mut rewritten = (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail {
                code: code.as_str(),
                message,
            },
        }),
    )
        .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rewritten
}

/// The essence of a message's `Content-Type` (`multipart/form-data`, without parameters), in
/// lower case.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// Whether reading a request body failed because the client stopped sending it.
pub(crate) fn body_timed_out(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<TimeoutError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The error for a request body that stopped arriving.
pub(crate) fn request_timeout() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "The request body stopped arriving before it was complete; send it again.",
    )
}

/// A JSON body that could not be read: too large (413), stopped arriving (408), or not the
/// document the endpoint expects (400 `invalid_json`).
pub(crate) fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "The body is over this endpoint's limit: {}",
                rejection.body_text()
            ),
        );
    }
    if body_timed_out(&rejection) {
        return request_timeout();
    }
    ApiError::new(
        ErrorCode::InvalidJson,
        format!(
            "The body is not the JSON this endpoint expects: {}",
            rejection.body_text()
        ),
    )
}
