//! What a health worker is shown beside a result: the model's stage, its figures, and the
//! heatmap of where the network looked.

use medinform_core::registry::Stage;

use crate::on_both_backends;
use crate::support::{
    Kind, Options, TestApp, add_malaria_copy, cell_images, send, test_registry_dir,
};

/// A GET whose body is not JSON: status, content type and bytes.
async fn fetch(app: &TestApp, path: &str) -> (u16, String, Vec<u8>) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test]
async fn models_show_their_stage_heatmap_and_figures() {
    let app = TestApp::start(Kind::Embedded).await;
    let manifest = app
        .registry
        .get("malaria")
        .unwrap()
        .manifest()
        .unwrap()
        .clone();
    let (status, malaria) = app.get("/v1/models/malaria").await;
    assert_eq!(status, 200);
    assert_eq!(malaria["stage"], manifest.stage.as_str());
    assert_eq!(malaria["heatmap"], true, "the shipped models export a map");
    assert_eq!(
        malaria["minimum"],
        serde_json::to_value(manifest.minimum.as_ref().unwrap()).unwrap()
    );
    let figures = malaria["figures"].as_array().unwrap();
    assert!(figures.len() >= 3, "{malaria}");
    for figure in figures {
        assert!(!figure["title"].as_str().unwrap().is_empty());
        let url = figure["url"].as_str().unwrap();
        let (status, content_type, png) = fetch(&app, url).await;
        assert_eq!((status, content_type.as_str()), (200, "image/png"), "{url}");
        let picture = image::load_from_memory(&png).unwrap();
        assert!(picture.width() > 100 && picture.height() > 100, "{url}");
        assert!(png.len() < 200_000, "{url}: {} bytes", png.len());
    }
    // The list shows the same as the detail.
    let (_, list) = app.get("/v1/models").await;
    assert_eq!(list["models"][0]["figures"], malaria["figures"]);

    // Only declared figures are served, and a name is never a path.
    for name in [
        "nope.png",
        "manifest.toml",
        "..%2Fmanifest.toml",
        "model.onnx",
    ] {
        let (status, body) = app.get(&format!("/v1/models/malaria/figures/{name}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("figure_not_found")),
            "{name}"
        );
    }
    let (status, body) = app.get("/v1/models/nope/figures/roc.png").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    app.stop().await;
}

async fn a_result_carries_its_stage_and_heatmap(kind: Kind) {
    let app = TestApp::start(kind).await;
    let (name, bytes) = cell_images().remove(0);
    let size = image::load_from_memory(&bytes).unwrap();
    let (status, job) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = app.wait_finished(id).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let stage = app.registry.get("malaria").unwrap().stage();
    let result = &job["result"];
    assert_eq!(result["stage"], stage.as_str());
    let map = &result["heatmap"];
    let (w, h) = (
        map["width"].as_u64().unwrap(),
        map["height"].as_u64().unwrap(),
    );
    assert!(w > 1 && h > 1, "{map}");
    assert_eq!(map["values"].as_array().unwrap().len() as u64, w * h);
    let link = format!("/v1/jobs/{id}/heatmap.png");
    assert_eq!(job["links"]["heatmap"], link.as_str());

    // At the image's size: the overlay in RGB, the map alone with an alpha channel.
    let (status, content_type, png) = fetch(&app, &link).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let overlay = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (overlay.width(), overlay.height()),
        (size.width(), size.height())
    );
    assert_eq!(overlay.color(), image::ColorType::Rgb8);
    let (status, _, png) = fetch(&app, &format!("{link}?overlay=false")).await;
    assert_eq!(status, 200);
    let alone = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (alone.width(), alone.height()),
        (size.width(), size.height())
    );
    assert_eq!(alone.color(), image::ColorType::Rgba8);

    let (status, body) = app.get(&format!("{link}?overlay=maybe")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, body) = app
        .get("/v1/jobs/0190a0c4-0000-7000-8000-000000000000/heatmap.png")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    app.stop().await;
}

on_both_backends!(a_result_carries_its_stage_and_heatmap);

#[tokio::test]
async fn a_job_without_a_result_has_no_heatmap() {
    let app = TestApp::start_with(Options {
        worker: false,
        ..Options::new(Kind::Embedded)
    })
    .await;
    let (name, bytes) = cell_images().remove(0);
    let (_, job) = app.submit("malaria", &name, bytes).await;
    let id = job["id"].as_str().unwrap();
    assert!(job["links"].get("heatmap").is_none(), "{job}");
    let (status, body) = app.get(&format!("/v1/jobs/{id}/heatmap.png")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("heatmap_unavailable")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_site_that_refuses_research_models_gets_422_for_them_only() {
    for allow_research in [false, true] {
        let registry = test_registry_dir();
        add_malaria_copy(registry.path(), "cells_research", Stage::Research);
        add_malaria_copy(registry.path(), "cells_screening", Stage::Screening);
        let app = TestApp::start_with(Options {
            allow_research,
            registry_dir: Some(registry),
            ..Options::new(Kind::Embedded)
        })
        .await;
        let (_, models) = app.get("/v1/models").await;
        let stage_of = |id: &str| {
            models["models"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == id)
                .map(|m| m["stage"].clone())
                .unwrap()
        };
        assert_eq!(stage_of("cells_research"), "research");
        assert_eq!(stage_of("cells_screening"), "screening");

        let (name, bytes) = cell_images().remove(0);
        let (status, body) = app.submit("cells_research", &name, bytes.clone()).await;
        if allow_research {
            assert_eq!(status, 202, "{body}");
            let job = app.wait_finished(body["id"].as_str().unwrap()).await;
            assert_eq!(job["result"]["stage"], "research", "{job}");
        } else {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (422, Some("model_research_only")),
                "{body}"
            );
            // A batch for it is refused the same way.
            let (status, body) = app
                .post_json(
                    "/v1/batches",
                    &serde_json::json!({"model": "cells_research"}),
                    None,
                )
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (422, Some("model_research_only"))
            );
        }
        let (status, body) = app.submit("cells_screening", &name, bytes).await;
        assert_eq!(status, 202, "{body}");
        let job = app.wait_finished(body["id"].as_str().unwrap()).await;
        assert_eq!(job["result"]["stage"], "screening", "{job}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_registry_refuses_a_screening_stage_its_figures_do_not_support() {
    let registry = test_registry_dir();
    add_malaria_copy(registry.path(), "overclaimed", Stage::Screening);
    let path = registry.path().join("overclaimed/manifest.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest["minimum"]
        .as_table_mut()
        .unwrap()
        .insert("accuracy".into(), 0.9999.into());
    std::fs::write(&path, toml::to_string(&manifest).unwrap()).unwrap();
    let app = TestApp::start_with(Options {
        registry_dir: Some(registry),
        ..Options::new(Kind::Embedded)
    })
    .await;
    let (_, model) = app.get("/v1/models/overclaimed").await;
    assert_eq!(model["status"], "unavailable");
    let reason = model["reason"].as_str().unwrap();
    assert!(
        reason.contains("stage") && reason.contains("minimum"),
        "{reason}"
    );
    let (status, body) = send(app.http.get(app.url("/v1/models/malaria"))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    app.stop().await;
}
