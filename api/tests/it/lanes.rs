//! Lanes: a clinic's single upload, and a small tenant's batch, go ahead of a drive's backlog.

use std::time::Duration;

use medinform_core::tenant::Scope;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::support::{Kind, Options, TestApp, cell_images, send};

/// Images of the drive's batch: several hundred, so that most are still queued when the
/// others are done.
const DRIVE: usize = 400;
const CLINIC: usize = 5;

fn batch_form(bytes: &[u8], prefix: &str, n: usize) -> Form {
    (0..n).fold(Form::new().text("model", "malaria"), |form, i| {
        form.part(
            "image",
            Part::bytes(bytes.to_vec()).file_name(format!("{prefix}-{i}.png")),
        )
    })
}

/// Polls `path` with `key` until `done` says so (60 s at most), and answers the last body.
async fn wait_for(app: &TestApp, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = app.get_as(key, path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} not done: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn queued(app: &TestApp, key: &str, batch: &str) -> i64 {
    let (status, body) = app.get_as(key, &format!("/v1/batches/{batch}")).await;
    assert_eq!(status, 200, "{body}");
    body["counts"]["queued"].as_i64().unwrap()
}

#[tokio::test]
async fn an_upload_and_a_small_tenants_batch_overtake_a_drives_backlog() {
    // One process accepts everything while no worker runs, so that it all waits in RabbitMQ;
    // then a worker process starts on the same deployment.
    let accepting = || Options {
        require_keys: true,
        worker: false,
        ..Options::new(Kind::Distributed)
    };
    let api = TestApp::start_with(accepting()).await;
    let drive = api
        .create_key("national-drive", &[Scope::Submit, Scope::Read])
        .await;
    let clinic = api
        .create_key("district-clinic", &[Scope::Submit, Scope::Read])
        .await;
    let (_, bytes) = cell_images().remove(0);

    let post = |key: &str, form: Form| {
        send(
            api.request_as(key, Method::POST, "/v1/batches")
                .multipart(form),
        )
    };
    let (status, drive_batch) = post(&drive, batch_form(&bytes, "drive", DRIVE)).await;
    assert_eq!(status, 202, "{drive_batch}");
    assert_eq!(drive_batch["jobs"].as_array().unwrap().len(), DRIVE);
    assert_eq!(drive_batch["jobs"][0]["priority"], "bulk");
    let (status, clinic_batch) = post(&clinic, batch_form(&bytes, "clinic", CLINIC)).await;
    assert_eq!(status, 202, "{clinic_batch}");
    let (status, walk_in) = api
        .submit_as(&clinic, "malaria", "walk-in.png", bytes.clone())
        .await;
    assert_eq!(status, 202, "{walk_in}");
    assert_eq!(walk_in["priority"], "interactive");
    let drive_batch = drive_batch["id"].as_str().unwrap().to_owned();
    let clinic_batch = clinic_batch["id"].as_str().unwrap().to_owned();
    assert_eq!(queued(&api, &drive, &drive_batch).await, DRIVE as i64);

    let worker = TestApp::start_with(Options {
        data: Some(api.another_process()),
        worker: true,
        ..accepting()
    })
    .await;
    // The walk-in upload came last, and is done while the drive has hardly begun.
    let path = format!("/v1/jobs/{}", walk_in["id"].as_str().unwrap());
    let job = wait_for(&api, &clinic, &path, |job| {
        job["status"] != "queued" && job["status"] != "processing"
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let waiting = queued(&api, &drive, &drive_batch).await;
    assert!(
        waiting >= (DRIVE - 100) as i64,
        "the walk-in upload waited for {} of the drive's images",
        DRIVE as i64 - waiting
    );
    // The clinic's batch ranks with the drive's first hundred images (a tenant with a short
    // backlog), ahead of the rest of the drive.
    let path = format!("/v1/batches/{clinic_batch}");
    wait_for(&api, &clinic, &path, |batch| {
        batch["counts"]["succeeded"] == CLINIC as i64
    })
    .await;
    let waiting = queued(&api, &drive, &drive_batch).await;
    assert!(
        waiting >= (DRIVE - 200) as i64,
        "the clinic's batch waited for {} of the drive's images",
        DRIVE as i64 - waiting
    );
    worker.stop().await;
    api.stop().await;
}
