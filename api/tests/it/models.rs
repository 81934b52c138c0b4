//! The registry as the API shows it, and the health endpoints.

use crate::support::{Kind, TestApp};

#[tokio::test]
async fn models_are_listed_with_their_status_and_spec() {
    let app = TestApp::start(Kind::Embedded).await;
    let (status, body) = app.get("/v1/models").await;
    assert_eq!(status, 200);
    let models = body["models"].as_array().unwrap();
    let ids: Vec<_> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["malaria", "retired"]);

    let malaria = &models[0];
    let manifest = app
        .registry
        .get("malaria")
        .unwrap()
        .manifest()
        .unwrap()
        .clone();
    assert_eq!(malaria["status"], "ready", "{malaria}");
    assert_eq!(malaria["version"], manifest.version.as_str());
    assert_eq!(malaria["task"], "binary");
    assert_eq!(malaria["labels"], serde_json::json!(manifest.output.labels));
    assert_eq!(malaria["finding"], manifest.decision.finding.as_str());
    assert_eq!(malaria["input"]["width"], manifest.input.width);
    assert_eq!(malaria["input"]["height"], manifest.input.height);
    assert_eq!(malaria["input"]["color"], "gray");
    assert!(malaria.get("reason").is_none());

    let retired = &models[1];
    assert_eq!(retired["status"], "unavailable");
    let reason = retired["reason"].as_str().unwrap();
    assert!(
        reason.contains("model.onnx") && reason.contains("missing"),
        "{reason}"
    );

    let (status, detail) = app.get("/v1/models/malaria").await;
    assert_eq!(status, 200);
    assert!(
        detail["card"].as_str().unwrap().contains("not a diagnosis"),
        "{detail}"
    );
    let (status, missing) = app.get("/v1/models/nope").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    app.stop().await;
}

async fn health_and_readiness(kind: Kind) {
    let app = TestApp::start(kind).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["database", "queue", "storage", "models"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }
    assert!(app.stop().await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn health_and_readiness_embedded() {
    health_and_readiness(Kind::Embedded).await;
}

#[tokio::test]
async fn health_and_readiness_distributed() {
    health_and_readiness(Kind::Distributed).await;
}

/// A queue whose health check fails with an error naming its host, as a real one would.
struct UnreachableQueue {
    inner: std::sync::Arc<dyn medinform_core::queue::JobQueue>,
}

#[async_trait::async_trait]
impl medinform_core::queue::JobQueue for UnreachableQueue {
    async fn publish(
        &self,
        message: &medinform_core::queue::JobMessage,
    ) -> Result<(), medinform_core::queue::QueueError> {
        self.inner.publish(message).await
    }
    async fn subscribe(
        &self,
        models: &[String],
        prefetch: u16,
    ) -> Result<Box<dyn medinform_core::queue::Subscription>, medinform_core::queue::QueueError>
    {
        self.inner.subscribe(models, prefetch).await
    }
    async fn check(&self) -> Result<(), medinform_core::queue::QueueError> {
        Err(medinform_core::queue::QueueError::Backend(anyhow::anyhow!(
            "connection refused: amqp://medinform:hunter2@rabbit.internal:5672"
        )))
    }
    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn readiness_says_what_is_down_without_the_backends_own_words() {
    let app = TestApp::start_with(crate::support::Options {
        wrap_queue: Some(Box::new(|inner| {
            std::sync::Arc::new(UnreachableQueue { inner })
        })),
        ..crate::support::Options::new(Kind::Embedded)
    })
    .await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["queue"]["ok"], false);
    let text = body.to_string();
    assert!(
        !text.contains("rabbit.internal") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("queue is unreachable"), "{text}");
    app.stop().await;
}
