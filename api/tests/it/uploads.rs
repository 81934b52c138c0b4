//! Bad uploads get a clear, stable error and leave nothing behind; the service keeps running.

use std::io::Cursor;

use medinform_core::imaging::ImageLimits;
use serde_json::Value;

use crate::support::{Kind, Options, TestApp, cell_images, send};

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 120, 160]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A valid PNG header declaring `width` x `height` pixels, with almost no data: a
/// decompression bomb's calling card.
fn bomb(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // The IHDR chunk: length (8..12), type (12..16), width and height (16..24), CRC (29..33)
    // over type and data.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn assert_refused(app: &TestApp, model: &str, bytes: Vec<u8>, status: u16, code: &str) {
    let (got, body) = app.submit(model, "upload.bin", bytes).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.len() > 10,
        "a message a person can act on: {message:?}"
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_with_stable_codes_and_nothing_is_stored() {
    let mut options = Options::new(Kind::Embedded);
    options.limits = ImageLimits {
        max_bytes: 256 * 1024,
        max_pixels: 4_000_000,
        max_decoded_bytes: 8 * 1024 * 1024,
    };
    let app = TestApp::start_with(options).await;
    let (_, cell) = cell_images().remove(0);

    assert_refused(&app, "malaria", Vec::new(), 400, "empty_file").await;
    assert_refused(
        &app,
        "malaria",
        b"patient notes, not an image".to_vec(),
        415,
        "not_an_image",
    )
    .await;
    assert_refused(
        &app,
        "malaria",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
        415,
        "unsupported_image_format",
    )
    .await;
    assert_refused(
        &app,
        "malaria",
        cell[..cell.len() / 2].to_vec(),
        422,
        "corrupt_image",
    )
    .await;
    assert_refused(
        &app,
        "malaria",
        bomb(100_000, 100_000),
        422,
        "image_dimensions_too_large",
    )
    .await;
    // Under the pixel limit, over the decoded-bytes limit: 1500 x 1500 16-bit RGBA zeros are
    // 18 MB decoded from a PNG of a few KB.
    let rgba16 = image::DynamicImage::ImageRgba16(image::ImageBuffer::new(1500, 1500));
    let mut png = std::io::Cursor::new(Vec::new());
    rgba16.write_to(&mut png, image::ImageFormat::Png).unwrap();
    assert_refused(
        &app,
        "malaria",
        png.into_inner(),
        422,
        "image_dimensions_too_large",
    )
    .await;
    assert_refused(
        &app,
        "malaria",
        vec![0x89; 300 * 1024],
        413,
        "image_too_large",
    )
    .await;
    assert_refused(
        &app,
        "malaria",
        vec![0x89; 2 * 1024 * 1024],
        413,
        "image_too_large",
    )
    .await;
    assert_refused(&app, "no_such_model", cell.clone(), 422, "unknown_model").await;
    assert_refused(&app, "retired", cell.clone(), 503, "model_unavailable").await;

    // A form without the image, without the model, and a body that is not a form at all.
    let form = reqwest::multipart::Form::new().text("model", "malaria");
    let (status, body) = app.post_form(form).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_field"))
    );
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(cell.clone()).file_name("c.png"),
    );
    let (status, body) = app.post_form(form).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_field"))
    );
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmal")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_multipart", "{body}");
    let response = app
        .http
        .post(app.url("/v1/jobs"))
        .json(&serde_json::json!({"model": "malaria"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_multipart", "{body}");

    // Nothing was stored: no image, no job row.
    let stored = app.stored_keys("").await;
    assert!(stored.is_empty(), "images left behind: {stored:?}");

    // And the service still works.
    let (status, body) = app.submit("malaria", "cell.png", cell).await;
    assert_eq!(status, 202, "{body}");
    let job = app.wait_finished(body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(app.stored_keys("images/").await.len(), 1);
    app.stop().await;
}

/// A field script can send the image itself as the body, with the form's fields in the query:
/// screened as the same image in a form is, and refused with the same codes.
#[tokio::test]
async fn an_image_sent_as_the_body_is_screened_like_a_form_upload() {
    let mut options = Options::new(Kind::Embedded);
    options.limits = ImageLimits {
        max_bytes: 1024 * 1024,
        ..ImageLimits::default()
    };
    let app = TestApp::start_with(options).await;
    let (_, cell) = cell_images().remove(0);
    let raw = |query: &str, content_type: &str, body: Vec<u8>| {
        send(
            app.http
                .post(app.url(&format!("/v1/jobs{query}")))
                .header("content-type", content_type)
                .body(body),
        )
    };

    let (status, body) = raw(
        "?model=malaria&client_reference=camp-7%2Fslide-12&tags=night&tags=follow-up",
        "image/png",
        cell.clone(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["client_reference"], "camp-7/slide-12");
    assert_eq!(body["tags"], serde_json::json!(["night", "follow-up"]));
    let as_body = app.wait_finished(body["id"].as_str().unwrap()).await;
    let (status, body) = app.submit("malaria", "cell.png", cell.clone()).await;
    assert_eq!(status, 202, "{body}");
    let in_form = app.wait_finished(body["id"].as_str().unwrap()).await;
    assert_eq!(as_body["status"], "succeeded", "{as_body}");
    assert_eq!(as_body["result"], in_form["result"]);

    // The content type is only a promise: the bytes decide.
    let (status, body) = raw("?model=malaria", "application/octet-stream", cell.clone()).await;
    assert_eq!(status, 202, "{body}");
    let refusals = [
        ("", "image/png", cell.clone(), 400, "missing_field"),
        (
            "?model=no_such_model",
            "image/png",
            cell.clone(),
            422,
            "unknown_model",
        ),
        (
            "?model=malaria",
            "image/png",
            b"not an image".to_vec(),
            415,
            "not_an_image",
        ),
        (
            "?model=malaria",
            "image/png",
            vec![0x89; 2 * 1024 * 1024],
            413,
            "image_too_large",
        ),
        (
            "?model=malaria&deadline=yesterday",
            "image/png",
            cell.clone(),
            400,
            "invalid_field",
        ),
        (
            "?model=malaria&site=a%07b",
            "image/png",
            cell.clone(),
            400,
            "invalid_field",
        ),
        (
            "?model=malaria",
            "text/plain",
            cell.clone(),
            400,
            "invalid_multipart",
        ),
    ];
    for (query, content_type, bytes, want, code) in refusals {
        let (status, body) = raw(query, content_type, bytes).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want, Some(code)),
            "{query} {content_type}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn every_accepted_format_is_screened() {
    let app = TestApp::start(Kind::Embedded).await;
    let (_, cell) = cell_images().remove(0);
    let decoded = image::load_from_memory(&cell).unwrap().to_rgb8();
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
        image::ImageFormat::Tiff,
        image::ImageFormat::WebP,
    ] {
        let mut bytes = Cursor::new(Vec::new());
        decoded.write_to(&mut bytes, format).unwrap();
        let (status, body) = app.submit("malaria", "cell", bytes.into_inner()).await;
        assert_eq!(status, 202, "{format:?}: {body}");
        let job = app.wait_finished(body["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{format:?}: {job}");
    }
    app.stop().await;
}
