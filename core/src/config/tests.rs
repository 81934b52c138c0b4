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
    let err = Config::load(None, env(&[("MEDINFORM_NO_SUCH_THING", "1")])).unwrap_err();
    assert!(
        format!("{err:#}").contains("MEDINFORM_NO_SUCH_THING"),
        "{err:#}"
    );
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
