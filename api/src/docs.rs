//! `GET /docs`: a reference page rendered on the server from the OpenAPI document, so it works
//! offline (a field laptop has no CDN) and always matches `/openapi.json`.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::response::Html;
use serde_json::Value;

use crate::openapi;
use crate::{ApiError, ErrorCode};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `GET /docs`: rendered once per process; a document that cannot be built is a 500, never an
/// empty page.
pub async fn page() -> Result<Html<String>, ApiError> {
    static PAGE: OnceLock<String> = OnceLock::new();
    if let Some(page) = PAGE.get() {
        return Ok(Html(page.clone()));
    }
    let page = render(openapi::document()?);
    Ok(Html(PAGE.get_or_init(|| page).clone()))
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline `code` spans of a description, escaped.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn render(spec: &Value) -> String {
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let info = &spec["info"];
    // The description's prose comes before its generated error table, which is shown below.
    let intro = str_at(info, "description");
    let intro = intro.split("\n\n## Errors").next().unwrap_or_default();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} reference</title><style>{STYLE}</style></head><body><main>\
         <h1>{title} <small>{version}</small></h1><p>{intro}</p>\
         <p>The machine-readable description is <a href=\"/openapi.json\">/openapi.json</a> \
         (OpenAPI 3). Send an API key as <code>Authorization: Bearer mik_…</code>.</p>",
        title = esc(&str_at(info, "title")),
        version = esc(&str_at(info, "version")),
        intro = prose(intro),
    );
    let mut by_tag: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                let section = operation(method, path, op);
                match by_tag.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, ops)) => ops.push(section),
                    None => by_tag.push((tag, vec![section])),
                }
            }
        }
    }
    html.push_str("<nav><strong>Contents:</strong> ");
    for (tag, _) in &by_tag {
        let _ = write!(html, "<a href=\"#{0}\">{0}</a> · ", esc(tag));
    }
    html.push_str("<a href=\"#errors\">errors</a></nav>");
    for (tag, ops) in by_tag {
        let _ = write!(html, "<h2 id=\"{0}\">{0}</h2>", esc(&tag));
        html.extend(ops);
    }
    html.push_str(
        "<h2 id=\"errors\">Errors</h2><p>Every error answers \
         <code>{\"error\": {\"code\": \"…\", \"message\": \"…\"}}</code> with one of these \
         stable codes:</p><table><tr><th>status</th><th>code</th><th>when</th></tr>",
    );
    for code in ErrorCode::ALL {
        let _ = write!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            code.status().as_u16(),
            code.as_str(),
            prose(code.description())
        );
    }
    html.push_str("</table></main></body></html>");
    html
}

fn operation(method: &str, path: &str, op: &Value) -> String {
    let text = |key: &str| op.get(key).and_then(Value::as_str).unwrap_or("");
    let mut html = format!(
        "<section><h3><span class=\"m {method}\">{upper}</span> <code>{path}</code></h3>\
         <p><strong>{summary}</strong></p><p>{description}</p>",
        upper = method.to_uppercase(),
        path = esc(path),
        summary = prose(text("summary")),
        description = prose(text("description")),
    );
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>");
        for p in params {
            let _ = write!(
                html,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p["name"].as_str().unwrap_or("")),
                if p["required"].as_bool() == Some(true) {
                    " *"
                } else {
                    ""
                },
                esc(p["in"].as_str().unwrap_or("")),
                prose(p["description"].as_str().unwrap_or("")),
            );
        }
        html.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        let types: Vec<String> = content
            .keys()
            .map(|k| format!("<code>{}</code>", esc(k)))
            .collect();
        let _ = write!(html, "<p>Body: {}</p>", types.join(", "));
    }
    if let Some(responses) = op["responses"].as_object() {
        html.push_str("<table><tr><th>status</th><th>meaning</th></tr>");
        for (status, response) in responses {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(status),
                prose(response["description"].as_str().unwrap_or(""))
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
    html
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;color:#1b1f24;background:#f6f7f9;margin:0}\
main{max-width:60rem;margin:0 auto;padding:1rem 1.25rem 4rem}h1 small{font-size:.5em;color:#57606a}\
h2{margin-top:2.5rem;border-bottom:2px solid #d0d7de;text-transform:capitalize}\
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:.5rem 1rem;margin:1rem 0}\
h3{font-size:1.05rem}code{font:.9em ui-monospace,monospace;background:#eef1f4;padding:0 .25em;border-radius:4px}\
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.92rem}\
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}\
.m{display:inline-block;min-width:4.2em;text-align:center;border-radius:4px;color:#fff;font-size:.8em;padding:.1em .4em}\
.get{background:#0b6bcb}.post{background:#1a7f37}.patch{background:#9a6700}.delete{background:#cf222e}.put{background:#8250df}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_every_operation_and_error_code() {
        let spec = openapi::document().unwrap();
        let html = render(spec);
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    assert!(
                        html.contains(&format!(
                            "{}</span> <code>{}</code>",
                            method.to_uppercase(),
                            esc(path)
                        )),
                        "{method} {path} missing"
                    );
                }
            }
        }
        for code in ErrorCode::ALL {
            assert!(html.contains(&format!("<code>{}</code>", code.as_str())));
        }
        assert!(!html.contains("<script"));
    }
}
