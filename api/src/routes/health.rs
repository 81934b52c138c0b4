//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object))
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Debug, Serialize)]
struct Checks {
    database: Check,
    queue: Check,
    storage: Check,
    models: Check,
}

#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl Check {
    /// The outcome of a backend's check. Its error is logged, never answered: `/readyz` needs
    /// no key, and a backend's error text names hosts and paths.
    fn from_result<E: std::fmt::Display>(name: &str, result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self {
                ok: true,
                detail: None,
            },
            Err(e) => {
                tracing::warn!(check = name, error = %e, "readiness check failed");
                Self {
                    ok: false,
                    detail: Some(format!(
                        "the {name} is unreachable; the server log says why"
                    )),
                }
            }
        }
    }
}

/// Database, queue and storage reachable, and at least one model available. 503 otherwise, with
/// what is wrong.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: database, queue, storage and at least one model",
    security(()),
    responses(
        (status = 200, description = "Every check passed.", body = Object),
        (status = 503, description = "A check failed; `checks` says which.", body = Object),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (database, queue, storage) = tokio::join!(
        state.backends.jobs.check(),
        state.backends.queue.check(),
        state.backends.blobs.check(),
    );
    let models = state.registry.list();
    let ready = models.iter().filter(|m| m.is_available()).count();
    let models = Check {
        ok: ready > 0,
        detail: Some(format!("{ready} of {} models available", models.len())),
    };
    let checks = Checks {
        database: Check::from_result("database", database),
        queue: Check::from_result("queue", queue),
        storage: Check::from_result("storage", storage),
        models,
    };
    let ok = checks.database.ok && checks.queue.ok && checks.storage.ok && checks.models.ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "not_ready" },
            checks,
        }),
    )
}
