//! A webhook receiver for tests: an HTTP server on 127.0.0.1:0 that records every request and
//! answers the statuses a test scripts (200 once the script is used up).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
}

/// See the module documentation. Stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    pub port: u16,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopping = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            shared,
            stop,
        }
    }

    /// The next request is answered with `status` and `body`.
    pub fn answer(&self, status: u16, body: &str) {
        self.answer_with(status, Vec::new(), body);
    }

    /// The next request is answered with `status`, `headers` and `body`.
    pub fn answer_with(&self, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
        self.shared
            .script
            .lock()
            .unwrap()
            .push_back((status, headers, body.to_string()));
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until `n` requests arrived, and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, not {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    shared.received.lock().unwrap().push(Received {
        headers,
        body,
        at: Instant::now(),
    });
    let (status, extra, body) =
        shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, Vec::new(), "ok".into()));
    let mut headers = HeaderMap::new();
    for (name, value) in extra {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    (StatusCode::from_u16(status).unwrap(), headers, body)
}
