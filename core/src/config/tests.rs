//! Loading, precedence, validation and the example file.

use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_the_embedded_mode() {
    let config = Config::load(None, env(&[])).unwrap();
    assert_eq!(config.database_url(), "sqlite://./data/medinform.db");
    assert!(config.is_embedded_queue());
    assert_eq!(config.storage.backend, StorageBackend::Local);
    assert_eq!(config.storage_path(), PathBuf::from("./data/images"));
}

#[test]
fn file_then_environment_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medinform.toml");
    std::fs::write(
        &file,
        "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"from-file\"\n[worker]\nmax_batch = 4\n",
    )
    .unwrap();
    let config = Config::load(
        Some(&file),
        env(&[
            ("MEDINFORM_STORAGE_S3_BUCKET", "from-env"),
            ("MEDINFORM_STORAGE_S3_FORCE_PATH_STYLE", "false"),
            ("MEDINFORM_LIMITS_MAX_UPLOAD_BYTES", "1024"),
            ("MEDINFORM_WORKER_MODELS", "malaria, tuberculosis"),
            ("MEDINFORM_MODELS_THRESHOLDS_TUBERCULOSIS", "0.35"),
            ("MEDINFORM_DATA_DIR", "/var/lib/medinform"),
            ("OTHER_VARIABLE", "ignored"),
            ("MEDINFORM_CONFIG", "read by the command line"),
            ("MEDINFORM_LOG", "debug"),
            ("MEDINFORM_TEST_DATABASE_URL", "read by the tests"),
            ("MEDINFORM_PYTHON", "read by the tests and scripts"),
        ]),
    )
    .unwrap();
    assert_eq!(config.storage.backend, StorageBackend::S3);
    assert_eq!(config.storage.s3.bucket, "from-env");
    assert!(!config.storage.s3.force_path_style);
    assert_eq!(config.limits.max_upload_bytes, 1024);
    assert_eq!(config.worker.max_batch, 4);
    assert_eq!(config.worker.models, vec!["malaria", "tuberculosis"]);
    assert_eq!(config.models.thresholds["tuberculosis"], 0.35);
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/medinform"));
}

#[test]
fn webhook_settings_load_from_the_environment_and_are_checked() {
    let config = Config::load(
        None,
        env(&[
            ("MEDINFORM_WEBHOOKS_RETRY_SCHEDULE_SECS", "1, 2,3"),
            ("MEDINFORM_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(config.webhooks.retry_schedule_secs, vec![1, 2, 3]);
    assert!(config.webhooks.allow_private_targets);
    let err = Config::load(None, env(&[("MEDINFORM_WEBHOOKS_TIMEOUT_SECS", "0")])).unwrap_err();
    assert!(
        format!("{err:#}").contains("webhooks.timeout_secs"),
        "{err:#}"
    );
    let err = Config::load(
        None,
        env(&[("MEDINFORM_WEBHOOKS_RETRY_SCHEDULE_SECS", "5,0")]),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("webhooks.retry_schedule_secs"),
        "{err:#}"
    );
}

#[test]
fn the_example_file_documents_every_setting_with_its_default() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../medinform.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let documented: toml::Table = text.parse().unwrap();
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    assert_eq!(
        documented, defaults,
        "medinform.example.toml is out of date"
    );
}

#[test]
fn errors_name_the_setting() {
    let err = Config::load(None, env(&[("MEDINFORM_QUEUE_URL", "redis://x")])).unwrap_err();
    assert!(format!("{err:#}").contains("queue.url"), "{err:#}");
    let err = Config::load(None, env(&[("MEDINFORM_WORKER_PREFETCH", "lots")])).unwrap_err();
    assert!(format!("{err:#}").contains("prefetch"), "{err:#}");
    let err = Config::load(None, env(&[("MEDINFORM_AUTH_RATE_LIMIT_BURST", "0")])).unwrap_err();
    assert!(
        format!("{err:#}").contains("auth.rate_limit_burst"),
        "{err:#}"
    );
    let config = Config::load(
        None,
        env(&[
            ("MEDINFORM_AUTH_ALLOW_ANONYMOUS", "false"),
            ("MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE", "0"),
            ("MEDINFORM_AUTH_RATE_LIMIT_BURST", "0"),
            ("MEDINFORM_JOBS_MAX_BACKLOG", "25"),
        ]),
    )
    .unwrap();
    assert!(!config.auth.allow_anonymous);
    assert_eq!(config.auth.rate_limit_per_minute, 0);
    assert_eq!(config.jobs.max_backlog, 25);
}

#[test]
fn a_mistyped_variable_is_refused_with_the_setting_it_resembles() {
    for (typo, meant) in [
        ("MEDINFORM_QUEUE_ULR", "MEDINFORM_QUEUE_URL"),
        (
            "MEDINFORM_LIMITS_MAX_UPLOD_BYTES",
            "MEDINFORM_LIMITS_MAX_UPLOAD_BYTES",
        ),
        (
            "MEDINFORM_DATABASE_MAX_CONECTIONS",
            "MEDINFORM_DATABASE_MAX_CONNECTIONS",
        ),
        ("MEDINFORM_WORKER_MODEL", "MEDINFORM_WORKER_MODELS"),
        ("MEDINFORM_METRICS_LISTN", "MEDINFORM_METRICS_LISTEN"),
    ] {
        let err = Config::load(None, env(&[(typo, "1")])).unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            shown.contains(typo) && shown.contains(&format!("did you mean {meant}?")),
            "{typo}: {shown}"
        );
    }
    // Nothing like any one setting, but in a section of the settings: a mistake all the same.
    let err = Config::load(None, env(&[("MEDINFORM_WORKER_GPU_COUNT", "2")])).unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("MEDINFORM_WORKER_GPU_COUNT")
            && shown.contains("no such setting in [worker]")
            && shown.contains("MEDINFORM_WORKER_MAX_BATCH"),
        "{shown}"
    );
}

#[test]
fn foreign_variables_and_kubernetes_service_links_are_ignored_with_a_note() {
    let links = [
        "MEDINFORM_SERVICE_HOST",
        "MEDINFORM_SERVICE_PORT",
        "MEDINFORM_SERVICE_PORT_HTTP",
        "MEDINFORM_PORT",
        "MEDINFORM_PORT_8080_TCP",
        "MEDINFORM_PORT_8080_TCP_PROTO",
        "MEDINFORM_PORT_8080_TCP_PORT",
        "MEDINFORM_PORT_8080_TCP_ADDR",
        "MEDINFORM_API_SERVICE_HOST",
        "MEDINFORM_WORKER_SERVICE_PORT",
    ];
    let mut vars: Vec<(&str, &str)> = links.iter().map(|name| (*name, "10.0.0.1")).collect();
    vars.push(("MEDINFORM_BIN", "target/release/medinform"));
    vars.push(("MEDINFORM_SERVER_LISTEN", "0.0.0.0:8080"));
    let (config, notes) = Config::load_noting(None, env(&vars)).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(notes.len(), links.len() + 1, "{notes:#?}");
    for link in links {
        assert!(
            notes
                .iter()
                .any(|n| n.contains(&format!("{link} ignored")) && n.contains("service link")),
            "{link}: {notes:#?}"
        );
    }
    assert!(
        notes
            .iter()
            .any(|n| n.contains("MEDINFORM_BIN ignored") && n.contains("names no setting")),
        "{notes:#?}"
    );
}

#[test]
fn metrics_listen_is_an_address_or_empty() {
    let config = Config::load(None, env(&[("MEDINFORM_METRICS_LISTEN", "0.0.0.0:9090")])).unwrap();
    assert_eq!(
        config.metrics.listen_addr().unwrap(),
        Some("0.0.0.0:9090".parse().unwrap())
    );
    assert_eq!(Config::default().metrics.listen_addr().unwrap(), None);
    let err = Config::load(None, env(&[("MEDINFORM_METRICS_LISTEN", "9090")])).unwrap_err();
    assert!(format!("{err:#}").contains("metrics.listen"), "{err:#}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let mut config = Config::default();
    config.storage.s3.secret_access_key = "s3cr3t".into();
    config.database.url = "postgres://app:hunter2@db/medinform".into();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("postgres://app:***@db/medinform"));
}

#[test]
fn dicom_patient_data_is_set_per_tenant_and_pseudonyms_need_a_key() {
    let key = "k".repeat(32);
    let config = Config::load(
        None,
        env(&[
            ("MEDINFORM_DICOM_PATIENT_DATA", "keep"),
            (
                "MEDINFORM_DICOM_PATIENT_DATA_BY_TENANT_TB_VAN",
                "pseudonymize",
            ),
            ("MEDINFORM_DICOM_PSEUDONYM_KEY", &key),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.dicom.patient_data_for("tb_van"),
        PatientData::Pseudonymize
    );
    assert_eq!(config.dicom.patient_data_for("clinic"), PatientData::Keep);
    assert!(!format!("{config:?}").contains(&key), "the key is a secret");
    assert_eq!(
        Config::default().dicom.patient_data_for("any"),
        PatientData::Drop
    );

    for vars in [
        vec![("MEDINFORM_DICOM_PATIENT_DATA", "pseudonymize")],
        vec![
            (
                "MEDINFORM_DICOM_PATIENT_DATA_BY_TENANT_TB_VAN",
                "pseudonymize",
            ),
            ("MEDINFORM_DICOM_PSEUDONYM_KEY", "too short"),
        ],
    ] {
        let err = Config::load(None, env(&vars)).unwrap_err();
        assert!(
            format!("{err:#}").contains("dicom.pseudonym_key"),
            "{err:#}"
        );
    }
    let err = Config::load(None, env(&[("MEDINFORM_DICOM_PATIENT_DATA", "hide")])).unwrap_err();
    assert!(format!("{err:#}").contains("patient_data"), "{err:#}");
}

#[test]
fn the_bulk_lanes_nice_value_is_a_setting_from_0_to_19() {
    assert_eq!(Config::load(None, env(&[])).unwrap().inference.bulk_nice, 0);
    let set = Config::load(None, env(&[("MEDINFORM_INFERENCE_BULK_NICE", "10")])).unwrap();
    assert_eq!(set.inference.bulk_nice, 10);
    for refused in ["20", "-1"] {
        let err =
            Config::load(None, env(&[("MEDINFORM_INFERENCE_BULK_NICE", refused)])).unwrap_err();
        assert!(
            format!("{err:#}").contains("inference.bulk_nice must be between 0 and 19"),
            "{refused}: {err:#}"
        );
    }
}
