//! `Idempotency-Key` on every POST: a retried request with the same key and the same request
//! gets the first response back (with `Idempotent-Replayed: true`); the same key with another
//! request is a 409; keys expire after `server.idempotency_ttl_secs`.
//!
//! What a keyed request creates carries a [`SubmissionKey`] derived from the key and the
//! request, written in the same transaction as the job or batch: when the process dies between
//! creating the job and keeping the response, the retry (allowed once the claim is no longer
//! kept alive, after `server.idempotency_lease_secs`) finds the job instead of creating another.
//!
//! "The same request" is judged on what it asks, not on its bytes: a multipart form is compared
//! field by field (name, file name, content), so a client that retries with a new multipart
//! boundary is still recognised; a JSON body is compared after normalising key order.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use medinform_core::db::{Begin, NewIdempotencyKey, StoredResponse};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::{ApiError, AppState, ErrorCode};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest accepted key.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Response headers kept for a replay.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER];

/// How long keys live, and how soon the claim of a request whose process died lapses.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    pub ttl: Duration,
    pub lease: Duration,
}

/// Marks what a keyed request creates: a hash of the key, the request's fingerprint and when
/// this use of the key began, so that a retry after a crash finds what the first attempt
/// created, and a use of the same key after it expired creates anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionKey(String);

impl SubmissionKey {
    fn new(key: &str, request_sha256: &str, since: chrono::DateTime<Utc>) -> Self {
        let mut hash = Sha256::new();
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(request_sha256.as_bytes());
        // Milliseconds: what every store keeps.
        hash.update(since.timestamp_millis().to_be_bytes());
        Self(hex::encode(&hash.finalize()[..16]))
    }

    /// The key of the one job or batch the request creates.
    pub fn whole(&self) -> String {
        self.0.clone()
    }

    /// The key of the request's `index`th image.
    pub fn part(&self, index: usize) -> String {
        format!("{}/{index}", self.0)
    }
}

/// The middleware (after authentication: keys are per tenant).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    match handle(state, caller, key, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    caller: Caller,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = checked_key(&key)?;
    let settings = state.idempotency;
    let (parts, body) = request.into_parts();
    // The largest body any route takes: that of the routes with many images.
    let bytes = axum::body::to_bytes(body, state.max_request_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::ImageTooLarge,
                "The request is larger than the limit.",
            )
        })?;
    let now = Utc::now();
    let begin = NewIdempotencyKey {
        tenant_id: caller.tenant,
        key: key.clone(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        request_sha256: fingerprint(&parts.headers, parts.uri.query(), &bytes).await,
        now,
        expires_at: now
            + chrono::TimeDelta::from_std(settings.ttl).unwrap_or(chrono::TimeDelta::MAX),
        stale_before: now - chrono::TimeDelta::from_std(settings.lease).unwrap_or_default(),
    };
    let store = &state.backends.idempotency;
    let since = match store.begin(&begin).await? {
        Begin::New { since } => since,
        Begin::Replay(stored) => return Ok(replay(stored)),
        Begin::Mismatch => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "This Idempotency-Key was used for a different request; use a new key for a \
                 new request.",
            ));
        }
        Begin::InProgress => {
            return Err(ApiError::retry_after(
                ErrorCode::IdempotencyRequestInProgress,
                "A request with this Idempotency-Key is still being handled; retry in a moment.",
                1,
            ));
        }
    };

    let mut parts = parts;
    parts
        .extensions
        .insert(SubmissionKey::new(&key, &begin.request_sha256, since));
    let handled = next.run(Request::from_parts(parts, Body::from(bytes)));
    // The claim is kept alive while the request runs; if this process dies, it lapses after
    // the lease and a retry may run the request again.
    let response = tokio::select! {
        response = handled => response,
        never = keep_alive(state.clone(), caller.tenant, key.clone()) => match never {},
    };
    let (parts, body) = response.into_parts();
    // Responses of this API are small JSON documents.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            store.release(caller.tenant, &key).await?;
            return Err(ApiError::Internal(anyhow::anyhow!(
                "reading the response: {e}"
            )));
        }
    };
    let status = parts.status;
    // A server error or a refusal to take the request yet: a retry must run it again.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        store.release(caller.tenant, &key).await?;
    } else {
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        let stored = StoredResponse {
            status: status.as_u16(),
            headers,
            body: body.to_vec(),
        };
        store.complete(caller.tenant, &key, &stored).await?;
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Renews the claim on `key` a few times per lease, until dropped.
async fn keep_alive(
    state: AppState,
    tenant: medinform_core::tenant::TenantId,
    key: String,
) -> std::convert::Infallible {
    let every = state.idempotency.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = state
            .backends
            .idempotency
            .keep_alive(tenant, &key, Utc::now())
            .await
        {
            tracing::warn!(error = %e, "could not keep an idempotency claim alive");
        }
    }
}

fn checked_key(key: &HeaderValue) -> Result<String, ApiError> {
    let key = key.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "The Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, \
                 such as a UUID."
            ),
        ));
    }
    Ok(key.to_owned())
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// SHA-256 of what the request asks: its media type, its query string (an image sent as the
/// body names its model there) and its content, normalised.
async fn fingerprint(headers: &HeaderMap, query: Option<&str>, body: &Bytes) -> String {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = crate::http::media_type(headers).unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(essence.as_bytes());
    hash.update([0]);
    // Only when there is one: the fingerprints of keys stored before stay as they were.
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        hash.update(b"?");
        hash.update(query.as_bytes());
        hash.update([0]);
    }
    if essence == "multipart/form-data"
        && let Some(fields) = multipart_fields(content_type, body.clone()).await
    {
        for (name, file_name, data) in fields {
            for part in [name.as_bytes(), file_name.as_bytes(), &data] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
    } else if essence == "application/json"
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
    {
        // serde_json's maps are ordered by key: this is the same for any key order.
        hash.update(value.to_string().as_bytes());
    } else {
        hash.update(body);
    }
    hex::encode(hash.finalize())
}

/// The fields of a multipart body in order: (name, file name, content); `None` if malformed
/// (then the raw bytes are compared).
async fn multipart_fields(content_type: &str, body: Bytes) -> Option<Vec<(String, String, Bytes)>> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.ok()? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().unwrap_or_default().to_owned();
        fields.push((name, file_name, field.bytes().await.ok()?));
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, value: &str) -> (HeaderMap, Bytes) {
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{value}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
             Content-Type: image/png\r\n\r\nPNGDATA\r\n--{boundary}--\r\n"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")).unwrap(),
        );
        (headers, Bytes::from(body))
    }

    #[tokio::test]
    async fn multipart_fingerprints_ignore_the_boundary_but_not_the_content() {
        let (h1, b1) = form("aaaa1111", "malaria");
        let (h2, b2) = form("zzzz9999", "malaria");
        let (h3, b3) = form("aaaa1111", "tuberculosis");
        let one = fingerprint(&h1, None, &b1).await;
        assert_eq!(one, fingerprint(&h2, None, &b2).await);
        assert_ne!(one, fingerprint(&h3, None, &b3).await);
    }

    #[tokio::test]
    async fn an_image_sent_as_the_body_is_fingerprinted_with_its_query() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        let image = Bytes::from_static(b"PNGDATA");
        let malaria = fingerprint(&headers, Some("model=malaria"), &image).await;
        assert_eq!(
            malaria,
            fingerprint(&headers, Some("model=malaria"), &image).await
        );
        assert_ne!(
            malaria,
            fingerprint(&headers, Some("model=skin_cancer"), &image).await
        );
    }

    #[tokio::test]
    async fn json_fingerprints_ignore_key_order() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let a = fingerprint(&headers, None, &Bytes::from_static(br#"{"a":1,"b":[2,3]}"#)).await;
        let b = fingerprint(
            &headers,
            None,
            &Bytes::from_static(br#"{ "b":[2,3], "a":1 }"#),
        )
        .await;
        let c = fingerprint(&headers, None, &Bytes::from_static(br#"{"a":1,"b":[3,2]}"#)).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        assert!(checked_key(&HeaderValue::from_static("3f2c-retry-1")).is_ok());
        for bad in ["", " ", &"k".repeat(256)] {
            assert_eq!(
                checked_key(&HeaderValue::from_str(bad).unwrap())
                    .unwrap_err()
                    .code(),
                ErrorCode::InvalidIdempotencyKey
            );
        }
    }
}
