//! The model registry: folders that load, folders that do not (and say why), and predictions
//! that agree with ONNX Runtime in Python. Also the helpers the parity tests share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use medinform_core::imaging::{self, ImageLimits};
use medinform_core::job::{Heatmap, Priority};
use medinform_core::registry::{ExecutionProvider, ModelStatus, Registry, RegistryOptions};
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Helpers (shared with parity.rs)

/// The repository root (`core/..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared` next to the repository: golden files and data sets. CI always has it, so its
/// absence is a failure, not a skip.
pub fn shared_dir() -> PathBuf {
    let dir = repo_root().join("../shared");
    assert!(
        dir.is_dir(),
        "{} is missing: the parity tests need the shared golden files and data sets next to the repository",
        dir.display()
    );
    dir
}

/// The Python with numpy, Pillow, onnx and onnxruntime: `$MEDINFORM_PYTHON`, else `.venv`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("MEDINFORM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: create the venv (numpy, pillow, onnx, onnxruntime) or set MEDINFORM_PYTHON",
        python.display()
    );
    python
}

/// Runs `python args...` from the repository root with `models/training` on the path; panics
/// with its stderr when it fails, returns its stdout.
pub fn run_python<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(python())
        .args(&args)
        .current_dir(repo_root())
        .env("PYTHONPATH", repo_root().join("models/training"))
        .output()
        .expect("cannot start python");
    assert!(
        output.status.success(),
        "python {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Writes a tiny fixed-weights model folder `dir` (see `medinform_train.tiny_model`).
pub fn tiny_model(dir: &Path, extra: &[&str]) {
    let mut args = vec![
        "-m",
        "medinform_train.tiny_model",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_python(args);
}

/// One line of `medinform_train.reference`.
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub file: String,
    pub labels: Vec<String>,
    pub probabilities: Vec<f64>,
    /// The model's class activation map, when its manifest declares one.
    #[serde(default)]
    pub heatmap: Option<Heatmap>,
}

/// ONNX Runtime (Python) probabilities for `inputs`; with `dump`, the input tensors are written
/// to `dump/<n>.npy`.
pub fn reference(model_dir: &Path, inputs: &[PathBuf], dump: Option<&Path>) -> Vec<Reference> {
    let mut args = vec![
        "-m".into(),
        "medinform_train.reference".into(),
        "--model-dir".into(),
        model_dir.as_os_str().to_owned(),
    ];
    if let Some(dump) = dump {
        args.push("--dump-inputs".into());
        args.push(dump.as_os_str().to_owned());
    }
    args.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
    run_python(args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a reference JSON line"))
        .collect()
}

/// Reads a C-order `.npy` file of little-endian float32 values.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let (shape, data) = read_npy(path, "<f4");
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (shape, values)
}

/// Reads a C-order `.npy` file of `descr` values (`<f4`, `|u1`): its shape and data bytes.
pub fn read_npy(path: &Path, descr: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{} is not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains(&format!("'descr': '{descr}'")),
        "{}: not {descr}: {header}",
        path.display()
    );
    assert!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order: {header}",
        path.display()
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = bytes[start + header_len..].to_vec();
    let size: usize = descr[2..].parse().unwrap();
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>() * size,
        "{}",
        path.display()
    );
    (shape, data)
}

/// Decodes an image file the way the worker does.
pub fn decode_file(path: &Path) -> image::DynamicImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    imaging::decode(&bytes, &ImageLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .image
}

/// Registry options for `dir` on the CPU.
pub fn cpu_options(dir: &Path) -> RegistryOptions {
    RegistryOptions {
        execution_provider: ExecutionProvider::Cpu,
        intra_threads: 1,
        ..RegistryOptions::new(dir)
    }
}

/// The six golden cell images of the original malaria model.
pub fn golden_pngs() -> Vec<PathBuf> {
    let dir = shared_dir().join("models/medinform-original/malaria/golden");
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert_eq!(
        pngs.len(),
        6,
        "expected six golden PNGs in {}",
        dir.display()
    );
    pngs
}

/// Rust predictions for `files` (one batch) against the Python reference: probabilities within
/// 1e-4, heatmaps (when the model has them) within 1e-4 of the map's largest magnitude, and the
/// same input tensors. Returns the largest probability difference.
pub fn assert_parity(registry: &Registry, id: &str, model_dir: &Path, files: &[PathBuf]) -> f64 {
    let model = registry
        .get(id)
        .unwrap_or_else(|| panic!("model {id} is not listed"));
    assert!(
        model.is_ready(),
        "model {id} is not ready: {:?}",
        model.status()
    );
    let dump = tempfile::tempdir().unwrap();
    let expected = reference(model_dir, files, Some(dump.path()));
    assert_eq!(expected.len(), files.len());

    let inputs: Vec<_> = files
        .iter()
        .map(|f| model.preprocess(&decode_file(f)).unwrap())
        .collect();
    for (n, (input, file)) in inputs.iter().zip(files).enumerate() {
        let (shape, values) = read_npy_f32(&dump.path().join(format!("{n}.npy")));
        assert_eq!(input.shape(), &shape[..], "{}", file.display());
        let diff = input
            .iter()
            .zip(&values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff == 0.0,
            "{id} {}: input tensors differ by up to {diff}",
            file.display()
        );
    }
    let results = model.predict(&inputs, Priority::Interactive).unwrap();
    // The bulk lane's session is the same network on threads of its own: the same answers.
    let bulk = model.predict(&inputs, Priority::Bulk).unwrap();
    for (a, b) in results.iter().zip(&bulk) {
        assert_eq!(a.probabilities, b.probabilities, "{id}: the lanes disagree");
    }
    let mut worst = 0f64;
    for (result, reference) in results.iter().zip(&expected) {
        let labels: Vec<_> = result
            .probabilities
            .iter()
            .map(|p| p.label.clone())
            .collect();
        assert_eq!(labels, reference.labels);
        for (rust, python) in result.probabilities.iter().zip(&reference.probabilities) {
            let diff = (rust.probability - python).abs();
            worst = worst.max(diff);
            assert!(
                diff < 1e-4,
                "{id} {}: p({}) is {} in Rust, {python} in Python",
                reference.file,
                rust.label,
                rust.probability
            );
        }
        assert_eq!(
            result.heatmap.is_some(),
            model.has_heatmap(),
            "{id}: a model with a heatmap output gives a map with every result"
        );
        match (&result.heatmap, &reference.heatmap) {
            (Some(rust), Some(python)) => assert_maps_agree(id, &reference.file, rust, python),
            (None, None) => {}
            (rust, python) => panic!(
                "{id} {}: map in Rust {:?}, in Python {:?}",
                reference.file,
                rust.is_some(),
                python.is_some()
            ),
        }
    }
    worst
}

/// The same size, and values within 1e-4 of the map's largest magnitude (the maps are raw
/// sums of a feature map, whose scale varies from model to model).
fn assert_maps_agree(id: &str, file: &str, rust: &Heatmap, python: &Heatmap) {
    assert_eq!(
        (rust.width, rust.height),
        (python.width, python.height),
        "{id} {file}: map size"
    );
    assert_eq!(rust.values.len(), python.values.len());
    let scale = python.values.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let diff = rust
        .values
        .iter()
        .zip(&python.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= 1e-4 * scale,
        "{id} {file}: maps differ by {diff} (largest value {scale})"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

const BROKEN_MANIFEST: &str = r#"
id = "broken"
version = "1.0.0"
name = "Broken"
modality = "chest_xray"
task = "binary"
description = "A manifest with no threshold."
weights = "model.onnx"
card = "CARD.md"

[input]
name = "input"
layout = "nchw"
color = "gray"
width = 32
height = 32

[input.normalize]
scale = 0.00392156862745098
mean = [0.0]
std = [1.0]

[output]
name = "output"
activation = "softmax"
labels = ["Normal", "Tuberculosis"]

[decision]
finding = "Tuberculosis"
threshold = 1.5
"#;

#[test]
fn each_folder_is_listed_with_a_status_and_broken_ones_say_why() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    tiny_model(&dir.join("tiny"), &[]);

    // Weights missing.
    tiny_model(&dir.join("no_weights"), &[]);
    std::fs::remove_file(dir.join("no_weights/model.onnx")).unwrap();

    // A manifest with an invalid threshold (and real weights next to it).
    std::fs::create_dir(dir.join("broken")).unwrap();
    std::fs::write(dir.join("broken/manifest.toml"), BROKEN_MANIFEST).unwrap();
    std::fs::copy(dir.join("tiny/model.onnx"), dir.join("broken/model.onnx")).unwrap();

    // A manifest that does not parse.
    std::fs::create_dir(dir.join("garbled")).unwrap();
    std::fs::write(
        dir.join("garbled/manifest.toml"),
        "id = \"garbled\"\nversion = \n",
    )
    .unwrap();

    // Weights that do not match the manifest: 64 x 64 declared, the graph takes 32 x 32.
    tiny_model(&dir.join("mismatch"), &[]);
    let manifest = std::fs::read_to_string(dir.join("mismatch/manifest.toml")).unwrap();
    std::fs::write(
        dir.join("mismatch/manifest.toml"),
        manifest
            .replace("width = 32", "width = 64")
            .replace("height = 32", "height = 64"),
    )
    .unwrap();

    // Weights that are not an ONNX graph.
    tiny_model(&dir.join("not_onnx"), &[]);
    std::fs::write(dir.join("not_onnx/model.onnx"), b"this is not a model").unwrap();

    // Not a model folder.
    std::fs::create_dir(dir.join("training")).unwrap();

    let registry = Registry::load(&cpu_options(dir)).unwrap();
    for model in registry.list() {
        eprintln!("{}: {:?}", model.id(), model.status());
    }
    let ids: Vec<String> = registry.list().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(
        ids,
        [
            "broken",
            "garbled",
            "mismatch",
            "no_weights",
            "not_onnx",
            "tiny"
        ]
    );

    let reason = |id: &str| match registry.get(id).unwrap().status() {
        ModelStatus::Unavailable { reason } => reason.clone(),
        other => panic!("{id} should be unavailable, is {other:?}"),
    };
    assert!(
        reason("no_weights").contains("model.onnx is missing"),
        "{}",
        reason("no_weights")
    );
    assert!(
        reason("broken").contains("decision.threshold"),
        "{}",
        reason("broken")
    );
    assert!(
        reason("garbled").contains("line 2"),
        "{}",
        reason("garbled")
    );
    let mismatch = reason("mismatch");
    assert!(
        mismatch.contains("[batch, 1, 64, 64]") && mismatch.contains("[?, 1, 32, 32]"),
        "{mismatch}"
    );
    assert!(
        reason("not_onnx").starts_with("model.onnx: "),
        "{}",
        reason("not_onnx")
    );

    let tiny = registry.get("tiny").unwrap();
    assert!(tiny.is_ready(), "{:?}", tiny.status());
    assert_eq!(tiny.version(), Some("0.0.1"));
    assert_eq!(tiny.threshold(), Some(0.5));
    assert!(tiny.card().unwrap().starts_with("# Tiny test model"));
    assert!(registry.get("training").is_none());

    let no_weights = registry.get("no_weights").unwrap();
    assert!(!no_weights.is_available());
    assert_eq!(no_weights.version(), Some("0.0.1"));
    let err = no_weights.predict(&[], Priority::Interactive).unwrap_err();
    assert_eq!(err.code(), "model_unavailable");
    assert!(registry.get("broken").unwrap().manifest().is_none());
}

#[test]
fn site_thresholds_override_the_manifest_and_decide_the_label() {
    let root = tempfile::tempdir().unwrap();
    tiny_model(&root.path().join("tiny"), &[]);
    let img = decode_file(&golden_pngs()[0]);

    let mut labels = Vec::new();
    for threshold in [0.01, 0.99] {
        let options = RegistryOptions {
            thresholds: HashMap::from([("tiny".to_owned(), threshold)]),
            ..cpu_options(root.path())
        };
        let registry = Registry::load(&options).unwrap();
        let model = registry.get("tiny").unwrap();
        assert_eq!(model.threshold(), Some(threshold));
        let result = model
            .predict(&[model.preprocess(&img).unwrap()], Priority::Interactive)
            .unwrap()
            .remove(0);
        assert_eq!(result.threshold, threshold);
        assert_eq!(result.positive, result.finding_probability >= threshold);
        assert_eq!(
            result.label,
            if result.positive {
                "Positive"
            } else {
                "Negative"
            }
        );
        labels.push(result.label);
    }
    assert_eq!(labels, ["Positive", "Negative"]);

    let options = RegistryOptions {
        thresholds: HashMap::from([("tiny".to_owned(), 1.0)]),
        ..cpu_options(root.path())
    };
    let err = Registry::load(&options).unwrap_err();
    assert!(err.to_string().contains("models.thresholds.tiny"), "{err}");
}

#[test]
fn only_loads_the_named_models_and_lists_the_others() {
    let root = tempfile::tempdir().unwrap();
    tiny_model(&root.path().join("first"), &[]);
    tiny_model(&root.path().join("second"), &[]);
    let options = RegistryOptions {
        only: Some(vec!["second".to_owned()]),
        ..cpu_options(root.path())
    };
    let registry = Registry::load(&options).unwrap();
    let first = registry.get("first").unwrap();
    assert_eq!(first.status(), &ModelStatus::NotLoaded);
    assert!(first.is_available() && !first.is_ready());
    assert_eq!(
        first
            .predict(&[], Priority::Interactive)
            .unwrap_err()
            .code(),
        "model_unavailable"
    );
    assert!(registry.get("second").unwrap().is_ready());
    assert!(Registry::empty().list().is_empty());
}

#[test]
fn predict_batches_match_onnxruntime_in_python() {
    let root = tempfile::tempdir().unwrap();
    let variants: [(&str, &[&str]); 5] = [
        ("gray_softmax", &["--sharpen", "--equalize"]),
        (
            "rgb_nhwc_sigmoid",
            &[
                "--layout",
                "nhwc",
                "--color",
                "rgb",
                "--activation",
                "sigmoid",
                "--filter",
                "nearest",
            ],
        ),
        (
            "rgb_probability",
            &[
                "--color",
                "rgb",
                "--activation",
                "sigmoid_probability",
                "--equalize",
                "--size",
                "125",
                "--filter",
                "nearest",
                "--sharpen",
            ],
        ),
        (
            "multiclass_none",
            &[
                "--activation",
                "none",
                "--labels",
                "Normal,Pneumonia,COVID-19",
                "--size",
                "64",
            ],
        ),
        (
            "fixed_batch",
            &["--fixed-batch", "1", "--color", "rgb", "--size", "40"],
        ),
    ];
    for (id, args) in variants {
        tiny_model(&root.path().join(id), args);
    }
    let registry = Registry::load(&cpu_options(root.path())).unwrap();

    // The golden cells, plus a 16-bit PNG, a palette-free gray PNG and an RGBA PNG.
    let mut files = golden_pngs();
    let extra = root.path().join("images");
    std::fs::create_dir(&extra).unwrap();
    let rgb16 = image::ImageBuffer::from_fn(90, 70, |x, y| {
        image::Rgb([(x * 700) as u16, (y * 900) as u16, 40_000u16])
    });
    let gray = image::ImageBuffer::from_fn(33, 47, |x, y| image::Luma([((x * y) % 256) as u8]));
    let rgba = image::ImageBuffer::from_fn(20, 20, |x, y| {
        image::Rgba([(x * 12) as u8, (y * 12) as u8, 200, (x * y) as u8])
    });
    image::DynamicImage::ImageRgb16(rgb16)
        .save(extra.join("rgb16.png"))
        .unwrap();
    image::DynamicImage::ImageLuma8(gray)
        .save(extra.join("gray.png"))
        .unwrap();
    image::DynamicImage::ImageRgba8(rgba)
        .save(extra.join("rgba.png"))
        .unwrap();
    files.extend(["rgb16.png", "gray.png", "rgba.png"].map(|f| extra.join(f)));

    for (id, _) in variants {
        let worst = assert_parity(&registry, id, &root.path().join(id), &files);
        eprintln!(
            "{id}: max |p_rust - p_python| = {worst:.2e} over {} images",
            files.len()
        );
    }
}

#[test]
fn cuda_requested_without_a_usable_gpu_falls_back_to_the_cpu() {
    let root = tempfile::tempdir().unwrap();
    tiny_model(&root.path().join("tiny"), &[]);
    let options = RegistryOptions {
        execution_provider: ExecutionProvider::Cuda,
        ..cpu_options(root.path())
    };
    let registry = Registry::load(&options).unwrap();
    let model = registry.get("tiny").unwrap();
    assert!(model.is_ready(), "{:?}", model.status());
    // CPU with the CPU-only onnxruntime wheel; CUDA where onnxruntime-gpu and a GPU are present.
    eprintln!(
        "CUDA requested; running on {:?}",
        model.execution_provider()
    );
    let input = model.preprocess(&decode_file(&golden_pngs()[0])).unwrap();
    assert_eq!(
        model
            .predict(&[input], Priority::Interactive)
            .unwrap()
            .len(),
        1
    );
}
