//! API keys, tenants, the rate limit and the bounded backlog, on both backend sets.

use medinform_core::config::WebhooksConfig;
use medinform_core::db::NewDelivery;
use medinform_core::storage::{image_key, sha256_hex};
use medinform_core::tenant::Scope;
use medinform_core::webhooks::{DeliveryId, EventType, PayloadFormat};
use serde_json::Value;

use crate::support::{Kind, Options, TestApp, cell_images, image_form, send};

/// Runs each test body against the embedded and the distributed backends.
macro_rules! each_kind {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::Kind::Embedded).await;
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::Kind::Distributed).await;
                }
            )*
        }
    };
}

each_kind!(
    requests_without_a_valid_key_are_refused,
    a_key_may_do_only_what_its_scopes_allow,
    a_tenant_never_sees_another_tenants_jobs,
    whoami_names_the_key_its_tenant_and_scopes,
    anonymous_mode_serves_keyless_requests_and_still_checks_sent_keys,
    a_key_over_its_rate_limit_gets_429_with_retry_after,
    submissions_past_max_backlog_get_503_and_store_nothing,
    one_tenants_backlog_is_bounded_without_refusing_another,
);

/// An app that requires keys, with no worker (jobs stay queued).
async fn keyed_app(kind: Kind) -> TestApp {
    let mut options = Options::new(kind);
    options.require_keys = true;
    options.worker = false;
    TestApp::start_with(options).await
}

/// Sends a request and returns status, headers and JSON body.
async fn call(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn requests_without_a_valid_key_are_refused(kind: Kind) {
    let app = keyed_app(kind).await;
    let job_path = format!("/v1/jobs/{}", uuid::Uuid::now_v7());

    // No key at all: 401 with WWW-Authenticate and a message that says what to send.
    let (status, headers, body) = call(app.http.get(app.url(&job_path))).await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer") && message.contains("medinform keys create"),
        "{message}"
    );
    let (name, bytes) = cell_images().remove(0);
    let (status, body) = app.submit("malaria", &name, bytes).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = app.get("/v1/models").await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(app.backends.jobs.count_queued().await.unwrap(), 0);

    // Health checks and the API description need no key.
    for open in ["/healthz", "/openapi.json"] {
        let response = app.http.get(app.url(open)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{open}");
    }

    // A malformed key, an unknown key (well-formed), a wrong scheme: 401 `unauthorized`.
    let unknown = "mik_0123abcd_0123456789abcdefghijABCDEFGHIJklmnop";
    let cases = [
        ("authorization", "Bearer not-a-key".to_string()),
        ("x-api-key", "mik_short".to_string()),
        ("authorization", format!("Bearer {unknown}")),
        ("x-api-key", unknown.to_string()),
        ("authorization", format!("Basic {unknown}")),
    ];
    for (header, value) in cases {
        let (status, headers, body) =
            call(app.http.get(app.url(&job_path)).header(header, &value)).await;
        assert_error(status, &body, 401, "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer", "{header}: {value}");
    }

    // A valid key works, by either header; once revoked it gets `api_key_revoked`.
    let key = app.create_key("clinic-a", &[Scope::Read]).await;
    let (status, body) = app.get_as(&key, "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        app.http
            .get(app.url("/v1/models"))
            .header("x-api-key", &key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let prefix = &key[..12];
    let revoked = app
        .backends
        .tenants
        .revoke_key(prefix)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.is_revoked());
    let (status, headers, body) =
        call(app.request_as(&key, reqwest::Method::GET, "/v1/models")).await;
    assert_error(status, &body, 401, "api_key_revoked");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(prefix),
        "{body}"
    );
    app.stop().await;
}

async fn a_key_may_do_only_what_its_scopes_allow(kind: Kind) {
    let app = keyed_app(kind).await;
    let reader = app.create_key("clinic-a", &[Scope::Read]).await;
    let submitter = app.create_key("clinic-a", &[Scope::Submit]).await;
    let admin = app.create_key("clinic-a", &[Scope::Admin]).await;
    let (name, bytes) = cell_images().remove(0);

    let (status, body) = app
        .submit_as(&reader, "malaria", &name, bytes.clone())
        .await;
    assert_error(status, &body, 403, "insufficient_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("submit"),
        "{body}"
    );
    assert_eq!(app.backends.jobs.count_queued().await.unwrap(), 0);

    let (status, job) = app
        .submit_as(&submitter, "malaria", &name, bytes.clone())
        .await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let (status, body) = app.get_as(&submitter, &path).await;
    assert_error(status, &body, 403, "insufficient_scope");
    let (status, body) = app.get_as(&reader, &path).await;
    assert_eq!(status, 200, "{body}");

    // Admin implies the others.
    let (status, body) = app.submit_as(&admin, "malaria", &name, bytes).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app.get_as(&admin, &path).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// An endpoint that addresses one tenant's resource. Another tenant gets 404 with
/// `not_found_code`, as if it did not exist; the owner gets `owner_status`.
struct Scoped {
    method: &'static str,
    /// `{job}` is replaced with the id of the owner's job.
    path: &'static str,
    owner_status: u16,
    not_found_code: &'static str,
}

/// Every endpoint that addresses a tenant's job, batch or webhook. Rows run in order, first all
/// as the other tenant, then all as the owner: a row that changes the resource (a cancel) goes
/// last.
const TENANT_SCOPED: &[Scoped] = &[
    Scoped {
        method: "GET",
        path: "/v1/jobs/{job}",
        owner_status: 200,
        not_found_code: "job_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/jobs/{job}/image",
        owner_status: 200,
        not_found_code: "job_not_found",
    },
    // The job is still queued: the owner learns it has no report yet.
    Scoped {
        method: "GET",
        path: "/v1/jobs/{job}/fhir",
        owner_status: 409,
        not_found_code: "job_not_found",
    },
    // The job is still queued: the owner learns it has no heatmap yet (404
    // `heatmap_unavailable`), another tenant that there is no such job.
    Scoped {
        method: "GET",
        path: "/v1/jobs/{job}/heatmap.png",
        owner_status: 404,
        not_found_code: "job_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/batches/{batch}",
        owner_status: 200,
        not_found_code: "batch_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/batches/{batch}/export.csv",
        owner_status: 200,
        not_found_code: "batch_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/batches/{batch}/export.json",
        owner_status: 200,
        not_found_code: "batch_not_found",
    },
    // Without a form: the owner is told what is wrong with the request, another tenant only
    // that there is no such batch.
    Scoped {
        method: "POST",
        path: "/v1/batches/{batch}/jobs",
        owner_status: 400,
        not_found_code: "batch_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/webhooks/{webhook}",
        owner_status: 200,
        not_found_code: "webhook_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/webhooks/{webhook}/deliveries",
        owner_status: 200,
        not_found_code: "webhook_not_found",
    },
    Scoped {
        method: "GET",
        path: "/v1/webhook-deliveries/{delivery}",
        owner_status: 200,
        not_found_code: "delivery_not_found",
    },
    // Pending, not failed: the owner is told it cannot be replayed yet.
    Scoped {
        method: "POST",
        path: "/v1/webhook-deliveries/{delivery}/replay",
        owner_status: 409,
        not_found_code: "delivery_not_found",
    },
    // Last: these change what they address.
    Scoped {
        method: "POST",
        path: "/v1/webhooks/{webhook}/rotate-secret",
        owner_status: 200,
        not_found_code: "webhook_not_found",
    },
    Scoped {
        method: "POST",
        path: "/v1/batches/{batch}/cancel",
        owner_status: 200,
        not_found_code: "batch_not_found",
    },
    Scoped {
        method: "POST",
        path: "/v1/jobs/{job}/cancel",
        owner_status: 200,
        not_found_code: "job_not_found",
    },
];

async fn a_tenant_never_sees_another_tenants_jobs(kind: Kind) {
    let app = TestApp::start_with(Options {
        require_keys: true,
        worker: false,
        // Endpoints on loopback may be registered; nothing is sent to them in this test.
        webhooks: Some(WebhooksConfig {
            poll_interval_ms: 3_600_000,
            ..crate::support::test_webhooks()
        }),
        ..Options::new(kind)
    })
    .await;
    let owner = app.create_key("clinic-a", &[Scope::Admin]).await;
    // Every scope: a 404 here is the tenant boundary, never a missing scope.
    let other = app.create_key("clinic-b", &[Scope::Admin]).await;
    let (name, bytes) = cell_images().remove(0);
    let (status, job) = app.submit_as(&owner, "malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let (status, batch) = send(
        app.request_as(&owner, reqwest::Method::POST, "/v1/batches")
            .json(&serde_json::json!({"model": "malaria", "site": "Clinic A"})),
    )
    .await;
    assert_eq!(status, 201, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let (status, webhook) = send(
        app.request_as(&owner, reqwest::Method::POST, "/v1/webhooks")
            .json(&serde_json::json!({"url": "http://127.0.0.1:9/hook",
                                      "event_types": ["job.succeeded"]})),
    )
    .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    // A delivery of the owner's, stored as the dispatcher would.
    let delivery_id = DeliveryId::new();
    let owner_tenant = app
        .backends
        .tenants
        .tenant_by_name("clinic-a")
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.backends
            .webhooks
            .enqueue_job_events(
                owner_tenant.id,
                job_id.parse().unwrap(),
                &[NewDelivery {
                    id: delivery_id.clone(),
                    endpoint_id: Some(webhook_id.parse().unwrap()),
                    url: "http://127.0.0.1:9/hook".into(),
                    event_type: EventType::JobSucceeded,
                    payload: "{}".into(),
                    payload_format: PayloadFormat::MedInform,
                }],
            )
            .await
            .unwrap()
    );
    let path_of = |row: &Scoped| {
        row.path
            .replace("{job}", &job_id)
            .replace("{batch}", &batch_id)
            .replace("{webhook}", &webhook_id)
            .replace("{delivery}", delivery_id.as_str())
    };
    let method_of = |row: &Scoped| reqwest::Method::from_bytes(row.method.as_bytes()).unwrap();

    for row in TENANT_SCOPED {
        let (status, body) = send(app.request_as(&other, method_of(row), &path_of(row))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some(row.not_found_code)),
            "{} {} as another tenant: {body}",
            row.method,
            row.path
        );
    }
    for row in TENANT_SCOPED {
        let response = app
            .request_as(&owner, method_of(row), &path_of(row))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            row.owner_status,
            "{} {} as the owner",
            row.method,
            row.path
        );
    }
    // Lists show only the caller's own; a batch of another tenant cannot be filled.
    for (path, list, id) in [
        ("/v1/jobs", "jobs", &job_id),
        ("/v1/batches", "batches", &batch_id),
        ("/v1/webhooks", "webhooks", &webhook_id),
    ] {
        let (_, mine) = app.get_as(&owner, path).await;
        let (_, theirs) = app.get_as(&other, path).await;
        let ids = |page: &Value| -> Vec<String> {
            page[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&mine), vec![id.clone()], "{path}");
        assert!(ids(&theirs).is_empty(), "{path} leaks: {theirs}");
    }
    let form = reqwest::multipart::Form::new()
        .text("model", "malaria")
        .text("batch_id", batch_id.clone())
        .part(
            "image",
            reqwest::multipart::Part::bytes(cell_images().remove(1).1).file_name("x.png"),
        );
    let (status, body) = send(
        app.request_as(&other, reqwest::Method::POST, "/v1/jobs")
            .multipart(form),
    )
    .await;
    assert_error(status, &body, 404, "batch_not_found");

    // The job is recorded under the owner's tenant.
    let stored = app
        .backends
        .jobs
        .get(job_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tenant_id, owner_tenant.id);
    app.stop().await;
}

async fn whoami_names_the_key_its_tenant_and_scopes(kind: Kind) {
    let app = keyed_app(kind).await;
    let key = app
        .create_key("tb-drive-2026", &[Scope::Read, Scope::Submit])
        .await;
    let (status, body) = app.get_as(&key, "/v1/auth/whoami").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "tenant": "tb-drive-2026",
            "key": &key[..12],
            "scopes": ["submit", "read"],
            "anonymous": false,
        })
    );
    let (status, body) = app.get("/v1/auth/whoami").await;
    assert_error(status, &body, 401, "unauthorized");

    // The use is recorded (to about a minute), never the key.
    let keys = app.backends.tenants.list_keys(None).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].last_used_at.is_some(), "{:?}", keys[0]);
    app.stop().await;
}

async fn anonymous_mode_serves_keyless_requests_and_still_checks_sent_keys(kind: Kind) {
    let mut options = Options::new(kind);
    options.worker = false;
    let app = TestApp::start_with(options).await;
    let (status, body) = app.get("/v1/auth/whoami").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "tenant": "local",
            "key": null,
            "scopes": ["submit", "read", "admin"],
            "anonymous": true,
        })
    );
    let unknown = "mik_0123abcd_0123456789abcdefghijABCDEFGHIJklmnop";
    let (status, body) = app.get_as(unknown, "/v1/auth/whoami").await;
    assert_error(status, &body, 401, "unauthorized");

    // A key still acts for its own tenant, and does not see the local tenant's jobs.
    let (name, bytes) = cell_images().remove(0);
    let (status, job) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let key = app.create_key("clinic-a", &[Scope::Read]).await;
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let (status, body) = app.get_as(&key, &path).await;
    assert_error(status, &body, 404, "job_not_found");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

async fn a_key_over_its_rate_limit_gets_429_with_retry_after(kind: Kind) {
    let mut options = Options::new(kind);
    options.require_keys = true;
    options.worker = false;
    options.rate_limit = medinform_api::RateLimit {
        per_minute: 6,
        burst: 3,
    };
    let app = TestApp::start_with(options).await;
    let busy = app.create_key("clinic-a", &[Scope::Read]).await;
    let calm = app.create_key("clinic-a", &[Scope::Read]).await;
    for _ in 0..3 {
        let (status, body) = app.get_as(&busy, "/v1/auth/whoami").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) =
        call(app.request_as(&busy, reqwest::Method::GET, "/v1/auth/whoami")).await;
    assert_error(status, &body, 429, "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    // Each key has its own bucket.
    let (status, body) = app.get_as(&calm, "/v1/auth/whoami").await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// Two API processes on one database: a key gets its limit once, not once per process.
#[tokio::test]
async fn the_rate_limit_holds_across_api_processes() {
    let limited = || {
        let mut options = Options::new(Kind::Distributed);
        options.require_keys = true;
        options.worker = false;
        options.shared_rate_limit = true;
        options.rate_limit = medinform_api::RateLimit {
            per_minute: 6,
            burst: 4,
        };
        options
    };
    let first = TestApp::start_with(limited()).await;
    let second = TestApp::start_with(Options {
        data: Some(first.another_process()),
        ..limited()
    })
    .await;
    let key = first.create_key("clinic-a", &[Scope::Read]).await;
    // The burst of 4, two requests through each process.
    for app in [&first, &second, &first, &second] {
        let (status, body) = app.get_as(&key, "/v1/auth/whoami").await;
        assert_eq!(status, 200, "{body}");
    }
    for app in [&first, &second] {
        let (status, headers, body) =
            call(app.request_as(&key, reqwest::Method::GET, "/v1/auth/whoami")).await;
        assert_error(status, &body, 429, "rate_limited");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (1..=10).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
    }
    second.stop().await;
    first.stop().await;
}

async fn submissions_past_max_backlog_get_503_and_store_nothing(kind: Kind) {
    let mut options = Options::new(kind);
    options.worker = false;
    options.jobs.max_backlog = 1;
    let app = TestApp::start_with(options).await;
    let images = cell_images();
    let (name, bytes) = images[0].clone();
    let (status, body) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{body}");

    let (name, bytes) = images[1].clone();
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .multipart(image_form("malaria", &name, bytes.clone()))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = (
        response.status().as_u16(),
        response.headers().clone(),
        response.json::<Value>().await.unwrap(),
    );
    assert_error(status, &body, 503, "queue_full");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(app.backends.jobs.count_queued().await.unwrap(), 1);
    assert!(
        app.backends
            .blobs
            .get(&image_key(&sha256_hex(&bytes)))
            .await
            .is_err(),
        "the refused image was stored"
    );
    app.stop().await;
}

async fn one_tenants_backlog_is_bounded_without_refusing_another(kind: Kind) {
    let mut options = Options::new(kind);
    options.require_keys = true;
    options.worker = false;
    options.jobs.max_backlog = 100;
    options.jobs.max_backlog_per_tenant = 2;
    let app = TestApp::start_with(options).await;
    let drive = app.create_key("national-drive", &[Scope::Submit]).await;
    let clinic = app.create_key("district-clinic", &[Scope::Submit]).await;
    let images = cell_images();
    for (name, bytes) in &images[..2] {
        let (status, body) = app.submit_as(&drive, "malaria", name, bytes.clone()).await;
        assert_eq!(status, 202, "{body}");
    }
    let (name, bytes) = images[2].clone();
    let (status, body) = app.submit_as(&drive, "malaria", &name, bytes).await;
    assert_error(status, &body, 503, "queue_full");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per tenant"),
        "{body}"
    );
    // The other tenant's upload goes in: the bound is the drive's, not everyone's.
    let (name, bytes) = images[3].clone();
    let (status, body) = app.submit_as(&clinic, "malaria", &name, bytes).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.backends.jobs.count_queued().await.unwrap(), 3);
    app.stop().await;
}
