//! The job path end to end: upload → storage → queue → worker → store → `GET /v1/jobs/{id}`.

use medinform_core::imaging::ImageLimits;
use medinform_core::screening;
use medinform_core::storage::{image_key, sha256_hex};
use serde_json::Value;

use crate::support::{Kind, Options, TestApp, cell_images, published_job};

async fn upload_is_screened_like_the_model_screens_it(kind: Kind) {
    let app = TestApp::start(kind).await;
    let (name, bytes) = cell_images().remove(0);

    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .multipart(
            reqwest::multipart::Form::new()
                .text("model", "malaria")
                .text("client_reference", "camp-7/slide-12")
                .part(
                    "image",
                    reqwest::multipart::Part::bytes(bytes.clone()).file_name(name),
                ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{accepted}");
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["model"], "malaria");
    assert_eq!(accepted["client_reference"], "camp-7/slide-12");
    assert_eq!(accepted["links"]["self"], location);

    let job = app.wait_finished(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let model = app.registry.get("malaria").unwrap();
    assert_eq!(job["model_version"], model.version().unwrap());
    for stamp in ["created_at", "started_at", "finished_at"] {
        assert!(job[stamp].is_string(), "{stamp} missing: {job}");
    }
    assert!(job.get("error").is_none(), "{job}");

    // The same bytes through the model directly give the same answer.
    let direct = screening::screen(&model, &[&bytes], &ImageLimits::default())
        .remove(0)
        .unwrap();
    let result = &job["result"];
    assert_eq!(result["label"], direct.label.as_str());
    let labels = &model.manifest().unwrap().output.labels;
    let probabilities = result["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), labels.len());
    let mut sum = 0.0;
    for ((p, label), d) in probabilities.iter().zip(labels).zip(&direct.probabilities) {
        assert_eq!(p["label"], label.as_str());
        let value = p["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value));
        assert!(
            (value - d.probability).abs() < 1e-9,
            "{value} vs {}",
            d.probability
        );
        sum += value;
    }
    assert!((sum - 1.0).abs() < 1e-6, "probabilities sum to {sum}");
    assert_eq!(
        result["threshold"].as_f64().unwrap(),
        model.threshold().unwrap()
    );

    // The image is kept under its content address.
    let stored = app
        .backends
        .blobs
        .get(&image_key(&sha256_hex(&bytes)))
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), bytes.as_slice());
    assert!(app.stop().await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn upload_is_screened_like_the_model_screens_it_embedded() {
    upload_is_screened_like_the_model_screens_it(Kind::Embedded).await;
}

#[tokio::test]
async fn upload_is_screened_like_the_model_screens_it_distributed() {
    upload_is_screened_like_the_model_screens_it(Kind::Distributed).await;
}

async fn many_uploads_are_all_screened_once(kind: Kind) {
    let app = TestApp::start(kind).await;
    let images = cell_images();
    let mut ids = Vec::new();
    for round in 0..4 {
        for (name, bytes) in &images {
            let (status, body) = app
                .submit("malaria", &format!("{round}-{name}"), bytes.clone())
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
    }
    for id in &ids {
        let job = app.wait_finished(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    // The same image gives the same label every time.
    let mut labels = std::collections::HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        let label = job["result"]["label"].as_str().unwrap().to_owned();
        let previous = labels.insert(i % images.len(), label.clone());
        assert!(previous.is_none_or(|p| p == label), "{job}");
    }
    app.stop().await;
}

#[tokio::test]
async fn many_uploads_are_all_screened_once_embedded() {
    many_uploads_are_all_screened_once(Kind::Embedded).await;
}

#[tokio::test]
async fn many_uploads_are_all_screened_once_distributed() {
    many_uploads_are_all_screened_once(Kind::Distributed).await;
}

#[tokio::test]
async fn job_lookups_answer_json_errors() {
    let app = TestApp::start(Kind::Embedded).await;
    let (status, body) = app.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_job_id"))
    );
    let (status, body) = app.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let response = app.http.delete(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    app.stop().await;
}

#[tokio::test]
async fn a_job_accepted_while_the_broker_is_down_is_screened_later() {
    let mut options = Options::new(Kind::Distributed);
    options.wrap_queue = Some(Box::new(|inner| {
        std::sync::Arc::new(crate::support::FlakyQueue {
            inner,
            failures: 1.into(),
        })
    }));
    let app = TestApp::start_with(options).await;
    let (name, bytes) = cell_images().remove(1);
    let (status, body) = app.submit("malaria", &name, bytes).await;
    // The row is committed before the publish: the client gets its 202 and the job survives.
    assert_eq!(status, 202, "{body}");
    let job = app.wait_finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    app.stop().await;
}

fn unreadable_storage(max_attempts: i32) -> Options {
    let mut options = Options::new(Kind::Embedded);
    options.jobs.max_attempts = max_attempts;
    options.wrap_blobs = Some(Box::new(|inner| {
        std::sync::Arc::new(crate::support::UnreadableBlobs { inner })
    }));
    options
}

#[tokio::test]
async fn an_upload_to_the_process_that_screens_it_is_not_read_back() {
    // `serve` decodes an upload once: the input made when it was checked goes to the worker,
    // which does not read the image back from storage (here: storage that cannot be read).
    let app = TestApp::start_with(unreadable_storage(1)).await;
    let (name, bytes) = cell_images().remove(2);
    let (status, body) = app.submit("malaria", &name, bytes.clone()).await;
    assert_eq!(status, 202, "{body}");
    let job = app.wait_finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // The same result as the model gives on the file.
    let model = app.registry.get("malaria").unwrap();
    let expected = screening::screen(&model, &[bytes], &ImageLimits::default())
        .pop()
        .unwrap()
        .unwrap();
    let p = job["result"]["probabilities"][1]["probability"]
        .as_f64()
        .unwrap();
    assert_eq!(p, expected.probabilities[1].probability, "{job}");
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_image_cannot_be_read_fails_after_bounded_attempts() {
    let app = TestApp::start_with(unreadable_storage(2)).await;
    // Uploaded through another API process: this worker must read the image from storage.
    let (_, bytes) = cell_images().remove(2);
    let id = published_job(&app, bytes).await;
    let job = app.wait_finished(&id.to_string()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "storage_unavailable", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    let stored = app.backends.jobs.get(id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 2);
    // No endless redelivery: the message ended in the dead-letter queue.
    let dead = app.memory_queue.as_ref().unwrap().dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id(), id);
    app.stop().await;
}
