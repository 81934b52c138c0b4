//! Request plumbing every route shares: ids in the path and pages of lists. Routes take these
//! from here, never from each other, so that no two route modules depend on one another.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use medinform_core::job::{BatchId, JobId};

use crate::{ApiError, ErrorCode};

/// Page size of a list when the client gives none.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page of a list.
pub const MAX_LIMIT: i64 = 200;
/// What [`decode_cursor`] takes, for the OpenAPI document.
pub const CURSOR_PATTERN: &str = "^c[0-9a-f]{32}$";

/// A page size from the query: default 50, 1 to 200.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("`limit` must be between 1 and {MAX_LIMIT}, got {n}."),
        )),
    }
}

/// A cursor: the last id of a page, opaque to clients.
pub fn encode_cursor(id: uuid::Uuid) -> String {
    format!("c{}", id.simple())
}

/// Only the form [`encode_cursor`] makes ([`CURSOR_PATTERN`]): `c` and 32 lowercase hex digits.
pub fn decode_cursor(cursor: &str) -> Result<uuid::Uuid, ApiError> {
    cursor
        .strip_prefix('c')
        .filter(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "The cursor was not made by this API: pass `next_cursor` from the previous page.",
            )
        })
}

/// A job id given by a client (a path, a query).
pub fn job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJobId,
            format!("{id:?} is not a job id (a UUID)."),
        )
    })
}

/// A batch id given by a client (a path, a form field, a query).
pub fn batch_id(id: &str) -> Result<BatchId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidBatchId,
            format!("{id:?} is not a batch id (a UUID)."),
        )
    })
}

/// The `{id}` of a `/v1/jobs/{id}…` path, parsed: a malformed one is 400 `invalid_job_id`.
#[derive(Debug, Clone, Copy)]
pub struct JobPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidJobId, e.body_text()))?;
        job_id(&id).map(Self)
    }
}

/// The `{id}` of a `/v1/batches/{id}…` path, parsed: a malformed one is 400
/// `invalid_batch_id`.
#[derive(Debug, Clone, Copy)]
pub struct BatchPath(pub BatchId);

impl<S: Send + Sync> FromRequestParts<S> for BatchPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidBatchId, e.body_text()))?;
        batch_id(&id).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        let hyphenated = format!("c{id}");
        let upper = format!("c{}", id.simple().to_string().to_uppercase());
        for bad in ["", "c", "cnot-hex", &id.to_string(), &hyphenated, &upper] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code(),
                ErrorCode::InvalidCursor
            );
        }
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        for bad in [0, -1, MAX_LIMIT + 1] {
            assert_eq!(
                page_limit(Some(bad)).unwrap_err().code(),
                ErrorCode::InvalidQuery
            );
        }
    }
}
