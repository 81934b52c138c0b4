//! Batches: one request with many images, a batch filled over time, progress, findings and the
//! CSV/JSON export a programme manager opens.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Kind, TestApp, cell_images};

on_both_backends!(
    one_request_submits_a_batch_and_its_export_lists_every_image,
    a_batch_is_filled_over_time_and_keeps_to_its_model,
);

async fn one_request_submits_a_batch_and_its_export_lists_every_image(kind: Kind) {
    let app = TestApp::start(kind).await;
    let images = cell_images();
    let mut form = Form::new()
        .text("model", "malaria")
        .text("site", "Camp 7")
        .text("campaign", "Malaria week")
        .text("operator", "N. Okafor");
    for (name, bytes) in &images {
        form = form.part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
    }
    // A bad file among good ones is refused alone.
    form = form.part(
        "image",
        Part::bytes(b"not an image at all".to_vec()).file_name("notes.txt"),
    );
    let (status, body) = app.post_form_to("/v1/batches", form).await;
    assert_eq!(status, 202, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), images.len(), "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["index"], images.len());
    assert_eq!(rejected[0]["file_name"], "notes.txt");
    assert_eq!(rejected[0]["error"]["code"], "not_an_image");
    assert_eq!(body["site"], "Camp 7");
    assert_eq!(body["counts"]["total"], images.len());
    let batch_id = body["id"].as_str().unwrap().to_owned();
    for (job, (name, _)) in jobs.iter().zip(&images) {
        assert_eq!(job["batch_id"], batch_id.as_str());
        assert_eq!(job["client_reference"], name.as_str());
    }
    for job in jobs {
        let done = app.wait_finished(job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    let (status, batch) = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(status, 200, "{batch}");
    let n = images.len() as i64;
    assert_eq!(batch["counts"]["total"], n);
    assert_eq!(batch["counts"]["succeeded"], n);
    assert_eq!(batch["counts"]["queued"], 0);
    let findings = &batch["findings"];
    assert_eq!(findings["finding"], "Parasitized");
    let positive = findings["positive"].as_i64().unwrap();
    assert_eq!(positive + findings["negative"].as_i64().unwrap(), n);
    let by_label: i64 = findings["by_label"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(by_label, n);

    // The JSON export: a row per job, positives first, each as the job itself says.
    let (status, export) = app
        .get(&format!("/v1/batches/{batch_id}/export.json"))
        .await;
    assert_eq!(status, 200, "{export}");
    let rows = export["jobs"].as_array().unwrap();
    assert_eq!(rows.len(), images.len());
    let flags: Vec<bool> = rows
        .iter()
        .map(|r| r["positive"].as_bool().unwrap())
        .collect();
    assert!(
        flags.windows(2).all(|w| w[0] >= w[1]),
        "positives first: {flags:?}"
    );
    assert_eq!(flags.iter().filter(|p| **p).count() as i64, positive);
    for row in rows {
        let (_, job) = app
            .get(&format!("/v1/jobs/{}", row["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(row["label"], job["result"]["label"]);
        assert_eq!(
            row["finding_probability"],
            job["result"]["finding_probability"]
        );
        assert_eq!(row["client_reference"], job["client_reference"]);
    }

    // The CSV export: the same rows, in the same order, for a spreadsheet.
    let response = app
        .http
        .get(app.url(&format!("/v1/batches/{batch_id}/export.csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert!(
        lines[0].starts_with(
            "job_id,client_reference,site,tags,status,label,finding,finding_probability"
        )
    );
    assert_eq!(lines.len(), images.len() + 1, "{csv}");
    for (line, row) in lines[1..].iter().zip(rows) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], row["job_id"].as_str().unwrap());
        assert_eq!(cells[2], "Camp 7");
        assert_eq!(cells[4], "succeeded");
        assert_eq!(cells[9], row["positive"].as_bool().unwrap().to_string());
        // The shipped malaria model declares its stage: every row says it.
        assert_eq!(cells[10], row["stage"].as_str().unwrap());
        assert!(["screening", "research"].contains(&cells[10]), "{line}");
        let p: f64 = cells[7].parse().unwrap();
        assert!((p - row["finding_probability"].as_f64().unwrap()).abs() < 5e-5);
    }

    // The batch is listed, newest first.
    let (_, page) = app.get("/v1/batches").await;
    assert_eq!(page["batches"][0]["id"], batch_id.as_str());
    app.stop().await;
}

async fn a_batch_is_filled_over_time_and_keeps_to_its_model(kind: Kind) {
    let app = TestApp::start(kind).await;
    let images = cell_images();
    let (status, batch) = app
        .post_json(
            "/v1/batches",
            &json!({"model": "malaria", "site": "Clinic 3", "campaign": "Week 48",
                    "operator": "A. Diallo", "tags": ["outreach"]}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{batch}");
    assert_eq!(batch["counts"]["total"], 0);
    assert_eq!(batch["tags"], json!(["outreach"]));
    let id = batch["id"].as_str().unwrap().to_owned();

    // Images with references given field by field.
    let form = Form::new()
        .text("client_reference", "slide-1")
        .part("image", Part::bytes(images[0].1.clone()).file_name("a.png"))
        .part("image", Part::bytes(images[1].1.clone()).file_name("b.png"));
    let (status, added) = app
        .post_form_to(&format!("/v1/batches/{id}/jobs"), form)
        .await;
    assert_eq!(status, 202, "{added}");
    let added = added["jobs"].as_array().unwrap().clone();
    assert_eq!(added[0]["client_reference"], "slide-1");
    assert_eq!(added[1]["client_reference"], "b.png");

    // And one through POST /v1/jobs with batch_id.
    let form = Form::new()
        .text("model", "malaria")
        .text("batch_id", id.clone())
        .part("image", Part::bytes(images[2].1.clone()).file_name("c.png"));
    let (status, job) = app.post_form(form).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["batch_id"], id.as_str());

    // A batch screens one model.
    let form = Form::new()
        .text("model", "retired")
        .text("batch_id", id.clone())
        .part("image", Part::bytes(images[2].1.clone()).file_name("c.png"));
    let (status, body) = app.post_form(form).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("batch_model_mismatch"))
    );
    let (status, body) = app
        .post_json("/v1/batches", &json!({"model": "no-such-model"}), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_model"))
    );
    let (status, body) = app
        .post_json(
            "/v1/batches",
            &json!({"model": "malaria", "colour": "red"}),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, body) = app
        .get(&format!("/v1/batches/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("batch_not_found"))
    );

    for job in added.iter().chain([&job]) {
        app.wait_finished(job["id"].as_str().unwrap()).await;
    }
    let (_, batch) = app.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(batch["counts"]["total"], 3);
    assert_eq!(batch["counts"]["succeeded"], 3);
    let (_, page) = app.get(&format!("/v1/jobs?batch_id={id}")).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn canceling_a_batch_cancels_its_queued_jobs() {
    let mut options = crate::support::Options::new(Kind::Embedded);
    options.worker = false;
    let app = TestApp::start_with(options).await;
    let mut form = Form::new().text("model", "malaria");
    for (name, bytes) in cell_images().into_iter().take(3) {
        form = form.part("image", Part::bytes(bytes).file_name(name));
    }
    let (status, batch) = app.post_form_to("/v1/batches", form).await;
    assert_eq!(status, 202, "{batch}");
    let id = batch["id"].as_str().unwrap();
    let response = app
        .http
        .post(app.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let batch: Value = response.json().await.unwrap();
    assert_eq!(batch["counts"]["canceled"], 3, "{batch}");
    assert_eq!(batch["counts"]["queued"], 0, "{batch}");
    app.stop().await;
}

/// The same rules on every path: a batch's JSON, its form, an image's file name, a job's form.
async fn every_path_parses_references_tags_and_text_the_same_way(kind: Kind) {
    let app = TestApp::start(kind).await;
    let code = |body: &Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (body, status, expected) in [
        (
            json!({"model": "malaria", "tags": (0..21).map(|i| i.to_string()).collect::<Vec<_>>()}),
            400,
            "invalid_field",
        ),
        (
            json!({"model": "malaria", "tags": ["ok", ""]}),
            400,
            "invalid_field",
        ),
        (
            json!({"model": "malaria", "tags": ["a\u{7}b"]}),
            400,
            "invalid_field",
        ),
        (
            json!({"model": "malaria", "client_reference": "slide\u{1b}[31m12"}),
            400,
            "invalid_client_reference",
        ),
        (
            json!({"model": "malaria", "client_reference": "x".repeat(201)}),
            400,
            "invalid_client_reference",
        ),
        (
            json!({"model": "malaria", "site": "Camp\n7"}),
            400,
            "invalid_field",
        ),
    ] {
        let (got, answer) = app.post_json("/v1/batches", &body, None).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected.to_owned()),
            "{body}"
        );
    }
    let (_, page) = app.get("/v1/batches").await;
    assert_eq!(page["batches"], json!([]), "nothing was opened");

    // A file name that cannot be a reference rejects its image, not the others.
    let (name, bytes) = cell_images().remove(0);
    let form = Form::new()
        .text("model", "malaria")
        .part(
            "image",
            Part::bytes(bytes.clone()).file_name(format!("\t{}.png", "x".repeat(300))),
        )
        .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
    let (status, answer) = app.post_form_to("/v1/batches", form).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["jobs"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["jobs"][0]["client_reference"], name.as_str());
    assert_eq!(
        answer["rejected"][0]["error"]["code"],
        "invalid_client_reference"
    );

    // Adding images needs an image.
    let batch = answer_batch_id(&app).await;
    let (status, answer) = app
        .post_form_to(
            &format!("/v1/batches/{batch}/jobs"),
            Form::new().text("client_reference", "slide-1"),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (400, "missing_field".to_owned()),
        "{answer}"
    );

    // Text that is not UTF-8 is refused, never replaced.
    let form = Form::new()
        .text("model", "malaria")
        .part("site", Part::bytes(b"Camp \xff7".to_vec()))
        .part("image", Part::bytes(bytes).file_name(name));
    let (status, answer) = app.post_form(form).await;
    assert_eq!(
        (status, code(&answer)),
        (400, "invalid_field".to_owned()),
        "{answer}"
    );
    app.stop().await;
}

on_both_backends!(every_path_parses_references_tags_and_text_the_same_way);

/// The id of the newest batch.
async fn answer_batch_id(app: &TestApp) -> String {
    let (_, page) = app.get("/v1/batches").await;
    page["batches"][0]["id"].as_str().unwrap().to_owned()
}
