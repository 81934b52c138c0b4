//! Jobs: one uploaded image screened by one model.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::imaging::DicomAttributes;
use crate::registry::manifest::Stage;
use crate::tenant::TenantId;

crate::id::uuid_id! {
    /// The id of a job (a UUID v7, so ids sort by creation time).
    JobId
}

crate::id::uuid_id! {
    /// The id of a batch: a screening session (site, campaign, operator) that jobs are added to.
    BatchId
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Succeeded,
    Failed,
    /// Not run: canceled by a client, or its deadline passed before a worker took it.
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// A finished job never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// Which lane of its model a job waits in. A single upload from a clinic is `interactive` and
/// goes ahead of the `bulk` jobs of a screening drive (a batch's images, or an upload that asks
/// for `priority=bulk`); within the bulk lane a tenant with a short backlog goes ahead of one
/// with a deep one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Interactive,
    Bulk,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interactive => "interactive",
            Self::Bulk => "bulk",
        }
    }

    pub fn is_interactive(&self) -> bool {
        *self == Self::Interactive
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interactive" => Ok(Self::Interactive),
            "bulk" => Ok(Self::Bulk),
            other => Err(format!("unknown priority {other:?}: interactive or bulk")),
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(Self::Queued),
            "processing" => Ok(Self::Processing),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "canceled" => Ok(Self::Canceled),
            other => Err(format!("unknown job status {other:?}")),
        }
    }
}

/// The probability the model gives one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassProbability {
    pub label: String,
    pub probability: f64,
}

/// What a model said about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScreeningResult {
    /// The predicted class label.
    pub label: String,
    /// Every class of the model, in the model's class order.
    pub probabilities: Vec<ClassProbability>,
    /// The class a screening programme looks for (e.g. "Tuberculosis").
    pub finding: String,
    /// Probability of the finding (for ordinal models: of the referable group).
    pub finding_probability: f64,
    /// The decision threshold in force when the result was made.
    pub threshold: f64,
    /// `finding_probability >= threshold`.
    pub positive: bool,
    /// The model's stage when the result was made; absent on results of model versions that
    /// declared none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Where the network looked: the class activation map of the finding, when the model has
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<Heatmap>,
}

/// A low-resolution class activation map of the finding, as the network computed it: raw
/// values (the finding-versus-rest evidence of each cell of the last feature map), row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heatmap {
    pub width: u32,
    pub height: u32,
    /// `width * height` values, row by row from the top left.
    pub values: Vec<f32>,
}

/// Why a job failed, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobFailure {
    #[schema(value_type = String, example = "corrupt_image")]
    pub code: FailureCode,
    pub message: String,
}

impl JobFailure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Why a job a client canceled (alone or with its batch) was not run.
    pub fn canceled_by_client() -> Self {
        Self::new(
            FailureCode::Canceled,
            "Canceled by the client before it started; it was not run.",
        )
    }
}

/// Declares [`FailureCode`]: variant, wire code, when a job fails with it.
macro_rules! failure_codes {
    ($($variant:ident = $code:literal, $doc:literal;)*) => {
        /// The stable code of a job's failure. Clients match on it; it never changes meaning.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum FailureCode {
            $(#[doc = $doc] $variant,)*
            /// A code this version does not know, read from the database (written by a newer
            /// version): kept and shown as it is.
            Other(String),
        }

        impl FailureCode {
            /// Every known code, in documentation order, with its description.
            pub const ALL: &'static [(&'static str, &'static str)] = &[$(($code, $doc),)*];

            /// The code on the wire and in the database.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The code `code` names (an unknown one is kept as [`FailureCode::Other`]).
            pub fn parse(code: &str) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

failure_codes! {
    EmptyFile = "empty_file", "The stored image is empty.";
    ImageTooLarge = "image_too_large", "The stored image is larger than the upload limit.";
    UnsupportedImageFormat = "unsupported_image_format", "The stored image is in a format the service does not read.";
    NotAnImage = "not_an_image", "The stored file is not an image.";
    CorruptImage = "corrupt_image", "The stored image is truncated or damaged.";
    ImageDimensionsTooLarge = "image_dimensions_too_large", "The image's dimensions exceed the decoding limits.";
    UnsupportedTransferSyntax = "unsupported_transfer_syntax", "The DICOM file's transfer syntax is not one the service decodes.";
    MultiframeNotSupported = "multiframe_not_supported", "The DICOM object holds more than one frame.";
    NoPixelData = "no_pixel_data", "The DICOM file holds no image.";
    ModalityMismatch = "modality_mismatch", "The DICOM image's modality or body part is not one the model screens.";
    ImageMissing = "image_missing", "The job's image is no longer in storage.";
    StorageUnavailable = "storage_unavailable", "Storage could not be read on every attempt.";
    UnknownModel = "unknown_model", "The job's model is not in this worker's registry.";
    ModelUnavailable = "model_unavailable", "The model could not be loaded on every attempt.";
    InferenceFailed = "inference_failed", "The model failed to run on the image on every attempt.";
    DeadlineExceeded = "deadline_exceeded", "No worker started the job before its deadline.";
    Canceled = "canceled", "The client canceled the job before it started.";
    UnreadableFile = "unreadable_file", "`medinform screen`: the file could not be read from disk.";
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for FailureCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for FailureCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(deserializer)?))
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub batch_id: Option<BatchId>,
    pub model: String,
    pub model_version: String,
    pub status: JobStatus,
    /// The lane it waits in.
    pub priority: Priority,
    /// Content address of the image in the blob store.
    pub image_key: String,
    pub image_sha256: String,
    pub image_content_type: String,
    pub image_bytes: i64,
    /// A patient or sample reference, set by the client and echoed back; never logged.
    pub client_reference: Option<String>,
    /// Where the image was taken (a clinic, a camp); never logged.
    pub site: Option<String>,
    /// Free-form labels set by the client; never logged.
    pub tags: Vec<String>,
    /// Not run when not started by then.
    pub deadline: Option<DateTime<Utc>>,
    /// Where this job's result is delivered, besides the tenant's registered endpoints.
    pub webhook_url: Option<String>,
    /// The study the image belongs to, when it came as a DICOM file.
    pub dicom: Option<DicomAttributes>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<ScreeningResult>,
    pub error: Option<JobFailure>,
}

#[cfg(test)]
mod failure_code_tests {
    use super::FailureCode;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for (code, _) in FailureCode::ALL {
            let parsed = FailureCode::parse(code);
            assert!(!matches!(parsed, FailureCode::Other(_)), "{code}");
            assert_eq!(parsed.as_str(), *code);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<FailureCode>(&json).unwrap(), parsed);
        }
        let newer = FailureCode::parse("a_code_from_a_newer_version");
        assert_eq!(
            newer,
            FailureCode::Other("a_code_from_a_newer_version".into())
        );
        assert_eq!(newer.to_string(), "a_code_from_a_newer_version");
    }

    #[test]
    fn the_readme_tables_every_code() {
        let readme = include_str!("../../README.md");
        for (code, description) in FailureCode::ALL {
            let row = format!("| `{code}` | {description} |");
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}

#[cfg(test)]
mod result_tests {
    use super::ClassProbability;

    #[test]
    fn a_probability_reads_back_from_json_as_the_very_number_written() {
        // A malaria model's answer on a real cell; serde_json's default parser read it back one
        // unit in the last place higher, so a stored result differed from the model's.
        for probability in [0.9935643919967823, 0.006435608003217713, 1e-300, 0.1 + 0.2] {
            let written = ClassProbability {
                label: "Parasitized".to_owned(),
                probability,
            };
            let text = serde_json::to_string(&written).unwrap();
            let read: ClassProbability = serde_json::from_str(&text).unwrap();
            assert_eq!(read.probability.to_bits(), probability.to_bits(), "{text}");
        }
    }
}
