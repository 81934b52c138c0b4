//! `GET /v1/auth/whoami`: who the request's key acts for (the web app checks a key with it).

use axum::Json;
use axum::extract::State;
use medinform_core::tenant::Scope;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// The tenant, key and scopes a request acts with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmIResponse {
    /// The tenant's name (`local` for the anonymous caller of the embedded mode).
    #[schema(example = "tb-drive-2026")]
    pub tenant: String,
    /// The key's shown prefix; `null` without a key.
    #[schema(example = "mik_1a2b3c4d")]
    pub key: Option<String>,
    /// What the key may do (`admin` implies the others).
    pub scopes: Vec<Scope>,
    /// True when no key was sent (embedded mode on loopback).
    pub anonymous: bool,
}

/// `GET /v1/auth/whoami`.
#[utoipa::path(
    get,
    path = "/v1/auth/whoami",
    tag = "auth",
    summary = "Check an API key",
    description = "The tenant, key prefix and scopes the request acts with. Any valid key may \
                   call it; without a key it answers only in the embedded mode on loopback.",
    responses(
        (status = 200, description = "The caller.", body = WhoAmIResponse),
        (status = 401, description = "`unauthorized`, `api_key_revoked`", body = crate::ErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`)", body = crate::ErrorBody),
    )
)]
pub async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WhoAmIResponse>, ApiError> {
    let tenant = state
        .backends
        .tenants
        .tenant(caller.tenant)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the caller's tenant {} is not stored", caller.tenant))?;
    Ok(Json(WhoAmIResponse {
        tenant: tenant.name,
        anonymous: caller.key_prefix.is_none(),
        key: caller.key_prefix,
        scopes: caller.scopes,
    }))
}
