//! DICOM files as X-ray units and PACS write them: real files that pydicom and pydicom-data
//! ship, rendered by the service and by the reference viewer pipeline (pydicom's
//! `apply_modality_lut` + `apply_voi_lut`, `models/training/medinform_train/dicom.py`), and every
//! refusal with its code.

use std::path::PathBuf;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use image::DynamicImage;
use medinform_core::imaging::dicom::{self, apply_patient_data};
use medinform_core::imaging::{self, ImageLimits, PatientData};

use crate::registry::{read_npy, run_python};

/// Files of every transfer syntax, photometric interpretation and LUT the decoder reads: CR
/// radiographs (MONOCHROME1, 10 and 15 bits, with windows; one as JPEG 2000 lossless), CT and MR
/// (signed, rescaled), a Modality LUT, a VOI LUT, NM as JPEG lossless and JPEG 2000,
/// RGB and YBR_FULL (native, RLE, JPEG baseline, JPEG lossless), deflated.
const RENDERED: &[&str] = &[
    "RG1_UNCR.dcm",
    "RG3_UNCR.dcm",
    "RG1_J2KR.dcm",
    "CT_small.dcm",
    "693_UNCR.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "mlut_18.dcm",
    "vlut_04.dcm",
    "JPEG-LL.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle.dcm",
    "SC_ybr_full_uncompressed.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "US1_UNCR.dcm",
];

/// One line of `medinform_train.dicom`'s output.
#[derive(Debug, serde::Deserialize)]
struct Reference {
    name: String,
    path: PathBuf,
    npy: Option<PathBuf>,
    error: Option<String>,
}

/// Renders `names` with the reference pipeline.
fn references(names: &[&str]) -> (tempfile::TempDir, Vec<Reference>) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "-m".to_owned(),
        "medinform_train.dicom".to_owned(),
        out.path().display().to_string(),
    ];
    args.extend(names.iter().map(|n| n.to_string()));
    let lines = run_python(&args);
    let refs: Vec<Reference> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refs.len(), names.len(), "{lines}");
    (out, refs)
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn test_file(name: &str) -> Vec<u8> {
    let (_dir, refs) = references(&[name]);
    read(&refs[0].path)
}

fn code(bytes: &[u8]) -> String {
    imaging::decode(bytes, &ImageLimits::default())
        .map(|_| ())
        .unwrap_err()
        .code()
        .to_string()
}

fn parse(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(bytes)
        .unwrap()
}

fn write(object: &DefaultDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    object.write_all(&mut out).unwrap();
    out
}

fn text(object: &DefaultDicomObject, tag: Tag) -> Option<String> {
    object
        .element_opt(tag)
        .unwrap()
        .map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned())
}

#[test]
fn real_dicom_files_render_as_the_reference_viewer_pipeline_does() {
    let (_dir, refs) = references(RENDERED);
    let mut report = Vec::new();
    for reference in &refs {
        let npy = reference.npy.as_ref().unwrap_or_else(|| {
            panic!(
                "{}: the reference failed: {:?}",
                reference.name, reference.error
            )
        });
        let (shape, expected) = read_npy(npy, "|u1");
        let decoded = imaging::decode(&read(&reference.path), &ImageLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e} ({})", reference.name, e.code()));
        let actual = match &decoded.image {
            DynamicImage::ImageLuma8(img) => img.as_raw().clone(),
            DynamicImage::ImageRgb8(img) => img.as_raw().clone(),
            other => panic!("{}: rendered as {:?}", reference.name, other.color()),
        };
        let (w, h, c) = (
            decoded.width() as usize,
            decoded.height() as usize,
            decoded.color().channel_count() as usize,
        );
        let expected_shape: Vec<usize> = if c == 1 { vec![h, w] } else { vec![h, w, c] };
        assert_eq!(shape, expected_shape, "{}", reference.name);
        let diffs: Vec<u8> = actual
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let off = diffs.iter().filter(|d| **d > 0).count();
        report.push(format!(
            "{}: {w}x{h}x{c}, max |diff| {max}, {off} of {} samples differ",
            reference.name,
            diffs.len()
        ));
        assert!(
            max <= 1,
            "{}: max |diff| {max} grey levels (limit 1)\n{}",
            reference.name,
            report.join("\n")
        );
        assert!(decoded.dicom.is_some(), "{}", reference.name);
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_radiograph_records_its_study_identifiers() {
    let bytes = test_file("RG1_UNCR.dcm");
    let decoded = imaging::decode(&bytes, &ImageLimits::default()).unwrap();
    let attributes = decoded.dicom.as_deref().unwrap();
    let object = parse(&bytes);
    assert_eq!(attributes.modality.as_deref(), Some("CR"));
    assert_eq!(
        attributes.study_instance_uid,
        text(&object, tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(
        attributes.sop_instance_uid,
        text(&object, tags::SOP_INSTANCE_UID)
    );
    assert_eq!(attributes.sop_class_uid, text(&object, tags::SOP_CLASS_UID));
    assert!(attributes.study_instance_uid.is_some());
    // The Patient ID is read (for the tenant's rule to act on) but never shown in Debug.
    let debug = format!("{attributes:?}");
    if let Some(id) = &attributes.patient_id {
        assert!(!debug.contains(id.as_str()), "{debug}");
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let cases = [
        ("MR_small_bigendian.dcm", "unsupported_transfer_syntax"),
        (
            "MR_small_jpeg_ls_lossless.dcm",
            "unsupported_transfer_syntax",
        ),
        // 12-bit JPEG Extended (Process 4): the pure-Rust JPEG decoder reads 8-bit lossy JPEG.
        ("JPGExtended.dcm", "unsupported_transfer_syntax"),
        ("emri_small.dcm", "multiframe_not_supported"),
        ("rtplan.dcm", "no_pixel_data"),
        ("OBXXXX1A.dcm", "unsupported_image_format"),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    let (_dir, refs) = references(&names);
    for ((name, expected), reference) in cases.iter().zip(&refs) {
        let err = imaging::decode(&read(&reference.path), &ImageLimits::default())
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), *expected, "{name}: {err}");
    }
    let err = imaging::decode(&read(&refs[1].path), &ImageLimits::default())
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("1.2.840.10008.1.2.4.80") && err.to_string().contains("JPEG-LS"),
        "{err}"
    );
}

#[test]
fn a_pixel_bomb_is_refused_from_the_header() {
    // CT_small with Rows and Columns rewritten to 60000: 7.2 GB of 16-bit pixels declared by a
    // 39 KB file. Refused before any pixel buffer exists.
    let mut object = parse(&test_file("CT_small.dcm"));
    for tag in [tags::ROWS, tags::COLUMNS] {
        object.put(DataElement::new(
            tag,
            VR::US,
            PrimitiveValue::from(60000_u16),
        ));
    }
    let bomb = write(&object);
    assert!(bomb.len() < 64 * 1024);
    let before = imaging::decode_budget().in_use();
    assert_eq!(code(&bomb), "image_dimensions_too_large");
    assert_eq!(imaging::decode_budget().in_use(), before);

    // Within the pixel limit but over the decoded-bytes limit.
    let limits = ImageLimits {
        max_decoded_bytes: 128 * 128 * 2 - 1,
        ..ImageLimits::default()
    };
    let err = imaging::decode(&test_file("CT_small.dcm"), &limits)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), "image_dimensions_too_large", "{err}");

    // A JPEG 2000 stream that declares other dimensions than the header.
    let mut object = parse(&test_file("MR_small_jp2klossless.dcm"));
    for tag in [tags::ROWS, tags::COLUMNS] {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(32_u16)));
    }
    assert_eq!(code(&write(&object)), "corrupt_image");
}

#[test]
fn damaged_dicom_files_are_corrupt() {
    let bytes = test_file("CT_small.dcm");
    for cut in [bytes.len() - 1000, bytes.len() / 2, 200] {
        assert_eq!(code(&bytes[..cut]), "corrupt_image", "cut at {cut}");
    }
}

#[test]
fn patient_identity_is_kept_pseudonymized_or_dropped() {
    let original = test_file("CT_small.dcm");
    let source = parse(&original);
    let patient_id = text(&source, tags::PATIENT_ID).unwrap();
    assert!(text(&source, tags::PATIENT_NAME).is_some());
    let attributes = imaging::decode(&original, &ImageLimits::default())
        .unwrap()
        .dicom
        .unwrap();
    assert_eq!(attributes.patient_id.as_deref(), Some(patient_id.as_str()));
    let key = "a-site-secret-of-at-least-32-characters";

    let (stored, kept) = apply_patient_data(&original, &attributes, PatientData::Keep, "").unwrap();
    assert!(stored.is_none(), "kept as sent");
    assert_eq!(kept.patient_id.as_deref(), Some(patient_id.as_str()));
    assert_eq!(kept.patient_pseudonym, None);

    let (stored, pseudonymized) =
        apply_patient_data(&original, &attributes, PatientData::Pseudonymize, key).unwrap();
    let pseudonym = dicom::pseudonym(key, &patient_id);
    assert_eq!(pseudonym.len(), 64);
    assert_eq!(pseudonymized.patient_id, None);
    assert_eq!(
        pseudonymized.patient_pseudonym.as_deref(),
        Some(pseudonym.as_str())
    );
    assert_ne!(
        pseudonym,
        dicom::pseudonym("another-key-of-at-least-32-characters", &patient_id)
    );
    let stored = stored.unwrap();
    let object = parse(&stored);
    assert_eq!(
        text(&object, tags::PATIENT_ID).as_deref(),
        Some(pseudonym.as_str())
    );
    assert_eq!(text(&object, tags::PATIENT_NAME), Some(String::new()));

    let (stored, dropped) =
        apply_patient_data(&original, &attributes, PatientData::Drop, "").unwrap();
    assert_eq!(
        (dropped.patient_id, dropped.patient_pseudonym),
        (None, None)
    );
    let stored = stored.unwrap();
    let object = parse(&stored);
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
    ] {
        assert_eq!(text(&object, tag), Some(String::new()), "{tag} is emptied");
    }
    for tag in [tags::INSTITUTION_NAME, tags::STATION_NAME] {
        assert!(
            object.element_opt(tag).unwrap().is_none(),
            "{tag} is removed"
        );
    }
    assert!(
        object.tags().all(|t| t.group() % 2 == 0),
        "private attributes are removed"
    );
    assert_eq!(
        text(&object, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
        Some("YES")
    );
    // The study can still be matched, and the image is the same image.
    for tag in [
        tags::STUDY_INSTANCE_UID,
        tags::SOP_INSTANCE_UID,
        tags::STUDY_DATE,
    ] {
        assert_eq!(text(&object, tag), text(&source, tag), "{tag} is kept");
    }
    assert_eq!(dropped.study_instance_uid, attributes.study_instance_uid);
    let before = imaging::decode(&original, &ImageLimits::default()).unwrap();
    let after = imaging::decode(&stored, &ImageLimits::default()).unwrap();
    assert_eq!(before.image, after.image);
    assert!(!String::from_utf8_lossy(&stored).contains(&patient_id));
}
