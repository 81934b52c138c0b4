//! The parts of HL7 FHIR R4 that MedInform's reports use, as serde types: element names and
//! order as the specification lists them, and absent or empty elements left out (FHIR's JSON has
//! no nulls and no empty arrays).

use serde::Serialize;

/// A `Bundle` of type `collection`: resources that belong together, with no processing asked of
/// the receiver.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    resource_type: &'static str,
    #[serde(rename = "type")]
    bundle_type: &'static str,
    /// When the content was fixed: the job's end.
    pub timestamp: String,
    pub entry: Vec<BundleEntry>,
}

impl Bundle {
    pub fn collection(timestamp: String, entry: Vec<BundleEntry>) -> Self {
        Self {
            resource_type: "Bundle",
            bundle_type: "collection",
            timestamp,
            entry,
        }
    }
}

/// One resource of a [`Bundle`], named by a `urn:uuid:` that the other entries refer to it by.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    pub full_url: String,
    pub resource: Resource,
}

/// The resources a report bundles.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "resourceType")]
pub enum Resource {
    DiagnosticReport(DiagnosticReport),
    Observation(Observation),
    Device(Device),
}

/// `DiagnosticReport.status`, as far as MedInform uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportStatus {
    /// The report is complete.
    Final,
    /// Not started or not completed ("aborted"): a failed or canceled job.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticReport {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub status: ReportStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    pub effective_date_time: String,
    pub issued: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub result: Vec<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub imaging_study: Vec<Reference>,
    pub conclusion: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conclusion_code: Vec<CodeableConcept>,
}

/// `Observation.status`: MedInform reports only complete observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservationStatus {
    Final,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub status: ObservationStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    pub effective_date_time: String,
    pub issued: String,
    pub value_quantity: Quantity,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interpretation: Vec<CodeableConcept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub note: Vec<Annotation>,
    pub device: Reference,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub component: Vec<ObservationComponent>,
}

/// A value that belongs to its observation; exactly one of the values is set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationComponent {
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
}

/// The software that made the observations: a screening model at one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub identifier: Vec<Identifier>,
    pub device_name: Vec<DeviceName>,
    #[serde(rename = "type")]
    pub device_type: CodeableConcept,
    pub version: Vec<DeviceVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceName {
    pub name: String,
    /// `user-friendly-name` or `model-name` (FHIR's DeviceNameType).
    #[serde(rename = "type")]
    pub name_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceVersion {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}

impl Coding {
    pub fn new(system: &str, code: impl Into<String>, display: impl Into<String>) -> Self {
        Self {
            system: system.to_owned(),
            code: code.into(),
            display: display.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeableConcept {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    /// One coding, and its display as the text.
    pub fn coded(coding: Coding) -> Self {
        Self {
            text: Some(coding.display.clone()),
            coding: vec![coding],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identifier {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub identifier_type: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub value: String,
}

impl Identifier {
    pub fn new(system: &str, value: impl Into<String>) -> Self {
        Self {
            identifier_type: None,
            system: Some(system.to_owned()),
            value: value.into(),
        }
    }
}

/// A literal reference (to an entry's `fullUrl`) or a logical one (by identifier).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Reference {
    /// A reference to the entry whose `fullUrl` is `url`.
    pub fn to(url: &str) -> Self {
        Self {
            reference: Some(url.to_owned()),
            resource_type: None,
            identifier: None,
            display: None,
        }
    }
}

/// A measured amount with its UCUM unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: &'static str,
    pub system: &'static str,
    pub code: &'static str,
}

/// A note for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub text: String,
}
