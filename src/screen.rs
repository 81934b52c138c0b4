//! `medinform screen --model ID FILE...`: the worker's decoding, preprocessing and model run on
//! local files, with no servers. One result per file, in the order given: a table, or with
//! `--format json` one JSON object per line (`file` plus the API's `result` shape, or `error`).
//! Exits with status 1 when any file could not be screened, 2 when the model cannot run.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::ValueEnum;
use medinform_core::config::Config;
use medinform_core::job::{FailureCode, JobFailure, ScreeningResult};
use medinform_core::registry::Stage;
use medinform_core::screening::{self, ScreenError};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct ScreenArgs {
    /// Model id (GET /v1/models, or the folders under models/).
    #[arg(long, short)]
    model: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Images screened per model run.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Image files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// One line of `--format json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    file: String,
    model: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ScreeningResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobFailure>,
}

pub async fn run(config: &Config, args: ScreenArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.worker.models = vec![args.model.clone()];
    let registry = medinform_api::app::load_registry(&config, true)?;
    let Some(model) = registry.get(&args.model) else {
        let known: Vec<_> = registry.list().iter().map(|m| m.id().to_owned()).collect();
        bail!(
            "there is no model {:?} in {} (models: {})",
            args.model,
            config.models.dir.display(),
            known.join(", ")
        );
    };
    if !model.is_ready() {
        let reason = model.status().reason().unwrap_or("not loaded");
        eprintln!("error: model {} is unavailable: {reason}", model.id());
        std::process::exit(2);
    }
    let version = model.version().unwrap_or_default().to_owned();
    let limits = config.limits.image_limits();

    let mut out = std::io::stdout().lock();
    if args.format == Format::Table {
        writeln!(
            out,
            "{:<40} {:<16} {:>9} {:>9}  PROBABILITIES",
            "FILE", "LABEL", "P(FINDING)", "THRESHOLD"
        )?;
    }
    let mut failures = 0usize;
    for chunk in args.files.chunks(args.batch.max(1)) {
        // Files are read and screened off the async runtime, like the worker does.
        let paths = chunk.to_vec();
        let runner = model.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            let mut images = Vec::with_capacity(paths.len());
            let mut read_errors = Vec::with_capacity(paths.len());
            for path in &paths {
                match std::fs::read(path) {
                    Ok(bytes) => {
                        images.push(bytes);
                        read_errors.push(None);
                    }
                    Err(e) => read_errors.push(Some(e)),
                }
            }
            let mut screened = screening::screen(&runner, &images, &limits).into_iter();
            read_errors
                .into_iter()
                .map(|err| match err {
                    Some(e) => Err(JobFailure::new(
                        FailureCode::UnreadableFile,
                        format!("cannot read the file: {e}"),
                    )),
                    None => screened
                        .next()
                        .expect("one outcome per image")
                        .map_err(|e: ScreenError| e.to_failure()),
                })
                .collect::<Vec<_>>()
        })
        .await
        .context("screening")?;

        for (path, outcome) in chunk.iter().zip(outcomes) {
            let file = path.display().to_string();
            failures += usize::from(outcome.is_err());
            match args.format {
                Format::Json => {
                    let (result, error) = match outcome {
                        Ok(r) => (Some(r), None),
                        Err(e) => (None, Some(e)),
                    };
                    let line = Line {
                        file,
                        model: model.id(),
                        model_version: &version,
                        result,
                        error,
                    };
                    writeln!(out, "{}", serde_json::to_string(&line)?)?;
                }
                Format::Table => match outcome {
                    Ok(r) => {
                        let probabilities: Vec<String> = r
                            .probabilities
                            .iter()
                            .map(|p| format!("{} {:.1}%", p.label, 100.0 * p.probability))
                            .collect();
                        writeln!(
                            out,
                            "{:<40} {:<16} {:>9.4} {:>9.4}  {}",
                            file,
                            r.label,
                            r.finding_probability,
                            r.threshold,
                            probabilities.join(", ")
                        )?;
                    }
                    Err(e) => writeln!(out, "{file:<40} error: {} ({})", e.message, e.code)?,
                },
            }
        }
    }
    out.flush()?;
    if args.format == Format::Table {
        eprintln!(
            "{} {}: {} files, {} could not be screened. A screening aid, not a diagnosis.",
            model.id(),
            version,
            args.files.len(),
            failures
        );
        if model.stage() == Stage::Research {
            eprintln!(
                "{} is a research model: its held-out figures do not meet its screening minimum. \
                 Research use only; its results must not guide care.",
                model.id()
            );
        }
    }
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
