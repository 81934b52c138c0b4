//! The web app (`server.web_dir`, the Vite build of `frontend/`), served at `/`.
//!
//! Any path that is not the API's falls back to `index.html`, so that a deep link such as
//! `/jobs/{id}` opens the app, whose router shows the page. API paths keep their JSON 404s. When
//! the folder has no `index.html` the API still runs and `/` says how to build the app.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::{ApiError, AppState};

/// Paths that belong to the API: never answered with the web app.
fn is_api_path(path: &str) -> bool {
    ["/v1", "/healthz", "/readyz", "/openapi.json", "/docs"]
        .iter()
        .any(|prefix| {
            path == *prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// The router's fallback: the API's JSON 404, the web app, or the "not built" page.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if is_api_path(&path) {
        return ApiError::new(crate::ErrorCode::NotFound, "No such resource.").into_response();
    }
    let dir = state.web_dir.as_path();
    let index = dir.join("index.html");
    if !index.is_file() {
        return not_built(dir);
    }
    let is_asset = path.starts_with("/assets/");
    let serve = ServeDir::new(dir).fallback(ServeFile::new(&index));
    let mut response = match serve.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    // Vite names the files under assets/ by their content hash: they never change. index.html
    // (and the deep links answered with it) is checked on every visit, so a new build shows.
    let cache = if is_asset && response.status() == StatusCode::OK {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn not_built(dir: &Path) -> Response {
    let dir = html_escape(&dir.display().to_string());
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>MedInform: web app not built</title></head>\
         <body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; \
         padding: 0 1rem; line-height: 1.5\">\
         <h1>The MedInform web app is not built</h1>\
         <p>The API is running, but there is no <code>index.html</code> in <code>{dir}</code> \
         (the <code>server.web_dir</code> setting).</p>\
         <p>Build it with <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>, \
         or start MedInform with <code>infra/run</code>, which builds it. The API answers under \
         <a href=\"/v1/models\"><code>/v1/</code></a> meanwhile.</p></body></html>"
    );
    (StatusCode::OK, Html(page)).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::is_api_path;

    #[test]
    fn api_paths_are_told_apart_from_app_paths() {
        for path in [
            "/v1",
            "/v1/nope",
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
        ] {
            assert!(is_api_path(path), "{path}");
        }
        for path in [
            "/",
            "/jobs/123",
            "/v1x",
            "/docsy",
            "/models/malaria",
            "/assets/a.js",
        ] {
            assert!(!is_api_path(path), "{path}");
        }
    }
}
