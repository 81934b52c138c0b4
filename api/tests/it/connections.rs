//! Connections that stall or misbehave are cut off, and every error answers the JSON shape.

use std::time::{Duration, Instant};

use medinform_api::http::HttpTimeouts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Kind, Options, SlowAnsweringBlobs, TestApp, cell_images, send};

const SHORT: HttpTimeouts = HttpTimeouts {
    header_read: Duration::from_secs(1),
    body_read: Duration::from_secs(1),
};

async fn app_with_short_timeouts() -> TestApp {
    TestApp::start_with(Options {
        timeouts: SHORT,
        ..Options::new(Kind::Embedded)
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or 10 s pass, which fails the test); returns
/// what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after 10 s: {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let app = app_with_short_timeouts().await;

    // A connection that never sends anything.
    let mut idle = connect(&app).await;
    let (_, waited) = read_until_closed(&mut idle).await;
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Headers that never end.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: medinform\r\n")
        .await
        .unwrap();
    let (_, waited) = read_until_closed(&mut slow).await;
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // A kept-alive connection that goes quiet after its first request.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: medinform\r\n\r\n")
        .await
        .unwrap();
    let (answer, waited) = read_until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_answered_408_and_closed() {
    let app = app_with_short_timeouts().await;
    let mut stream = connect(&app).await;
    let head = "POST /v1/jobs HTTP/1.1\r\nHost: medinform\r\n\
                Content-Type: multipart/form-data; boundary=XyZ\r\n\
                Content-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmalaria\r\n")
        .await
        .unwrap();
    let (answer, waited) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Nothing was accepted.
    let (_, jobs) = app.get("/v1/jobs").await;
    assert_eq!(jobs["jobs"], serde_json::json!([]));
    app.stop().await;
}

/// Status and JSON error code of a response, which must be JSON.
async fn json_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: {content_type}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn errors_from_every_layer_have_the_json_shape() {
    let app = TestApp::start(Kind::Embedded).await;

    // A path parameter that is not UTF-8: refused by axum's own extractor, answered in the
    // JSON shape by the error layer; where the route takes a typed id, with the id's code.
    let response = app
        .http
        .get(app.url("/v1/models/%ff"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_error(response).await,
        (400, "invalid_request".to_owned())
    );
    let response = app.http.get(app.url("/v1/jobs/%ff")).send().await.unwrap();
    assert_eq!(
        json_error(response).await,
        (400, "invalid_job_id".to_owned())
    );

    // Too many headers.
    let mut request = app.http.get(app.url("/v1/models"));
    for i in 0..2000 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        json_error(response).await,
        (431, "request_headers_too_large".to_owned())
    );

    // A JSON body over the endpoint's limit is too large, not invalid.
    let huge = format!(
        "{{\"url\":\"https://lab.example/hook\",\"description\":\"{}\"}}",
        "x".repeat(30 * 1024 * 1024)
    );
    let response = app
        .http
        .post(app.url("/v1/webhooks"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_error(response).await,
        (413, "request_too_large".to_owned())
    );

    // A JSON endpoint sent another content type.
    let (status, body) = send(app.http.post(app.url("/v1/webhooks")).body("url=x")).await;
    assert_eq!(status / 100, 4, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_after_its_upload_still_gets_a_job_not_an_orphan_image() {
    let app = TestApp::start_with(Options {
        worker: false,
        wrap_blobs: Some(Box::new(|inner| {
            std::sync::Arc::new(SlowAnsweringBlobs {
                inner,
                delay: Duration::from_millis(500),
            })
        })),
        ..Options::new(Kind::Embedded)
    })
    .await;
    let (name, image) = cell_images().remove(0);
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmalaria\r\n--XyZ\r\n",
    );
    body.extend_from_slice(
        format!(
            "Content-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&image);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: medinform\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = connect(&app).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    // Gone while the image is being stored.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = app.get("/v1/jobs").await;
        let jobs = page["jobs"].as_array().unwrap().len();
        let stored = app.stored_keys("images/").await.len();
        if jobs == 1 && stored == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} image(s) stored for {jobs} job(s): the upload was cut short half way"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}
