//! `medinform screen`: the program's local screening against the model run directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use medinform_core::imaging::ImageLimits;
use medinform_core::registry::{ExecutionProvider, Registry, RegistryOptions};
use medinform_core::screening;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cells() -> Vec<PathBuf> {
    let dir = root().join("../shared/models/medinform-original/malaria/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "real cell images expected in {}",
        dir.display()
    );
    files
}

fn medinform(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medinform"))
        .current_dir(root())
        .env("MEDINFORM_MODELS_DIR", root().join("models"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_lines_match_the_model_and_name_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.png");
    std::fs::write(&notes, "not an image, whatever the name says").unwrap();
    let files = cells();
    let mut args = vec![
        "screen", "--model", "malaria", "--format", "json", "--batch", "4",
    ];
    let paths: Vec<String> = files
        .iter()
        .chain([&notes])
        .map(|p| p.display().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let output = medinform(&args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one file could not be screened"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len() + 1);

    let registry = Registry::load(&RegistryOptions {
        execution_provider: ExecutionProvider::Cpu,
        ..RegistryOptions::new(root().join("models"))
    })
    .unwrap();
    let model = registry.get("malaria").unwrap();
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(line["file"], file.display().to_string());
        assert_eq!(line["model"], "malaria");
        assert_eq!(line["model_version"], model.version().unwrap());
        let bytes = std::fs::read(file).unwrap();
        let direct = screening::screen(&model, &[bytes], &ImageLimits::default())
            .remove(0)
            .unwrap();
        assert_eq!(line["result"]["label"], direct.label.as_str());
        let p = line["result"]["finding_probability"].as_f64().unwrap();
        assert!((p - direct.finding_probability).abs() < 1e-6, "{line}");
    }
    let last = lines.last().unwrap();
    assert_eq!(last["file"], notes.display().to_string());
    assert_eq!(last["error"]["code"], "not_an_image");
    assert!(last.get("result").is_none());
}

#[test]
fn an_unavailable_model_is_refused_not_guessed() {
    let registry = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(root().join("models/malaria/manifest.toml")).unwrap();
    let retired = registry.path().join("retired");
    std::fs::create_dir(&retired).unwrap();
    std::fs::write(
        retired.join("manifest.toml"),
        manifest.replacen("id = \"malaria\"", "id = \"retired\"", 1),
    )
    .unwrap();
    let cell = cells().remove(0);
    let output = Command::new(env!("CARGO_BIN_EXE_medinform"))
        .current_dir(root())
        .env("MEDINFORM_MODELS_DIR", registry.path())
        .args(["screen", "--model", "retired", "--format", "json"])
        .arg(&cell)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no result may be printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("model.onnx") && stderr.contains("missing"),
        "{stderr}"
    );
}

/// The path of a DICOM test file that pydicom or pydicom-data ships (in `.venv`, or
/// `$MEDINFORM_PYTHON`'s environment).
fn dicom_test_file(name: &str) -> PathBuf {
    let python = std::env::var_os("MEDINFORM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let output = Command::new(&python)
        .args([
            "-c",
            "import sys; from pydicom.data import get_testdata_file; print(get_testdata_file(sys.argv[1]))",
            name,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (create the venv: infra/setup-python.sh)", python.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn dicom_files_are_screened_and_one_of_another_modality_is_refused() {
    // A CR chest radiograph (MONOCHROME1, 15 bits, windowed) and a CT slice.
    let chest = dicom_test_file("RG1_UNCR.dcm");
    let ct = dicom_test_file("CT_small.dcm");
    let output = medinform(&[
        "screen",
        "--model",
        "tuberculosis",
        "--format",
        "json",
        &chest.display().to_string(),
        &ct.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1), "the CT is not screened");
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);

    let registry = Registry::load(&RegistryOptions {
        execution_provider: ExecutionProvider::Cpu,
        ..RegistryOptions::new(root().join("models"))
    })
    .unwrap();
    let model = registry.get("tuberculosis").unwrap();
    let direct = screening::screen(
        &model,
        &[std::fs::read(&chest).unwrap()],
        &ImageLimits::default(),
    )
    .remove(0)
    .unwrap();
    assert_eq!(lines[0]["result"]["label"], direct.label.as_str());
    let p = lines[0]["result"]["finding_probability"].as_f64().unwrap();
    assert!(
        (p - direct.finding_probability).abs() < 1e-6,
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1]["error"]["code"], "modality_mismatch",
        "{}",
        lines[1]
    );
    assert!(
        lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Modality is CT"),
        "{}",
        lines[1]
    );
}
