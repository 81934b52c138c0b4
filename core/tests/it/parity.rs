//! Parity: the Rust path against the original MedInform pipeline (golden tensors and Keras
//! probabilities) and against ONNX Runtime in Python for every trained model in `models/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use medinform_core::job::Priority;
use medinform_core::registry::manifest::InputSpec;
use medinform_core::registry::preprocess::preprocess;
use medinform_core::registry::{Manifest, ModelStatus, Registry, Stage};

use crate::registry::{
    assert_parity, cpu_options, decode_file, golden_pngs, read_npy_f32, reference, repo_root,
    run_python, shared_dir,
};

/// The original server's preprocessing, in manifest form.
const ORIGINAL_MALARIA_INPUT: &str = r#"
name = "input"
layout = "nhwc"
color = "rgb"
width = 125
height = 125

[[preprocess]]
op = "resize"
filter = "nearest"

[[preprocess]]
op = "sharpen"
kernel = [0, -1, 0, -1, 6, -1, 0, -1, 0]

[[preprocess]]
op = "equalize_histogram"

[normalize]
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
"#;

#[test]
fn golden_tensors_of_the_original_malaria_pipeline_are_reproduced() {
    let spec: InputSpec = toml::from_str(ORIGINAL_MALARIA_INPUT).unwrap();
    let mut worst = 0f32;
    for png in golden_pngs() {
        let tensor = preprocess(&decode_file(&png), &spec);
        let npy = png.with_file_name(
            png.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .replace(".png", ".input_nhwc_f32.npy"),
        );
        let (shape, golden) = read_npy_f32(&npy);
        assert_eq!(tensor.shape(), &shape[..], "{}", png.display());
        let diffs: Vec<f32> = tensor
            .iter()
            .zip(&golden)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0f32, f32::max);
        let differing = diffs.iter().filter(|d| **d > 0.0).count();
        eprintln!(
            "{}: max abs diff {max}, {differing} of {} values differ",
            png.display(),
            diffs.len()
        );
        assert!(
            max < 1.0 / 255.0,
            "{}: max abs diff {max} (limit 1/255)",
            png.display()
        );
        // Every step is integer arithmetic on 8-bit values: anything but an exact match is a bug.
        assert_eq!(
            differing,
            0,
            "{}: {differing} values differ (max {max})",
            png.display()
        );
        worst = worst.max(max);
    }
    eprintln!("golden tensors: max abs diff {worst} over 6 images");
}

/// Eight real images for a model, spread over both ends of its `labels.csv` (which groups the
/// classes): from `datasets/<id>`, else the data set of its modality, written as PNG into `out`
/// (JPEG files as they are are the next tests' subject). A shipped model with no real images to
/// test is a failure, not a skip.
fn sample_images(manifest: &Manifest, out: &Path) -> Vec<PathBuf> {
    let datasets = shared_dir().join("datasets");
    let by_modality = match manifest.modality {
        medinform_core::registry::manifest::Modality::BloodSmearCell => "malaria",
        medinform_core::registry::manifest::Modality::ChestXray => "tuberculosis",
        medinform_core::registry::manifest::Modality::Dermoscopy => "skin_cancer",
        medinform_core::registry::manifest::Modality::Fundus => "diabetic_retinopathy",
    };
    let dataset = [manifest.id.as_str(), by_modality]
        .into_iter()
        .map(|name| datasets.join(name))
        .find(|dir| !dir.as_os_str().is_empty() && dir.is_dir() && dir != &datasets);
    let Some(dataset) = dataset else {
        panic!(
            "{} ships weights but {} holds no {:?} images to check them on",
            manifest.id,
            datasets.display(),
            manifest.modality
        );
    };
    let script = r#"
import csv, os, sys
import numpy as np
from PIL import Image
dataset, out = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(os.path.join(dataset, "labels.csv"))))
npz = sorted(f for f in os.listdir(dataset) if f.endswith(".npz"))
if "npz_index" in rows[0]:
    images = np.load(os.path.join(dataset, npz[0]))["images"]
    picks = [(f"cell_{i}", images[i]) for i in np.linspace(0, len(images) - 1, 8).astype(int)]
else:
    chosen = [rows[i] for i in np.linspace(0, len(rows) - 1, 8).astype(int)]
    picks = [(os.path.splitext(os.path.basename(r["file"]))[0], np.asarray(Image.open(os.path.join(dataset, r["file"])))) for r in chosen]
for name, pixels in picks:
    path = os.path.join(out, name + ".png")
    Image.fromarray(pixels).save(path)
    print(path)
"#;
    run_python([
        "-c",
        script,
        dataset.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .lines()
    .map(PathBuf::from)
    .collect()
}

#[test]
fn the_shipped_registry_serves_six_models_with_stages_heatmaps_and_figures() {
    let registry = Registry::load(&cpu_options(&repo_root().join("models"))).unwrap();
    let ids: Vec<String> = registry.list().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(
        ids,
        [
            "covid19",
            "diabetic_retinopathy",
            "malaria",
            "pneumonia",
            "skin_cancer",
            "tuberculosis"
        ]
    );
    for model in registry.list() {
        let id = model.id();
        assert_eq!(model.status(), &ModelStatus::Ready, "{id}");
        let manifest = model.manifest().unwrap();
        assert!(model.has_heatmap(), "{id} exports no heatmap");
        // The registry refuses a screening stage that the metrics do not support, so a ready
        // model's stage is backed by its held-out figures; each declares what it must meet.
        assert!(
            manifest.minimum.as_ref().is_some_and(|m| !m.is_empty()),
            "{id} declares no minimum"
        );
        let figures = model.figures();
        assert_eq!(
            figures.len(),
            manifest.figures.len(),
            "{id}: a declared figure is missing"
        );
        assert!(figures.len() >= 3, "{id} has {} figures", figures.len());
        for (figure, path) in figures {
            let size = std::fs::metadata(path).unwrap().len();
            assert!(size < 200_000, "{id} {}: {size} bytes", figure.file);
        }
    }
    // 28 px fundus photographs cannot show lesions: that model is for research whatever it scores.
    let retinopathy = registry.get("diabetic_retinopathy").unwrap();
    assert_eq!(retinopathy.stage(), Stage::Research);
    // Its finding is the referable group, not the first grade of it.
    assert_eq!(
        retinopathy.manifest().unwrap().decision.finding_name(),
        "Referable DR (Moderate or worse)"
    );
}

#[test]
fn trained_models_agree_with_onnxruntime_in_python() {
    let models = repo_root().join("models");
    let registry = Registry::load(&cpu_options(&models)).unwrap();
    let trained: Vec<_> = registry
        .list()
        .into_iter()
        .filter(|m| match m.manifest() {
            Some(manifest) => m.dir().join(&manifest.weights).exists(),
            // A folder with weights but a manifest the registry refused must not drop out.
            None => m.dir().join("model.onnx").exists(),
        })
        .collect();
    // The repository ships trained models: finding none means the registry lost them.
    assert!(
        !trained.is_empty(),
        "no model with weights in {}",
        models.display()
    );
    for model in trained {
        let manifest = model
            .manifest()
            .unwrap_or_else(|| panic!("{} ships weights: {:?}", model.id(), model.status()));
        let images = tempfile::tempdir().unwrap();
        let files = sample_images(manifest, images.path());
        assert_eq!(files.len(), 8, "{}: {files:?}", model.id());
        let worst = assert_parity(&registry, model.id(), model.dir(), &files);
        eprintln!(
            "{} {}: max |p_rust - p_python| = {worst:.2e} over {} images",
            model.id(),
            manifest.version,
            files.len()
        );
    }
}

#[test]
fn original_keras_malaria_model_gives_its_recorded_probabilities() {
    let importer = repo_root().join("models/training/medinform_train/keras_import.py");
    assert!(
        importer.exists(),
        "{} is missing: the original model cannot be imported",
        importer.display()
    );
    let original = shared_dir().join("models/medinform-original/malaria");
    let work = tempfile::tempdir().unwrap();
    let imported = work.path().join("import");
    run_python([
        "-m".as_ref(),
        "medinform_train.keras_import".as_ref(),
        "--h5".as_ref(),
        original.join("malaria2.h5").as_os_str(),
        "--out".as_ref(),
        imported.as_os_str(),
    ]);
    // The importer names the model; the registry wants the folder to carry that name.
    let text = std::fs::read_to_string(imported.join("manifest.toml"))
        .expect("the importer writes manifest.toml");
    let id = toml::from_str::<toml::Table>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let registry_dir = work.path().join("registry");
    std::fs::create_dir(&registry_dir).unwrap();
    std::fs::rename(&imported, registry_dir.join(&id)).unwrap();

    let registry = Registry::load(&cpu_options(&registry_dir)).unwrap();
    let model = registry.get(&id).unwrap();
    assert!(model.is_ready(), "imported model: {:?}", model.status());
    let labels = &model.manifest().unwrap().output.labels;
    let uninfected = labels
        .iter()
        .position(|l| l.eq_ignore_ascii_case("uninfected"))
        .unwrap_or_else(|| panic!("no Uninfected label in {labels:?}"));

    let expected: HashMap<String, f64> = serde_json::from_str(
        &std::fs::read_to_string(original.join("golden/expected_prob_uninfected.json")).unwrap(),
    )
    .unwrap();
    let pngs = golden_pngs();
    let inputs: Vec<_> = pngs
        .iter()
        .map(|p| model.preprocess(&decode_file(p)).unwrap())
        .collect();
    let results = model.predict(&inputs, Priority::Interactive).unwrap();
    let mut worst = 0f64;
    for (png, result) in pngs.iter().zip(&results) {
        let name = png.file_name().unwrap().to_str().unwrap();
        let p = result.probabilities[uninfected].probability;
        let diff = (p - expected[name]).abs();
        worst = worst.max(diff);
        assert!(
            diff < 1e-4,
            "{name}: p(uninfected) = {p}, the Keras model gave {}",
            expected[name]
        );
    }
    eprintln!("imported Keras model: max |p - p_keras| = {worst:.2e} over 6 golden cells");

    let python = reference(&registry_dir.join(&id), &pngs, None);
    for (line, result) in python.iter().zip(&results) {
        let diff =
            (line.probabilities[uninfected] - result.probabilities[uninfected].probability).abs();
        assert!(
            diff < 1e-4,
            "{}: Rust and Python differ by {diff}",
            line.file
        );
    }
}

/// JPEG files spread over a data set's `labels.csv`: `count` of them, as the data set holds
/// them (no re-encoding).
fn dataset_jpegs(dataset: &str, count: usize) -> Vec<PathBuf> {
    let dir = shared_dir().join("datasets").join(dataset);
    let csv = std::fs::read_to_string(dir.join("labels.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let files: Vec<PathBuf> = csv
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .filter(|file| file.ends_with(".jpg") || file.ends_with(".jpeg"))
        .map(|file| dir.join(file))
        .collect();
    assert!(
        files.len() >= count,
        "{} lists {} JPEG files, fewer than {count}",
        dir.display(),
        files.len()
    );
    (0..count)
        .map(|i| files[i * (files.len() - 1) / (count - 1).max(1)].clone())
        .collect()
}

/// Pillow's decoding (`preprocess.decode_image`, what training reads) of each file, as
/// `(shape, pixels)`.
fn pillow_pixels(files: &[PathBuf]) -> Vec<(Vec<usize>, Vec<u8>)> {
    let out = tempfile::tempdir().unwrap();
    let script = r#"
import json, os, sys
from medinform_train.preprocess import decode_image
out = sys.argv[1]
for n, path in enumerate(sys.argv[2:]):
    pixels = decode_image(path)
    raw = os.path.join(out, f"{n}.raw")
    pixels.tofile(raw)
    print(json.dumps({"shape": list(pixels.shape), "raw": raw}))
"#;
    let mut args = vec![
        "-c".into(),
        script.into(),
        out.path().as_os_str().to_owned(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    run_python(args)
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let shape = line["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (shape, std::fs::read(line["raw"].as_str().unwrap()).unwrap())
        })
        .collect()
}

/// Asserts that the service decodes each JPEG to exactly Pillow's pixels.
fn assert_same_pixels_as_pillow(files: &[PathBuf]) {
    let expected = pillow_pixels(files);
    assert_eq!(expected.len(), files.len());
    for (file, (shape, pillow)) in files.iter().zip(expected) {
        let decoded = decode_file(file);
        let channels = usize::from(decoded.color().channel_count());
        let mut ours = vec![decoded.height() as usize, decoded.width() as usize];
        if channels > 1 {
            ours.push(channels);
        }
        assert_eq!(ours, shape, "{}: shape", file.display());
        let pixels = decoded.as_bytes();
        let differing = pixels.iter().zip(&pillow).filter(|(a, b)| a != b).count();
        let max = pixels
            .iter()
            .zip(&pillow)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert_eq!(
            differing,
            0,
            "{}: {differing} of {} samples differ from Pillow's (by up to {max})",
            file.display(),
            pixels.len()
        );
    }
}

#[test]
fn real_jpegs_decode_to_the_same_pixels_as_in_training() {
    // Grey and colour chest X-rays from several sources, and colour dermoscopy photographs.
    let mut files = dataset_jpegs("pneumonia", 12);
    files.extend(dataset_jpegs("covid19", 24));
    files.extend(dataset_jpegs("skin_cancer", 12));
    assert_same_pixels_as_pillow(&files);
    eprintln!("{} real JPEG files: the same pixels as Pillow", files.len());
}

#[test]
fn every_kind_of_jpeg_decodes_to_the_same_pixels_as_in_training() {
    // What encoders write besides the data sets' files: every chroma subsampling, progressive,
    // restart markers, optimised tables, RGB without a colour transform, and Adobe CMYK.
    let out = tempfile::tempdir().unwrap();
    let script = r#"
import os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
y, x = np.mgrid[0:67, 0:93]
rgb = np.stack([(x * 2.7) % 256, (y * 3.1 + x) % 256, (x * y) % 256], axis=2).astype(np.uint8)
rgb = Image.fromarray(rgb, "RGB")
variants = {
    "gray": (rgb.convert("L"), {}),
    "444": (rgb, {"subsampling": 0}),
    "422": (rgb, {"subsampling": 1}),
    "420": (rgb, {"subsampling": 2, "quality": 60}),
    "progressive": (rgb, {"progressive": True}),
    "optimized_restarts": (rgb, {"optimize": True, "restart_marker_rows": 1}),
    "cmyk": (rgb.convert("CMYK"), {}),
}
for name, (img, options) in variants.items():
    path = os.path.join(out, name + ".jpg")
    img.save(path, "JPEG", **options)
    print(path)
rgb.save(os.path.join(out, "rgb.jpg"), "JPEG", keep_rgb=True)
print(os.path.join(out, "rgb.jpg"))
"#;
    let files: Vec<PathBuf> = run_python(["-c", script, out.path().to_str().unwrap()])
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(files.len(), 8);
    assert_same_pixels_as_pillow(&files);
}

#[test]
fn models_give_the_training_pipelines_tensors_on_real_jpegs() {
    // Every chest X-ray and dermoscopy image in the data sets is a JPEG: the tensor the service
    // builds from the file must be the very one training built (assert_parity: a difference of
    // 0), so the probabilities are ONNX Runtime's on the training pipeline's input.
    let registry = Registry::load(&cpu_options(&repo_root().join("models"))).unwrap();
    for (id, dataset) in [
        ("pneumonia", "pneumonia"),
        ("covid19", "covid19"),
        ("skin_cancer", "skin_cancer"),
    ] {
        let model = registry.get(id).unwrap();
        let files = dataset_jpegs(dataset, 8);
        let worst = assert_parity(&registry, id, model.dir(), &files);
        eprintln!(
            "{id}: identical tensors on {} real JPEGs; max |p_rust - p_python| = {worst:.2e}",
            files.len()
        );
    }
}
