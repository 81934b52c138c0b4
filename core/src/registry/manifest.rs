//! `manifest.toml`: what the worker must know about a model, as `models/README.md` specifies it.
//!
//! Parsing is strict (unknown keys are refused, so a misspelt `treshold` is an error rather than
//! a silently ignored setting) except under `[metrics]`, which the training pipeline fills freely.
//! [`Manifest::validate`] then checks what the types cannot say, and every error names the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod validate;

/// The file name of a manifest inside a model folder.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// A model's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Equals the folder name; `[a-z0-9_]+`.
    pub id: String,
    /// Part of every result; bumped whenever the weights change.
    pub version: String,
    /// For people.
    pub name: String,
    pub modality: Modality,
    pub task: Task,
    pub description: String,
    /// `screening` only when the held-out `[metrics]` meet `[minimum]`; absent means `research`.
    #[serde(default)]
    pub stage: Stage,
    /// The ONNX file, relative to the folder.
    pub weights: String,
    /// The model card (Markdown), relative to the folder.
    pub card: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub decision: DecisionSpec,
    /// Measured on the held-out split, written by the training pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// What `stage = "screening"` requires of `[metrics]`: each key's value at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<BTreeMap<String, f64>>,
    /// Pictures of the held-out evaluation drawn by the training pipeline (`[[figures]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
}

/// Whether a model's results may guide screening.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Its held-out figures meet the minimum its manifest declares.
    Screening,
    /// Research use only: not for decisions about care.
    #[default]
    Research,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Screening => "screening",
            Self::Research => "research",
        }
    }
}

/// One `[[figures]]` entry: a PNG inside the model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// Relative to the folder; ends in `.png`.
    pub file: String,
    /// What the picture shows, for people.
    pub title: String,
}

impl Figure {
    /// The file's own name, which its URL ends with.
    pub fn name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

/// What kind of image a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    ChestXray,
    BloodSmearCell,
    Dermoscopy,
    Fundus,
}

impl Modality {
    /// The DICOM Modality (0008,0060) values of the images this kind of model reads: projection
    /// radiography for chest X-rays (`DR` is not a standard code, but detectors write it),
    /// slide microscopy for blood smears, photography for skin lesions and the fundus (`OT`,
    /// "other", is what secondary-capture exports of photographs carry).
    pub fn dicom_modalities(self) -> &'static [&'static str] {
        match self {
            Self::ChestXray => &["CR", "DX", "DR"],
            Self::BloodSmearCell => &["SM", "GM", "OT"],
            Self::Dermoscopy => &["XC", "GM", "OT"],
            Self::Fundus => &["OP", "XC", "OT"],
        }
    }

    /// The DICOM Body Part Examined (0018,0015) values this kind of model reads; an image
    /// that gives none is taken. `None`: any body part (a cell or a lesion photograph).
    pub fn dicom_body_parts(self) -> Option<&'static [&'static str]> {
        match self {
            Self::ChestXray => Some(&["CHEST"]),
            Self::Fundus => Some(&["EYE"]),
            Self::BloodSmearCell | Self::Dermoscopy => None,
        }
    }

    /// Why a DICOM image with these attributes is not one this kind of model reads, if it is
    /// not: a Modality (required) outside [`Self::dicom_modalities`], or a Body Part Examined
    /// outside [`Self::dicom_body_parts`].
    pub fn dicom_mismatch(self, attributes: &crate::imaging::DicomAttributes) -> Option<String> {
        let modality = attributes.modality.as_deref().unwrap_or("");
        if !self.dicom_modalities().contains(&modality) {
            return Some(format!(
                "the image's Modality is {}, and this model reads {}",
                if modality.is_empty() {
                    "absent"
                } else {
                    modality
                },
                self.dicom_modalities().join(", ")
            ));
        }
        match (
            self.dicom_body_parts(),
            attributes.body_part_examined.as_deref(),
        ) {
            (Some(parts), Some(part)) if !parts.contains(&part) => Some(format!(
                "the image's Body Part Examined is {part}, and this model reads {} (or none given)",
                parts.join(", ")
            )),
            _ => None,
        }
    }
}

/// The kind of decision a model makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Two classes; the label is the finding when p(finding) >= threshold.
    Binary,
    /// Several unordered classes; the label is the argmax.
    Multiclass,
    /// Ordered grades; the label is the argmax and p(finding) is the sum over `referable`.
    Ordinal,
}

/// The network's input and how an image becomes it (`[input]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// ONNX input tensor name.
    pub name: String,
    pub layout: Layout,
    pub color: ColorSpace,
    pub width: u32,
    pub height: u32,
    /// Applied in order to the 8-bit image after colour conversion.
    #[serde(default)]
    pub preprocess: Vec<PreprocessStep>,
    pub normalize: Normalize,
}

impl InputSpec {
    /// 1 for gray, 3 for rgb.
    pub fn channels(&self) -> usize {
        self.color.channels()
    }

    /// The shape of one image's tensor, without the batch axis: `[C, H, W]` or `[H, W, C]`.
    pub fn tensor_shape(&self) -> [usize; 3] {
        let (c, h, w) = (self.channels(), self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        }
    }
}

/// Axis order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// The colour space the image is converted to before any step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorSpace {
    /// ITU-R BT.601 luma, one channel.
    Gray,
    /// Three channels, alpha dropped.
    Rgb,
}

impl ColorSpace {
    /// Number of channels of an image in this colour space.
    pub fn channels(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Rgb => 3,
        }
    }
}

/// One `[[input.preprocess]]` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessStep {
    /// Resize to `input.width` x `input.height`.
    Resize { filter: ResizeFilter },
    /// 3x3 convolution with OpenCV `filter2D` semantics, row-major kernel.
    Sharpen { kernel: Vec<f64> },
    /// OpenCV `equalizeHist` (of the Y of YUV for rgb images).
    EqualizeHistogram,
}

/// Resampling filter of a `resize` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// PIL `NEAREST`.
    Nearest,
    /// Antialiased bilinear (PIL `BILINEAR` support), float32, rounded after each pass.
    Triangle,
}

/// `x = (pixel * scale - mean[c]) / std[c]` (`[input.normalize]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub scale: f64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// The network's output and what its classes are (`[output]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// ONNX output tensor name.
    pub name: String,
    pub activation: Activation,
    /// Class order of the output.
    pub labels: Vec<String>,
    /// For `sigmoid` / `sigmoid_probability`: the label the single output value is the
    /// probability of (the other label gets 1 - p).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmoid_positive: Option<String>,
    /// A second ONNX output: the class activation map of the finding, `[batch, h, w]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<String>,
}

/// How the raw output becomes class probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// N logits -> N probabilities.
    Softmax,
    /// 1 logit -> 2 classes.
    Sigmoid,
    /// The model already outputs N probabilities.
    None,
    /// 1 probability (already sigmoid-ed) -> 2 classes.
    SigmoidProbability,
}

impl Activation {
    /// Whether the network has a single output value for two classes.
    pub fn is_single_output(self) -> bool {
        matches!(self, Self::Sigmoid | Self::SigmoidProbability)
    }
}

/// How probabilities become a screening decision (`[decision]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSpec {
    /// The class a screening programme looks for.
    pub finding: String,
    /// Positive when p(finding) >= threshold; overridable per site.
    pub threshold: f64,
    /// Ordinal models: the grades whose probabilities add up to p(finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referable: Option<Vec<String>>,
    /// What results call the finding when it is more than the `finding` label (an ordinal
    /// model's "Referable DR (Moderate or worse)"); the label otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_name: Option<String>,
}

impl DecisionSpec {
    /// The finding as results and the API name it.
    pub fn finding_name(&self) -> &str {
        self.finding_name.as_deref().unwrap_or(&self.finding)
    }
}

/// Held-out metrics written by the training pipeline (`[metrics]`); keys beyond the usual ones
/// are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specificity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

impl Metrics {
    /// A numeric metric by its `[metrics]` key.
    pub fn value(&self, key: &str) -> Option<f64> {
        match key {
            "accuracy" => self.accuracy,
            "sensitivity" => self.sensitivity,
            "specificity" => self.specificity,
            "roc_auc" => self.roc_auc,
            "n" => self.n.map(|n| n as f64),
            other => match self.other.get(other)? {
                toml::Value::Float(v) => Some(*v),
                toml::Value::Integer(v) => Some(*v as f64),
                _ => None,
            },
        }
    }
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{MANIFEST_FILE} line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("{MANIFEST_FILE}: `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl ManifestError {
    fn invalid(field: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    /// The manifest field at fault, for validation errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The largest accepted `input.width` / `input.height`.
pub const MAX_INPUT_SIDE: u32 = 4096;

impl Manifest {
    /// Reads and validates `<dir>/manifest.toml`; the folder name must be the model id.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        Self::parse(&text, folder)
    }

    /// Parses and validates a manifest's text; `folder` is the name of its folder.
    pub fn parse(text: &str, folder: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
                .unwrap_or(1);
            ManifestError::Parse {
                line,
                message: e.message().trim().to_owned(),
            }
        })?;
        manifest.validate(folder)?;
        Ok(manifest)
    }

    /// The index of `label` in the output's class order.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.output.labels.iter().position(|l| l == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MALARIA: &str = r#"
id = "malaria"
version = "1.0.0"
name = "Malaria"
modality = "blood_smear_cell"
task = "binary"
description = "Thin blood smear single-cell crop: parasitized or uninfected."
weights = "model.onnx"
card = "CARD.md"

[input]
name = "input"
layout = "nchw"
color = "gray"
width = 50
height = 50

[[input.preprocess]]
op = "resize"
filter = "triangle"

[[input.preprocess]]
op = "sharpen"
kernel = [0, -1, 0, -1, 6, -1, 0, -1, 0]

[[input.preprocess]]
op = "equalize_histogram"

[input.normalize]
scale = 0.00392156862745098
mean = [0.0]
std = [1.0]

[output]
name = "output"
activation = "softmax"
labels = ["Uninfected", "Parasitized"]

[decision]
finding = "Parasitized"
threshold = 0.5

[metrics]
split = "holdout"
n = 3491
accuracy = 0.97
per_source = "P61"
"#;

    fn parse_err(text: &str) -> ManifestError {
        Manifest::parse(text, "malaria").expect_err("the manifest should be refused")
    }

    #[test]
    fn readme_example_parses() {
        let m = Manifest::parse(MALARIA, "malaria").unwrap();
        assert_eq!(m.input.tensor_shape(), [1, 50, 50]);
        assert_eq!(
            m.input.preprocess,
            vec![
                PreprocessStep::Resize {
                    filter: ResizeFilter::Triangle
                },
                PreprocessStep::Sharpen {
                    kernel: vec![0.0, -1.0, 0.0, -1.0, 6.0, -1.0, 0.0, -1.0, 0.0]
                },
                PreprocessStep::EqualizeHistogram,
            ]
        );
        let metrics = m.metrics.unwrap();
        assert_eq!(metrics.n, Some(3491));
        assert_eq!(metrics.other["per_source"].as_str(), Some("P61"));
    }

    #[test]
    fn id_must_match_the_folder() {
        let err = Manifest::parse(MALARIA, "tuberculosis").unwrap_err();
        assert_eq!(err.field(), Some("id"));
        assert!(err.to_string().contains("tuberculosis"), "{err}");
    }

    #[test]
    fn misspelt_key_is_refused_with_its_line() {
        let err = parse_err(&MALARIA.replace("threshold = 0.5", "treshold = 0.5"));
        let text = err.to_string();
        assert!(matches!(err, ManifestError::Parse { .. }), "{text}");
        assert!(text.contains("treshold"), "{text}");
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_err(&MALARIA.replace("threshold = 0.5", ""));
        assert!(err.to_string().contains("threshold"), "{err}");
    }

    #[test]
    fn normalize_needs_one_value_per_channel() {
        let err = parse_err(&MALARIA.replace("mean = [0.0]", "mean = [0.0, 0.0, 0.0]"));
        assert_eq!(err.field(), Some("input.normalize.mean"));
    }

    #[test]
    fn kernel_needs_nine_entries() {
        let err = parse_err(&MALARIA.replace("[0, -1, 0, -1, 6, -1, 0, -1, 0]", "[0, -1, 0]"));
        assert_eq!(err.field(), Some("input.preprocess[1].kernel"));
    }

    #[test]
    fn threshold_is_strictly_between_0_and_1() {
        for bad in ["0.0", "1.0", "1.5", "-0.1", "nan"] {
            let err = parse_err(&MALARIA.replace("threshold = 0.5", &format!("threshold = {bad}")));
            assert_eq!(err.field(), Some("decision.threshold"), "{bad}: {err}");
        }
    }

    #[test]
    fn finding_must_be_a_label() {
        let err =
            parse_err(&MALARIA.replace(r#"finding = "Parasitized""#, r#"finding = "Infected""#));
        assert_eq!(err.field(), Some("decision.finding"));
    }

    #[test]
    fn labels_must_not_be_empty() {
        let err =
            parse_err(&MALARIA.replace(r#"labels = ["Uninfected", "Parasitized"]"#, "labels = []"));
        assert_eq!(err.field(), Some("output.labels"));
    }

    #[test]
    fn sigmoid_needs_two_labels_and_a_positive_label() {
        let sigmoid = MALARIA.replace(r#"activation = "softmax""#, r#"activation = "sigmoid""#);
        assert_eq!(parse_err(&sigmoid).field(), Some("output.sigmoid_positive"));

        let wrong = sigmoid.replace(
            r#"labels = ["Uninfected", "Parasitized"]"#,
            "labels = [\"Uninfected\", \"Parasitized\"]\nsigmoid_positive = \"Healthy\"",
        );
        assert_eq!(parse_err(&wrong).field(), Some("output.sigmoid_positive"));

        let ok = sigmoid.replace(
            r#"labels = ["Uninfected", "Parasitized"]"#,
            "labels = [\"Uninfected\", \"Parasitized\"]\nsigmoid_positive = \"Uninfected\"",
        );
        Manifest::parse(&ok, "malaria").unwrap();

        let softmax_with_positive = MALARIA.replace(
            r#"labels = ["Uninfected", "Parasitized"]"#,
            "labels = [\"Uninfected\", \"Parasitized\"]\nsigmoid_positive = \"Uninfected\"",
        );
        assert_eq!(
            parse_err(&softmax_with_positive).field(),
            Some("output.sigmoid_positive")
        );
    }

    #[test]
    fn ordinal_needs_referable_grades_starting_with_the_finding() {
        let ordinal = MALARIA
            .replace(r#"task = "binary""#, r#"task = "ordinal""#)
            .replace(
                r#"labels = ["Uninfected", "Parasitized"]"#,
                r#"labels = ["None", "Mild", "Moderate", "Severe"]"#,
            )
            .replace(r#"finding = "Parasitized""#, r#"finding = "Moderate""#);
        assert_eq!(parse_err(&ordinal).field(), Some("decision.referable"));
        let ok = format!("{ordinal}\n").replace(
            "threshold = 0.5",
            "threshold = 0.5\nreferable = [\"Moderate\", \"Severe\"]",
        );
        Manifest::parse(&ok, "malaria").unwrap();
        let wrong_first = ok.replace(r#"finding = "Moderate""#, r#"finding = "Severe""#);
        assert_eq!(parse_err(&wrong_first).field(), Some("decision.finding"));
    }

    #[test]
    fn weights_stay_inside_the_folder() {
        for bad in ["../other/model.onnx", "/etc/passwd", ""] {
            let err = parse_err(
                &MALARIA.replace(r#"weights = "model.onnx""#, &format!("weights = {bad:?}")),
            );
            assert_eq!(err.field(), Some("weights"), "{bad}");
        }
    }

    /// The README example as a screening model with a heatmap and figures.
    fn screening(minimum: &str) -> String {
        MALARIA
            .replace(
                "weights = \"model.onnx\"",
                "stage = \"screening\"\nweights = \"model.onnx\"",
            )
            .replace(
                "labels = [\"Uninfected\", \"Parasitized\"]",
                "labels = [\"Uninfected\", \"Parasitized\"]\nheatmap = \"cam\"",
            )
            .replace(
                "accuracy = 0.97",
                "accuracy = 0.97\nroc_auc = 0.995\nkappa = 0.8",
            )
            + &format!(
                "\n[minimum]\n{minimum}\n\n[[figures]]\nfile = \"figures/roc.png\"\ntitle = \"ROC\"\n"
            )
    }

    #[test]
    fn stage_defaults_to_research() {
        let m = Manifest::parse(MALARIA, "malaria").unwrap();
        assert_eq!(m.stage, Stage::Research);
        assert_eq!(m.output.heatmap, None);
        assert!(m.figures.is_empty());
    }

    #[test]
    fn a_screening_model_meets_its_declared_minimum() {
        let m = Manifest::parse(
            &screening("accuracy = 0.965\nroc_auc = 0.99\nkappa = 0.8"),
            "malaria",
        )
        .unwrap();
        assert_eq!(m.stage, Stage::Screening);
        assert_eq!(m.output.heatmap.as_deref(), Some("cam"));
        assert_eq!(m.figures[0].name(), "roc.png");
    }

    #[test]
    fn a_screening_model_below_its_minimum_is_refused() {
        let err = parse_err(&screening("accuracy = 0.98\nroc_auc = 0.99"));
        assert_eq!(err.field(), Some("stage"));
        assert!(err.to_string().contains("accuracy 0.97 < 0.98"), "{err}");

        let err = parse_err(&screening("specificity = 0.7"));
        assert!(
            err.to_string().contains("specificity not measured"),
            "{err}"
        );

        let no_minimum = screening("accuracy = 0.9").replace("[minimum]\naccuracy = 0.9", "");
        assert_eq!(parse_err(&no_minimum).field(), Some("stage"));
    }

    #[test]
    fn figures_are_png_files_inside_the_folder() {
        let ok = screening("accuracy = 0.9");
        for (bad, field) in [
            ("../roc.png", "figures[0].file"),
            ("figures/roc.svg", "figures[0].file"),
        ] {
            let err = parse_err(&ok.replace("figures/roc.png", bad));
            assert_eq!(err.field(), Some(field), "{bad}");
        }
        let untitled = ok.replace("title = \"ROC\"", "title = \" \"");
        assert_eq!(parse_err(&untitled).field(), Some("figures[0].title"));
    }

    #[test]
    fn the_heatmap_is_another_output() {
        let err = parse_err(
            &screening("accuracy = 0.9").replace("heatmap = \"cam\"", "heatmap = \"output\""),
        );
        assert_eq!(err.field(), Some("output.heatmap"));
    }

    #[test]
    fn unknown_preprocess_op_is_refused() {
        let err = parse_err(&MALARIA.replace(r#"op = "equalize_histogram""#, r#"op = "clahe""#));
        assert!(err.to_string().contains("clahe"), "{err}");
    }
}
