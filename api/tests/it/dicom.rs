//! DICOM uploads: a chest X-ray as a detector writes it (DX, 12-bit MONOCHROME1 with a window)
//! is screened like the same pixels sent as PNG, records its study, keeps only the patient
//! identity the tenant's rule allows, and every bad DICOM is refused with its code and leaves
//! nothing behind.

use std::collections::HashMap;
use std::io::Cursor;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use medinform_core::config::DicomConfig;
use medinform_core::imaging::PatientData;
use medinform_core::imaging::dicom::pseudonym;
use medinform_core::tenant::Scope;
use serde_json::Value;

use crate::on_both_backends;
use crate::support::{
    Kind, Options, TestApp, add_model, image_form, send, shared_dir, test_registry_dir,
    validate_r4_bundle,
};

pub const STUDY: &str = "1.2.826.0.1.3680043.8.498.10000000000000000000000001";
const PATIENT_ID: &str = "TB-NORTH-000731";
const PATIENT_NAME: &str = "Doe^Jane";
const KEY: &str = "a-site-secret-of-at-least-32-characters!";

/// A real chest X-ray of the shared tuberculosis set, as 8-bit grey pixels.
pub fn chest_xray() -> image::GrayImage {
    let dir = shared_dir().join("datasets/tuberculosis/images/Normal");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    image::open(&files[0]).unwrap().to_luma8()
}

/// `grey` as a Digital X-Ray object the way a detector writes it: 12 bits stored in 16,
/// MONOCHROME1 (white is low), a window over the whole range, patient and study identifiers,
/// a private attribute, Explicit VR Little Endian; instance 1 of the series of [`STUDY`].
pub fn dx_file(grey: &image::GrayImage, modality: &str, body_part: &str) -> Vec<u8> {
    dx_instance(grey, modality, body_part, 1)
}

/// [`dx_file`] as instance `number` of the series.
pub fn dx_instance(
    grey: &image::GrayImage,
    modality: &str,
    body_part: &str,
    number: u32,
) -> Vec<u8> {
    let pixels: Vec<u16> = grey
        .as_raw()
        .iter()
        .map(|&v| u16::from(255 - v) * 16 + 8)
        .collect();
    let mut object = InMemDicomObject::new_empty();
    let mut text = |tag: Tag, vr: VR, value: &str| {
        object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    text(
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    );
    text(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        &format!("{STUDY}.1.{number}"),
    );
    text(tags::STUDY_INSTANCE_UID, VR::UI, STUDY);
    text(tags::SERIES_INSTANCE_UID, VR::UI, &format!("{STUDY}.1"));
    text(tags::STUDY_DATE, VR::DA, "20261201");
    text(tags::ACCESSION_NUMBER, VR::SH, "ACC-2026-0042");
    text(tags::MODALITY, VR::CS, modality);
    text(tags::BODY_PART_EXAMINED, VR::CS, body_part);
    text(tags::PATIENT_NAME, VR::PN, PATIENT_NAME);
    text(tags::PATIENT_ID, VR::LO, PATIENT_ID);
    text(tags::PATIENT_BIRTH_DATE, VR::DA, "19840517");
    text(tags::INSTITUTION_NAME, VR::LO, "District Hospital North");
    text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1");
    text(tags::WINDOW_CENTER, VR::DS, "2048");
    text(tags::WINDOW_WIDTH, VR::DS, "4096");
    text(Tag(0x0029, 0x0010), VR::LO, "ACME DETECTOR 1");
    let mut number = |tag: Tag, value: u16| {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    };
    number(tags::ROWS, grey.height() as u16);
    number(tags::COLUMNS, grey.width() as u16);
    number(tags::SAMPLES_PER_PIXEL, 1);
    number(tags::BITS_ALLOCATED, 16);
    number(tags::BITS_STORED, 12);
    number(tags::HIGH_BIT, 11);
    number(tags::PIXEL_REPRESENTATION, 0);
    object.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    let file = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// A registry with the shipped tuberculosis (chest X-ray) and malaria models.
pub fn chest_options(kind: Kind) -> Options {
    let registry = test_registry_dir();
    add_model(registry.path(), "tuberculosis");
    let mut options = Options::new(kind);
    options.registry_dir = Some(registry);
    options
}

async fn bytes_of(app: &TestApp, path: &str, key: Option<&str>) -> (String, Vec<u8>) {
    let mut request = app.http.get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.bytes().await.unwrap().to_vec())
}

pub fn probabilities(job: &Value) -> Vec<f64> {
    job["result"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probability"].as_f64().unwrap())
        .collect()
}

async fn a_dicom_xray_is_screened_as_its_pixels_are(kind: Kind) {
    let app = TestApp::start_with(chest_options(kind)).await;
    let xray = chest_xray();
    let dicom = dx_file(&xray, "DX", "CHEST");

    let (status, job) = app.submit("tuberculosis", "chest.dcm", dicom.clone()).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let study = &job["dicom"];
    assert_eq!(study["study_instance_uid"], STUDY, "{job}");
    assert_eq!(study["sop_instance_uid"], format!("{STUDY}.1.1"));
    assert_eq!(study["accession_number"], "ACC-2026-0042");
    assert_eq!(study["modality"], "DX");
    assert_eq!(study["body_part_examined"], "CHEST");
    assert_eq!(study["study_date"], "2026-12-01");
    // The default rule drops patient identity, from the job and from the stored object.
    assert!(study.get("patient_id").is_none() && study.get("patient_pseudonym").is_none());
    assert_eq!(job["links"]["preview"], format!("/v1/jobs/{id}/image.png"));
    let job = app.wait_finished(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let (content_type, stored) = bytes_of(&app, &format!("/v1/jobs/{id}/image"), None).await;
    assert_eq!(content_type, "application/dicom");
    let stored_text = String::from_utf8_lossy(&stored);
    for identity in [
        PATIENT_ID,
        PATIENT_NAME,
        "19840517",
        "District Hospital",
        "ACME",
    ] {
        assert!(!stored_text.contains(identity), "{identity} is stored");
    }
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(&stored))
        .unwrap();
    assert_eq!(
        object
            .element(tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0'),
        STUDY
    );

    // The same pixels as a PNG (the service's rendering, which core/tests/it/dicom.rs holds to
    // pydicom's) give the same probabilities.
    let (content_type, png) = bytes_of(&app, &format!("/v1/jobs/{id}/image.png"), None).await;
    assert_eq!(content_type, "image/png");
    let rendered = image::load_from_memory(&png).unwrap().to_luma8();
    assert_eq!(rendered.dimensions(), xray.dimensions());
    let (status, from_png) = app.submit("tuberculosis", "chest.png", png).await;
    assert_eq!(status, 202, "{from_png}");
    let from_png = app.wait_finished(from_png["id"].as_str().unwrap()).await;
    assert_eq!(from_png["status"], "succeeded", "{from_png}");
    assert_eq!(probabilities(&job), probabilities(&from_png));
    assert_eq!(job["result"]["label"], from_png["result"]["label"]);
    assert!(from_png.get("dicom").is_none());

    // Its FHIR report names the study by its UID and the order by its accession number.
    let (status, bundle) = app.get(&format!("/v1/jobs/{id}/fhir")).await;
    assert_eq!(status, 200, "{bundle}");
    validate_r4_bundle(&bundle).unwrap_or_else(|e| panic!("{e}\n{bundle:#}"));
    let report = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "DiagnosticReport")
        .unwrap();
    assert_eq!(
        report["imagingStudy"][0]["identifier"]["value"],
        format!("urn:oid:{STUDY}")
    );
    assert!(
        report["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["value"] == "ACC-2026-0042" && i["type"]["coding"][0]["code"] == "ACSN"),
        "{report}"
    );

    // A heatmap is drawn over the DICOM image too.
    let (content_type, _) = bytes_of(&app, &format!("/v1/jobs/{id}/heatmap.png"), None).await;
    assert_eq!(content_type, "image/png");
    app.stop().await;
}

async fn bad_dicom_files_are_refused_and_nothing_is_stored(kind: Kind) {
    let app = TestApp::start_with(chest_options(kind)).await;
    let xray = image::imageops::thumbnail(&chest_xray(), 64, 64);
    let edit = |f: &dyn Fn(&mut dicom_object::DefaultDicomObject)| {
        let mut object = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(Cursor::new(dx_file(&xray, "DX", "CHEST")))
            .unwrap();
        f(&mut object);
        let mut out = Vec::new();
        object.write_all(&mut out).unwrap();
        out
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "a CT",
            "tuberculosis",
            dx_file(&xray, "CT", "CHEST"),
            422,
            "modality_mismatch",
        ),
        (
            "a knee",
            "tuberculosis",
            dx_file(&xray, "DX", "KNEE"),
            422,
            "modality_mismatch",
        ),
        (
            "an X-ray to the malaria model",
            "malaria",
            dx_file(&xray, "DX", "CHEST"),
            422,
            "modality_mismatch",
        ),
        (
            "two frames",
            "tuberculosis",
            edit(&|o| {
                o.put(DataElement::new(
                    tags::NUMBER_OF_FRAMES,
                    VR::IS,
                    PrimitiveValue::from("2"),
                ));
            }),
            422,
            "multiframe_not_supported",
        ),
        (
            "no pixel data",
            "tuberculosis",
            edit(&|o| {
                o.remove_element(tags::PIXEL_DATA);
            }),
            422,
            "no_pixel_data",
        ),
        (
            "a pixel bomb",
            "tuberculosis",
            edit(&|o| {
                for tag in [tags::ROWS, tags::COLUMNS] {
                    o.put(DataElement::new(
                        tag,
                        VR::US,
                        PrimitiveValue::from(65000_u16),
                    ));
                }
            }),
            422,
            "image_dimensions_too_large",
        ),
        (
            "a transfer syntax that is not decoded (Explicit VR Big Endian)",
            "tuberculosis",
            {
                let mut bytes = dx_file(&xray, "DX", "CHEST");
                let at = bytes
                    .windows(20)
                    .position(|w| w == b"1.2.840.10008.1.2.1\0")
                    .unwrap();
                bytes[at + 18] = b'2';
                bytes
            },
            415,
            "unsupported_transfer_syntax",
        ),
        (
            "a truncated file",
            "tuberculosis",
            {
                let full = dx_file(&xray, "DX", "CHEST");
                full[..full.len() / 2].to_vec()
            },
            422,
            "corrupt_image",
        ),
    ];
    for (what, model, bytes, status, code) in cases {
        let (got, body) = app.submit(model, "image.dcm", bytes).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
    }
    let (status, list) = app.get("/v1/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    if app.image_dir.is_some() {
        let stored = app.stored_keys("").await;
        assert!(stored.is_empty(), "{stored:?}");
    }
    app.stop().await;
}

on_both_backends!(
    a_dicom_xray_is_screened_as_its_pixels_are,
    bad_dicom_files_are_refused_and_nothing_is_stored
);

#[tokio::test]
async fn each_tenant_keeps_the_patient_identity_its_rule_allows() {
    let mut options = chest_options(Kind::Embedded);
    options.require_keys = true;
    options.dicom = DicomConfig {
        patient_data: PatientData::Drop,
        patient_data_by_tenant: HashMap::from([
            ("tb-van".to_owned(), PatientData::Pseudonymize),
            ("hospital".to_owned(), PatientData::Keep),
        ]),
        pseudonym_key: KEY.to_owned(),
        ..DicomConfig::default()
    };
    let app = TestApp::start_with(options).await;
    let xray = image::imageops::thumbnail(&chest_xray(), 96, 96);
    let dicom = dx_file(&xray, "CR", "CHEST");
    let mut seen = Vec::new();
    for tenant in ["tb-van", "hospital", "clinic"] {
        let key = app.create_key(tenant, &[Scope::Submit, Scope::Read]).await;
        let (status, job) = send(
            app.http
                .post(app.url("/v1/jobs"))
                .bearer_auth(&key)
                .multipart(image_form("tuberculosis", "chest.dcm", dicom.clone())),
        )
        .await;
        assert_eq!(status, 202, "{tenant}: {job}");
        let id = job["id"].as_str().unwrap();
        let (_, stored) = bytes_of(&app, &format!("/v1/jobs/{id}/image"), Some(&key)).await;
        let stored = String::from_utf8_lossy(&stored).into_owned();
        seen.push((tenant, job["dicom"].clone(), stored));
    }
    let expected_pseudonym = pseudonym(KEY, PATIENT_ID);
    for (tenant, study, stored) in &seen {
        assert_eq!(study["study_instance_uid"], STUDY, "{tenant}");
        match *tenant {
            "tb-van" => {
                assert!(study.get("patient_id").is_none(), "{study}");
                assert_eq!(study["patient_pseudonym"], expected_pseudonym.as_str());
                assert!(stored.contains(&expected_pseudonym) && !stored.contains(PATIENT_ID));
                assert!(!stored.contains(PATIENT_NAME));
            }
            "hospital" => {
                assert_eq!(study["patient_id"], PATIENT_ID, "{study}");
                assert!(stored.contains(PATIENT_ID) && stored.contains(PATIENT_NAME));
            }
            _ => {
                assert!(
                    study.get("patient_id").is_none() && study.get("patient_pseudonym").is_none()
                );
                assert!(!stored.contains(PATIENT_ID) && !stored.contains(PATIENT_NAME));
            }
        }
    }
    app.stop().await;
}
