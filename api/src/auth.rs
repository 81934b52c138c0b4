//! Who is calling: the tenant and scopes of the request's API key.
//!
//! The [`authenticate`] layer checks the key of every request under `/v1/` and `/dicomweb/`
//! and puts a [`Caller`] in the request's extensions; handlers take it as an extractor and
//! check the scope they need with [`Caller::require`]. Health checks, the API description and
//! the web app (everything else) need no key.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use medinform_core::config::Config;
use medinform_core::db::{DbError, KEY_USE_RESOLUTION, TenantStore};
use medinform_core::tenant::keys::ApiKeySecret;
use medinform_core::tenant::{self, ApiKey, Scope, TenantId};

use crate::rate_limit::{RateLimit, RateLimiter, SharedRateLimiter};
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

/// Whether requests without a key are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A request without a key acts as the `local` tenant with every scope (a key that is sent
    /// is still checked).
    Anonymous,
    /// Every request under `/v1/` needs a valid key.
    KeysRequired,
}

impl AuthMode {
    /// Anonymous only when allowed, embedded (in-process queue: one machine) and listening on a
    /// loopback address; keys are required everywhere else.
    pub fn decide(allow_anonymous: bool, embedded: bool, listen: SocketAddr) -> Self {
        if allow_anonymous && embedded && listen.ip().is_loopback() {
            Self::Anonymous
        } else {
            Self::KeysRequired
        }
    }

    /// The mode of this configuration, decided once at start-up and logged with its reason.
    pub fn for_config(config: &Config) -> Self {
        let listen = config.server.listen;
        let allowed = config.auth.allow_anonymous;
        let embedded = config.is_embedded_queue();
        let mode = Self::decide(allowed, embedded, listen);
        match mode {
            Self::Anonymous => tracing::info!(
                "no API key needed: embedded mode on loopback {listen}; set \
                 auth.allow_anonymous = false to require keys"
            ),
            Self::KeysRequired => {
                let why = if !allowed {
                    "auth.allow_anonymous = false".to_string()
                } else if !embedded {
                    "queue.url is set: a distributed deployment".to_string()
                } else {
                    format!("server.listen {listen} is not a loopback address")
                };
                tracing::info!(
                    "API keys required ({why}); an administrator creates one with \
                     `medinform keys create --tenant NAME`"
                );
            }
        }
        mode
    }
}

/// What the authentication layer needs: the mode, the key store and the rate limiter.
pub struct Authenticator {
    mode: AuthMode,
    store: Arc<dyn TenantStore>,
    limiter: Option<Limiter>,
}

/// Where the keys' buckets are kept.
#[derive(Debug)]
enum Limiter {
    /// In this process: the embedded mode, where it is the only one.
    Local(RateLimiter),
    /// In the database, for every API process.
    Shared(SharedRateLimiter),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// The rate-limit bucket of requests without a key.
const ANONYMOUS_BUCKET: &str = "anonymous";

impl Authenticator {
    /// An authenticator in `mode`, checking keys against `store`, limiting each to `limit` in
    /// this process's memory.
    pub fn new(mode: AuthMode, store: Arc<dyn TenantStore>, limit: RateLimit) -> Self {
        Self {
            mode,
            store,
            limiter: RateLimiter::new(limit).map(Limiter::Local),
        }
    }

    /// Like [`Authenticator::new`], with the keys' buckets in `store`, shared by every API
    /// process on the same database.
    pub fn with_shared_limit(
        mode: AuthMode,
        store: Arc<dyn TenantStore>,
        limit: RateLimit,
    ) -> Self {
        Self {
            limiter: SharedRateLimiter::new(limit, store.clone()).map(Limiter::Shared),
            mode,
            store,
        }
    }

    /// The authenticator of a configuration (see [`AuthMode::for_config`]): on PostgreSQL,
    /// which several API processes share, the rate limit is kept there.
    pub fn from_config(config: &Config, store: Arc<dyn TenantStore>) -> Self {
        let limit = RateLimit {
            per_minute: config.auth.rate_limit_per_minute,
            burst: config.auth.rate_limit_burst,
        };
        let mode = AuthMode::for_config(config);
        if config.database_url().starts_with("sqlite:") {
            Self::new(mode, store, limit)
        } else {
            Self::with_shared_limit(mode, store, limit)
        }
    }

    /// Deletes the shared buckets that are full again (nothing to do for local ones).
    pub async fn purge_rate_buckets(&self) -> Result<u64, DbError> {
        match &self.limiter {
            Some(Limiter::Shared(shared)) => shared.purge().await,
            _ => Ok(0),
        }
    }

    /// The caller of a request, from its `Authorization: Bearer` or `X-API-Key` header.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(sent) = sent_key(headers)? else {
            return match self.mode {
                AuthMode::Anonymous => {
                    self.rate_limit(ANONYMOUS_BUCKET).await?;
                    Ok(Caller::local())
                }
                AuthMode::KeysRequired => Err(unauthorized(
                    "This API needs an API key. Send an API key: Authorization: Bearer <key>. \
                     An administrator creates one with `medinform keys create`.",
                )),
            };
        };
        let secret = ApiKeySecret::parse(sent).map_err(|_| {
            unauthorized(
                "The API key is malformed: keys look like mik_<8 hex digits>_<32 letters and \
                 digits>. Check that it was copied whole.",
            )
        })?;
        let key = self
            .store
            .authenticate(&secret.sha256())
            .await?
            .filter(|key| key.prefix == secret.prefix());
        let Some(key) = key else {
            tracing::info!(key = secret.prefix(), "unknown API key refused");
            return Err(unauthorized(
                "The API key is not known here. Check that it was copied whole, or ask an \
                 administrator for a new one (`medinform keys create`).",
            ));
        };
        if let Some(revoked_at) = key.revoked_at {
            tracing::info!(key = %key.prefix, "revoked API key refused");
            return Err(ApiError::new(
                ErrorCode::ApiKeyRevoked,
                format!(
                    "The API key {} was revoked on {}. Ask an administrator for a new one \
                     (`medinform keys create`).",
                    key.prefix,
                    revoked_at.format("%Y-%m-%d %H:%M UTC")
                ),
            ));
        }
        self.record_use(&key).await;
        self.rate_limit(&key.prefix).await?;
        Ok(Caller {
            tenant: key.tenant_id,
            scopes: key.scopes,
            key_prefix: Some(key.prefix),
        })
    }

    /// Keeps the key's last use, at most about once a minute (see [`KEY_USE_RESOLUTION`]).
    async fn record_use(&self, key: &ApiKey) {
        let now = Utc::now();
        let recent = key.last_used_at.is_some_and(|at| {
            (now - at)
                .to_std()
                .is_ok_and(|since| since < KEY_USE_RESOLUTION)
        });
        if recent {
            return;
        }
        // Bookkeeping only: a failed write must not fail the request.
        if let Err(e) = self.store.record_key_use(key.id, now).await {
            tracing::warn!(key = %key.prefix, error = %e, "could not record the key's use");
        }
    }

    async fn rate_limit(&self, bucket: &str) -> Result<(), ApiError> {
        let checked = match &self.limiter {
            None => return Ok(()),
            Some(Limiter::Local(local)) => local.check(bucket),
            Some(Limiter::Shared(shared)) => shared.check(bucket).await?,
        };
        checked.map_err(|seconds| {
            tracing::info!(key = bucket, retry_after = seconds, "rate limited");
            ApiError::retry_after(
                ErrorCode::RateLimited,
                format!(
                    "Too many requests with this API key; retry in {seconds} seconds. An \
                     administrator sets the limit (auth.rate_limit_per_minute)."
                ),
                seconds,
            )
        })
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The key a request sends: `Authorization: Bearer <key>`, else `X-API-Key: <key>`.
fn sent_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        let bearer = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        return match bearer {
            Some(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(unauthorized(
                "The Authorization header must be `Bearer <key>`. An administrator creates \
                 keys with `medinform keys create`.",
            )),
        };
    }
    Ok(headers
        .get("x-api-key")
        .map(|value| value.to_str().unwrap_or_default().trim()))
}

/// Whether a path needs a caller: the API proper and DICOMweb. Health checks,
/// `/openapi.json`, `/docs` and the web app's files do not.
fn needs_caller(path: &str) -> bool {
    ["/v1", "/dicomweb"].iter().any(|root| {
        path == *root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The authentication layer (`axum::middleware::from_fn_with_state`): a [`Caller`] for every
/// request under `/v1/`, or 401 (429 when over the rate limit).
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !needs_caller(request.uri().path()) {
        return next.run(request).await;
    }
    match auth.caller(request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn anonymous_only_when_allowed_embedded_and_on_loopback() {
        for listen in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:9000"] {
            assert_eq!(
                AuthMode::decide(true, true, addr(listen)),
                AuthMode::Anonymous,
                "{listen}"
            );
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.168.1.20:8080",
            "10.0.0.5:80",
        ] {
            assert_eq!(
                AuthMode::decide(true, true, addr(listen)),
                AuthMode::KeysRequired,
                "off loopback: {listen}"
            );
        }
        assert_eq!(
            AuthMode::decide(true, false, addr("127.0.0.1:8080")),
            AuthMode::KeysRequired,
            "distributed"
        );
        assert_eq!(
            AuthMode::decide(false, true, addr("127.0.0.1:8080")),
            AuthMode::KeysRequired,
            "not allowed"
        );
    }

    #[test]
    fn the_default_configuration_is_anonymous_and_a_public_address_is_not() {
        let mut config = Config::default();
        assert_eq!(AuthMode::for_config(&config), AuthMode::Anonymous);
        config.server.listen = addr("0.0.0.0:8080");
        assert_eq!(AuthMode::for_config(&config), AuthMode::KeysRequired);
    }

    #[test]
    fn keys_are_read_from_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(sent_key(&headers).unwrap(), None);
        headers.insert("x-api-key", " mik_k ".parse().unwrap());
        assert_eq!(sent_key(&headers).unwrap(), Some("mik_k"));
        headers.insert(header::AUTHORIZATION, "bearer  mik_b".parse().unwrap());
        assert_eq!(sent_key(&headers).unwrap(), Some("mik_b"));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(
            sent_key(&headers).unwrap_err().code(),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn only_the_api_proper_needs_a_caller() {
        for path in [
            "/v1/jobs",
            "/v1/auth/whoami",
            "/v1",
            "/v1/nothing/here",
            "/dicomweb/studies",
            "/dicomweb/studies/1.2.3",
        ] {
            assert!(needs_caller(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
            "/",
            "/v10",
            "/v1x",
            "/dicomwebx",
        ] {
            assert!(!needs_caller(path), "{path}");
        }
    }
}
