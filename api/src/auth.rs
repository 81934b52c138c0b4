//! Who is calling: the tenant and scopes of the request's API key.
//!
//! The authentication layer puts a [`Caller`] in the request's extensions; handlers take it as
//! an extractor and check the scope they need with [`Caller::require`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use medinform_core::tenant::{self, Scope, TenantId};

use crate::{ApiError, ErrorCode};

/// The tenant and scopes a request acts with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    /// The shown prefix of the key used (`mik_1a2b3c4d`); `None` for an anonymous caller.
    pub key_prefix: Option<String>,
}

impl Caller {
    /// The caller of the embedded single-machine mode on loopback: the local tenant, every scope.
    pub fn local() -> Self {
        Self {
            tenant: TenantId::LOCAL,
            scopes: Scope::ALL.to_vec(),
            key_prefix: None,
        }
    }

    /// Refuses with 403 `insufficient_scope` unless the caller has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if tenant::allows(&self.scopes, scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("This API key lacks the `{scope}` scope needed here."),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "no caller on the request: the authentication layer is missing"
            ))
        })
    }
}

/// Until API keys are checked: every request acts as the local tenant.
pub async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    request.extensions_mut().insert(Caller::local());
    next.run(request).await
}
