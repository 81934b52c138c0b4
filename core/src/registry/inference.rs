//! ONNX Runtime: loading the shared library, building sessions, and running a batch.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`) from the library of the
//! `onnxruntime` Python wheel, so the worker and the training pipeline run the very same build.
//!
//! `ort`'s `Session::run` takes `&mut self` (some ONNX Runtime internals are not thread-safe), so
//! each session is behind a `Mutex`. Throughput comes from batching, not from concurrent runs:
//! the worker passes many jobs' tensors to one [`Runner::run`] call, and ONNX Runtime's intra-op
//! thread pool already spreads that one run over the cores.
//!
//! A model has one session per lane (its weights are held twice). A clinic's run never waits
//! for a drive's run in progress (a batch of 16 chest X-rays takes some 40 ms on two cores), and
//! the bulk session's intra-op threads, like the threads that call it, run at the bulk lane's CPU
//! priority ([`crate::cpu`]; `inference.bulk_nice`, the process's own unless configured).

use crate::job::{FailureCode, Priority};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, anyhow, bail};
use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};

use super::manifest::{Layout, Manifest};

/// Where inference runs, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// The CPU only: the default, the same everywhere unless a deployment asks for CUDA.
    #[default]
    Cpu,
    /// CUDA; falls back to the CPU with a warning when it cannot be used.
    Cuda,
    /// CUDA when this ONNX Runtime has it and it starts, else the CPU.
    Auto,
}

/// Where a session actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveProvider {
    Cpu,
    Cuda,
}

impl ActiveProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
}

/// Why a batch could not be screened.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model {id} is unavailable: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("input {index} has shape {actual:?}; model {id} expects {expected:?}")]
    InputShape {
        id: String,
        index: usize,
        actual: Vec<usize>,
        expected: [usize; 3],
    },
    #[error("ONNX Runtime failed running model {id}: {message}")]
    Runtime { id: String, message: String },
    #[error("model {id} gave an unusable output: {message}")]
    Output { id: String, message: String },
}

impl InferenceError {
    /// A stable code for a job's failure record.
    pub fn code(&self) -> FailureCode {
        match self {
            Self::Unavailable { .. } => FailureCode::ModelUnavailable,
            Self::InputShape { .. } | Self::Runtime { .. } | Self::Output { .. } => {
                FailureCode::InferenceFailed
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading ONNX Runtime

struct Runtime {
    library: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Loads ONNX Runtime once per process and returns the library it came from.
///
/// The library is `library` if given, else `$ORT_DYLIB_PATH`, else the newest
/// `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` in the current
/// directory or its nearest ancestor that has one. Later calls return the library already
/// loaded (a process can load only one); a failed attempt can be retried.
pub fn init_onnxruntime(library: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = runtime.as_ref() {
        if let Some(requested) = library.filter(|l| *l != loaded.library) {
            tracing::warn!(
                requested = %requested.display(),
                loaded = %loaded.library.display(),
                "ONNX Runtime is already loaded from another library; keeping it"
            );
        }
        return Ok(loaded.library.clone());
    }
    let path = locate_library(library)?;
    let builder = ort::init_from(&path)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
    let environment = builder
        .with_name("medinform")
        .build()
        .map_err(|e| anyhow!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
    let version = runtime_version(ort::info(), &path);
    tracing::info!(library = %path.display(), %version, "ONNX Runtime loaded");
    crate::metrics::onnxruntime_loaded(&version);
    *runtime = Some(Runtime {
        library: path.clone(),
        environment,
    });
    Ok(path)
}

/// The loaded library's version: the release branch its build info names
/// (`git-branch=rel-1.31.1`), else the version its file name ends with
/// (`libonnxruntime.so.1.31.1`), else `unknown`.
fn runtime_version(build_info: &str, library: &Path) -> String {
    let from_branch = build_info
        .split("git-branch=rel-")
        .nth(1)
        .map(|rest| rest.split([',', ' ']).next().unwrap_or_default());
    let from_name = || {
        let name = library.file_name()?.to_str()?;
        let (_, version) = name
            .split_once(".so.")
            .or(name.split_once("onnxruntime."))?;
        let version = version.trim_end_matches(".dylib");
        version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
            .then_some(version)
    };
    from_branch
        .filter(|v| !v.is_empty())
        .or_else(from_name)
        .unwrap_or("unknown")
        .to_owned()
}

fn environment() -> Option<Environment> {
    let runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    runtime.as_ref().map(|r| r.environment.clone())
}

fn locate_library(library: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = library {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!(
            "ONNX Runtime library {} does not exist (setting onnxruntime_library)",
            path.display()
        );
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "ONNX Runtime library {} does not exist (ORT_DYLIB_PATH)",
            path.display()
        );
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut looked = Vec::new();
    for dir in cwd.ancestors() {
        let lib = dir.join(".venv").join("lib");
        looked.push(lib.join("python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"));
        if let Some(found) = find_in_venv(&lib) {
            return Ok(found);
        }
    }
    bail!(
        "ONNX Runtime library not found: set onnxruntime_library or ORT_DYLIB_PATH, or install the \
         onnxruntime wheel into .venv; looked for {}",
        looked
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The newest `python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` under a venv's `lib`.
fn find_in_venv(lib: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|e| std::fs::read_dir(e.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    found.sort();
    found.pop()
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A session's intra-op thread pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Threads {
    /// Threads per run; 0 lets ONNX Runtime choose (one per core).
    pub intra: usize,
    /// Whether idle threads spin waiting for the next run rather than sleep.
    pub spinning: bool,
}

/// A model's ONNX sessions, one per lane, checked against its manifest.
pub(crate) struct Runner {
    interactive: Mutex<Session>,
    /// Its intra-op threads run at the bulk lane's CPU priority.
    bulk: Mutex<Session>,
    provider: ActiveProvider,
    input_name: String,
    output_name: String,
    /// The class activation map output and its `[h, w]`, when the manifest declares one.
    heatmap: Option<(String, [usize; 2])>,
    /// `Some(n)` when the graph's batch axis is fixed (runs are then made n images at a time).
    fixed_batch: Option<usize>,
}

/// What one run gives: `per_image` output values per image, and each image's map (`h * w`
/// values, row-major) when the model has one.
pub(crate) struct RunOutput {
    pub values: Vec<f32>,
    pub maps: Option<(Vec<f32>, [usize; 2])>,
}

impl Runner {
    /// Builds the sessions for `weights` and checks their input and output against the
    /// manifest. The error is the reason a person reads in the model list.
    pub(crate) fn load(
        weights: &Path,
        manifest: &Manifest,
        requested: ExecutionProvider,
        threads: Threads,
    ) -> anyhow::Result<Self> {
        let environment = environment().context("ONNX Runtime is not loaded")?;
        let build = |cuda: bool, lane: Priority| -> anyhow::Result<Session> {
            let mut builder = Session::builder(&environment)?
                .with_intra_op_spinning(threads.spinning)
                .map_err(<ort::Error>::from)?;
            if lane == Priority::Bulk {
                builder = builder
                    .with_thread_manager(crate::cpu::BulkThreads)
                    .map_err(<ort::Error>::from)?;
            }
            if threads.intra > 0 {
                builder = builder
                    .with_intra_threads(threads.intra)
                    .map_err(<ort::Error>::from)?;
            }
            if cuda {
                builder = builder
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(<ort::Error>::from)?;
            }
            Ok(builder.commit_from_file(weights)?)
        };
        let id = &manifest.id;
        let (session, provider) = match requested {
            ExecutionProvider::Cpu => (build(false, Priority::Interactive)?, ActiveProvider::Cpu),
            ExecutionProvider::Cuda | ExecutionProvider::Auto => {
                let cuda = match ort::ep::CUDA::is_available() {
                    Ok(true) => build(true, Priority::Interactive).map_err(|e| e.to_string()),
                    Ok(false) => {
                        Err("this ONNX Runtime build has no CUDA execution provider".to_owned())
                    }
                    Err(e) => Err(e.to_string()),
                };
                match cuda {
                    Ok(session) => (session, ActiveProvider::Cuda),
                    Err(why) => {
                        if requested == ExecutionProvider::Cuda {
                            tracing::warn!(model = %id, reason = %why, "CUDA was requested but is not available; running on the CPU");
                        } else {
                            tracing::info!(model = %id, reason = %why, "CUDA not available; running on the CPU");
                        }
                        (build(false, Priority::Interactive)?, ActiveProvider::Cpu)
                    }
                }
            }
        };
        let (fixed_batch, heatmap) = check_io(&session, manifest)?;
        let bulk = build(provider == ActiveProvider::Cuda, Priority::Bulk)?;
        tracing::info!(model = %id, version = %manifest.version, provider = provider.as_str(), "model loaded");
        Ok(Self {
            interactive: Mutex::new(session),
            bulk: Mutex::new(bulk),
            provider,
            input_name: manifest.input.name.clone(),
            output_name: manifest.output.name.clone(),
            heatmap,
            fixed_batch,
        })
    }

    pub(crate) fn provider(&self) -> ActiveProvider {
        self.provider
    }

    /// Runs a batch (`batch` tensors of `shape`, stacked in `data`) on its lane's session and
    /// returns the output values, `batch * per_image` of them.
    pub(crate) fn run(
        &self,
        id: &str,
        lane: Priority,
        data: &[f32],
        batch: usize,
        shape: [usize; 3],
        per_image: usize,
    ) -> Result<RunOutput, InferenceError> {
        let runtime = |e: ort::Error| InferenceError::Runtime {
            id: id.to_owned(),
            message: e.to_string(),
        };
        let image_len = shape.iter().product::<usize>();
        let chunk = self.fixed_batch.unwrap_or(batch).max(1);
        let mut out = Vec::with_capacity(batch * per_image);
        let mut maps = self
            .heatmap
            .as_ref()
            .map(|(_, [h, w])| Vec::with_capacity(batch * h * w));
        let session = match lane {
            Priority::Interactive => &self.interactive,
            Priority::Bulk => &self.bulk,
        };
        let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
        for images in data.chunks(chunk * image_len) {
            let n = images.len() / image_len;
            let tensor = TensorRef::from_array_view(([n, shape[0], shape[1], shape[2]], images))
                .map_err(runtime)?;
            let outputs = session
                .run(ort::inputs![self.input_name.as_str() => tensor])
                .map_err(runtime)?;
            out.extend_from_slice(extract(id, &outputs, &self.output_name, n, per_image)?);
            if let (Some(maps), Some((name, [h, w]))) = (maps.as_mut(), &self.heatmap) {
                maps.extend_from_slice(extract(id, &outputs, name, n, h * w)?);
            }
        }
        Ok(RunOutput {
            values: out,
            maps: maps.zip(self.heatmap.as_ref().map(|(_, size)| *size)),
        })
    }
}

/// The float32 values of the output `name`: `n` rows of `per_image`.
fn extract<'a>(
    id: &str,
    outputs: &'a ort::session::SessionOutputs<'_>,
    name: &str,
    n: usize,
    per_image: usize,
) -> Result<&'a [f32], InferenceError> {
    let error = |message: String| InferenceError::Output {
        id: id.to_owned(),
        message,
    };
    let value = outputs
        .get(name)
        .ok_or_else(|| error(format!("the session produced no output named {name:?}")))?;
    let (shape, values) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| error(format!("output {name:?} is not a float32 tensor: {e}")))?;
    if values.len() != n * per_image || shape.first().copied() != Some(n as i64) {
        return Err(error(format!(
            "output {name:?} has shape {:?}; expected {n} row(s) of {per_image} value(s)",
            &shape[..]
        )));
    }
    Ok(values)
}

/// The heatmap output's name and `[h, w]`.
type HeatmapOutput = Option<(String, [usize; 2])>;

/// Checks the graph's input and outputs against the manifest; returns the fixed batch size, if
/// the batch axis is not dynamic, and the heatmap output's size.
fn check_io(
    session: &Session,
    manifest: &Manifest,
) -> anyhow::Result<(Option<usize>, HeatmapOutput)> {
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };
    let spec = &manifest.input;
    if session.inputs().len() != 1 {
        bail!(
            "the ONNX graph has {} inputs {:?}; MedInform feeds exactly one",
            session.inputs().len(),
            names(session.inputs())
        );
    }
    let input = session
        .inputs()
        .iter()
        .find(|i| i.name() == spec.name)
        .ok_or_else(|| {
            anyhow!(
                "input.name {:?} is not the ONNX graph's input {:?}",
                spec.name,
                names(session.inputs())
            )
        })?;
    let dims = tensor_dims(input.dtype(), "input", &spec.name)?;
    let [a, b, c] = spec.tensor_shape();
    let expected = [a as i64, b as i64, c as i64];
    let layout = match spec.layout {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
    };
    let matches = dims.len() == 4
        && dims[1..]
            .iter()
            .zip(&expected)
            .all(|(d, e)| *d < 0 || d == e);
    if !matches {
        bail!(
            "the ONNX input {:?} has shape {} but the manifest ({layout}, {} x {}, {} channel(s)) needs [batch, {a}, {b}, {c}]",
            spec.name,
            show_dims(&dims),
            spec.width,
            spec.height,
            spec.channels()
        );
    }
    let fixed_batch = (dims[0] > 0).then_some(dims[0] as usize);

    let out_spec = &manifest.output;
    let output = session
        .outputs()
        .iter()
        .find(|o| o.name() == out_spec.name)
        .ok_or_else(|| {
            anyhow!(
                "output.name {:?} is not among the ONNX graph's outputs {:?}",
                out_spec.name,
                names(session.outputs())
            )
        })?;
    let dims = tensor_dims(output.dtype(), "output", &out_spec.name)?;
    let per_image = if out_spec.activation.is_single_output() {
        1
    } else {
        out_spec.labels.len() as i64
    };
    let known: Vec<i64> = dims.iter().skip(1).copied().collect();
    let fits = if known.iter().all(|d| *d >= 0) {
        known.iter().product::<i64>() == per_image
    } else {
        true // a dynamic output shape is checked on every run
    };
    if dims.is_empty() || !fits {
        bail!(
            "the ONNX output {:?} has shape {} but the manifest's {} label(s) and activation {:?} need {per_image} value(s) per image",
            out_spec.name,
            show_dims(&dims),
            out_spec.labels.len(),
            out_spec.activation
        );
    }
    let heatmap = match &out_spec.heatmap {
        None => None,
        Some(name) => {
            let output = session
                .outputs()
                .iter()
                .find(|o| o.name() == name)
                .ok_or_else(|| {
                    anyhow!(
                        "output.heatmap {name:?} is not among the ONNX graph's outputs {:?}",
                        names(session.outputs())
                    )
                })?;
            let dims = tensor_dims(output.dtype(), "output", name)?;
            match dims[..] {
                [_, h, w] if h > 0 && w > 0 => Some((name.clone(), [h as usize, w as usize])),
                _ => bail!(
                    "the ONNX heatmap output {name:?} has shape {}; it must be [batch, h, w] with a fixed h and w",
                    show_dims(&dims)
                ),
            }
        }
    };
    Ok((fixed_batch, heatmap))
}

fn tensor_dims(dtype: &ValueType, what: &str, name: &str) -> anyhow::Result<Vec<i64>> {
    match dtype {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } => Ok(shape.to_vec()),
        other => bail!("the ONNX {what} {name:?} is {other}, not a float32 tensor"),
    }
}

fn show_dims(dims: &[i64]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_owned()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_library_that_does_not_exist_is_named() {
        let err = locate_library(Some(Path::new("/nowhere/libonnxruntime.so"))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nowhere/libonnxruntime.so") && text.contains("onnxruntime_library"),
            "{text}"
        );
    }

    #[test]
    fn the_runtime_version_comes_from_the_build_info_or_the_file_name() {
        let library = Path::new("/venv/onnxruntime/capi/libonnxruntime.so.1.31.1");
        assert_eq!(
            runtime_version(
                "ORT Build Info: git-branch=rel-1.30.0, git-commit-id=abc, build type=Release",
                library
            ),
            "1.30.0"
        );
        assert_eq!(runtime_version("ORT Build Info: none", library), "1.31.1");
        assert_eq!(
            runtime_version("", Path::new("/opt/ort/libonnxruntime.1.31.1.dylib")),
            "1.31.1"
        );
        assert_eq!(
            runtime_version("", Path::new("/opt/libonnxruntime.so")),
            "unknown"
        );
    }

    /// The repository's malaria model, loaded with two intra-op threads per session.
    fn malaria() -> super::super::Registry {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let options = super::super::RegistryOptions {
            execution_provider: ExecutionProvider::Cpu,
            intra_threads: 2,
            only: Some(vec!["malaria".to_owned()]),
            ..super::super::RegistryOptions::new(models)
        };
        let registry = super::super::Registry::load(&options).unwrap();
        let model = registry.get("malaria").unwrap();
        assert!(model.is_ready(), "{:?}", model.status());
        registry
    }

    #[test]
    fn an_interactive_run_does_not_wait_for_a_bulk_run_in_progress() {
        let registry = malaria();
        let model = registry.get("malaria").unwrap();
        let loaded = model.loaded.as_ref().unwrap();
        let runner = &loaded.runner;
        let shape = model.manifest.as_ref().unwrap().input.tensor_shape();
        let per_image = loaded.decision.outputs_per_image();
        let data = vec![0.5f32; shape.iter().product::<usize>()];
        let run = |lane| {
            runner
                .run("malaria", lane, &data, 1, shape, per_image)
                .map(|o| o.values)
                .map_err(|e| e.to_string())
        };

        // A drive's run in progress holds the bulk session for as long as it runs.
        let bulk_run = runner.bulk.lock().unwrap();
        let (answered, answer) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| answered.send(run(Priority::Interactive)).unwrap());
            let interactive = answer.recv_timeout(std::time::Duration::from_secs(20));
            drop(bulk_run);
            let values = interactive.expect("the interactive run waited for the bulk run");
            assert_eq!(values.unwrap().len(), per_image);
        });
        // Both sessions are the same network: the same answer, to the bit.
        assert_eq!(
            run(Priority::Interactive).unwrap(),
            run(Priority::Bulk).unwrap()
        );
    }

    /// This process's threads named `ort-bulk`, with their nice values (field 19 of
    /// /proc/self/task/<tid>/stat).
    #[cfg(target_os = "linux")]
    fn ort_bulk_threads() -> std::collections::HashMap<String, i32> {
        let mut threads = std::collections::HashMap::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue; // gone since it was listed
            };
            if comm.trim() == "ort-bulk" {
                let after_name = &stat[stat.rfind(')').unwrap() + 2..];
                let nice = after_name.split(' ').nth(16).unwrap().parse().unwrap();
                threads.insert(task.file_name().to_string_lossy().into_owned(), nice);
            }
        }
        threads
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_bulk_sessions_threads_run_at_the_bulk_lanes_priority() {
        use crate::cpu::tests::{TEST_BULK_NICE, process_nice};
        crate::cpu::set_bulk_nice(TEST_BULK_NICE);
        // Other tests load models too: only the threads started from now on are looked at.
        let before = ort_bulk_threads();
        let _registry = malaria();
        let started: Vec<i32> = ort_bulk_threads()
            .into_iter()
            .filter(|(tid, _)| !before.contains_key(tid))
            .map(|(_, nice)| nice)
            .collect();
        assert!(!started.is_empty(), "no ONNX Runtime thread named ort-bulk");
        let expected = (process_nice() + TEST_BULK_NICE).min(19);
        assert!(
            started.iter().all(|n| *n == expected),
            "{started:?}, expected {expected}"
        );
    }

    #[test]
    fn the_venv_search_takes_the_runtime_library_not_the_provider_bridge() {
        let venv = tempfile::tempdir().unwrap();
        let capi = venv
            .path()
            .join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        for name in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.31.1",
            "onnxruntime_pybind11_state.so",
        ] {
            std::fs::write(capi.join(name), b"").unwrap();
        }
        assert_eq!(
            find_in_venv(&venv.path().join("lib")),
            Some(capi.join("libonnxruntime.so.1.31.1"))
        );
        assert_eq!(find_in_venv(&venv.path().join("missing")), None);
    }
}
