//! The DICOM C-STORE service with real clients: DCMTK's echoscu and storescu (infra/test installs
//! them) and pynetdicom (the venv's Python). A modality's study sent in one association becomes
//! one batch, screened like the same file uploaded; an instance no rule routes is stored, not
//! screened; unknown callers are rejected and a transfer syntax the service does not decode is
//! refused in the negotiation, with nothing stored; a shutdown releases an open association.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use medinform_core::config::{DicomConfig, DicomRoute};
use medinform_core::tenant::Scope;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::dicom::{STUDY, chest_options, chest_xray, dx_instance, probabilities};
use crate::on_both_backends;
use crate::support::{Kind, Options, TestApp, python};

/// The service's AE title (the default of `dicom.ae_title`).
const AE_TITLE: &str = "MEDINFORM";
/// The X-ray room, a caller of tenant [`TENANT`].
const CALLER: &str = "XRAY-ROOM-1";
const TENANT: &str = "district-north";
/// A caller whose tenant was never made.
const GHOST_CALLER: &str = "OLD-CR-READER";

const DX_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

/// A storescu association profile that offers DX images in JPEG-LS Lossless and nothing else.
const JPEG_LS_ONLY_PROFILE: &str = "\
[[TransferSyntaxes]]
[JPEGLS]
TransferSyntax1 = 1.2.840.10008.1.2.4.80

[[PresentationContexts]]
[JPEGLSOnly]
PresentationContext1 = 1.2.840.10008.5.1.4.1.1.1.1\\JPEGLS

[[Profiles]]
[JPEGLSOnly]
PresentationContexts = JPEGLSOnly
";

/// A C-STORE service on port 0 for [`CALLER`], with chest X-rays (CR, DX; CHEST or no body part)
/// routed to tuberculosis.
fn scp_options(kind: Kind) -> Options {
    let mut options = chest_options(kind);
    options.dicom = DicomConfig {
        listen: "127.0.0.1:0".into(),
        callers: HashMap::from([
            (CALLER.to_owned(), TENANT.to_owned()),
            (GHOST_CALLER.to_owned(), "closed-clinic".to_owned()),
        ]),
        routes: vec![DicomRoute {
            modalities: vec!["CR".into(), "DX".into()],
            body_parts: vec!["CHEST".into(), String::new()],
            models: vec!["tuberculosis".into()],
        }],
        ..DicomConfig::default()
    };
    options
}

/// A small chest X-ray (the model resizes anyway) as instance `number` of the study.
fn chest_instance(modality: &str, body_part: &str, number: u32) -> Vec<u8> {
    let xray = image::imageops::thumbnail(&chest_xray(), 128, 128);
    dx_instance(&xray, modality, body_part, number)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs a DCMTK tool: whether it succeeded, and what it printed.
async fn dcmtk(tool: &str, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("{tool}: {e}: install DCMTK (Debian: apt-get install dcmtk; infra/test does)")
        });
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// `storescu` sending `files` in one association, as `calling` to `called`.
async fn storescu(
    app: &TestApp,
    calling: &str,
    called: &str,
    extra: &[&str],
    files: &[&str],
) -> (bool, String) {
    let port = app.dicom_addr().port().to_string();
    let mut args = vec!["-aet", calling, "-aec", called];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["127.0.0.1", &port]);
    args.extend_from_slice(files);
    dcmtk("storescu", &args).await
}

/// A pynetdicom association told by a JSON argument: the presentation contexts it proposes, a
/// C-ECHO, C-STOREs of files, then a release; or, with `hold`, "associated" on a line of its
/// own and a wait for the service to end the association. Prints what happened as JSON.
const PYNETDICOM_CLIENT: &str = r#"
import json, sys, time
from pydicom import dcmread
from pynetdicom import AE

request = json.loads(sys.argv[1])
ae = AE(ae_title=request["caller"])
ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
for sop_class, syntaxes in request["contexts"]:
    ae.add_requested_context(sop_class, syntaxes)
assoc = ae.associate("127.0.0.1", request["port"], ae_title=request["called"])
result = {"established": assoc.is_established}
if assoc.is_established:
    result["accepted"] = [cx.abstract_syntax for cx in assoc.accepted_contexts]
    result["rejected"] = [[cx.abstract_syntax, cx.result] for cx in assoc.rejected_contexts]
    if request.get("echo"):
        result["echo"] = assoc.send_c_echo().Status
    result["stores"] = []
    for path in request.get("files", []):
        response = assoc.send_c_store(dcmread(path))
        result["stores"].append([response.Status, str(response.get("ErrorComment", ""))])
    if request.get("hold"):
        print("associated", flush=True)
        deadline = time.time() + 20
        while assoc.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        result["released"] = assoc.is_released
    else:
        assoc.release()
print(json.dumps(result))
"#;

fn pynetdicom(request: &Value) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command
        .args(["-c", PYNETDICOM_CLIENT, &request.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_pynetdicom(request: Value) -> Value {
    let output = pynetdicom(&request).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The jobs `key` sees.
async fn jobs_of(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, list) = app.get_as(key, "/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    list["jobs"].as_array().unwrap().clone()
}

/// The objects of an embedded app's blob store under `dicom/` (instances no rule routes).
async fn unrouted_instances(app: &TestApp) -> Option<usize> {
    match app.image_dir {
        Some(_) => Some(app.stored_keys("dicom/").await.len()),
        None => None,
    }
}

async fn a_study_sent_by_a_modality_is_screened_as_one_batch(kind: Kind) {
    let app = TestApp::start_with(scp_options(kind)).await;
    let key = app.create_key(TENANT, &[Scope::Submit, Scope::Read]).await;
    let port = app.dicom_addr().port().to_string();

    let (ok, printed) = dcmtk(
        "echoscu",
        &["-aet", CALLER, "-aec", AE_TITLE, "127.0.0.1", &port],
    )
    .await;
    assert!(ok, "C-ECHO: {printed}");

    // Two chest X-rays of the study and a knee, which no rule routes, in one association.
    let dir = tempfile::tempdir().unwrap();
    let first = chest_instance("DX", "CHEST", 1);
    let files = [
        write(dir.path(), "1.dcm", &first),
        write(dir.path(), "2.dcm", &chest_instance("DX", "", 2)),
        write(dir.path(), "3.dcm", &chest_instance("DX", "KNEE", 3)),
    ];
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let (ok, printed) = storescu(&app, CALLER, AE_TITLE, &[], &files).await;
    assert!(ok, "C-STORE: {printed}");

    // The caller's tenant has one job per chest X-ray, in one batch: the study's.
    let jobs = jobs_of(&app, &key).await;
    assert_eq!(jobs.len(), 2, "the knee is not screened: {jobs:?}");
    let (status, local) = app.get("/v1/jobs").await;
    assert_eq!(
        (status, local["jobs"].as_array().map(Vec::len)),
        (200, Some(0)),
        "another tenant's"
    );
    let batch = jobs[0]["batch_id"].as_str().expect("a batch").to_owned();
    let mut screened = HashMap::new();
    for job in &jobs {
        assert_eq!(job["batch_id"], batch.as_str(), "{job}");
        assert_eq!(job["model"], "tuberculosis", "{job}");
        let job = app
            .wait_finished_as(&key, job["id"].as_str().unwrap())
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["dicom"]["study_instance_uid"], STUDY, "{job}");
        let instance = job["dicom"]["sop_instance_uid"]
            .as_str()
            .unwrap()
            .to_owned();
        screened.insert(instance, job);
    }
    let mut instances: Vec<&String> = screened.keys().collect();
    instances.sort();
    assert_eq!(
        instances,
        [&format!("{STUDY}.1.1"), &format!("{STUDY}.1.2")]
    );
    let (status, batch_view) = app.get_as(&key, &format!("/v1/batches/{batch}")).await;
    assert_eq!(status, 200, "{batch_view}");
    if let Some(unrouted) = unrouted_instances(&app).await {
        assert_eq!(unrouted, 1, "the knee is stored");
    }

    // The same file uploaded gives the same probabilities.
    let (status, uploaded) = app
        .submit_as(&key, "tuberculosis", "chest.dcm", first)
        .await;
    assert_eq!(status, 202, "{uploaded}");
    let uploaded = app
        .wait_finished_as(&key, uploaded["id"].as_str().unwrap())
        .await;
    assert_eq!(uploaded["status"], "succeeded", "{uploaded}");
    assert_eq!(
        probabilities(&screened[&format!("{STUDY}.1.1")]),
        probabilities(&uploaded)
    );
    app.stop().await;
}

on_both_backends!(a_study_sent_by_a_modality_is_screened_as_one_batch);

#[tokio::test]
async fn unknown_callers_and_undecoded_transfer_syntaxes_are_refused() {
    let app = TestApp::start_with(scp_options(Kind::Embedded)).await;
    let key = app.create_key(TENANT, &[Scope::Submit, Scope::Read]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "1.dcm", &chest_instance("DX", "CHEST", 1));

    for (calling, called, reason) in [
        ("UNKNOWN", AE_TITLE, "Calling AE Title Not Recognized"),
        (GHOST_CALLER, AE_TITLE, "Calling AE Title Not Recognized"),
        (CALLER, "ANY-SCP", "Called AE Title Not Recognized"),
    ] {
        let (ok, printed) = storescu(&app, calling, called, &[], &[&file]).await;
        assert!(!ok, "{calling} to {called}: {printed}");
        assert!(
            printed.contains("Association Rejected"),
            "{calling} to {called}: {printed}"
        );
        assert!(printed.contains(reason), "{calling} to {called}: {printed}");
    }

    // A JPEG-LS file (DCMTK compresses it) offered in JPEG-LS alone: its context is rejected
    // and nothing is sent.
    let jpeg_ls = dir.path().join("jpeg-ls.dcm");
    let (ok, printed) = dcmtk("dcmcjpls", &[&file, jpeg_ls.to_str().unwrap()]).await;
    assert!(ok, "{printed}");
    let profile = write(
        dir.path(),
        "jpeg-ls-only.cfg",
        JPEG_LS_ONLY_PROFILE.as_bytes(),
    );
    let (ok, printed) = storescu(
        &app,
        CALLER,
        AE_TITLE,
        &["-d", "-xf", &profile, "JPEGLSOnly"],
        &[jpeg_ls.to_str().unwrap()],
    )
    .await;
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("Context ID:        1 (Transfer Syntaxes Not Supported)"),
        "{printed}"
    );
    assert!(
        printed.contains("No Acceptable Presentation Contexts"),
        "{printed}"
    );

    // pynetdicom proposing JPEG-LS alone: "transfer syntaxes not supported" (4).
    let port = app.dicom_addr().port();
    let answer = run_pynetdicom(json!({
        "port": port, "caller": CALLER, "called": AE_TITLE,
        "contexts": [[VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN]], [DX_STORAGE, [JPEG_LS_LOSSLESS]]],
    }))
    .await;
    assert_eq!(answer["accepted"], json!([VERIFICATION]), "{answer}");
    assert_eq!(answer["rejected"], json!([[DX_STORAGE, 4]]), "{answer}");

    assert!(jobs_of(&app, &key).await.is_empty());
    assert_eq!(unrouted_instances(&app).await, Some(0));
    app.stop().await;
}

#[tokio::test]
async fn pynetdicom_echoes_and_stores_and_learns_why_an_instance_is_refused() {
    let app = TestApp::start_with(scp_options(Kind::Embedded)).await;
    let key = app.create_key(TENANT, &[Scope::Submit, Scope::Read]).await;
    let dir = tempfile::tempdir().unwrap();
    let chest = write(dir.path(), "chest.dcm", &chest_instance("CR", "CHEST", 7));
    // A data set without pixel data: not an image the service can read.
    let no_pixels = {
        let bytes = chest_instance("CR", "CHEST", 8);
        let mut object = dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(std::io::Cursor::new(bytes))
            .unwrap();
        object.remove_element(dicom_dictionary_std::tags::PIXEL_DATA);
        let mut out = Vec::new();
        object.write_all(&mut out).unwrap();
        write(dir.path(), "no-pixels.dcm", &out)
    };

    let answer = run_pynetdicom(json!({
        "port": app.dicom_addr().port(), "caller": CALLER, "called": AE_TITLE,
        "contexts": [
            [VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN]],
            [DX_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]],
        ],
        "echo": true,
        "files": [chest, no_pixels],
    }))
    .await;
    assert_eq!(answer["echo"], 0, "{answer}");
    let stores = answer["stores"].as_array().unwrap();
    assert_eq!(stores[0], json!([0, ""]), "{answer}");
    assert_eq!(stores[1][0], 0xC000, "cannot understand: {answer}");
    let comment = stores[1][1].as_str().unwrap();
    assert!(!comment.is_empty() && comment.len() <= 64, "{comment:?}");

    let jobs = jobs_of(&app, &key).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["dicom"]["sop_instance_uid"], format!("{STUDY}.1.7"));
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_releases_an_open_association() {
    let app = TestApp::start_with(scp_options(Kind::Embedded)).await;
    app.create_key(TENANT, &[Scope::Read]).await;
    let mut client = pynetdicom(&json!({
        "port": app.dicom_addr().port(), "caller": CALLER, "called": AE_TITLE,
        "contexts": [[VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN]]],
        "echo": true,
        "hold": true,
    }))
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap();
    assert_eq!(first.as_deref(), Some("associated"));

    let started = tokio::time::Instant::now();
    for outcome in app.stop().await {
        outcome.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let last = lines.next_line().await.unwrap().unwrap();
    let answer: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(answer["echo"], 0, "{answer}");
    assert_eq!(answer["released"], true, "{answer}");
    assert!(client.wait().await.unwrap().success());
}
