//! A finished job as HL7 FHIR R4: the body of `GET /v1/jobs/{id}/fhir` and of `fhir-r4` webhook
//! deliveries. A `collection` Bundle of:
//! - the `DiagnosticReport` of the screening: `final` for a job that succeeded, with the finding,
//!   its probability and threshold in `conclusion` and SNOMED CT's Positive or Negative as
//!   `conclusionCode`; `cancelled` (not performed) for a job that failed or was canceled, with the
//!   reason in `conclusion`;
//! - an `Observation` of the finding's probability, interpreted `POS` or `NEG` at the result's
//!   threshold, with the threshold and the model's stage as components; then one `Observation`
//!   per class probability;
//! - the `Device` that made the observations: the model, by id and version.
//!
//! Codes are in [`codes`]. Entries are named by `urn:uuid:`s derived from the job id, so a job
//! gives the same Bundle every time it is asked for.

mod codes;
mod resources;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

pub use self::resources::{
    Annotation, Bundle, BundleEntry, CodeableConcept, Coding, Device, DeviceName, DeviceVersion,
    DiagnosticReport, Identifier, Observation, ObservationComponent, ObservationStatus, Quantity,
    Reference, ReportStatus, Resource,
};
use crate::job::{ClassProbability, Job, JobId, JobStatus, ScreeningResult};
use crate::registry::manifest::{Manifest, Modality, Stage};
use crate::registry::{Model, Registry};

/// The media type of FHIR's JSON format.
pub const CONTENT_TYPE: &str = "application/fhir+json";

/// What a report says of the model beyond the job's model id and version: from its manifest,
/// while the registry has the model.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo<'a> {
    /// For people ("Tuberculosis (chest X-ray)").
    pub name: &'a str,
    pub modality: Modality,
}

impl<'a> From<&'a Manifest> for ModelInfo<'a> {
    fn from(manifest: &'a Manifest) -> Self {
        Self {
            name: &manifest.name,
            modality: manifest.modality,
        }
    }
}

/// A job that has not finished has no report yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job is {status}; its report is made once it has finished")]
pub struct NotFinished {
    pub status: JobStatus,
}

/// [`job_bundle`], with what `registry` knows of the job's model.
pub fn job_bundle_with(job: &Job, registry: &Registry) -> Result<Bundle, NotFinished> {
    let model = registry.get(&job.model);
    job_bundle(
        job,
        model
            .as_deref()
            .and_then(Model::manifest)
            .map(ModelInfo::from),
    )
}

/// The report of a finished job (see the module documentation).
pub fn job_bundle(job: &Job, model: Option<ModelInfo<'_>>) -> Result<Bundle, NotFinished> {
    if !job.status.is_final() {
        return Err(NotFinished { status: job.status });
    }
    let report = Report::new(job, model);
    Ok(
        match job
            .result
            .as_ref()
            .filter(|_| job.status == JobStatus::Succeeded)
        {
            Some(result) => report.of_result(result),
            None => report.not_performed(),
        },
    )
}

/// What the resources of one job's report share.
struct Report<'a> {
    job: &'a Job,
    model: Option<ModelInfo<'a>>,
    /// When the image was screened: the job's creation.
    effective: String,
    /// When the result was made: the job's end.
    issued: String,
    subject: Option<Reference>,
}

impl<'a> Report<'a> {
    fn new(job: &'a Job, model: Option<ModelInfo<'a>>) -> Self {
        Self {
            job,
            model,
            effective: instant(job.created_at),
            issued: instant(job.finished_at.unwrap_or(job.updated_at)),
            subject: job.client_reference.as_deref().map(subject),
        }
    }

    /// The model, for people.
    fn model_name(&self) -> &str {
        self.model.map_or(&self.job.model, |m| m.name)
    }

    fn url(&self, part: &str) -> String {
        entry_url(self.job.id, part)
    }

    /// The report of a screened image, its observations and the model.
    fn of_result(&self, result: &ScreeningResult) -> Bundle {
        let device = self.url("device");
        let mut observations = vec![(
            self.url("observation/finding"),
            self.finding_observation(result, &device),
        )];
        for (i, class) in result.probabilities.iter().enumerate() {
            observations.push((
                self.url(&format!("observation/class/{i}")),
                self.class_observation(class, &device),
            ));
        }
        let mut report = self.diagnostic_report(ReportStatus::Final, conclusion(self.job, result));
        report.result = observations
            .iter()
            .map(|(url, _)| Reference::to(url))
            .collect();
        let screen = if result.positive {
            "positive"
        } else {
            "negative"
        };
        report.conclusion_code = vec![codes::screen_result(
            result.positive,
            format!("Screen {screen} for {}", result.finding),
        )];
        let mut entries = vec![entry(
            self.url("report"),
            Resource::DiagnosticReport(report),
        )];
        entries.extend(
            observations
                .into_iter()
                .map(|(url, o)| entry(url, Resource::Observation(o))),
        );
        entries.push(entry(device, Resource::Device(self.device())));
        Bundle::collection(self.issued.clone(), entries)
    }

    /// The report of a job that failed or was canceled: `cancelled`, saying why.
    fn not_performed(&self) -> Bundle {
        let what = if self.job.status == JobStatus::Canceled {
            "was canceled"
        } else {
            "failed"
        };
        let why = match &self.job.error {
            Some(error) => format!("({}): {}", error.code, error.message),
            None => "(no reason was recorded)".to_owned(),
        };
        let report = self.diagnostic_report(
            ReportStatus::Cancelled,
            format!("Not performed: the screening {what} {why}"),
        );
        Bundle::collection(
            self.issued.clone(),
            vec![entry(
                self.url("report"),
                Resource::DiagnosticReport(report),
            )],
        )
    }

    fn diagnostic_report(&self, status: ReportStatus, conclusion: String) -> DiagnosticReport {
        let job = self.job;
        let mut report = DiagnosticReport {
            identifier: vec![Identifier::new(codes::JOB_ID, job.id.to_string())],
            status,
            category: self
                .model
                .map(|m| codes::section(m.modality).report)
                .into_iter()
                .collect(),
            code: CodeableConcept::coded(Coding::new(
                codes::SCREENING,
                &job.model,
                format!("{} screening", self.model_name()),
            )),
            subject: self.subject.clone(),
            effective_date_time: self.effective.clone(),
            issued: self.issued.clone(),
            result: Vec::new(),
            imaging_study: Vec::new(),
            conclusion,
            conclusion_code: Vec::new(),
        };
        let dicom = job.dicom.as_ref();
        add_study(
            &mut report,
            dicom.and_then(|d| d.study_instance_uid.as_deref()),
            dicom.and_then(|d| d.accession_number.as_deref()),
        );
        report
    }

    /// What an observation of this job's result is, apart from its code and value.
    fn observation(&self, code: CodeableConcept, value: f64, device: &str) -> Observation {
        Observation {
            status: ObservationStatus::Final,
            category: self
                .model
                .map(|m| codes::section(m.modality).observations)
                .into_iter()
                .collect(),
            code,
            subject: self.subject.clone(),
            effective_date_time: self.effective.clone(),
            issued: self.issued.clone(),
            value_quantity: codes::probability(value),
            interpretation: Vec::new(),
            note: Vec::new(),
            device: Reference::to(device),
            component: Vec::new(),
        }
    }

    /// p(finding), `POS` or `NEG` at the threshold, which it carries, with the model's stage.
    fn finding_observation(&self, result: &ScreeningResult, device: &str) -> Observation {
        let code = CodeableConcept::coded(Coding::new(
            codes::SCREENING,
            format!("{}.finding-probability", self.job.model),
            format!("Probability of {} ({})", result.finding, self.model_name()),
        ));
        let mut observation = self.observation(code, result.finding_probability, device);
        observation.interpretation = vec![codes::interpretation(result.positive)];
        observation.component.push(ObservationComponent {
            code: codes::decision_threshold(),
            value_quantity: Some(codes::probability(result.threshold)),
            value_codeable_concept: None,
        });
        if let Some(stage) = result.stage {
            observation.component.push(ObservationComponent {
                code: codes::model_stage(),
                value_quantity: None,
                value_codeable_concept: Some(codes::stage(stage)),
            });
        }
        if result.stage == Some(Stage::Research) {
            observation.note.push(Annotation {
                text: "Made by a research-stage model: not for decisions about care.".into(),
            });
        }
        observation
    }

    /// The probability of one class.
    fn class_observation(&self, class: &ClassProbability, device: &str) -> Observation {
        let code = CodeableConcept::coded(Coding::new(
            codes::SCREENING,
            format!(
                "{}.class-probability.{}",
                self.job.model,
                codes::label_code(&class.label)
            ),
            format!(
                "Probability of class {} ({})",
                class.label,
                self.model_name()
            ),
        ));
        self.observation(code, class.probability, device)
    }

    /// The model at the job's version.
    fn device(&self) -> Device {
        let job = self.job;
        let mut device_name = Vec::new();
        if let Some(model) = self.model {
            device_name.push(DeviceName {
                name: model.name.to_owned(),
                name_type: "user-friendly-name",
            });
        }
        device_name.push(DeviceName {
            name: job.model.clone(),
            name_type: "model-name",
        });
        Device {
            identifier: vec![Identifier::new(codes::MODEL_ID, &job.model)],
            device_name,
            device_type: CodeableConcept {
                coding: Vec::new(),
                text: Some("MedInform image screening model (software)".into()),
            },
            version: vec![DeviceVersion {
                value: job.model_version.clone(),
            }],
        }
    }
}

/// DICOM: names the study the image came from, when it came as a DICOM file: the Study Instance
/// UID as `imagingStudy` (a logical reference by identifier; the Bundle holds no ImagingStudy)
/// and the Accession Number as an `identifier` of type `ACSN`.
fn add_study(
    report: &mut DiagnosticReport,
    study_instance_uid: Option<&str>,
    accession_number: Option<&str>,
) {
    if let Some(uid) = study_instance_uid {
        report.imaging_study.push(Reference {
            reference: None,
            resource_type: Some("ImagingStudy"),
            identifier: Some(Identifier::new(codes::DICOM_UID, format!("urn:oid:{uid}"))),
            display: None,
        });
    }
    if let Some(accession) = accession_number {
        report.identifier.push(Identifier {
            identifier_type: Some(codes::accession_number()),
            system: None,
            value: accession.to_owned(),
        });
    }
}

/// What the screen found, for people.
fn conclusion(job: &Job, result: &ScreeningResult) -> String {
    let (screen, comparison) = if result.positive {
        ("positive", "at or above")
    } else {
        ("negative", "below")
    };
    let stage = match result.stage {
        Some(Stage::Research) => " (research stage: not for decisions about care)",
        Some(Stage::Screening) => " (screening stage)",
        None => "",
    };
    format!(
        "Screen {screen} for {finding}: probability {p:.4}, {comparison} the threshold {t:.4}. \
         Most probable class: {label}. Model {model} {version}{stage}. \
         A screening aid, not a diagnosis.",
        finding = result.finding,
        p = result.finding_probability,
        t = result.threshold,
        label = result.label,
        model = job.model,
        version = job.model_version,
    )
}

/// The patient or sample the client named: a reference by identifier only (MedInform holds no
/// Patient), shown as given.
fn subject(client_reference: &str) -> Reference {
    Reference {
        reference: None,
        resource_type: None,
        identifier: Some(Identifier {
            identifier_type: None,
            system: None,
            value: client_reference.to_owned(),
        }),
        display: Some(client_reference.to_owned()),
    }
}

fn entry(full_url: String, resource: Resource) -> BundleEntry {
    BundleEntry { full_url, resource }
}

/// The `urn:uuid:` of entry `part` of the job's report: a UUID (version 8, custom) made of the
/// SHA-256 of the job id and `part`, so that the same job always names its entries alike.
fn entry_url(job: JobId, part: &str) -> String {
    let digest = Sha256::new()
        .chain_update(job.0.as_bytes())
        .chain_update(b"/")
        .chain_update(part.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!(
        "urn:uuid:{}",
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    )
}

/// A FHIR `instant`: RFC 3339 in UTC, to the millisecond.
fn instant(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
