//! `medinform keys`: keys made, listed and revoked on the command line, seen by the store.

use std::path::Path;
use std::process::{Command, Output};

use medinform_core::config::Config;
use medinform_core::db::{SqliteJobStore, TenantStore};
use medinform_core::tenant::Scope;
use medinform_core::tenant::keys::ApiKeySecret;

fn medinform(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medinform"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MEDINFORM_DATA_DIR", data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn store(data_dir: &Path) -> SqliteJobStore {
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    SqliteJobStore::connect(&config.database_url(), 1)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_created_key_authenticates_until_it_is_revoked() {
    let data = tempfile::tempdir().unwrap();
    let created = medinform(
        data.path(),
        &[
            "keys",
            "create",
            "--tenant",
            "tb-drive-2026",
            "--name",
            "camp 7",
        ],
    );
    let printed = stdout(&created);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(stderr.contains("cannot be shown again"), "{stderr}");
    let key = ApiKeySecret::parse(printed.trim()).expect("the key, alone on stdout");
    assert_eq!(printed.lines().count(), 1, "{printed}");

    let store = store(data.path()).await;
    let found = store.authenticate(&key.sha256()).await.unwrap().unwrap();
    assert_eq!(found.prefix, key.prefix());
    assert_eq!(found.tenant_name, "tb-drive-2026");
    assert_eq!(found.name, "camp 7");
    assert_eq!(found.scopes, vec![Scope::Submit, Scope::Read]);
    assert!(!found.is_revoked());

    // Listed by prefix, never in full.
    let admin = medinform(
        data.path(),
        &["keys", "create", "--tenant", "other", "--scopes", "admin"],
    );
    let admin_key = ApiKeySecret::parse(stdout(&admin).trim()).unwrap();
    let listed = stdout(&medinform(data.path(), &["keys", "list"]));
    assert!(
        listed.contains(key.prefix()) && listed.contains(admin_key.prefix()),
        "{listed}"
    );
    assert!(!listed.contains(key.expose()), "{listed}");
    let only = stdout(&medinform(
        data.path(),
        &["keys", "list", "--tenant", "tb-drive-2026"],
    ));
    assert!(
        only.contains(key.prefix()) && !only.contains(admin_key.prefix()),
        "{only}"
    );
    assert!(
        only.contains("submit,read") && only.contains("camp 7"),
        "{only}"
    );

    let revoked = stdout(&medinform(data.path(), &["keys", "revoke", key.prefix()]));
    assert!(revoked.contains(key.prefix()), "{revoked}");
    let found = store.authenticate(&key.sha256()).await.unwrap().unwrap();
    assert!(found.is_revoked());
    let other = store
        .authenticate(&admin_key.sha256())
        .await
        .unwrap()
        .unwrap();
    assert!(!other.is_revoked());
}

#[test]
fn mistakes_are_refused_with_a_reason() {
    let data = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (&["keys", "create", "--tenant", "a b"][..], "tenant name"),
        (
            &["keys", "create", "--tenant", "a", "--scopes", "write"][..],
            "write",
        ),
        (&["keys", "revoke", "mik_0123abcd"][..], "no API key"),
        (&["keys", "revoke", "nonsense"][..], "nonsense"),
    ] {
        let output = medinform(data.path(), args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
