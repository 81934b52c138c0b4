//! Webhooks end to end: endpoints registered through the API, deliveries to a real HTTP
//! receiver, signatures checked the way a receiver would (an implementation of the Standard
//! Webhooks specification written here, not the service's signer), retries, restarts, 410 and
//! refused private targets.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use medinform_core::db::{Claim, NewJob, Replay};
use medinform_core::job::{ClassProbability, JobId, ScreeningResult};
use medinform_core::tenant::TenantId;
use medinform_core::webhooks::{DeliveryId, EndpointId};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Kind, Options, Received, Receiver, TestApp, cell_images, test_webhooks};

/// How far a receiver lets `webhook-timestamp` be from its clock (the specification's advice).
const TOLERANCE_SECS: i64 = 300;

/// A receiver's check: the timestamp is recent and one of the `v1,` signatures is the
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` with the key in `secret`.
pub(crate) fn verifies(secret: &str, request: &Received) -> bool {
    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    let sent: i64 = timestamp.parse().unwrap();
    if (chrono::Utc::now().timestamp() - sent).abs() > TOLERANCE_SECS {
        return false;
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    request
        .header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|signature| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
            mac.verify_slice(&signature).is_ok()
        })
}

async fn start(kind: Kind, worker: bool) -> TestApp {
    TestApp::start_with(Options {
        worker,
        webhooks: Some(test_webhooks()),
        ..Options::new(kind)
    })
    .await
}

/// Registers an endpoint for `events`; returns its id and secret.
async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (status, body) = app
        .send_json(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url, "event_types": events, "description": "lab system"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// Records a job and finishes it through the store, as a worker would (`succeeded` unless
/// `fail`), without running a model.
async fn finished_job(app: &TestApp, webhook_url: Option<&str>, fail: bool) -> JobId {
    let jobs = &app.backends.jobs;
    let job = jobs
        .insert(&NewJob {
            id: JobId::new(),
            tenant_id: TenantId::LOCAL,
            batch_id: None,
            model: "malaria".into(),
            model_version: "1.0.0".into(),
            image_key: "images/none".into(),
            image_sha256: "0".repeat(64),
            image_content_type: "image/png".into(),
            image_bytes: 1,
            client_reference: Some("slide-1".into()),
            site: None,
            tags: Vec::new(),
            deadline: None,
            webhook_url: webhook_url.map(str::to_owned),
            priority: Default::default(),
            submission_key: None,
            dicom: None,
        })
        .await
        .unwrap();
    let Claim::Claimed(claimed) = jobs
        .claim(job.id, Duration::from_secs(60), false)
        .await
        .unwrap()
    else {
        panic!("cannot claim the job");
    };
    let done = if fail {
        let failure = medinform_core::job::JobFailure {
            code: medinform_core::job::FailureCode::CorruptImage,
            message: "truncated".into(),
        };
        jobs.fail(job.id, claimed.attempts, &failure).await.unwrap()
    } else {
        let result = ScreeningResult {
            label: "Parasitized".into(),
            probabilities: vec![ClassProbability {
                label: "Parasitized".into(),
                probability: 0.9,
            }],
            finding: "Parasitized".into(),
            finding_probability: 0.9,
            threshold: 0.5,
            positive: true,
            stage: None,
            heatmap: None,
        };
        jobs.succeed(job.id, claimed.attempts, &result)
            .await
            .unwrap()
    };
    assert!(done);
    job.id
}

/// The endpoint's deliveries (newest first).
async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/v1/webhooks/{endpoint}/deliveries"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

/// Waits until the delivery's status is `status`; returns its detail with attempts.
async fn wait_delivery(app: &TestApp, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = app.get(&format!("/v1/webhook-deliveries/{id}")).await;
        assert_eq!(code, 200, "{body}");
        if body["status"] == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_backends!(a_screened_job_is_delivered_once_and_signed_as_the_specification_says);
async fn a_screened_job_is_delivered_once_and_signed_as_the_specification_says(kind: Kind) {
    let app = start(kind, true).await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = register(&app, &receiver.url, &["job.succeeded"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let (name, bytes) = cell_images().remove(0);
    let (status, accepted) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{accepted}");
    let job = app.wait_finished(accepted["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let got = receiver.wait_for(1).await;
    let request = &got[0];
    assert!(verifies(&secret, request), "signature does not verify");
    assert!(!verifies(
        &format!("whsec_{}", STANDARD.encode([7u8; 32])),
        request
    ));
    assert!(request.header("webhook-id").starts_with("msg_"));
    assert_eq!(request.header("content-type"), "application/json");
    let payload = request.json();
    assert_eq!(payload["type"], "job.succeeded");
    assert!(payload["timestamp"].is_string(), "{payload}");
    // `data` is the job exactly as `GET /v1/jobs/{id}` shows it.
    assert_eq!(payload["data"], job);

    // Once: no second delivery follows.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 1);
    let listed = deliveries(&app, &endpoint).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], request.header("webhook-id"));
    let detail = wait_delivery(&app, listed[0]["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(detail["job_id"], job["id"]);
    assert_eq!(detail["payload"], payload);
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{detail}");
    assert_eq!(attempts[0]["response_status"], 200);
    assert_eq!(attempts[0]["response_excerpt"], "ok");
    assert!(attempts[0]["latency_ms"].as_i64().unwrap() >= 0);
    app.stop().await;
}

crate::on_both_backends!(a_completed_batch_is_announced_once_with_its_findings);
async fn a_completed_batch_is_announced_once_with_its_findings(kind: Kind) {
    let app = start(kind, true).await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(&app, &receiver.url, &["batch.completed"]).await;
    let mut form = reqwest::multipart::Form::new()
        .text("model", "malaria")
        .text("site", "Camp 7");
    let images = cell_images();
    for (name, bytes) in images.iter().take(3) {
        form = form.part(
            "image",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()),
        );
    }
    let (status, batch) = app.post_form_to("/v1/batches", form).await;
    assert_eq!(status, 202, "{batch}");
    for job in batch["jobs"].as_array().unwrap() {
        app.wait_finished(job["id"].as_str().unwrap()).await;
    }
    let got = receiver.wait_for(1).await;
    assert!(verifies(&secret, &got[0]), "signature does not verify");
    let payload = got[0].json();
    assert_eq!(payload["type"], "batch.completed");
    let data = &payload["data"];
    assert_eq!(data["id"], batch["id"]);
    assert_eq!(data["counts"]["total"], 3);
    assert_eq!(data["counts"]["succeeded"], 3);
    assert_eq!(data["findings"]["finding"], "Parasitized");
    assert!(data["completed_at"].is_string(), "{data}");
    // The batch as the API shows it now is what was announced.
    let (_, now) = app
        .get(&format!("/v1/batches/{}", batch["id"].as_str().unwrap()))
        .await;
    assert_eq!(now["counts"], data["counts"]);
    assert_eq!(now["completed_at"], data["completed_at"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1, "announced more than once");

    // More images reopen it; when they are done it is announced again.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(images[3].1.clone()).file_name("late.png"),
    );
    let (status, added) = app
        .post_form_to(
            &format!("/v1/batches/{}/jobs", batch["id"].as_str().unwrap()),
            form,
        )
        .await;
    assert_eq!(status, 202, "{added}");
    app.wait_finished(added["jobs"][0]["id"].as_str().unwrap())
        .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["data"]["counts"]["total"], 4);
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    app.stop().await;
}

crate::on_both_backends!(a_batch_is_not_announced_while_its_images_are_still_being_sent);
async fn a_batch_is_not_announced_while_its_images_are_still_being_sent(kind: Kind) {
    let app = start(kind, true).await;
    let receiver = Receiver::start().await;
    register(&app, &receiver.url, &["batch.completed"]).await;
    let (mut stream, rest) = half_sent_batch(&app).await;
    let batch = first_image_screened(&app).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    // Several of the dispatcher's rounds (every 50 ms) pass: the batch stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, open) = app.get(&path).await;
    assert!(
        open["completed_at"].is_null(),
        "completed half sent: {open}"
    );
    assert!(receiver.received().is_empty(), "announced half sent");

    stream.write_all(&rest).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let (_, submitted) = response.split_once("\r\n\r\n").unwrap();
    let submitted: Value = serde_json::from_str(submitted).unwrap();
    for job in submitted["jobs"].as_array().unwrap() {
        app.wait_finished(job["id"].as_str().unwrap()).await;
    }
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["counts"]["total"], 2);
    assert_eq!(got[0].json()["data"]["id"], batch["id"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1, "announced more than once");
    app.stop().await;
}

crate::on_both_backends!(a_batch_whose_upload_broke_off_completes_with_the_images_it_took);
async fn a_batch_whose_upload_broke_off_completes_with_the_images_it_took(kind: Kind) {
    let app = start(kind, true).await;
    let receiver = Receiver::start().await;
    register(&app, &receiver.url, &["batch.completed"]).await;
    let (stream, _) = half_sent_batch(&app).await;
    let batch = first_image_screened(&app).await;
    // The client goes away in the middle of the second image: the request ends, and so does
    // its hold on the batch, well before the hold's lease (10 s here) would lapse.
    let gone = std::time::Instant::now();
    drop(stream);
    let got = receiver.wait_for(1).await;
    assert!(
        gone.elapsed() < Duration::from_secs(5),
        "{:?}",
        gone.elapsed()
    );
    let data = &got[0].json()["data"];
    assert_eq!(data["id"], batch["id"]);
    assert_eq!(data["counts"]["total"], 1);
    assert_eq!(data["counts"]["succeeded"], 1);
    app.stop().await;
}

/// Starts `POST /v1/batches` with the batch's fields and two cell images, written up to the
/// middle of the second image (the first one's part is then whole); returns the connection and
/// the rest of the request.
async fn half_sent_batch(app: &TestApp) -> (TcpStream, Vec<u8>) {
    let images = cell_images();
    let boundary = "medinform-test-boundary";
    let part = |name: &str, file_name: Option<&str>, content: &[u8]| {
        let file_name = file_name
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        let mut part = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file_name}\r\n\r\n"
        )
        .into_bytes();
        part.extend_from_slice(content);
        part.extend_from_slice(b"\r\n");
        part
    };
    let body = [
        part("model", None, b"malaria"),
        part("image", Some(&images[0].0), &images[0].1),
        part("image", Some(&images[1].0), &images[1].1),
        format!("--{boundary}--\r\n").into_bytes(),
    ]
    .concat();
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: medinform\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (sent, rest) = body.split_at(body.len() - images[1].1.len() / 2);
    stream.write_all(sent).await.unwrap();
    (stream, rest.to_vec())
}

/// The newest batch, once its first image is screened.
async fn first_image_screened(app: &TestApp) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = app.get("/v1/batches").await;
        if let Some(batch) = page["batches"].get(0)
            && batch["counts"]["succeeded"] == 1
        {
            return batch.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first image was not screened: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_backends!(a_failed_attempt_is_retried_with_the_same_id_and_retry_after_is_honoured);
async fn a_failed_attempt_is_retried_with_the_same_id_and_retry_after_is_honoured(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = register(&app, &receiver.url, &["job.failed"]).await;
    receiver.answer(500, "boom");
    receiver.answer_with(503, vec![("retry-after", "3".into())], "busy");
    let job = finished_job(&app, None, true).await;

    let got = receiver.wait_for(3).await;
    let id = got[0].header("webhook-id");
    assert!(got.iter().all(|r| r.header("webhook-id") == id));
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert!(got.iter().all(|r| verifies(&secret, r)));
    // The schedule says ~1 s; the receiver asked for 3.
    let waited = got[2].at - got[1].at;
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
    assert_eq!(got[0].json()["data"]["id"], job.to_string());
    assert_eq!(got[0].json()["type"], "job.failed");

    let detail = wait_delivery(&app, id, "succeeded").await;
    let attempts = detail["attempts"].as_array().unwrap();
    let statuses: Vec<_> = attempts
        .iter()
        .map(|a| a["response_status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(500), json!(503), json!(200)],
        "{detail}"
    );
    assert_eq!(attempts[0]["response_excerpt"], "boom");
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(deliveries(&app, &endpoint).await[0]["attempt_count"], 3);
    app.stop().await;
}

crate::on_both_backends!(a_410_disables_the_endpoint_and_a_replay_delivers_after_re_enabling);
async fn a_410_disables_the_endpoint_and_a_replay_delivers_after_re_enabling(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &receiver.url, &["job.succeeded"]).await;
    receiver.answer(410, "gone");
    finished_job(&app, None, false).await;
    let first = receiver.wait_for(1).await[0]
        .header("webhook-id")
        .to_owned();
    let failed = wait_delivery(&app, &first, "failed").await;
    assert_eq!(failed["attempt_count"], 1);

    let (_, shown) = app.get(&format!("/v1/webhooks/{endpoint}")).await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(
        shown["disabled_reason"].as_str().unwrap().contains("410"),
        "{shown}"
    );
    // A disabled endpoint gets nothing more.
    finished_job(&app, None, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries(&app, &endpoint).await.len(), 1);

    // Replaying a pending or succeeded delivery is refused; a failed one is sent again.
    let (status, body) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/webhooks/{endpoint}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("disabled_reason").is_none(), "{body}");
    let (status, body) = app
        .send_json(
            Method::POST,
            &format!("/v1/webhook-deliveries/{first}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let again = receiver.wait_for(2).await;
    assert_eq!(again[1].header("webhook-id"), first);
    assert_eq!(again[1].body, again[0].body);
    wait_delivery(&app, &first, "succeeded").await;
    let (status, body) = app
        .send_json(
            Method::POST,
            &format!("/v1/webhook-deliveries/{first}/replay"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("delivery_not_replayable"))
    );
    app.stop().await;
}

crate::on_both_backends!(a_delivery_due_when_the_service_stopped_is_sent_after_it_restarts);
async fn a_delivery_due_when_the_service_stopped_is_sent_after_it_restarts(kind: Kind) {
    let webhooks = medinform_core::config::WebhooksConfig {
        retry_schedule_secs: vec![2, 1],
        ..test_webhooks()
    };
    let restarted_kind = match &kind {
        Kind::Embedded => Kind::Embedded,
        Kind::Distributed => Kind::Distributed,
    };
    let app = TestApp::start_with(Options {
        worker: false,
        webhooks: Some(webhooks.clone()),
        ..Options::new(kind)
    })
    .await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = register(&app, &receiver.url, &["job.succeeded"]).await;
    receiver.answer(500, "down for maintenance");
    finished_job(&app, None, false).await;
    let id = receiver.wait_for(1).await[0]
        .header("webhook-id")
        .to_owned();
    // Stopped after the failed first attempt was recorded, before the retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while deliveries(&app, &endpoint).await[0]["attempt_count"] != 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = app.stop_keeping_data().await;
    assert_eq!(receiver.received().len(), 1);

    let app = TestApp::start_with(Options {
        worker: false,
        webhooks: Some(webhooks),
        data: Some(data),
        ..Options::new(restarted_kind)
    })
    .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].header("webhook-id"), id);
    assert!(verifies(&secret, &got[1]));
    let detail = wait_delivery(&app, &id, "succeeded").await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 2, "{detail}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2);
    app.stop().await;
}

crate::on_both_backends!(a_rotated_secret_signs_alongside_the_old_one);
async fn a_rotated_secret_signs_alongside_the_old_one(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (endpoint, old) = register(&app, &receiver.url, &["job.succeeded"]).await;
    let (status, rotated) = app
        .send_json(
            Method::POST,
            &format!("/v1/webhooks/{endpoint}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    finished_job(&app, None, false).await;
    let request = receiver.wait_for(1).await.remove(0);
    let signatures: Vec<&str> = request.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(verifies(&new, &request) && verifies(&old, &request));
    // Each signature is its own secret's: the first the new one's, the second the old one's.
    for (secret, signature) in [(&new, signatures[0]), (&old, signatures[1])] {
        let alone = Received {
            headers: {
                let mut h = request.headers.clone();
                h.insert("webhook-signature", signature.parse().unwrap());
                h
            },
            ..request.clone()
        };
        assert!(verifies(secret, &alone));
        assert!(!verifies(if secret == &new { &old } else { &new }, &alone));
    }
    // Secrets are shown on creation and rotation only.
    let (_, listed) = app.get("/v1/webhooks").await;
    let (_, shown) = app.get(&format!("/v1/webhooks/{endpoint}")).await;
    for text in [listed.to_string(), shown.to_string()] {
        assert!(!text.contains("whsec_"), "{text}");
    }
    app.stop().await;
}

crate::on_both_backends!(a_jobs_own_webhook_url_is_signed_with_the_tenant_signing_secret);
async fn a_jobs_own_webhook_url_is_signed_with_the_tenant_signing_secret(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (status, body) = app
        .send_json(Method::POST, "/v1/webhooks/signing-secret", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let job = finished_job(&app, Some(&receiver.url), false).await;
    let request = receiver.wait_for(1).await.remove(0);
    assert!(verifies(&secret, &request));
    assert_eq!(request.json()["data"]["id"], job.to_string());
    app.stop().await;
}

crate::on_both_backends!(endpoints_are_managed_through_the_api);
async fn endpoints_are_managed_through_the_api(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &receiver.url, &["job.succeeded", "job.succeeded"]).await;
    let (_, shown) = app.get(&format!("/v1/webhooks/{endpoint}")).await;
    assert_eq!(shown["event_types"], json!(["job.succeeded"]));
    assert_eq!(shown["description"], "lab system");
    assert_eq!(shown["enabled"], true);

    for (body, code) in [
        (
            json!({"url": receiver.url, "event_types": []}),
            "invalid_field",
        ),
        (
            json!({"url": receiver.url, "event_types": ["job.exploded"]}),
            "invalid_json",
        ),
        (
            json!({"url": "ftp://example.org/", "event_types": ["job.failed"]}),
            "webhook_url_not_allowed",
        ),
        (json!({"event_types": ["job.failed"]}), "invalid_json"),
    ] {
        let (_, answer) = app
            .send_json(Method::POST, "/v1/webhooks", Some(body))
            .await;
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    let (status, body) = app.get("/v1/webhooks/not-a-uuid").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_id"))
    );
    let missing = EndpointId::new();
    let (status, body) = app.get(&format!("/v1/webhooks/{missing}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("webhook_not_found"))
    );
    let (status, body) = app
        .get(&format!("/v1/webhook-deliveries/{}", DeliveryId::new()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("delivery_not_found"))
    );

    let (status, body) = app
        .send_json(
            Method::PATCH,
            &format!("/v1/webhooks/{endpoint}"),
            Some(json!({"event_types": ["job.failed", "job.canceled"], "description": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_types"], json!(["job.failed", "job.canceled"]));
    assert!(body.get("description").is_none(), "{body}");

    // Pages of deliveries, newest first.
    for _ in 0..3 {
        finished_job(&app, None, true).await;
    }
    receiver.wait_for(3).await;
    let (_, first) = app
        .get(&format!("/v1/webhooks/{endpoint}/deliveries?limit=2"))
        .await;
    let page: Vec<&str> = first["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(page.len(), 2);
    assert!(page[0] > page[1]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!(
            "/v1/webhooks/{endpoint}/deliveries?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        second["deliveries"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    assert!(second["deliveries"][0]["id"].as_str().unwrap() < page[1]);
    assert_eq!(second["next_cursor"], Value::Null);
    let (status, body) = app
        .get(&format!("/v1/webhooks/{endpoint}/deliveries?cursor=nope"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_cursor"))
    );

    let (status, _) = app
        .send_json(Method::DELETE, &format!("/v1/webhooks/{endpoint}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&format!("/v1/webhooks/{endpoint}")).await;
    assert_eq!(status, 404);
    let (_, listed) = app.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"], json!([]));
    app.stop().await;
}

crate::on_both_backends!(another_tenants_endpoints_and_deliveries_are_not_found);
async fn another_tenants_endpoints_and_deliveries_are_not_found(kind: Kind) {
    let app = start(kind, false).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &receiver.url, &["job.succeeded"]).await;
    finished_job(&app, None, false).await;
    let delivery: DeliveryId = receiver.wait_for(1).await[0]
        .header("webhook-id")
        .parse()
        .unwrap();
    let endpoint: EndpointId = endpoint.parse().unwrap();
    let store = &app.backends.webhooks;
    let other = TenantId::new();
    assert!(
        store
            .find_endpoint(other, endpoint)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_endpoints(other).await.unwrap().is_empty());
    let update = medinform_core::db::EndpointUpdate {
        enabled: Some(false),
        ..Default::default()
    };
    assert!(
        store
            .update_endpoint(other, endpoint, &update)
            .await
            .unwrap()
            .is_none()
    );
    let secret = medinform_core::webhooks::Secret::generate();
    let rotated = store
        .rotate_endpoint_secret(other, endpoint, &secret, chrono::Utc::now())
        .await
        .unwrap();
    assert!(rotated.is_none());
    assert!(!store.delete_endpoint(other, endpoint).await.unwrap());
    assert!(
        store
            .find_delivery(other, &delivery)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_deliveries(other, endpoint, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.replay_delivery(other, &delivery).await.unwrap(),
        Replay::NotFound
    ));
    // The owner still sees everything, unchanged.
    let own = store
        .find_endpoint(TenantId::LOCAL, endpoint)
        .await
        .unwrap()
        .unwrap();
    assert!(own.enabled);
    assert!(
        store
            .find_delivery(TenantId::LOCAL, &delivery)
            .await
            .unwrap()
            .is_some()
    );
    app.stop().await;
}

/// With the default configuration, private targets are refused at registration; endpoints
/// registered while they were allowed are refused when sent to (IP literal and name alike).
#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let lab = TestApp::start_with(Options {
        worker: false,
        webhooks: None,
        ..Options::new(Kind::Embedded)
    })
    .await;
    let receiver = Receiver::start().await;
    let by_name = format!("http://localhost:{}/hook", receiver.port);
    for url in [
        receiver.url.clone(),
        "http://10.0.0.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        by_name.clone(),
        "http://[::1]/".into(),
    ] {
        let (status, body) = lab
            .send_json(
                Method::POST,
                "/v1/webhooks",
                Some(json!({"url": url, "event_types": ["job.succeeded"]})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "webhook_url_not_allowed", "{body}");
        // A job's own webhook_url is held to the same rule, and nothing is stored.
        let (name, bytes) = cell_images().remove(0);
        let form = reqwest::multipart::Form::new()
            .text("model", "malaria")
            .text("webhook_url", url.clone())
            .part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            );
        let (status, body) = lab.post_form(form).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "webhook_url_not_allowed", "{body}");
    }
    let (_, page) = lab.get("/v1/jobs").await;
    assert!(page["jobs"].as_array().unwrap().is_empty(), "{page}");
    let data = lab.stop_keeping_data().await;

    // A configuration that allowed them registers two; the next start no longer allows them.
    let permissive = start_on(Some(data), test_webhooks(), false).await;
    let (literal, _) = register(&permissive, &receiver.url, &["job.succeeded"]).await;
    let (named, _) = register(&permissive, &by_name, &["job.succeeded"]).await;
    let data = permissive.stop_keeping_data().await;
    let strict = medinform_core::config::WebhooksConfig {
        allow_private_targets: false,
        retry_schedule_secs: Vec::new(),
        ..test_webhooks()
    };
    let app = start_on(Some(data), strict, false).await;
    finished_job(&app, None, false).await;
    for endpoint in [literal, named] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let delivery = loop {
            let listed = deliveries(&app, &endpoint).await;
            if listed.first().is_some_and(|d| d["status"] == "failed") {
                break listed[0]["id"].as_str().unwrap().to_owned();
            }
            assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, detail) = app.get(&format!("/v1/webhook-deliveries/{delivery}")).await;
        let attempts = detail["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{detail}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(error.contains("allow_private_targets"), "{error}");
        assert!(
            attempts[0]
                .get("response_status")
                .is_none_or(Value::is_null),
            "{detail}"
        );
    }
    assert!(receiver.received().is_empty());
    app.stop().await;
}

/// An embedded app on `data` (a fresh one when `None`) with these webhook settings.
async fn start_on(
    data: Option<crate::support::AppData>,
    webhooks: medinform_core::config::WebhooksConfig,
    worker: bool,
) -> TestApp {
    TestApp::start_with(Options {
        worker,
        webhooks: Some(webhooks),
        data,
        ..Options::new(Kind::Embedded)
    })
    .await
}
