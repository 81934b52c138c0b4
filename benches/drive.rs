//! A screening drive against the real program: `medinform serve` (embedded: SQLite, a local
//! folder, the in-process queue, the CPU) started on a free port, driven over HTTP the way a
//! field laptop drives it. Prints what a programme plans with: uploads accepted per second one
//! image at a time and as a batch, images screened per second end to end, the cost of
//! an idempotent replay, and the server's peak memory.
//!
//!   cargo bench --bench drive                  300 images (the six real cells of ../shared, reused)
//!   MEDINFORM_BENCH_IMAGES=1000 cargo bench --bench drive
//!
//! Needs ORT_DYLIB_PATH (infra/setup-python.sh prints it) and ../shared beside the repository.
//! Figures measured on the project's machines are in benches/RESULTS.md.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const CONCURRENCY: usize = 8;
/// Images per batch request (the API takes up to 500).
const CHUNK: usize = 250;
const REPLAYS: usize = 200;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real images for `model`: the six blood-smear cells of the original app (malaria), or the
/// first 60 adult chest X-rays of the pneumonia set (512 x 512 JPEG).
fn images_for(model: &str) -> Vec<(String, Vec<u8>)> {
    let shared = repo_root().join("../shared");
    let (dir, take) = match model {
        "malaria" => (
            shared.join("models/medinform-original/malaria/golden"),
            usize::MAX,
        ),
        "pneumonia" => (shared.join("datasets/pneumonia/images/Pneumonia"), 60),
        other => panic!("MEDINFORM_BENCH_MODEL={other}: malaria or pneumonia"),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
        .collect();
    files.sort();
    files
        .into_iter()
        .take(take)
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The program, stopped when dropped.
struct Server {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medinform"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data.path())
            .env("MEDINFORM_MODELS_DIR", repo_root().join("models"))
            .env("MEDINFORM_WORKER_MODELS", model)
            // The drive itself is measured: no rate limit, no backlog bound.
            .env("MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE", "0")
            .env("MEDINFORM_JOBS_MAX_BACKLOG", "0")
            .env("MEDINFORM_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting medinform serve");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    /// Peak resident memory of the server process (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "medinform serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no job is queued or processing; returns when that was seen.
async fn wait_idle(http: &reqwest::Client, base: &str) -> Instant {
    loop {
        let mut busy = false;
        for status in ["queued", "processing"] {
            let page: Value = http
                .get(format!("{base}/v1/jobs?status={status}&limit=1"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            busy |= !page["jobs"].as_array().unwrap().is_empty();
        }
        if !busy {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every job of the batch is final; returns when that was seen.
async fn wait_drained(http: &reqwest::Client, base: &str, batch: &str, total: i64) -> Instant {
    loop {
        let batch: Value = http
            .get(format!("{base}/v1/batches/{batch}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let counts = &batch["counts"];
        let done = counts["succeeded"].as_i64().unwrap() + counts["failed"].as_i64().unwrap();
        if done == total {
            assert_eq!(counts["failed"], 0, "{batch}");
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("MEDINFORM_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "set ORT_DYLIB_PATH to libonnxruntime.so (infra/setup-python.sh prints it)"
    );
    let model = std::env::var("MEDINFORM_BENCH_MODEL").unwrap_or_else(|_| "malaria".into());
    let real = images_for(&model);
    let images: Vec<&(String, Vec<u8>)> = real.iter().cycle().take(n).collect();
    let server = Server::start(&model);
    // reqwest's TLS is rustls with the ring provider the service installs.
    medinform_core::webhooks::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = server.base.clone();
    wait_ready(&http, &base).await;

    // 1. One image per request, CONCURRENCY requests at a time (a clinic's uploads).
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(images.iter().enumerate())
        .map(|(i, (name, bytes))| {
            let http = http.clone();
            let url = format!("{base}/v1/jobs");
            let model = model.clone();
            async move {
                let form = Form::new()
                    .text("model", model.clone())
                    .text("client_reference", format!("single-{i}"))
                    .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
                let t = Instant::now();
                let response = http.post(url).multipart(form).send().await.unwrap();
                assert_eq!(response.status(), 202);
                t.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let single_secs = started.elapsed().as_secs_f64();
    let single_screened_secs = (wait_idle(&http, &base).await - started).as_secs_f64();
    latencies.sort();

    // 2. The same images as a drive sends them: a batch, then requests of up to CHUNK images.
    let started = Instant::now();
    let batch: Value = http
        .post(format!("{base}/v1/batches"))
        .json(&serde_json::json!({"model": model, "site": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = batch["id"].as_str().unwrap().to_owned();
    for chunk in images.chunks(CHUNK) {
        let mut form = Form::new();
        for (name, bytes) in chunk {
            form = form.part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
        }
        let response = http
            .post(format!("{base}/v1/batches/{id}/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let added: Value = response.json().await.unwrap();
        assert_eq!(
            added["jobs"].as_array().unwrap().len(),
            chunk.len(),
            "{added}"
        );
    }
    let batch_secs = started.elapsed().as_secs_f64();
    let drained = wait_drained(&http, &base, &id, n as i64).await;
    let end_to_end_secs = (drained - started).as_secs_f64();

    // 3. An idempotent retry answered from the store.
    let (name, bytes) = images[0];
    let post = |key: &'static str| {
        let form = Form::new()
            .text("model", model.clone())
            .part("image", Part::bytes(bytes.clone()).file_name(name.clone()));
        http.post(format!("{base}/v1/jobs"))
            .header("idempotency-key", key)
            .multipart(form)
            .send()
    };
    assert_eq!(post("bench-replay").await.unwrap().status(), 202);
    let mut replays = Vec::with_capacity(REPLAYS);
    for _ in 0..REPLAYS {
        let t = Instant::now();
        let response = post("bench-replay").await.unwrap();
        assert_eq!(response.headers()["idempotent-replayed"], "true");
        replays.push(t.elapsed());
    }
    replays.sort();

    let t = Instant::now();
    let csv = http
        .get(format!("{base}/v1/batches/{id}/export.csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let export_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(csv.lines().count(), n + 1);

    let mean_kib = images.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / n as f64 / 1024.0;
    println!(
        "screening drive: {n} real images ({} distinct, {mean_kib:.0} KiB on average), {model} model, \
         embedded mode, CPU",
        real.len()
    );
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| single uploads accepted ({CONCURRENCY} at a time) | {:.0} images/s |",
        n as f64 / single_secs
    );
    println!(
        "| single upload latency p50 / p95 | {:.1} ms / {:.1} ms |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95)
    );
    println!(
        "| a batch of {n} images, in requests of {CHUNK}, accepted in | {:.2} s ({:.0} images/s) |",
        batch_secs,
        n as f64 / batch_secs
    );
    println!(
        "| single uploads: first sent to last screened | {:.2} s ({:.0} images/s) |",
        single_screened_secs,
        n as f64 / single_screened_secs
    );
    println!(
        "| batch: opened to last image screened | {:.2} s ({:.0} images/s) |",
        end_to_end_secs,
        n as f64 / end_to_end_secs
    );
    println!(
        "| idempotent replay p50 / p95 | {:.1} ms / {:.1} ms |",
        percentile(&replays, 0.5),
        percentile(&replays, 0.95)
    );
    println!("| CSV export of {n} rows | {export_ms:.1} ms |");
    if let Some(mib) = server.peak_rss_mib() {
        println!("| server peak resident memory | {mib:.0} MiB |");
    }
}
