//! The model registry: one folder per model under `models/`, described by its `manifest.toml`
//! (see `models/README.md`, the contract this module implements).
//!
//! Loading never fails because of one model: a folder with a broken manifest, missing or
//! unreadable weights, an ONNX graph that does not match its manifest, or no ONNX Runtime at all
//! is listed as [`ModelStatus::Unavailable`] with a reason a person can act on. Only a registry
//! folder that cannot be read, or an invalid per-site threshold, fails [`Registry::load`].

mod decision;
pub mod inference;
pub mod manifest;
mod prepared;
pub mod preprocess;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use image::DynamicImage;
use ndarray::Array3;
use serde::Serialize;

use crate::imaging::ImageRejection;
use crate::job::{Heatmap, Priority, ScreeningResult};

use self::decision::Decision;
pub use self::inference::{ActiveProvider, ExecutionProvider, InferenceError, init_onnxruntime};
use self::inference::{Runner, Threads};
pub use self::manifest::{Figure, Manifest, ManifestError, Stage};
use self::prepared::Prepared;

/// How to load the registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The folder holding one folder per model.
    pub dir: PathBuf,
    /// Per-site decision thresholds by model id, overriding the manifests'.
    pub thresholds: HashMap<String, f64>,
    pub execution_provider: ExecutionProvider,
    /// ONNX Runtime intra-op threads per session; 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin (ONNX Runtime's default) rather than sleep.
    pub spinning: bool,
    /// The ONNX Runtime shared library; see [`init_onnxruntime`] for the search otherwise.
    pub onnxruntime_library: Option<PathBuf>,
    /// Load sessions only for these ids; the others are listed ([`ModelStatus::NotLoaded`])
    /// without weights in memory (e.g. for the API process, which never runs a model).
    pub only: Option<Vec<String>>,
}

impl RegistryOptions {
    /// Defaults for `dir`: no overrides, the default provider (CPU), every model loaded.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            thresholds: HashMap::new(),
            execution_provider: ExecutionProvider::default(),
            intra_threads: 0,
            spinning: false,
            onnxruntime_library: None,
            only: None,
        }
    }
}

/// Whether a model can screen images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ModelStatus {
    /// Loaded into an ONNX Runtime session: [`Model::predict`] works.
    Ready,
    /// Manifest valid and weights present, but not loaded in this process
    /// ([`RegistryOptions::only`]); jobs may be accepted for a worker that loads it.
    NotLoaded,
    /// Cannot be used; `reason` says why.
    Unavailable { reason: String },
}

impl ModelStatus {
    /// `ready`, `not_loaded` or `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NotLoaded => "not_loaded",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    /// Why the model cannot screen images in this process; `None` when it is ready.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Ready => None,
            Self::NotLoaded => Some("not loaded by this process"),
            Self::Unavailable { reason } => Some(reason),
        }
    }
}

/// One model folder.
pub struct Model {
    id: String,
    dir: PathBuf,
    manifest: Option<Manifest>,
    card: Option<String>,
    /// The declared figures whose files exist, with their paths (checked once, at load).
    figures: Vec<(Figure, PathBuf)>,
    threshold_override: Option<f64>,
    status: ModelStatus,
    loaded: Option<Loaded>,
    /// Inputs prepared at upload for this process's worker.
    prepared: Prepared,
}

struct Loaded {
    runner: Runner,
    decision: Decision,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("version", &self.version())
            .field("status", &self.status)
            .field("provider", &self.execution_provider())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// The model id (the folder name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest's version; `None` when the manifest is unusable.
    pub fn version(&self) -> Option<&str> {
        self.manifest.as_ref().map(|m| m.version.as_str())
    }

    /// The manifest; `None` when it is missing or invalid (the status says why).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    pub fn status(&self) -> &ModelStatus {
        &self.status
    }

    /// Whether [`Model::predict`] can run in this process.
    pub fn is_ready(&self) -> bool {
        self.status == ModelStatus::Ready
    }

    /// The manifest's stage; a model whose manifest is unusable counts as research.
    pub fn stage(&self) -> Stage {
        self.manifest.as_ref().map(|m| m.stage).unwrap_or_default()
    }

    /// Refuses a DICOM image whose Modality or Body Part Examined this model does not read
    /// ([`crate::registry::manifest::Modality::dicom_mismatch`]); any other image passes.
    pub fn check_dicom(&self, image: &crate::imaging::Decoded) -> Result<(), ImageRejection> {
        let (Some(attributes), Some(manifest)) = (image.dicom.as_deref(), self.manifest()) else {
            return Ok(());
        };
        match manifest.modality.dicom_mismatch(attributes) {
            Some(detail) => Err(ImageRejection::ModalityMismatch {
                model: self.id.clone(),
                detail,
            }),
            None => Ok(()),
        }
    }

    /// Whether the model computes a heatmap with each result.
    pub fn has_heatmap(&self) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|m| m.output.heatmap.is_some())
    }

    /// The declared figures whose files exist, with their paths.
    pub fn figures(&self) -> &[(Figure, PathBuf)] {
        &self.figures
    }

    /// Whether the model can take jobs (ready here, or loaded by another process).
    pub fn is_available(&self) -> bool {
        matches!(self.status, ModelStatus::Ready | ModelStatus::NotLoaded)
    }

    /// The decision threshold in force: the site's override if configured, else the manifest's.
    pub fn threshold(&self) -> Option<f64> {
        self.threshold_override
            .or_else(|| self.manifest.as_ref().map(|m| m.decision.threshold))
    }

    /// The model card (Markdown), if the folder has one.
    pub fn card(&self) -> Option<&str> {
        self.card.as_deref()
    }

    /// Where the session runs, when loaded.
    pub fn execution_provider(&self) -> Option<ActiveProvider> {
        self.loaded.as_ref().map(|l| l.runner.provider())
    }

    /// The network's input for one decoded image (see [`preprocess::preprocess`]).
    pub fn preprocess(&self, img: &DynamicImage) -> Result<Array3<f32>, InferenceError> {
        let manifest = self.manifest.as_ref().ok_or_else(|| self.unavailable())?;
        Ok(preprocess::preprocess(img, &manifest.input))
    }

    /// Turns an image decoded at upload into this model's input and leaves it, under the
    /// image's SHA-256, for this process's worker ([`Model::take_prepared`]). Does nothing
    /// where the model does not run in this process.
    pub fn prepare_ahead(&self, sha256: &str, img: &DynamicImage) {
        if self.loaded.is_none() {
            return;
        }
        if let Ok(input) = self.preprocess(img) {
            self.prepared.put(sha256, input);
        }
    }

    /// The input [`Model::prepare_ahead`] left for the image `sha256`, if it is still there
    /// (it is taken once; the oldest are dropped when the worker falls far behind).
    pub fn take_prepared(&self, sha256: &str) -> Option<Array3<f32>> {
        self.prepared.take(sha256)
    }

    /// Screens a batch of preprocessed images in one ONNX Runtime run (several only if the
    /// graph's batch axis is fixed), returning one result per input, in order, on `lane`'s
    /// session: an interactive batch never waits for a bulk run in progress.
    pub fn predict(
        &self,
        inputs: &[Array3<f32>],
        lane: Priority,
    ) -> Result<Vec<ScreeningResult>, InferenceError> {
        let (Some(manifest), Some(loaded), Some(threshold)) =
            (&self.manifest, &self.loaded, self.threshold())
        else {
            return Err(self.unavailable());
        };
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let shape = manifest.input.tensor_shape();
        let mut data = Vec::with_capacity(inputs.len() * shape.iter().product::<usize>());
        for (index, input) in inputs.iter().enumerate() {
            if input.shape() != shape {
                return Err(InferenceError::InputShape {
                    id: self.id.clone(),
                    index,
                    actual: input.shape().to_vec(),
                    expected: shape,
                });
            }
            match input.as_slice() {
                Some(values) => data.extend_from_slice(values),
                None => data.extend(input.iter().copied()),
            }
        }
        let per_image = loaded.decision.outputs_per_image();
        let started = std::time::Instant::now();
        let raw = loaded
            .runner
            .run(&self.id, lane, &data, inputs.len(), shape, per_image)?;
        crate::metrics::inference(&self.id, inputs.len(), started.elapsed());
        let mut maps = raw.maps.as_ref().map(|(values, [h, w])| {
            values.chunks_exact(h * w).map(|map| Heatmap {
                width: *w as u32,
                height: *h as u32,
                values: map.to_vec(),
            })
        });
        raw.values
            .chunks_exact(per_image)
            .map(|row| {
                let probabilities = loaded.decision.probabilities(row).map_err(|message| {
                    InferenceError::Output {
                        id: self.id.clone(),
                        message,
                    }
                })?;
                Ok(ScreeningResult {
                    stage: Some(manifest.stage),
                    heatmap: maps.as_mut().and_then(Iterator::next),
                    ..loaded.decision.result(probabilities, threshold)
                })
            })
            .collect()
    }

    fn unavailable(&self) -> InferenceError {
        InferenceError::Unavailable {
            id: self.id.clone(),
            reason: self.status.reason().unwrap_or("not loaded").to_owned(),
        }
    }
}

/// The models of a deployment, by id.
#[derive(Debug, Default)]
pub struct Registry {
    models: Vec<Arc<Model>>,
}

impl Registry {
    /// A registry with no models.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads every model folder under `options.dir` (a folder with a `manifest.toml`; others,
    /// like `training/`, are skipped) and loads the sessions.
    pub fn load(options: &RegistryOptions) -> anyhow::Result<Self> {
        for (id, threshold) in &options.thresholds {
            if !(*threshold > 0.0 && *threshold < 1.0) {
                anyhow::bail!(
                    "models.thresholds.{id} must be strictly between 0 and 1, got {threshold}"
                );
            }
        }
        let entries = std::fs::read_dir(&options.dir)
            .with_context(|| format!("cannot read the model registry {}", options.dir.display()))?;
        let mut folders = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| {
                format!("cannot read the model registry {}", options.dir.display())
            })?;
            let path = entry.path();
            if path.is_dir() && path.join(manifest::MANIFEST_FILE).exists() {
                folders.push(path);
            } else {
                tracing::debug!(path = %path.display(), "not a model folder (no manifest.toml)");
            }
        }
        folders.sort();

        let mut runtime: Option<Result<PathBuf, String>> = None;
        let mut models = Vec::with_capacity(folders.len());
        for dir in folders {
            let started = std::time::Instant::now();
            let model = load_model(dir, options, &mut runtime);
            crate::metrics::model_registered(
                &model.id,
                model.version().unwrap_or("unknown"),
                model
                    .execution_provider()
                    .map_or("none", ActiveProvider::as_str),
                model.status.as_str(),
                model.loaded.is_some().then(|| started.elapsed()),
            );
            match &model.status {
                ModelStatus::Unavailable { reason } => {
                    tracing::warn!(model = %model.id, %reason, "model unavailable");
                }
                status => {
                    tracing::info!(model = %model.id, version = ?model.version(), ?status, "model listed")
                }
            }
            models.push(Arc::new(model));
        }
        for id in options.thresholds.keys() {
            if !models.iter().any(|m| &m.id == id) {
                tracing::warn!(model = %id, "models.thresholds names a model that is not in the registry");
            }
        }
        Ok(Self { models })
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Model>> {
        self.models.iter().find(|m| m.id == id).cloned()
    }

    /// Every model, sorted by id.
    pub fn list(&self) -> Vec<Arc<Model>> {
        self.models.clone()
    }
}

/// Reads one folder; whatever goes wrong becomes the model's `Unavailable` reason.
/// `runtime` caches the outcome of loading ONNX Runtime (tried once, on the first model that
/// needs it).
fn load_model(
    dir: PathBuf,
    options: &RegistryOptions,
    runtime: &mut Option<Result<PathBuf, String>>,
) -> Model {
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut model = Model {
        threshold_override: options.thresholds.get(&id).copied(),
        id,
        dir,
        manifest: None,
        card: None,
        figures: Vec::new(),
        status: ModelStatus::NotLoaded,
        loaded: None,
        prepared: Prepared::default(),
    };
    let unavailable = |reason: String| ModelStatus::Unavailable { reason };

    let manifest = match Manifest::load(&model.dir) {
        Ok(manifest) => manifest,
        Err(e) => {
            model.status = unavailable(e.to_string());
            return model;
        }
    };
    let card_path = model.dir.join(&manifest.card);
    match std::fs::read_to_string(&card_path) {
        Ok(card) => model.card = Some(card),
        Err(e) => {
            tracing::warn!(model = %model.id, path = %card_path.display(), error = %e, "no model card")
        }
    }
    for figure in &manifest.figures {
        let path = model.dir.join(&figure.file);
        if path.is_file() {
            model.figures.push((figure.clone(), path));
        } else {
            tracing::warn!(model = %model.id, file = %figure.file, "a declared figure is missing; it is not listed");
        }
    }
    let weights = model.dir.join(&manifest.weights);
    let weights_ok = match std::fs::metadata(&weights) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => Ok(()),
        Ok(_) => Err(format!(
            "weights file {} is empty or not a file",
            manifest.weights
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("weights file {} is missing", manifest.weights))
        }
        Err(e) => Err(format!(
            "weights file {} cannot be read: {e}",
            manifest.weights
        )),
    };
    let wanted = options
        .only
        .as_ref()
        .is_none_or(|only| only.contains(&model.id));
    model.status = match weights_ok {
        Err(reason) => unavailable(reason),
        Ok(()) if !wanted => ModelStatus::NotLoaded,
        Ok(()) => {
            let runtime = runtime.get_or_insert_with(|| {
                init_onnxruntime(options.onnxruntime_library.as_deref())
                    .map_err(|e| format!("{e:#}"))
            });
            match runtime {
                Err(e) => unavailable(format!("ONNX Runtime is not available: {e}")),
                Ok(_) => match Runner::load(
                    &weights,
                    &manifest,
                    options.execution_provider,
                    Threads {
                        intra: options.intra_threads,
                        spinning: options.spinning,
                    },
                ) {
                    Ok(runner) => {
                        model.loaded = Some(Loaded {
                            runner,
                            decision: Decision::new(&manifest),
                        });
                        ModelStatus::Ready
                    }
                    Err(e) => unavailable(format!("{}: {e:#}", manifest.weights)),
                },
            }
        }
    };
    model.manifest = Some(manifest);
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
id = "xray"
version = "2.1.0"
name = "X-ray"
modality = "chest_xray"
task = "binary"
description = ""
weights = "model.onnx"
card = "CARD.md"
[input]
name = "input"
layout = "nchw"
color = "gray"
width = 8
height = 8
[input.normalize]
scale = 1.0
mean = [0.0]
std = [1.0]
[output]
name = "output"
activation = "softmax"
labels = ["Normal", "Tuberculosis"]
[decision]
finding = "Tuberculosis"
threshold = 0.4
"#;

    fn folder() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("xray");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
        std::fs::write(dir.join("model.onnx"), b"weights").unwrap();
        root
    }

    #[test]
    fn without_onnx_runtime_a_model_is_unavailable_and_says_so() {
        let root = folder();
        let options = RegistryOptions::new(root.path());
        let mut runtime = Some(Err("ONNX Runtime library not found".to_owned()));
        let model = load_model(root.path().join("xray"), &options, &mut runtime);
        assert_eq!(
            model.status(),
            &ModelStatus::Unavailable {
                reason: "ONNX Runtime is not available: ONNX Runtime library not found".to_owned()
            }
        );
        assert_eq!(model.version(), Some("2.1.0"));
        assert_eq!(model.threshold(), Some(0.4));
        assert!(model.card().is_none());
        let err = model.predict(&[], Priority::Bulk).unwrap_err();
        assert_eq!(err.code(), "model_unavailable");
        assert!(err.to_string().contains("library not found"), "{err}");
    }

    #[test]
    fn models_left_out_by_only_are_listed_without_onnx_runtime() {
        let root = folder();
        let options = RegistryOptions {
            only: Some(Vec::new()),
            thresholds: HashMap::from([("xray".to_owned(), 0.25)]),
            ..RegistryOptions::new(root.path())
        };
        let registry = Registry::load(&options).unwrap();
        let model = registry.get("xray").unwrap();
        assert_eq!(model.status(), &ModelStatus::NotLoaded);
        assert_eq!(model.threshold(), Some(0.25));
        assert!(model.execution_provider().is_none());
        // Preprocessing needs only the manifest.
        let img = DynamicImage::new_luma8(20, 10);
        assert_eq!(model.preprocess(&img).unwrap().shape(), &[1, 8, 8]);
    }

    #[test]
    fn a_missing_registry_folder_is_an_error() {
        let err = Registry::load(&RegistryOptions::new("/nowhere/models")).unwrap_err();
        assert!(err.to_string().contains("/nowhere/models"), "{err}");
    }
}
