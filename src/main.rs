//! `medinform`: the one program of MedInform.
//!
//! - `medinform serve`: API and worker in one process. With no configuration it runs on the
//!   embedded backends (SQLite file, local image folder, in-process queue) under `./data`.
//! - `medinform api` / `medinform worker`: the two roles of a distributed deployment
//!   (PostgreSQL, RabbitMQ, S3), scaled separately.
//! - `medinform dicom`: the DICOM C-STORE service alone (`dicom.listen`), beside the API
//!   processes of a distributed deployment.
//! - `medinform migrate`: applies the database migrations and exits.
//! - `medinform screen --model ID FILE...`: screens files locally, with no servers.
//! - `medinform keys create|list|revoke`: API keys, in the configured database.
//!
//! Settings come from defaults, then `--config FILE` (TOML), then `MEDINFORM_*` variables, then
//! the command-line flags; see `medinform.example.toml`.

mod keys;
mod screen;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use medinform_api::app::prepare_data_dir;
use medinform_api::{App, Overrides, Role};
use medinform_core::app::Backends;
use medinform_core::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "medinform",
    version,
    about = "Screens medical images with neural networks"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "MEDINFORM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MEDINFORM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// API and worker in one process (the embedded default needs no servers).
    Serve(ServeArgs),
    /// The HTTP API alone (needs a queue.url: the workers run elsewhere).
    Api(ServeArgs),
    /// A worker alone: consumes jobs for its models (worker.models, or all).
    Worker(CommonArgs),
    /// The DICOM C-STORE service alone (needs dicom.listen and a queue.url: the workers run
    /// elsewhere).
    Dicom(DicomArgs),
    /// Applies the database migrations and exits.
    Migrate(CommonArgs),
    /// Screens image files locally and prints one result per file.
    Screen(screen::ScreenArgs),
    /// Creates, lists and revokes API keys (in the configured database).
    Keys(KeysArgs),
}

#[derive(Debug, clap::Args)]
struct KeysArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: keys::KeysCommand,
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Folder for the embedded database and images (data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (server.listen; default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
struct DicomArgs {
    /// Address of the DICOM service (dicom.listen, e.g. 0.0.0.0:11112).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(run(cli));
    if let Err(e) = &outcome {
        tracing::error!(error = %format!("{e:#}"), "stopped");
    }
    outcome
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    medinform_core::imaging::set_decode_budget(config.limits.max_decoding_bytes);
    match cli.command {
        Command::Serve(args) => {
            apply_serve_args(&mut config, &args);
            serve(config, Role::Both).await
        }
        Command::Api(args) => {
            apply_serve_args(&mut config, &args);
            if config.is_embedded_queue() {
                bail!(
                    "`medinform api` needs queue.url (MEDINFORM_QUEUE_URL): its workers run in other \
                     processes. Use `medinform serve` to run API and worker together."
                );
            }
            serve(config, Role::Api).await
        }
        Command::Worker(args) => {
            apply_common_args(&mut config, &args);
            if config.is_embedded_queue() {
                bail!(
                    "`medinform worker` needs queue.url (MEDINFORM_QUEUE_URL) to receive jobs. \
                     Use `medinform serve` to run API and worker together."
                );
            }
            serve(config, Role::Worker).await
        }
        Command::Dicom(args) => {
            apply_common_args(&mut config, &args.common);
            if let Some(listen) = args.listen {
                config.dicom.listen = listen.to_string();
            }
            if config.dicom.listen.is_empty() {
                bail!(
                    "`medinform dicom` needs dicom.listen (MEDINFORM_DICOM_LISTEN or --listen), \
                     the address of its DICOM service, such as 0.0.0.0:11112."
                );
            }
            if config.is_embedded_queue() {
                bail!(
                    "`medinform dicom` needs queue.url (MEDINFORM_QUEUE_URL): its jobs are \
                     screened by workers in other processes. Use `medinform serve` with \
                     dicom.listen to run everything together."
                );
            }
            serve(config, Role::Dicom).await
        }
        Command::Migrate(args) => {
            apply_common_args(&mut config, &args);
            prepare_data_dir(&config)?;
            let backends = Backends::connect(&config).await?;
            backends.migrate().await?;
            tracing::info!(database = %backends.jobs.describe(), "migrations applied");
            Ok(())
        }
        Command::Screen(args) => screen::run(&config, args).await,
        Command::Keys(args) => {
            apply_common_args(&mut config, &args.common);
            prepare_data_dir(&config)?;
            keys::run(&config, args.command).await
        }
    }
}

fn apply_common_args(config: &mut Config, args: &CommonArgs) {
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
}

fn apply_serve_args(config: &mut Config, args: &ServeArgs) {
    apply_common_args(config, &args.common);
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let app = App::build(&config, role, Overrides::default()).await?;
    if let (Role::Both, Some(addr)) = (role, app.local_addr()) {
        tracing::info!("MedInform is running: open http://{addr}/");
    }
    tokio::spawn(cancel_on_signal(app.shutdown()));
    app.run().await
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested: finishing what is in flight");
    shutdown.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("MEDINFORM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,ort=warn,aws=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
