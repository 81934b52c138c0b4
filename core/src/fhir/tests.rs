use serde_json::{Value, json};

use super::*;

const CREATED: &str = "2026-11-22T10:00:00.120Z";
const FINISHED: &str = "2026-11-22T10:00:02.500Z";

const CHEST_XRAY: ModelInfo<'static> = ModelInfo {
    name: "Tuberculosis (chest X-ray)",
    modality: Modality::ChestXray,
};

/// A job as the store reads it. Built from JSON, so that fields added to [`Job`] later (which
/// the report does not read) leave these tests as they are.
fn job(status: &str, result: Option<Value>, error: Option<Value>) -> Job {
    let finished = matches!(status, "succeeded" | "failed" | "canceled");
    serde_json::from_value(json!({
        "id": "0190f2a1-b2c3-7d4e-8f9a-0b1c2d3e4f50",
        "tenant_id": "00000000-0000-0000-0000-000000000000",
        "batch_id": null,
        "model": "tuberculosis",
        "model_version": "2.0.0",
        "status": status,
        "priority": "interactive",
        "image_key": "images/ab",
        "image_sha256": "ab",
        "image_content_type": "image/png",
        "image_bytes": 10,
        "client_reference": "camp7-patient12",
        "site": null,
        "tags": [],
        "deadline": null,
        "webhook_url": null,
        "attempts": 1,
        "created_at": CREATED,
        "updated_at": FINISHED,
        "started_at": CREATED,
        "finished_at": if finished { json!(FINISHED) } else { Value::Null },
        "result": result,
        "error": error,
    }))
    .unwrap()
}

fn screened(finding_probability: f64, stage: Option<&str>) -> Job {
    let result = json!({
        "label": if finding_probability >= 0.1729 { "Tuberculosis" } else { "Normal" },
        "probabilities": [
            {"label": "Normal", "probability": 1.0 - finding_probability},
            {"label": "Tuberculosis", "probability": finding_probability},
        ],
        "finding": "Tuberculosis",
        "finding_probability": finding_probability,
        "threshold": 0.1729,
        "positive": finding_probability >= 0.1729,
        "stage": stage,
    });
    job("succeeded", Some(result), None)
}

fn to_json(bundle: &Bundle) -> Value {
    serde_json::to_value(bundle).unwrap()
}

/// The resources of the bundle, by `fullUrl`, in order.
fn entries(bundle: &Value) -> Vec<(String, Value)> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["fullUrl"].as_str().unwrap().to_owned(),
                e["resource"].clone(),
            )
        })
        .collect()
}

fn of_type(bundle: &Value, resource_type: &str) -> Vec<(String, Value)> {
    entries(bundle)
        .into_iter()
        .filter(|(_, r)| r["resourceType"] == resource_type)
        .collect()
}

fn coding(concept: &Value) -> (&str, &str) {
    let coding = &concept["coding"][0];
    (
        coding["system"].as_str().unwrap(),
        coding["code"].as_str().unwrap(),
    )
}

/// FHIR's JSON has no nulls and no empty arrays or objects.
fn assert_no_empty(value: &Value, path: &str) {
    match value {
        Value::Null => panic!("null at {path}"),
        Value::Array(items) => {
            assert!(!items.is_empty(), "empty array at {path}");
            for (i, item) in items.iter().enumerate() {
                assert_no_empty(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(fields) => {
            assert!(!fields.is_empty(), "empty object at {path}");
            for (name, field) in fields {
                assert_no_empty(field, &format!("{path}.{name}"));
            }
        }
        Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
        _ => {}
    }
}

#[test]
fn a_positive_screen_is_a_final_report_with_its_observations_and_model() {
    let bundle =
        to_json(&job_bundle(&screened(0.8123, Some("research")), Some(CHEST_XRAY)).unwrap());
    assert_no_empty(&bundle, "Bundle");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert_eq!(bundle["timestamp"], FINISHED);

    let all = entries(&bundle);
    // The report, the finding, one per class, the model.
    assert_eq!(all.len(), 5, "{bundle:#}");
    let mut urls: Vec<&str> = all.iter().map(|(url, _)| url.as_str()).collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("urn:uuid:") && u.len() == 45),
        "{urls:?}"
    );
    urls.dedup();
    assert_eq!(urls.len(), 5);

    let (_, report) = &of_type(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["status"], "final");
    assert_eq!(
        report["identifier"],
        json!([{
            "system": "https://medinform.example/fhir/sid/job-id",
            "value": "0190f2a1-b2c3-7d4e-8f9a-0b1c2d3e4f50",
        }])
    );
    assert_eq!(
        coding(&report["category"][0]),
        ("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD")
    );
    assert_eq!(
        coding(&report["code"]),
        (
            "https://medinform.example/fhir/CodeSystem/screening",
            "tuberculosis"
        )
    );
    assert_eq!(
        report["code"]["text"],
        "Tuberculosis (chest X-ray) screening"
    );
    assert_eq!(
        report["subject"],
        json!({"identifier": {"value": "camp7-patient12"}, "display": "camp7-patient12"})
    );
    assert_eq!(report["effectiveDateTime"], CREATED);
    assert_eq!(report["issued"], FINISHED);
    assert_eq!(
        coding(&report["conclusionCode"][0]),
        ("http://snomed.info/sct", "10828004")
    );
    let conclusion = report["conclusion"].as_str().unwrap();
    for part in [
        "Screen positive for Tuberculosis",
        "probability 0.8123",
        "threshold 0.1729",
        "tuberculosis 2.0.0",
        "research stage",
        "not a diagnosis",
    ] {
        assert!(conclusion.contains(part), "{part:?} not in {conclusion:?}");
    }

    // The report's results are the observations, finding first.
    let observations = of_type(&bundle, "Observation");
    let results: Vec<&str> = report["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    let observation_urls: Vec<&str> = observations.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(results, observation_urls);

    let (_, finding) = &observations[0];
    assert_eq!(finding["status"], "final");
    assert_eq!(
        coding(&finding["code"]),
        (
            "https://medinform.example/fhir/CodeSystem/screening",
            "tuberculosis.finding-probability"
        )
    );
    assert_eq!(
        coding(&finding["category"][0]),
        (
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "imaging"
        )
    );
    assert_eq!(
        finding["valueQuantity"],
        json!({"value": 0.8123, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"})
    );
    assert_eq!(
        coding(&finding["interpretation"][0]),
        (
            "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "POS"
        )
    );
    assert_eq!(
        finding["component"][0]["code"]["coding"][0]["code"],
        "decision-threshold"
    );
    assert_eq!(finding["component"][0]["valueQuantity"]["value"], 0.1729);
    assert_eq!(
        finding["component"][1]["code"]["coding"][0]["code"],
        "model-stage"
    );
    assert_eq!(
        coding(&finding["component"][1]["valueCodeableConcept"]),
        (
            "https://medinform.example/fhir/CodeSystem/model-stage",
            "research"
        )
    );
    assert!(
        finding["note"][0]["text"]
            .as_str()
            .unwrap()
            .contains("research-stage")
    );
    assert_eq!(finding["subject"], report["subject"]);

    let classes: Vec<(&str, f64)> = observations[1..]
        .iter()
        .map(|(_, o)| {
            assert!(o.get("interpretation").is_none(), "{o}");
            (
                o["code"]["coding"][0]["code"].as_str().unwrap(),
                o["valueQuantity"]["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(classes[0].0, "tuberculosis.class-probability.Normal");
    assert!((classes[0].1 - 0.1877).abs() < 1e-9);
    assert_eq!(
        classes[1],
        ("tuberculosis.class-probability.Tuberculosis", 0.8123)
    );

    // Every observation names the model, which the bundle holds.
    let (device_url, device) = &of_type(&bundle, "Device")[0];
    for (_, observation) in &observations {
        assert_eq!(observation["device"]["reference"], device_url.as_str());
    }
    assert_eq!(
        device["identifier"],
        json!([{"system": "https://medinform.example/fhir/sid/model-id", "value": "tuberculosis"}])
    );
    assert_eq!(device["version"], json!([{"value": "2.0.0"}]));
    assert_eq!(
        device["deviceName"],
        json!([
            {"name": "Tuberculosis (chest X-ray)", "type": "user-friendly-name"},
            {"name": "tuberculosis", "type": "model-name"},
        ])
    );
}

#[test]
fn a_negative_screen_is_interpreted_negative() {
    let bundle =
        to_json(&job_bundle(&screened(0.05, Some("screening")), Some(CHEST_XRAY)).unwrap());
    let (_, report) = &of_type(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["status"], "final");
    assert_eq!(
        coding(&report["conclusionCode"][0]),
        ("http://snomed.info/sct", "260385009")
    );
    assert_eq!(
        report["conclusionCode"][0]["text"],
        "Screen negative for Tuberculosis"
    );
    let conclusion = report["conclusion"].as_str().unwrap();
    assert!(
        conclusion.starts_with("Screen negative for Tuberculosis"),
        "{conclusion}"
    );
    assert!(
        conclusion.contains("below the threshold 0.1729"),
        "{conclusion}"
    );
    assert!(!conclusion.contains("research"), "{conclusion}");
    let (_, finding) = &of_type(&bundle, "Observation")[0];
    assert_eq!(finding["interpretation"][0]["coding"][0]["code"], "NEG");
    assert_eq!(
        finding["component"][1]["valueCodeableConcept"]["coding"][0]["code"],
        "screening"
    );
    assert!(finding.get("note").is_none(), "{finding}");
}

#[test]
fn a_result_without_a_stage_has_no_stage_component() {
    let bundle = to_json(&job_bundle(&screened(0.5, None), Some(CHEST_XRAY)).unwrap());
    let (_, finding) = &of_type(&bundle, "Observation")[0];
    let components = finding["component"].as_array().unwrap();
    assert_eq!(components.len(), 1, "{finding}");
    assert_eq!(
        components[0]["code"]["coding"][0]["code"],
        "decision-threshold"
    );
}

#[test]
fn a_failed_or_canceled_job_is_a_cancelled_report_that_says_why() {
    let failed = job(
        "failed",
        None,
        Some(json!({
            "code": "corrupt_image",
            "message": "The stored image is truncated or damaged.",
        })),
    );
    let bundle = to_json(&job_bundle(&failed, Some(CHEST_XRAY)).unwrap());
    assert_no_empty(&bundle, "Bundle");
    let all = entries(&bundle);
    assert_eq!(all.len(), 1, "{bundle:#}");
    let report = &all[0].1;
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(report["status"], "cancelled");
    assert_eq!(
        report["conclusion"],
        "Not performed: the screening failed (corrupt_image): The stored image is truncated or \
         damaged."
    );
    assert!(report.get("result").is_none());
    assert!(report.get("conclusionCode").is_none());
    assert_eq!(report["issued"], FINISHED);

    let canceled = job(
        "canceled",
        None,
        Some(json!({
            "code": "deadline_exceeded",
            "message": "No worker started the job before its deadline.",
        })),
    );
    let bundle = to_json(&job_bundle(&canceled, None).unwrap());
    let report = &entries(&bundle)[0].1;
    assert_eq!(report["status"], "cancelled");
    assert!(
        report["conclusion"]
            .as_str()
            .unwrap()
            .starts_with("Not performed: the screening was canceled (deadline_exceeded)"),
        "{report}"
    );
}

#[test]
fn a_job_that_has_not_finished_has_no_report() {
    for status in [JobStatus::Queued, JobStatus::Processing] {
        let unfinished = job(status.as_str(), None, None);
        assert_eq!(
            job_bundle(&unfinished, Some(CHEST_XRAY)),
            Err(NotFinished { status })
        );
    }
}

#[test]
fn without_the_model_in_the_registry_the_report_names_it_by_id() {
    let bundle = to_json(&job_bundle(&screened(0.8, None), None).unwrap());
    assert_no_empty(&bundle, "Bundle");
    let (_, report) = &of_type(&bundle, "DiagnosticReport")[0];
    assert!(report.get("category").is_none(), "{report}");
    assert_eq!(report["code"]["text"], "tuberculosis screening");
    let (_, device) = &of_type(&bundle, "Device")[0];
    assert_eq!(
        device["deviceName"],
        json!([{"name": "tuberculosis", "type": "model-name"}])
    );
}

#[test]
fn each_modality_has_its_service_section() {
    for (modality, section, observations) in [
        (Modality::ChestXray, "RAD", "imaging"),
        (Modality::BloodSmearCell, "HM", "laboratory"),
        (Modality::Dermoscopy, "OTH", "imaging"),
        (Modality::Fundus, "OTH", "imaging"),
    ] {
        let model = ModelInfo {
            name: "a model",
            modality,
        };
        let bundle = to_json(&job_bundle(&screened(0.3, None), Some(model)).unwrap());
        let (_, report) = &of_type(&bundle, "DiagnosticReport")[0];
        assert_eq!(report["category"][0]["coding"][0]["code"], section);
        assert!(report["category"][0]["text"].is_string());
        let (_, finding) = &of_type(&bundle, "Observation")[0];
        assert_eq!(finding["category"][0]["coding"][0]["code"], observations);
    }
}

#[test]
fn the_same_job_gives_the_same_bundle_and_another_job_other_urls() {
    let job = screened(0.3, None);
    let first = serde_json::to_string(&job_bundle(&job, Some(CHEST_XRAY)).unwrap()).unwrap();
    let again = serde_json::to_string(&job_bundle(&job, Some(CHEST_XRAY)).unwrap()).unwrap();
    assert_eq!(first, again);

    let mut other = job.clone();
    other.id = JobId::new();
    let other = to_json(&job_bundle(&other, Some(CHEST_XRAY)).unwrap());
    let first: Value = serde_json::from_str(&first).unwrap();
    for ((a, _), (b, _)) in entries(&first).iter().zip(entries(&other).iter()) {
        assert_ne!(a, b);
    }
}

#[test]
fn every_resource_starts_with_its_type() {
    let bundle = job_bundle(&screened(0.3, None), Some(CHEST_XRAY)).unwrap();
    let text = serde_json::to_string(&bundle).unwrap();
    assert!(text.starts_with(r#"{"resourceType":"Bundle","#), "{text}");
    for resource in ["DiagnosticReport", "Observation", "Device"] {
        assert!(
            text.contains(&format!(r#""resource":{{"resourceType":"{resource}","#)),
            "{text}"
        );
    }
}

#[test]
fn a_dicom_study_is_named_by_uid_and_accession_number() {
    let job = screened(0.3, None);
    let report = Report::new(&job, None).diagnostic_report(ReportStatus::Final, "x".into());
    assert!(report.imaging_study.is_empty(), "not a DICOM image");
    assert_eq!(report.identifier.len(), 1);

    let mut job = screened(0.3, None);
    job.dicom = Some(crate::imaging::DicomAttributes {
        study_instance_uid: Some("1.2.840.113619.2.55.3.604688119".into()),
        accession_number: Some("ACC-0042".into()),
        modality: Some("DX".into()),
        ..Default::default()
    });
    let report = Report::new(&job, None).diagnostic_report(ReportStatus::Final, "x".into());
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(
        report["imagingStudy"],
        json!([{
            "type": "ImagingStudy",
            "identifier": {
                "system": "urn:dicom:uid",
                "value": "urn:oid:1.2.840.113619.2.55.3.604688119",
            },
        }])
    );
    assert_eq!(
        report["identifier"][1],
        json!({
            "type": {
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "ACSN",
                    "display": "Accession ID",
                }],
                "text": "Accession ID",
            },
            "value": "ACC-0042",
        })
    );
}

#[test]
fn class_labels_become_codes_without_whitespace_runs() {
    assert_eq!(codes::label_code("No_findings"), "No_findings");
    assert_eq!(
        codes::label_code(" Referable  DR\t(moderate) "),
        "Referable_DR_(moderate)"
    );
}
