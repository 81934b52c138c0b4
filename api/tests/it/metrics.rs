//! `GET /metrics`: what the service did, as Prometheus reads it; the dashboard, the alert rules
//! and the README name only metrics it exports.
//!
//! The recorder is one per process, so the tests of this binary share it: each test counts jobs
//! of a model of its own (a copy of the malaria model), whose series no other test touches.

use std::collections::{BTreeMap, BTreeSet};

use medinform_core::metrics::METRICS;
use medinform_core::registry::Stage;

use crate::support::{
    Kind, Options, Receiver, TestApp, add_malaria_copy, cell_images, image_form, repo_root,
    test_registry_dir, test_webhooks,
};

/// One sample line: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition, and the names its `# TYPE` lines declare.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap();
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().unwrap(),
        });
    }
    (samples, types)
}

/// The value of the series `name` whose labels include `labels` (summed over the others).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(base: &str) -> (String, String) {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

/// The base name of an exported series: `_bucket`, `_sum` and `_count` belong to their histogram.
fn family(name: &str, histograms: &BTreeSet<&str>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && histograms.contains(base)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

#[tokio::test]
async fn metrics_count_what_the_service_did() {
    let registry = test_registry_dir();
    add_malaria_copy(registry.path(), "malaria_metrics", Stage::Research);
    let app = TestApp::start_with(Options {
        registry_dir: Some(registry),
        webhooks: Some(test_webhooks()),
        ..Options::new(Kind::Embedded)
    })
    .await;
    let receiver = Receiver::start().await;
    let images = cell_images();
    let mut ids = Vec::new();
    for (name, bytes) in images.iter().take(3) {
        let form = image_form("malaria_metrics", name, bytes.clone())
            .text("webhook_url", receiver.url.clone());
        let (status, job) = app.post_form(form).await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(app.wait_finished(id).await["status"], "succeeded");
    }
    receiver.wait_for(3).await;
    // The dispatcher records the delivery after the receiver answered it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let (content_type, text) = loop {
        let (content_type, text) = scrape(&app.base).await;
        let (samples, _) = parse(&text);
        let delivered = value(
            &samples,
            "medinform_webhook_attempts_total",
            &[("outcome", "delivered")],
        );
        if delivered >= 3.0 || tokio::time::Instant::now() > deadline {
            break (content_type, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let (samples, types) = parse(&text);
    let model = [("model", "malaria_metrics")];

    assert_eq!(
        value(&samples, "medinform_jobs_accepted_total", &model),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "medinform_jobs_finished_total",
            &[("model", "malaria_metrics"), ("status", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        value(&samples, "medinform_queue_wait_seconds_count", &model),
        3.0
    );
    assert_eq!(
        value(&samples, "medinform_job_end_to_end_seconds_count", &model),
        3.0
    );
    // Three images in one or more model runs, each run timed once, each image once.
    let runs = value(
        &samples,
        "medinform_inference_batch_duration_seconds_count",
        &model,
    );
    assert!((1.0..=3.0).contains(&runs), "{runs} runs");
    assert_eq!(
        value(&samples, "medinform_inference_batch_size_sum", &model),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "medinform_inference_image_duration_seconds_count",
            &model
        ),
        3.0
    );
    assert!(
        value(
            &samples,
            "medinform_inference_batch_duration_seconds_sum",
            &model
        ) > 0.0
    );
    // The registry: the copy is ready on the CPU, the model without weights is unavailable.
    assert_eq!(
        value(
            &samples,
            "medinform_model_info",
            &[
                ("model", "malaria_metrics"),
                ("execution_provider", "cpu"),
                ("status", "ready")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "medinform_model_info",
            &[("model", "retired"), ("status", "unavailable")]
        ),
        1.0
    );
    assert!(value(&samples, "medinform_model_load_duration_seconds", &model) > 0.0);
    let runtime: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "medinform_onnxruntime_info")
        .collect();
    assert!(
        runtime
            .iter()
            .any(|s| s.labels["version"].starts_with("1.")),
        "{runtime:?}"
    );
    // HTTP, by route template: never the job's own path.
    assert!(
        value(
            &samples,
            "medinform_http_requests_total",
            &[("method", "POST"), ("route", "/v1/jobs"), ("status", "202")]
        ) >= 3.0
    );
    assert!(
        value(
            &samples,
            "medinform_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/v1/jobs/{id}"),
                ("status", "200")
            ]
        ) >= 3.0
    );
    assert!(
        !text.contains(&ids[0]),
        "a job id became a label: {}",
        ids[0]
    );
    assert!(
        value(
            &samples,
            "medinform_webhook_attempts_total",
            &[("outcome", "delivered")]
        ) >= 3.0
    );
    assert!(
        value(
            &samples,
            "medinform_webhook_delivery_latency_seconds_count",
            &[]
        ) >= 3.0
    );
    assert!(
        samples
            .iter()
            .any(|s| s.name == "medinform_webhook_deliveries_pending")
    );

    // Every exported family is one of METRICS, of the kind it says.
    let histograms: BTreeSet<&str> = METRICS
        .iter()
        .filter(|m| m.kind == medinform_core::metrics::Kind::Histogram)
        .map(|m| m.name)
        .collect();
    let known: BTreeMap<&str, &medinform_core::metrics::Metric> =
        METRICS.iter().map(|m| (m.name, m)).collect();
    for sample in &samples {
        let name = family(&sample.name, &histograms);
        assert!(
            known.contains_key(name.as_str()),
            "{name} is exported but not in METRICS"
        );
    }
    for (name, kind) in &types {
        let metric = known[name.as_str()];
        let expected = match metric.kind {
            medinform_core::metrics::Kind::Counter => "counter",
            medinform_core::metrics::Kind::Gauge => "gauge",
            medinform_core::metrics::Kind::Histogram => "histogram",
        };
        assert_eq!(kind, expected, "{name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn queue_depth_and_age_come_from_the_database() {
    let registry = test_registry_dir();
    add_malaria_copy(registry.path(), "malaria_backlog", Stage::Research);
    let app = TestApp::start_with(Options {
        registry_dir: Some(registry),
        worker: false,
        ..Options::new(Kind::Embedded)
    })
    .await;
    for (name, bytes) in cell_images().into_iter().take(2) {
        let (status, job) = app
            .post_form(image_form("malaria_backlog", &name, bytes))
            .await;
        assert_eq!(status, 202, "{job}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, text) = scrape(&app.base).await;
    let (samples, _) = parse(&text);
    let model = [("model", "malaria_backlog"), ("lane", "interactive")];
    assert_eq!(value(&samples, "medinform_queue_depth", &model), 2.0);
    let age = value(&samples, "medinform_queue_oldest_age_seconds", &model);
    assert!((1.0..60.0).contains(&age), "oldest job's age {age}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_api_port() {
    let app = TestApp::start_with(Options {
        metrics_listener: true,
        worker: false,
        ..Options::new(Kind::Embedded)
    })
    .await;
    // The API's port has no /metrics: the path is the web app's, like any other outside /v1/.
    let on_api = reqwest::get(app.url("/metrics")).await.unwrap();
    let content_type = on_api.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        !on_api
            .text()
            .await
            .unwrap()
            .contains("medinform_build_info")
    );
    let base = app.metrics_base.clone().expect("a metrics address");
    assert_ne!(base, app.base);
    let (content_type, text) = scrape(&base).await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(text.contains("medinform_build_info"), "{text}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

/// Every `medinform_*` name that a file uses, histogram suffixes taken off.
fn names_in(path: &str) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let histograms: BTreeSet<&str> = METRICS
        .iter()
        .filter(|m| m.kind == medinform_core::metrics::Kind::Histogram)
        .map(|m| m.name)
        .collect();
    regex::Regex::new(r"\bmedinform_[a-z0-9_]+")
        .unwrap()
        .find_iter(&text)
        .map(|m| family(m.as_str(), &histograms))
        .collect()
}

#[test]
fn the_dashboard_alerts_and_readme_name_only_exported_metrics() {
    let exported: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    for file in [
        "infra/grafana/dashboards/medinform.json",
        "infra/prometheus/alerts.yml",
    ] {
        let used = names_in(file);
        assert!(used.len() >= 5, "{file} uses {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses unexported {unknown:?}");
    }
    // The dashboard shows every metric; the README documents every one, and no other.
    let shown = names_in("infra/grafana/dashboards/medinform.json");
    let missing: Vec<_> = exported.difference(&shown).collect();
    assert!(missing.is_empty(), "the dashboard leaves out {missing:?}");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for metric in METRICS {
        assert!(
            readme.contains(&format!("| `{}` |", metric.name)),
            "README.md does not document {}",
            metric.name
        );
    }
    let documented = names_in("README.md");
    let unknown: Vec<_> = documented.difference(&exported).collect();
    assert!(unknown.is_empty(), "README.md names unexported {unknown:?}");
    // docker compose ships both, and scrapes the worker's own metrics listener.
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    for needed in [
        "./infra/prometheus/alerts.yml:",
        "./infra/grafana/dashboards:",
        "MEDINFORM_METRICS_LISTEN: 0.0.0.0:9090",
    ] {
        assert!(
            compose.contains(needed),
            "docker-compose.yml lacks {needed}"
        );
    }
    let prometheus =
        std::fs::read_to_string(repo_root().join("infra/prometheus/prometheus.yml")).unwrap();
    assert!(prometheus.contains("worker:9090") && prometheus.contains("api:8080"));
}
