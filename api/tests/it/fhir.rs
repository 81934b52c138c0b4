//! Results as HL7 FHIR R4 end to end: real images screened by the running app, their reports
//! from `GET /v1/jobs/{id}/fhir` and from `fhir-r4` webhook endpoints, each Bundle validated with
//! the `fhir.resources` R4B models (Python) and its codes checked against the job's result.

use chrono::{DateTime, Utc};
use medinform_core::tenant::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Kind, Options, Receiver, TestApp, cell_images, send, test_webhooks, validate_r4_bundle,
};
use crate::webhooks::verifies;

const FHIR_JSON: &str = "application/fhir+json";
const SNOMED: &str = "http://snomed.info/sct";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const SCREENING: &str = "https://medinform.example/fhir/CodeSystem/screening";

/// `GET /v1/jobs/{id}/fhir` (with `key` when given): status, `Content-Type`, JSON body.
async fn get_fhir(app: &TestApp, id: &str, key: Option<&str>) -> (u16, String, Value) {
    let mut request = app.http.get(app.url(&format!("/v1/jobs/{id}/fhir")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.json().await.unwrap())
}

/// The resources of type `resource_type` in `bundle`, with their `fullUrl`s, in order.
fn resources<'a>(bundle: &'a Value, resource_type: &str) -> Vec<(&'a str, &'a Value)> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == resource_type)
        .map(|e| (e["fullUrl"].as_str().unwrap(), &e["resource"]))
        .collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The same instant, to FHIR's (and the report's) millisecond.
fn assert_same_time(fhir: &Value, job: &Value) {
    let difference = (time(fhir) - time(job)).num_microseconds().unwrap().abs();
    assert!(difference < 1000, "{fhir} vs {job}");
}

/// The coding at `concept.coding[0]`: (system, code).
fn coding(concept: &Value) -> (&str, &str) {
    let coding = &concept["coding"][0];
    (
        coding["system"].as_str().unwrap(),
        coding["code"].as_str().unwrap(),
    )
}

/// Validates the Bundle of a succeeded `job` and checks it says what the job's result says;
/// returns the finding's interpretation (`POS` or `NEG`).
fn assert_reports_result(bundle: &Value, job: &Value) -> String {
    let types = validate_r4_bundle(bundle).unwrap_or_else(|e| panic!("{e}\n{bundle:#}"));
    let result = &job["result"];
    let classes = result["probabilities"].as_array().unwrap();
    let mut expected = vec!["DiagnosticReport"];
    expected.extend(vec!["Observation"; 1 + classes.len()]);
    expected.push("Device");
    assert_eq!(types, expected);
    assert_eq!(bundle["type"], "collection");
    let mut urls: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert!(urls.iter().all(|u| u.starts_with("urn:uuid:")), "{urls:?}");
    urls.sort_unstable();
    urls.dedup();
    assert_eq!(urls.len(), types.len(), "fullUrls repeat");

    let positive = result["positive"].as_bool().unwrap();
    let (_, report) = resources(bundle, "DiagnosticReport")[0];
    assert_eq!(report["status"], "final");
    assert_eq!(report["identifier"][0]["value"], job["id"]);
    assert_eq!(
        report["identifier"][0]["system"],
        "https://medinform.example/fhir/sid/job-id"
    );
    // Malaria screens blood-smear cells: a haematology report.
    assert_eq!(
        coding(&report["category"][0]),
        ("http://terminology.hl7.org/CodeSystem/v2-0074", "HM")
    );
    assert_eq!(coding(&report["code"]), (SCREENING, "malaria"));
    assert_eq!(
        report["subject"]["identifier"]["value"],
        job["client_reference"]
    );
    assert_same_time(&report["effectiveDateTime"], &job["created_at"]);
    assert_same_time(&report["issued"], &job["finished_at"]);
    let (snomed, screen) = if positive {
        ("10828004", "positive")
    } else {
        ("260385009", "negative")
    };
    assert_eq!(coding(&report["conclusionCode"][0]), (SNOMED, snomed));
    let conclusion = report["conclusion"].as_str().unwrap();
    let finding = result["finding"].as_str().unwrap();
    for part in [
        format!("Screen {screen} for {finding}"),
        format!("{:.4}", result["finding_probability"].as_f64().unwrap()),
        format!("threshold {:.4}", result["threshold"].as_f64().unwrap()),
        format!("malaria {}", job["model_version"].as_str().unwrap()),
        "not a diagnosis".to_owned(),
    ] {
        assert!(conclusion.contains(&part), "{part:?} not in {conclusion:?}");
    }

    let observations = resources(bundle, "Observation");
    let results: Vec<&str> = report["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    let observation_urls: Vec<&str> = observations.iter().map(|(url, _)| *url).collect();
    assert_eq!(results, observation_urls);
    let (device_url, device) = resources(bundle, "Device")[0];
    for (_, observation) in &observations {
        assert_eq!(observation["status"], "final");
        assert_eq!(observation["device"]["reference"], device_url);
        assert_eq!(
            observation["valueQuantity"]["system"],
            "http://unitsofmeasure.org"
        );
        assert_eq!(observation["valueQuantity"]["code"], "1");
    }

    // The finding: its probability, interpreted at the threshold, which it carries with the
    // model's stage.
    let (_, finding_observation) = observations[0];
    assert_eq!(
        coding(&finding_observation["code"]),
        (SCREENING, "malaria.finding-probability")
    );
    assert_eq!(
        finding_observation["valueQuantity"]["value"],
        result["finding_probability"]
    );
    let interpretation = coding(&finding_observation["interpretation"][0]);
    assert_eq!(interpretation.0, INTERPRETATION);
    assert_eq!(interpretation.1, if positive { "POS" } else { "NEG" });
    let component = |code: &str| {
        finding_observation["component"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"]["coding"][0]["code"] == code)
            .unwrap_or_else(|| panic!("no {code} component: {finding_observation}"))
            .clone()
    };
    assert_eq!(
        component("decision-threshold")["valueQuantity"]["value"],
        result["threshold"]
    );
    assert_eq!(
        component("model-stage")["valueCodeableConcept"]["coding"][0]["code"],
        result["stage"]
    );

    // One observation per class, in the model's order.
    for ((_, observation), class) in observations[1..].iter().zip(classes) {
        assert_eq!(
            observation["code"]["coding"][0]["code"],
            format!(
                "malaria.class-probability.{}",
                class["label"].as_str().unwrap()
            )
        );
        assert_eq!(observation["valueQuantity"]["value"], class["probability"]);
    }

    // The model at the job's version.
    assert_eq!(device["identifier"][0]["value"], "malaria");
    assert_eq!(device["version"][0]["value"], job["model_version"]);
    interpretation.1.to_owned()
}

crate::on_both_backends!(screened_images_are_fhir_reports_that_validate);
async fn screened_images_are_fhir_reports_that_validate(kind: Kind) {
    let app = TestApp::start(kind).await;
    let mut ids = Vec::new();
    for (i, (name, bytes)) in cell_images().into_iter().enumerate() {
        let form = crate::support::image_form("malaria", &name, bytes)
            .text("client_reference", format!("camp7-slide{i}"));
        let (status, accepted) = app.post_form(form).await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    let mut interpretations = Vec::new();
    for id in &ids {
        let job = app.wait_finished(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let (status, content_type, bundle) = get_fhir(&app, id, None).await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(content_type, FHIR_JSON);
        interpretations.push(assert_reports_result(&bundle, &job));
        // A finished job's report does not change.
        let (_, _, again) = get_fhir(&app, id, None).await;
        assert_eq!(again, bundle);
    }
    // The golden cells are parasitized and uninfected ones: both interpretations occur.
    assert!(
        interpretations.iter().any(|i| i == "POS"),
        "{interpretations:?}"
    );
    assert!(
        interpretations.iter().any(|i| i == "NEG"),
        "{interpretations:?}"
    );
    app.stop().await;
}

crate::on_both_backends!(only_a_finished_job_of_the_callers_tenant_has_a_report);
async fn only_a_finished_job_of_the_callers_tenant_has_a_report(kind: Kind) {
    let app = TestApp::start_with(Options {
        require_keys: true,
        worker: false,
        ..Options::new(kind)
    })
    .await;
    let owner = app
        .create_key("clinic-a", &[Scope::Submit, Scope::Read])
        .await;
    let other = app.create_key("clinic-b", &[Scope::Admin]).await;
    let (name, bytes) = cell_images().remove(0);
    let (status, job) = app.submit_as(&owner, "malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    let (status, _, body) = get_fhir(&app, &id, Some(&owner)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("job_not_finished"))
    );
    let (status, _, body) = get_fhir(&app, &id, Some(&other)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("job_not_found"))
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _, body) = get_fhir(&app, &unknown, Some(&owner)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("job_not_found"))
    );
    let (status, _, body) = get_fhir(&app, "not-a-job", Some(&owner)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_job_id"))
    );

    // Canceled, it was not performed: a cancelled report that says why.
    let (status, canceled) =
        send(app.request_as(&owner, Method::POST, &format!("/v1/jobs/{id}/cancel"))).await;
    assert_eq!(status, 200, "{canceled}");
    let (status, content_type, bundle) = get_fhir(&app, &id, Some(&owner)).await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(content_type, FHIR_JSON);
    assert_eq!(
        validate_r4_bundle(&bundle).unwrap_or_else(|e| panic!("{e}")),
        ["DiagnosticReport"]
    );
    let (_, report) = resources(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["status"], "cancelled");
    assert!(report.get("result").is_none(), "{report}");
    assert!(
        report["conclusion"]
            .as_str()
            .unwrap()
            .starts_with("Not performed: the screening was canceled (canceled)"),
        "{report}"
    );
    let (status, _, body) = get_fhir(&app, &id, Some(&other)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("job_not_found"))
    );
    app.stop().await;
}

/// Registers an endpoint for `events` with `payload_format` (left out when `None`); returns its
/// id, its secret and the answer.
async fn register(
    app: &TestApp,
    url: &str,
    events: &[&str],
    payload_format: Option<&str>,
) -> (String, String, Value) {
    let mut body = json!({"url": url, "event_types": events});
    if let Some(format) = payload_format {
        body["payload_format"] = json!(format);
    }
    let (status, answer) = app
        .send_json(Method::POST, "/v1/webhooks", Some(body))
        .await;
    assert_eq!(status, 201, "{answer}");
    (
        answer["id"].as_str().unwrap().to_owned(),
        answer["secret"].as_str().unwrap().to_owned(),
        answer,
    )
}

crate::on_both_backends!(a_fhir_r4_endpoint_receives_the_signed_bundle);
async fn a_fhir_r4_endpoint_receives_the_signed_bundle(kind: Kind) {
    let app = TestApp::start_with(Options {
        webhooks: Some(test_webhooks()),
        ..Options::new(kind)
    })
    .await;
    let fhir_receiver = Receiver::start().await;
    let plain_receiver = Receiver::start().await;
    let (fhir_endpoint, fhir_secret, answer) = register(
        &app,
        &fhir_receiver.url,
        &["job.succeeded"],
        Some("fhir-r4"),
    )
    .await;
    assert_eq!(answer["payload_format"], "fhir-r4");
    let (_, plain_secret, answer) =
        register(&app, &plain_receiver.url, &["job.succeeded"], None).await;
    assert_eq!(answer["payload_format"], "medinform");

    let (name, bytes) = cell_images().remove(0);
    let form = crate::support::image_form("malaria", &name, bytes)
        .text("client_reference", "camp7-slide12");
    let (status, accepted) = app.post_form(form).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let job = app.wait_finished(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let fhir_request = fhir_receiver.wait_for(1).await.remove(0);
    assert!(
        verifies(&fhir_secret, &fhir_request),
        "the Bundle's signature does not verify"
    );
    assert_eq!(fhir_request.header("content-type"), FHIR_JSON);
    assert_eq!(fhir_request.header("medinform-event-type"), "job.succeeded");
    let bundle = fhir_request.json();
    assert_reports_result(&bundle, &job);
    // The body is the job's report as the API answers it.
    let (_, _, answered) = get_fhir(&app, &id, None).await;
    assert_eq!(bundle, answered);

    // The other endpoint gets the MedInform event, as before.
    let request = plain_receiver.wait_for(1).await.remove(0);
    assert!(verifies(&plain_secret, &request));
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("medinform-event-type"), "job.succeeded");
    assert_eq!(request.json()["type"], "job.succeeded");
    assert_eq!(request.json()["data"], job);

    // The delivery records its format and its payload.
    let (status, listed) = app
        .get(&format!("/v1/webhooks/{fhir_endpoint}/deliveries"))
        .await;
    assert_eq!(status, 200, "{listed}");
    let delivery = &listed["deliveries"][0];
    assert_eq!(delivery["payload_format"], "fhir-r4");
    assert_eq!(delivery["id"], fhir_request.header("webhook-id"));
    let (status, detail) = app
        .get(&format!(
            "/v1/webhook-deliveries/{}",
            delivery["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["payload"], bundle);
    app.stop().await;
}

crate::on_both_backends!(an_endpoint_changed_to_fhir_r4_gets_a_canceled_job_as_a_cancelled_report);
async fn an_endpoint_changed_to_fhir_r4_gets_a_canceled_job_as_a_cancelled_report(kind: Kind) {
    let app = TestApp::start_with(Options {
        worker: false,
        webhooks: Some(test_webhooks()),
        ..Options::new(kind)
    })
    .await;
    let receiver = Receiver::start().await;
    // An unknown format is refused, on create and on update, and changes nothing.
    let (status, body) = app
        .send_json(
            Method::POST,
            "/v1/webhooks",
            Some(json!({
                "url": receiver.url,
                "event_types": ["job.canceled"],
                "payload_format": "fhir",
            })),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_json"))
    );
    let (endpoint, secret, _) = register(&app, &receiver.url, &["job.canceled"], None).await;
    let path = format!("/v1/webhooks/{endpoint}");
    let (status, body) = app
        .send_json(
            Method::PATCH,
            &path,
            Some(json!({"payload_format": "FHIR-R4"})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_json"))
    );
    let (_, read) = app.get(&path).await;
    assert_eq!(read["payload_format"], "medinform");

    let (status, changed) = app
        .send_json(
            Method::PATCH,
            &path,
            Some(json!({"payload_format": "fhir-r4"})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["payload_format"], "fhir-r4");
    assert_eq!(changed["event_types"], json!(["job.canceled"]));
    let (_, listed) = app.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"][0]["payload_format"], "fhir-r4");

    let (name, bytes) = cell_images().remove(0);
    let (status, job) = app.submit("malaria", &name, bytes).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, canceled) = app
        .send_json(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{canceled}");

    let request = receiver.wait_for(1).await.remove(0);
    assert!(verifies(&secret, &request));
    assert_eq!(request.header("content-type"), FHIR_JSON);
    assert_eq!(request.header("medinform-event-type"), "job.canceled");
    let bundle = request.json();
    assert_eq!(
        validate_r4_bundle(&bundle).unwrap_or_else(|e| panic!("{e}")),
        ["DiagnosticReport"]
    );
    let (_, report) = resources(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["identifier"][0]["value"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_fhir_route_and_payload_format() {
    let app = TestApp::start(Kind::Embedded).await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let operation = &spec["paths"]["/v1/jobs/{id}/fhir"]["get"];
    assert!(
        operation["responses"]["200"]["content"][FHIR_JSON].is_object(),
        "{operation:#}"
    );
    for (status, code) in [("404", "job_not_found"), ("409", "job_not_finished")] {
        let description = operation["responses"][status]["description"]
            .as_str()
            .unwrap();
        assert!(description.contains(code), "{status}: {description}");
    }
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["PayloadFormat"]["enum"],
        json!(["medinform", "fhir-r4"]),
        "{:#}",
        schemas["PayloadFormat"]
    );
    for schema in [
        "CreateWebhookRequest",
        "UpdateWebhookRequest",
        "WebhookResponse",
        "DeliveryResponse",
    ] {
        assert!(
            schemas[schema]["properties"]["payload_format"].is_object(),
            "{schema}: {:#}",
            schemas[schema]
        );
    }
    app.stop().await;
}

#[test]
fn the_validator_refuses_what_is_not_fhir() {
    let report = json!({
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "a screening"},
    });
    let bundle = |report: Value| {
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:0190f2a1-b2c3-7d4e-8f9a-0b1c2d3e4f50", "resource": report},
        ]})
    };
    assert_eq!(
        validate_r4_bundle(&bundle(report.clone())).unwrap(),
        ["DiagnosticReport"]
    );
    let mut unknown_element = report.clone();
    unknown_element["probability"] = json!(0.5);
    assert!(validate_r4_bundle(&bundle(unknown_element)).is_err());
    let mut bad_instant = report;
    bad_instant["issued"] = json!("yesterday");
    assert!(validate_r4_bundle(&bundle(bad_instant)).is_err());
}
