//! Every code system, identifier system and standard code the reports use, in one place (the
//! README's FHIR table lists the same).
//!
//! Standard codes are used where one means exactly what MedInform says; what has no standard
//! code (a model's screening, the probability it gives, its threshold and stage) is coded in
//! MedInform's own code systems under `https://medinform.example/fhir/`.

use super::resources::{CodeableConcept, Coding, Quantity};
use crate::registry::manifest::{Modality, Stage};

/// SNOMED CT.
const SNOMED: &str = "http://snomed.info/sct";
/// HL7 v2 table 0074, Diagnostic Service Section ID (`DiagnosticReport.category`).
const SERVICE_SECTION: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
/// FHIR's observation categories.
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// HL7 v3 ObservationInterpretation.
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// HL7 v2 table 0203, Identifier Type.
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// UCUM.
const UCUM: &str = "http://unitsofmeasure.org";

/// DICOM UIDs, as FHIR identifies them: `urn:oid:` and the UID.
pub(super) const DICOM_UID: &str = "urn:dicom:uid";
/// MedInform's code system of screenings and what they measure: `<model>` (the screening by a
/// model), `<model>.finding-probability`, `<model>.class-probability.<label>`,
/// `decision-threshold`, `model-stage`.
pub(super) const SCREENING: &str = "https://medinform.example/fhir/CodeSystem/screening";
/// MedInform's code system of model stages: `screening`, `research`.
const MODEL_STAGE: &str = "https://medinform.example/fhir/CodeSystem/model-stage";
/// MedInform's job ids (`DiagnosticReport.identifier`).
pub(super) const JOB_ID: &str = "https://medinform.example/fhir/sid/job-id";
/// MedInform's model ids (`Device.identifier`).
pub(super) const MODEL_ID: &str = "https://medinform.example/fhir/sid/model-id";

/// Where a report on images of one modality belongs.
pub(super) struct Section {
    /// `DiagnosticReport.category`: the diagnostic service section.
    pub report: CodeableConcept,
    /// `Observation.category`.
    pub observations: CodeableConcept,
}

/// The section of `modality`'s reports: radiology for X-rays, haematology for blood smears;
/// dermoscopy and fundus photographs have no section of their own in v2-0074 (`OTH`) and say
/// what they are in the category's text.
pub(super) fn section(modality: Modality) -> Section {
    let (code, display, images, observations) = match modality {
        Modality::ChestXray => ("RAD", "Radiology", "Chest X-ray", ("imaging", "Imaging")),
        Modality::BloodSmearCell => (
            "HM",
            "Hematology",
            "Blood smear (cell)",
            ("laboratory", "Laboratory"),
        ),
        Modality::Dermoscopy => ("OTH", "Other", "Dermoscopy", ("imaging", "Imaging")),
        Modality::Fundus => ("OTH", "Other", "Fundus photograph", ("imaging", "Imaging")),
    };
    Section {
        report: CodeableConcept {
            coding: vec![Coding::new(SERVICE_SECTION, code, display)],
            text: Some(images.to_owned()),
        },
        observations: CodeableConcept::coded(Coding::new(
            OBSERVATION_CATEGORY,
            observations.0,
            observations.1,
        )),
    }
}

/// `Observation.interpretation` of a finding at its threshold: `POS` or `NEG`.
pub(super) fn interpretation(positive: bool) -> CodeableConcept {
    CodeableConcept::coded(if positive {
        Coding::new(INTERPRETATION, "POS", "Positive")
    } else {
        Coding::new(INTERPRETATION, "NEG", "Negative")
    })
}

/// `DiagnosticReport.conclusionCode` of a screen: SNOMED CT's Positive or Negative qualifier,
/// which say what the screen found without asserting a disorder; `text` names the finding.
pub(super) fn screen_result(positive: bool, text: String) -> CodeableConcept {
    let coding = if positive {
        Coding::new(SNOMED, "10828004", "Positive (qualifier value)")
    } else {
        Coding::new(SNOMED, "260385009", "Negative (qualifier value)")
    };
    CodeableConcept {
        coding: vec![coding],
        text: Some(text),
    }
}

/// The type of an accession number identifier (`ACSN`).
pub(super) fn accession_number() -> CodeableConcept {
    CodeableConcept::coded(Coding::new(IDENTIFIER_TYPE, "ACSN", "Accession ID"))
}

/// A probability, in UCUM's unity.
pub(super) fn probability(value: f64) -> Quantity {
    Quantity {
        value,
        unit: "1",
        system: UCUM,
        code: "1",
    }
}

/// The code of the decision threshold component.
pub(super) fn decision_threshold() -> CodeableConcept {
    CodeableConcept::coded(Coding::new(
        SCREENING,
        "decision-threshold",
        "Decision threshold on the finding's probability",
    ))
}

/// The code of the model stage component.
pub(super) fn model_stage() -> CodeableConcept {
    CodeableConcept::coded(Coding::new(SCREENING, "model-stage", "Model stage"))
}

/// A model stage as a value.
pub(super) fn stage(stage: Stage) -> CodeableConcept {
    CodeableConcept::coded(match stage {
        Stage::Screening => Coding::new(MODEL_STAGE, "screening", "Screening"),
        Stage::Research => Coding::new(MODEL_STAGE, "research", "Research use only"),
    })
}

/// A code of MedInform's screening code system for a class label: whitespace (which codes may
/// not have runs of) becomes `_`.
pub(super) fn label_code(label: &str) -> String {
    label.split_whitespace().collect::<Vec<_>>().join("_")
}
