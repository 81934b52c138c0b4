//! Listing and paging jobs, canceling, deadlines, idempotency keys, client metadata, the job's
//! image, and the OpenAPI document.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use medinform_core::db::Claim;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{DiesBeforeAnswering, Kind, Options, TestApp, cell_images};

on_both_backends!(
    pages_stay_stable_while_jobs_are_added,
    a_queued_job_can_be_canceled_and_is_then_never_run,
    a_job_past_its_deadline_is_not_run,
    a_retried_post_with_the_same_key_gets_the_first_response,
    a_retry_after_a_crash_answers_the_jobs_the_first_attempt_created,
);

fn queued_app_options(kind: Kind) -> Options {
    let mut options = Options::new(kind);
    options.worker = false;
    options
}

/// The ids of every page of `path`, following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str, mut between: impl AsyncFnMut()) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = app.get(&url).await;
        assert_eq!(status, 200, "{page}");
        ids.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        between().await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

async fn pages_stay_stable_while_jobs_are_added(kind: Kind) {
    let app = TestApp::start_with(queued_app_options(kind)).await;
    let (name, bytes) = cell_images().remove(0);
    let mut submitted = Vec::new();
    for i in 0..12 {
        let form = Form::new()
            .text("model", "malaria")
            .text("client_reference", format!("patient-{i}"))
            .text("site", "Ward 4")
            .text("tags", "follow-up,night")
            .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
        let (status, job) = app.post_form(form).await;
        assert_eq!(status, 202, "{job}");
        submitted.push(job["id"].as_str().unwrap().to_owned());
    }
    let (_, job) = app.get(&format!("/v1/jobs/{}", submitted[3])).await;
    assert_eq!(job["client_reference"], "patient-3");
    assert_eq!(job["site"], "Ward 4");
    assert_eq!(job["tags"], json!(["follow-up", "night"]));

    // Jobs added while a client pages through do not shift what it sees.
    let mut added = 0;
    let seen = all_pages(&app, "/v1/jobs?limit=5", async || {
        for _ in 0..3 {
            let (status, _) = app.submit("malaria", "late.png", bytes.clone()).await;
            assert_eq!(status, 202);
            added += 1;
        }
    })
    .await;
    assert!(added >= 9);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a job appeared twice: {seen:?}");
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "pages missed or reordered jobs");

    // Filters.
    let (_, page) = app.get("/v1/jobs?client_reference=patient-7").await;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], submitted[7].as_str());
    let (_, page) = app
        .get("/v1/jobs?status=queued&model=malaria&limit=200")
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 12 + added);
    let (_, page) = app.get("/v1/jobs?status=succeeded").await;
    assert!(page["jobs"].as_array().unwrap().is_empty());
    let (_, job) = app.get(&format!("/v1/jobs/{}", submitted[5])).await;
    let created = job["created_at"].as_str().unwrap();
    let (_, page) = app
        .get(&format!(
            "/v1/jobs?created_before={}&limit=200",
            created.replace('+', "%2B")
        ))
        .await;
    let before: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(
        before
            .iter()
            .all(|id| submitted[..6].contains(&id.to_string()))
    );
    assert!(!before.contains(&submitted[5].as_str()));

    for (query, code) in [
        ("cursor=bogus", "invalid_cursor"),
        ("limit=0", "invalid_query"),
        ("limit=201", "invalid_query"),
        ("status=finished", "invalid_query"),
        ("created_after=yesterday", "invalid_query"),
        ("batch_id=12", "invalid_batch_id"),
    ] {
        let (status, body) = app.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }

    // The image a job was made from.
    let response = app
        .http
        .get(app.url(&format!("/v1/jobs/{}/image", submitted[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
    app.stop().await;
}

async fn a_queued_job_can_be_canceled_and_is_then_never_run(kind: Kind) {
    let app = TestApp::start_with(queued_app_options(kind)).await;
    let (name, bytes) = cell_images().remove(0);
    let (_, job) = app.submit("malaria", &name, bytes).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let cancel = |id: String| {
        let request = app.http.post(app.url(&format!("/v1/jobs/{id}/cancel")));
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, canceled) = cancel(id.clone()).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["error"]["code"], "canceled");
    assert!(canceled["finished_at"].is_string());
    let (status, again) = cancel(id.clone()).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("job_not_cancelable"))
    );
    let (status, missing) = cancel(uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );

    // A worker that gets the job's message finds nothing to do.
    let claim = app
        .backends
        .jobs
        .claim(id.parse().unwrap(), Duration::from_secs(60), false)
        .await
        .unwrap();
    assert!(
        matches!(claim, Claim::Finished(ref job) if job.status.as_str() == "canceled"),
        "{claim:?}"
    );
    app.stop().await;
}

async fn a_job_past_its_deadline_is_not_run(kind: Kind) {
    let app = TestApp::start_with(queued_app_options(kind)).await;
    let (name, bytes) = cell_images().remove(0);
    let deadline = chrono::Utc::now() + chrono::TimeDelta::milliseconds(800);
    let form = Form::new()
        .text("model", "malaria")
        .text("deadline", deadline.to_rfc3339())
        .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
    let (status, job) = app.post_form(form).await;
    assert_eq!(status, 202, "{job}");
    assert!(job["deadline"].is_string());
    let id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let claim = app
        .backends
        .jobs
        .claim(id.parse().unwrap(), Duration::from_secs(60), false)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Finished(_)), "{claim:?}");
    let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "canceled", "{job}");
    assert_eq!(job["error"]["code"], "deadline_exceeded", "{job}");

    // A deadline already past is refused at the door.
    let form = Form::new()
        .text("model", "malaria")
        .text("deadline", "2020-01-01T00:00:00Z")
        .part("image", Part::bytes(bytes).file_name(name));
    let (status, body) = app.post_form(form).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    app.stop().await;
}

async fn a_retried_post_with_the_same_key_gets_the_first_response(kind: Kind) {
    let app = TestApp::start_with(queued_app_options(kind)).await;
    let (name, bytes) = cell_images().remove(0);
    // reqwest draws a new multipart boundary for every form: the retry differs in bytes only.
    let post = |key: &str, model: &str| {
        let form = Form::new()
            .text("model", model.to_owned())
            .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
        let request = app
            .http
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", key)
            .multipart(form);
        async move {
            let response = request.send().await.unwrap();
            let replayed = response.headers().get("idempotent-replayed").is_some();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                replayed,
                location,
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, replayed, location, first) = post("drive-7-upload-1", "malaria").await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again_location, again) = post("drive-7-upload-1", "malaria").await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(again_location, location);
    let (_, page) = app.get("/v1/jobs").await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        1,
        "the retry made a second job"
    );

    // The same key for another request is a client bug, and says so.
    let (status, _, _, body) = post("drive-7-upload-1", "retired").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    // A new key is a new job.
    let (status, _, _, second) = post("drive-7-upload-2", "malaria").await;
    assert_eq!(status, 202);
    assert_ne!(second["id"], first["id"]);

    // JSON bodies too, whatever the key order.
    let (s1, b1) = app
        .post_json(
            "/v1/batches",
            &json!({"model": "malaria", "site": "A"}),
            Some("batch-a"),
        )
        .await;
    let (s2, b2) = app
        .post_json(
            "/v1/batches",
            &json!({"site": "A", "model": "malaria"}),
            Some("batch-a"),
        )
        .await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(b1["id"], b2["id"]);
    let (status, body) = app
        .post_json("/v1/batches", &json!({"model": "malaria"}), Some(" "))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    app.stop().await;
}

/// The process handling a keyed request dies after committing its jobs and before keeping the
/// response: the retry, once the claim lapses, answers those jobs and creates no others.
async fn a_retry_after_a_crash_answers_the_jobs_the_first_attempt_created(kind: Kind) {
    let mut options = queued_app_options(kind);
    options.idempotency_lease = Duration::from_secs(1);
    // Each request dies once: a single upload, a batch opened with images, images added to it.
    options.wrap_idempotency = Some(Box::new(|inner| {
        Arc::new(DiesBeforeAnswering {
            inner,
            died: Default::default(),
        })
    }));
    let app = TestApp::start_with(options).await;
    let images = cell_images();
    let image = |i: usize| Part::bytes(images[i].1.clone()).file_name(images[i].0.clone());
    let send = |path: &str, key: &str, form: Form| {
        app.http
            .post(app.url(path))
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(2))
            .multipart(form)
            .send()
    };
    // Each attempt gets no answer (the client times out); its retry, the answer.
    let retried = async |path: &str, key: &str, form: &dyn Fn() -> Form| -> Value {
        assert!(
            send(path, key, form()).await.is_err(),
            "the first attempt answered"
        );
        loop {
            let response = send(path, key, form()).await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if status == 409 && body["error"]["code"] == "idempotency_request_in_progress" {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(status == 202, "{status} {body}");
            return body;
        }
    };

    let job = retried("/v1/jobs", "upload-1", &|| {
        Form::new().text("model", "malaria").part("image", image(0))
    })
    .await;
    let opened = retried("/v1/batches", "drive-1", &|| {
        Form::new()
            .text("model", "malaria")
            .part("image", image(1))
            .part("image", image(2))
    })
    .await;
    let batch = opened["id"].as_str().unwrap().to_owned();
    let added = retried(
        &format!("/v1/batches/{batch}/jobs"),
        "drive-1-more",
        &|| Form::new().part("image", image(3)).part("image", image(4)),
    )
    .await;

    let ids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut answered = vec![job["id"].as_str().unwrap().to_owned()];
    answered.extend(ids(&opened));
    answered.extend(ids(&added));
    let (_, page) = app.get("/v1/jobs?limit=100").await;
    let mut stored = ids(&page);
    stored.sort();
    answered.sort();
    assert_eq!(
        stored, answered,
        "one job per image, and the retries answered them"
    );
    let (_, batches) = app.get("/v1/batches").await;
    assert_eq!(batches["batches"].as_array().unwrap().len(), 1, "{batches}");
    assert_eq!(batches["batches"][0]["id"], batch.as_str());
    assert_eq!(batches["batches"][0]["counts"]["total"], 4);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_a_new_request() {
    let mut options = queued_app_options(Kind::Embedded);
    options.idempotency_ttl = Duration::from_secs(1);
    let app = TestApp::start_with(options).await;
    let body = json!({"model": "malaria"});
    let (_, first) = app.post_json("/v1/batches", &body, Some("k1")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, second) = app.post_json("/v1/batches", &body, Some("k1")).await;
    assert_eq!(status, 201);
    assert_ne!(first["id"], second["id"]);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_error_code() {
    let app = TestApp::start_with(queued_app_options(Kind::Embedded)).await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/cancel"),
        ("get", "/v1/jobs/{id}/image"),
        ("get", "/v1/jobs/{id}/heatmap.png"),
        ("post", "/v1/batches"),
        ("get", "/v1/batches"),
        ("get", "/v1/batches/{id}"),
        ("post", "/v1/batches/{id}/jobs"),
        ("post", "/v1/batches/{id}/cancel"),
        ("get", "/v1/batches/{id}/export.csv"),
        ("get", "/v1/batches/{id}/export.json"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{id}"),
        ("get", "/v1/models/{id}/figures/{name}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let described = |op: &Value, status: &str, code: &str| {
        op["responses"][status]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("`{code}`")))
    };
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        for (method, op) in item.as_object().unwrap() {
            for status in ["401", "403", "429", "431"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
            assert!(described(op, "400", "invalid_request"), "{method} {path}");
            let id_code = [
                ("/v1/jobs/{id}", "invalid_job_id"),
                ("/v1/batches/{id}", "invalid_batch_id"),
                ("/v1/webhooks/{id}", "invalid_id"),
                ("/v1/webhook-deliveries/{id}", "invalid_id"),
            ]
            .into_iter()
            .find(|(prefix, _)| path.starts_with(prefix));
            if let Some((_, code)) = id_code {
                assert!(described(op, "400", code), "{method} {path}: 400 {code}");
            }
            if method == "post" {
                for (status, code) in [
                    ("409", "idempotency_key_reused"),
                    ("409", "idempotency_request_in_progress"),
                    ("400", "invalid_idempotency_key"),
                    ("408", "request_timeout"),
                ] {
                    assert!(
                        described(op, status, code),
                        "{method} {path}: {status} {code}"
                    );
                }
            }
        }
    }
    let codes: Vec<&str> =
        spec["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    for code in medinform_api::ErrorCode::ALL {
        assert!(
            codes.contains(&code.as_str()),
            "{} undocumented",
            code.as_str()
        );
    }
    let response = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("<code>/v1/batches/{id}/export.csv</code>"));
    app.stop().await;
}
