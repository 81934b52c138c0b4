//! What a process tells Prometheus.
//!
//! Every metric MedInform exports is named in [`METRICS`], described once by [`install`], and
//! recorded through the `metrics` facade where it happens (the API, the worker, the webhook
//! dispatcher, the registry); [`scrape`] reads the backlog gauges from the database and renders
//! everything in the Prometheus text format for `GET /metrics`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{Label, Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::Backends;
use crate::job::{Job, JobStatus};
use crate::tenant::TenantId;

pub const HTTP_REQUESTS: &str = "medinform_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "medinform_http_request_duration_seconds";
pub const JOBS_ACCEPTED: &str = "medinform_jobs_accepted_total";
pub const JOBS_FINISHED: &str = "medinform_jobs_finished_total";
pub const QUEUE_DEPTH: &str = "medinform_queue_depth";
pub const QUEUE_OLDEST_AGE: &str = "medinform_queue_oldest_age_seconds";
pub const QUEUE_WAIT: &str = "medinform_queue_wait_seconds";
pub const INFERENCE_BATCH_DURATION: &str = "medinform_inference_batch_duration_seconds";
pub const INFERENCE_IMAGE_DURATION: &str = "medinform_inference_image_duration_seconds";
pub const INFERENCE_BATCH_SIZE: &str = "medinform_inference_batch_size";
pub const JOB_END_TO_END: &str = "medinform_job_end_to_end_seconds";
pub const WEBHOOK_ATTEMPTS: &str = "medinform_webhook_attempts_total";
pub const WEBHOOK_DELIVERY_LATENCY: &str = "medinform_webhook_delivery_latency_seconds";
pub const WEBHOOK_DELIVERIES_PENDING: &str = "medinform_webhook_deliveries_pending";
pub const MODEL_INFO: &str = "medinform_model_info";
pub const MODEL_LOAD_DURATION: &str = "medinform_model_load_duration_seconds";
pub const ONNXRUNTIME_INFO: &str = "medinform_onnxruntime_info";
pub const BUILD_INFO: &str = "medinform_build_info";

/// The kind of a metric, as Prometheus has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: name, kind, labels and what it counts (the README's table, checked
/// against this list by a test).
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static str,
    pub help: &'static str,
}

/// Every metric MedInform exports.
pub const METRICS: &[Metric] = &[
    Metric {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        labels: "method, route, status",
        help: "HTTP requests answered, by route template (other: the web app and unknown paths)",
    },
    Metric {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: "method, route",
        help: "Time to answer an HTTP request, from its headers to its response's headers",
    },
    Metric {
        name: JOBS_ACCEPTED,
        kind: Kind::Counter,
        labels: "model (tenant with metrics.per_tenant)",
        help: "Jobs accepted (stored and queued), single uploads and batch images alike",
    },
    Metric {
        name: JOBS_FINISHED,
        kind: Kind::Counter,
        labels: "model, status (succeeded, failed, canceled) (tenant with metrics.per_tenant)",
        help: "Jobs that reached a final status",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        labels: "model, lane (interactive, bulk)",
        help: "Jobs waiting for a worker (status queued), read from the database at each scrape",
    },
    Metric {
        name: QUEUE_OLDEST_AGE,
        kind: Kind::Gauge,
        labels: "model, lane",
        help: "Seconds since the oldest queued job was accepted (0 when none waits)",
    },
    Metric {
        name: QUEUE_WAIT,
        kind: Kind::Histogram,
        labels: "model",
        help: "Seconds from a job's acceptance to a worker's first claim of it",
    },
    Metric {
        name: INFERENCE_BATCH_DURATION,
        kind: Kind::Histogram,
        labels: "model",
        help: "Seconds one model run takes over a batch (preprocessed tensors to scores)",
    },
    Metric {
        name: INFERENCE_IMAGE_DURATION,
        kind: Kind::Histogram,
        labels: "model",
        help: "A batch's inference seconds divided by its images, once per image",
    },
    Metric {
        name: INFERENCE_BATCH_SIZE,
        kind: Kind::Histogram,
        labels: "model",
        help: "Images in one model run",
    },
    Metric {
        name: JOB_END_TO_END,
        kind: Kind::Histogram,
        labels: "model, status",
        help: "Seconds from a job's acceptance to its final status",
    },
    Metric {
        name: WEBHOOK_ATTEMPTS,
        kind: Kind::Counter,
        labels: "outcome (delivered, rejected, unreachable, gave_up, disabled)",
        help: "Webhook delivery attempts: delivered (2xx), rejected or unreachable (retried), \
               gave_up (the last one failed, or 410), disabled (not sent: endpoint disabled)",
    },
    Metric {
        name: WEBHOOK_DELIVERY_LATENCY,
        kind: Kind::Histogram,
        labels: "",
        help: "Seconds from a delivery's event to the receiver's 2xx, retries included",
    },
    Metric {
        name: WEBHOOK_DELIVERIES_PENDING,
        kind: Kind::Gauge,
        labels: "",
        help: "Webhook deliveries not yet answered for good, read from the database at each scrape",
    },
    Metric {
        name: MODEL_INFO,
        kind: Kind::Gauge,
        labels: "model, version, execution_provider, status",
        help: "1 for each model of the registry: its version, where it runs, whether it is ready",
    },
    Metric {
        name: MODEL_LOAD_DURATION,
        kind: Kind::Gauge,
        labels: "model",
        help: "Seconds the model's ONNX Runtime session took to load",
    },
    Metric {
        name: ONNXRUNTIME_INFO,
        kind: Kind::Gauge,
        labels: "version",
        help: "1, with the version of the ONNX Runtime library loaded",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: "version",
        help: "1, with the MedInform version",
    },
];

/// Histogram buckets of durations in seconds: an API answer (milliseconds) up to a drive's
/// queue wait (an hour).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PER_TENANT: AtomicBool = AtomicBool::new(false);
/// The lanes (model, lane) whose backlog gauges were set: set to 0 once their backlog is gone.
static BACKLOG_LANES: Mutex<BTreeSet<(String, &'static str)>> = Mutex::new(BTreeSet::new());

/// Sets whether the job counters carry the tenant (`metrics.per_tenant`) and installs the
/// process's recorder, if nothing recorded before; every later call answers the same handle.
pub fn install(per_tenant: bool) -> &'static PrometheusHandle {
    PER_TENANT.store(per_tenant, Ordering::Relaxed);
    recorder()
}

/// The process's recorder, installed (and every metric described) by the first caller: what is
/// recorded before [`install`] (a registry loaded first) is kept.
fn recorder() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(INFERENCE_BATCH_SIZE.into()),
                    BATCH_SIZE_BUCKETS,
                )
            })
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        for metric in METRICS {
            let (name, help) = (metric.name, metric.help);
            match metric.kind {
                Kind::Counter => metrics::describe_counter!(name, help),
                Kind::Gauge if name.ends_with("_seconds") => {
                    metrics::describe_gauge!(name, Unit::Seconds, help);
                }
                Kind::Gauge => metrics::describe_gauge!(name, help),
                Kind::Histogram if name.ends_with("_seconds") => {
                    metrics::describe_histogram!(name, Unit::Seconds, help);
                }
                Kind::Histogram => metrics::describe_histogram!(name, help),
            }
        }
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// The backlog gauges, refreshed from the database (a scrape that cannot read it keeps the
/// last values and logs why), then every metric in the Prometheus text format.
pub async fn scrape(backends: &Backends) -> String {
    let handle = recorder();
    let read = Duration::from_secs(2);
    match tokio::time::timeout(read, backends.jobs.queued_by_model()).await {
        Ok(Ok(queued)) => {
            let now = Utc::now();
            let mut seen = BACKLOG_LANES.lock().unwrap_or_else(PoisonError::into_inner);
            let now_seen: BTreeSet<(String, &'static str)> = queued
                .iter()
                .map(|q| (q.model.clone(), q.priority.as_str()))
                .collect();
            for (model, lane) in seen.difference(&now_seen) {
                gauge!(QUEUE_DEPTH, "model" => model.clone(), "lane" => *lane).set(0.0);
                gauge!(QUEUE_OLDEST_AGE, "model" => model.clone(), "lane" => *lane).set(0.0);
            }
            for q in queued {
                let lane = q.priority.as_str();
                gauge!(QUEUE_DEPTH, "model" => q.model.clone(), "lane" => lane).set(q.jobs as f64);
                gauge!(QUEUE_OLDEST_AGE, "model" => q.model, "lane" => lane)
                    .set(seconds_since(q.oldest, now));
            }
            *seen = now_seen;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the backlog"),
        Err(_) => tracing::warn!("metrics: reading the backlog took over 2 s"),
    }
    match tokio::time::timeout(read, backends.webhooks.count_pending_deliveries()).await {
        Ok(Ok(pending)) => gauge!(WEBHOOK_DELIVERIES_PENDING).set(pending as f64),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot count pending deliveries"),
        Err(_) => tracing::warn!("metrics: counting pending deliveries took over 2 s"),
    }
    handle.run_upkeep();
    handle.render()
}

/// A job was accepted (stored and queued).
pub fn job_accepted(job: &Job) {
    recorder();
    counter!(JOBS_ACCEPTED, job_labels(&job.model, job.tenant_id, None)).increment(1);
}

/// A job reached its final `status` now.
pub fn job_finished(job: &Job, status: JobStatus) {
    recorder();
    let status = status.to_string();
    counter!(
        JOBS_FINISHED,
        job_labels(&job.model, job.tenant_id, Some(&status))
    )
    .increment(1);
    histogram!(JOB_END_TO_END, "model" => job.model.clone(), "status" => status)
        .record(seconds_since(job.created_at, Utc::now()));
}

/// `jobs` queued jobs of a batch of `model` were canceled together.
pub fn jobs_canceled(model: &str, tenant: TenantId, jobs: u64) {
    recorder();
    let labels = job_labels(model, tenant, Some(JobStatus::Canceled.as_str()));
    counter!(JOBS_FINISHED, labels).increment(jobs);
}

/// A worker claimed a job: its first claim ends its wait in the queue.
pub fn job_claimed(job: &Job) {
    recorder();
    if job.attempts == 1 {
        histogram!(QUEUE_WAIT, "model" => job.model.clone())
            .record(seconds_since(job.created_at, Utc::now()));
    }
}

/// One model run over `images` images took `took`.
pub fn inference(model: &str, images: usize, took: Duration) {
    recorder();
    let labels = vec![Label::new("model", model.to_owned())];
    histogram!(INFERENCE_BATCH_DURATION, labels.clone()).record(took.as_secs_f64());
    histogram!(INFERENCE_BATCH_SIZE, labels.clone()).record(images as f64);
    if images > 0 {
        let per_image = took.as_secs_f64() / images as f64;
        let image = histogram!(INFERENCE_IMAGE_DURATION, labels);
        for _ in 0..images {
            image.record(per_image);
        }
    }
}

/// What came of one webhook delivery attempt: `delivered` (with the delivery's event time,
/// for the latency), `rejected` (an answer other than 2xx, retried), `unreachable` (no
/// answer, retried), `gave_up` (the last retry failed, or the receiver answered 410),
/// `disabled` (not sent: the endpoint is disabled).
pub fn webhook_attempt(outcome: &'static str, event_at: Option<DateTime<Utc>>) {
    recorder();
    counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
    if let Some(event_at) = event_at {
        histogram!(WEBHOOK_DELIVERY_LATENCY).record(seconds_since(event_at, Utc::now()));
    }
}

/// A model of the registry: its version, where it runs and whether it is ready; `load` is how
/// long its session took to load (none when it was not loaded).
pub fn model_registered(
    model: &str,
    version: &str,
    provider: &str,
    status: &str,
    load: Option<Duration>,
) {
    recorder();
    gauge!(MODEL_INFO, "model" => model.to_owned(), "version" => version.to_owned(),
        "execution_provider" => provider.to_owned(), "status" => status.to_owned())
    .set(1.0);
    if let Some(load) = load {
        gauge!(MODEL_LOAD_DURATION, "model" => model.to_owned()).set(load.as_secs_f64());
    }
}

/// The ONNX Runtime library the process loaded.
pub fn onnxruntime_loaded(version: &str) {
    recorder();
    gauge!(ONNXRUNTIME_INFO, "version" => version.to_owned()).set(1.0);
}

/// The labels of the job counters: model, status (of a finished job), tenant (with
/// `metrics.per_tenant`).
fn job_labels(model: &str, tenant: TenantId, status: Option<&str>) -> Vec<Label> {
    let mut labels = vec![Label::new("model", model.to_owned())];
    if let Some(status) = status {
        labels.push(Label::new("status", status.to_owned()));
    }
    if PER_TENANT.load(Ordering::Relaxed) {
        labels.push(Label::new("tenant", tenant.to_string()));
    }
    labels
}

fn seconds_since(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    (end - start).num_milliseconds().max(0) as f64 / 1000.0
}
