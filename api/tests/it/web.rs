//! The web app served at `/`: files from `server.web_dir`, deep links answered with its
//! `index.html`, API paths kept as JSON 404s, and a "not built" page when there is no build.

use crate::support::{Kind, Options, TestApp};

const INDEX: &str = "<!doctype html><title>MedInform test build</title><div id=\"root\"></div>";

async fn app_with_web_dir() -> (TestApp, tempfile::TempDir) {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), INDEX).unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(web.path().join("assets/app-1234.js"), "console.log('app');").unwrap();
    let app = TestApp::start_with(Options {
        worker: false,
        web_dir: Some(web.path().to_path_buf()),
        ..Options::new(Kind::Embedded)
    })
    .await;
    (app, web)
}

async fn get_text(app: &TestApp, path: &str) -> (u16, String, String) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn the_root_serves_index_html_and_assets_from_the_web_dir() {
    let (app, _web) = app_with_web_dir().await;
    let (status, content_type, body) = get_text(&app, "/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(body, INDEX);

    let response = app
        .http
        .get(app.url("/assets/app-1234.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(response.text().await.unwrap(), "console.log('app');");
    app.stop().await;
}

#[tokio::test]
async fn a_deep_link_falls_back_to_index_html() {
    let (app, _web) = app_with_web_dir().await;
    for path in ["/jobs/123", "/models/malaria", "/batches/019ab3c2/x?y=1"] {
        let (status, content_type, body) = get_text(&app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        assert_eq!(body, INDEX, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn api_paths_keep_their_json_404() {
    let (app, _web) = app_with_web_dir().await;
    for path in ["/v1/nope", "/v1", "/openapi.json/x", "/docs/nope"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    // The API itself is unchanged.
    let (status, body) = app.get("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn without_a_build_the_root_says_how_to_build_the_app() {
    let app = TestApp::start_with(Options {
        worker: false,
        ..Options::new(Kind::Embedded)
    })
    .await;
    for path in ["/", "/jobs/123"] {
        let (status, content_type, body) = get_text(&app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(body.contains("web app is not built"), "{body}");
        assert!(body.contains("npm run build"), "{body}");
    }
    let (status, body) = app.get("/v1/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}
