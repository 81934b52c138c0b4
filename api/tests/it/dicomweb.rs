//! DICOMweb STOW-RS: a PACS forwards a study as multipart/related; each instance is routed to
//! the models of `dicom.routes`, the instances of one study share a batch, and the answer is
//! the standard Store Instances Response with a Failure Reason for each instance refused.

use medinform_core::config::{DicomConfig, DicomRoute};
use serde_json::Value;

use crate::dicom::{STUDY, chest_options, chest_xray, dx_file, dx_instance, probabilities};
use crate::support::{Kind, TestApp, send};

/// Failure Reason values (PS3.18 Table I.2-2).
const CANNOT_UNDERSTAND: u64 = 0xC000;
const DATA_SET_MISMATCH: u64 = 0xA900;
const TRANSFER_SYNTAX_NOT_SUPPORTED: u64 = 0xC122;

const BOUNDARY: &str = "medinform-stow-boundary-7d1e";

/// A `multipart/related; type="application/dicom"` body of `parts` (content type, bytes).
fn related(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn stow(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = app
        .http
        .post(app.url(path))
        .header("content-type", content_type)
        .header("accept", "application/dicom+json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn related_type() -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}")
}

/// The items of a sequence attribute of the response.
fn items<'a>(body: &'a Value, tag: &str) -> Vec<&'a Value> {
    body[tag]["Value"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

fn value<'a>(item: &'a Value, tag: &str) -> &'a Value {
    &item[tag]["Value"][0]
}

/// Chest X-rays (CR, DX) with or without a body part go to tuberculosis.
fn routed(kind: Kind) -> crate::support::Options {
    let mut options = chest_options(kind);
    options.dicom = DicomConfig {
        routes: vec![DicomRoute {
            modalities: vec!["CR".into(), "DX".into()],
            body_parts: vec!["CHEST".into(), String::new()],
            models: vec!["tuberculosis".into()],
        }],
        ..DicomConfig::default()
    };
    options
}

#[tokio::test]
async fn a_study_is_stored_routed_and_screened_as_one_batch() {
    let app = TestApp::start_with(routed(Kind::Embedded)).await;
    let xray = image::imageops::thumbnail(&chest_xray(), 128, 128);
    let first = dx_instance(&xray, "DX", "CHEST", 1);
    let second = dx_instance(&xray, "DX", "", 2);
    let ct = dx_instance(&xray, "CT", "CHEST", 3);
    let body = related(&[
        ("application/dicom", first.clone()),
        ("application/dicom", second),
        ("application/dicom", ct),
        ("application/dicom", b"not a DICOM file".to_vec()),
    ]);
    let (status, headers, response) = stow(&app, "/dicomweb/studies", &related_type(), body).await;
    assert_eq!(status, 202, "some stored, one failed: {response}");
    assert_eq!(headers["content-type"], "application/dicom+json");

    let referenced = items(&response, "00081199");
    assert_eq!(referenced.len(), 3, "{response}");
    for (item, number) in referenced.iter().zip(1..) {
        assert_eq!(
            value(item, "00081155"),
            &Value::from(format!("{STUDY}.1.{number}"))
        );
        assert_eq!(value(item, "00081150"), "1.2.840.10008.5.1.4.1.1.1.1");
        assert_eq!(value(item, "00990010"), "MEDINFORM 1.0");
    }
    assert_eq!(value(referenced[0], "00991011"), "SCREENED");
    assert_eq!(value(referenced[1], "00991011"), "SCREENED");
    assert_eq!(
        value(referenced[2], "00991011"),
        "NOT_ROUTED",
        "a CT no rule takes"
    );
    assert!(
        referenced[2]["00991010"].get("Value").is_none(),
        "no job for it"
    );
    let failed = items(&response, "00081198");
    assert_eq!(failed.len(), 1, "{response}");
    assert_eq!(
        value(failed[0], "00081197"),
        &Value::from(CANNOT_UNDERSTAND)
    );

    // Both screened instances are jobs of one batch: the study's, for tuberculosis.
    let links: Vec<&str> = headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links.len(), 1, "{links:?}");
    let batch = links[0].trim_start_matches('<').split('>').next().unwrap();
    let mut jobs = Vec::new();
    for item in &referenced[..2] {
        let url = value(item, "00991010").as_str().unwrap();
        let job = app.wait_finished(url.trim_start_matches("/v1/jobs/")).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            format!("/v1/batches/{}", job["batch_id"].as_str().unwrap()),
            batch
        );
        assert_eq!(job["priority"], "bulk");
        assert_eq!(
            job["client_reference"], "ACC-2026-0042",
            "the accession number"
        );
        assert_eq!(job["dicom"]["study_instance_uid"], STUDY);
        jobs.push(job);
    }
    let (status, batch_view) = app.get(batch).await;
    assert_eq!(status, 200, "{batch_view}");
    assert_eq!(batch_view["model"], "tuberculosis");

    // The same instance sent again (a PACS retry) answers the job it made, into the same batch.
    let (status, _, again) = stow(
        &app,
        &format!("/dicomweb/studies/{STUDY}"),
        &related_type(),
        related(&[("application/dicom", first.clone())]),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        value(items(&again, "00081199")[0], "00991010"),
        value(referenced[0], "00991010")
    );

    // Forwarded or uploaded, the same instance gives the same probabilities.
    let (status, upload) = app.submit("tuberculosis", "chest.dcm", first).await;
    assert_eq!(status, 202, "{upload}");
    assert_ne!(upload["id"], jobs[0]["id"], "an upload is a job of its own");
    let upload = app.wait_finished(upload["id"].as_str().unwrap()).await;
    assert_eq!(probabilities(&upload), probabilities(&jobs[0]));
    app.stop().await;
}

#[tokio::test]
async fn instances_are_refused_with_their_failure_reasons() {
    let app = TestApp::start_with(routed(Kind::Embedded)).await;
    let xray = image::imageops::thumbnail(&chest_xray(), 64, 64);

    // Another study than the path's.
    let (status, _, response) = stow(
        &app,
        "/dicomweb/studies/1.2.3.4.5",
        &related_type(),
        related(&[("application/dicom", dx_file(&xray, "DX", "CHEST"))]),
    )
    .await;
    assert_eq!(status, 409, "none stored: {response}");
    let failed = items(&response, "00081198");
    assert_eq!(failed.len(), 1, "{response}");
    assert_eq!(
        value(failed[0], "00081197"),
        &Value::from(DATA_SET_MISMATCH)
    );
    assert_eq!(
        value(failed[0], "00081155"),
        &Value::from(format!("{STUDY}.1.1"))
    );

    // A transfer syntax that is not decoded (the file relabelled Explicit VR Big Endian).
    let mut big_endian = dx_file(&xray, "DX", "CHEST");
    let at = big_endian
        .windows(20)
        .position(|w| w == b"1.2.840.10008.1.2.1\0")
        .unwrap();
    big_endian[at + 18] = b'2';
    let (status, _, response) = stow(
        &app,
        "/dicomweb/studies",
        &related_type(),
        related(&[
            ("application/dicom", big_endian),
            ("image/png", vec![0x89, b'P']),
        ]),
    )
    .await;
    assert_eq!(status, 409, "{response}");
    let failed = items(&response, "00081198");
    assert_eq!(
        value(failed[0], "00081197"),
        &Value::from(TRANSFER_SYNTAX_NOT_SUPPORTED)
    );
    assert_eq!(
        value(failed[1], "00081197"),
        &Value::from(CANNOT_UNDERSTAND)
    );

    // Not multipart/related of DICOM: 415 with the API's error body.
    for content_type in [
        "application/dicom".to_owned(),
        format!("multipart/form-data; boundary={BOUNDARY}"),
        format!("multipart/related; type=\"application/dicom+xml\"; boundary={BOUNDARY}"),
    ] {
        let (status, body) = send(
            app.http
                .post(app.url("/dicomweb/studies"))
                .header("content-type", content_type.as_str())
                .body(related(&[(
                    "application/dicom",
                    dx_file(&xray, "DX", "CHEST"),
                )])),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("unsupported_media_type")),
            "{content_type}: {body}"
        );
    }
    let (status, list) = app.get("/v1/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    app.stop().await;
}
