//! `medinform keys`: create, list and revoke API keys in the configured database.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use medinform_core::app::Backends;
use medinform_core::config::Config;
use medinform_core::db::{TenantStore, create_api_key};
use medinform_core::tenant::{self, ApiKey, Scope, keys};

/// What to do with API keys.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Makes a key for a tenant (created if new) and prints it, once.
    Create {
        /// The tenant the key acts for (letters, digits, `.`, `_`, `-`).
        #[arg(long, value_name = "NAME")]
        tenant: String,
        /// A label for lists ("camp 7 laptop").
        #[arg(long, value_name = "LABEL", default_value = "")]
        name: String,
        /// Comma-separated: submit, read, admin (admin implies the others).
        #[arg(long, value_name = "SCOPES", default_value = "submit,read")]
        scopes: String,
    },
    /// Lists the keys (prefix, tenant, name, scopes, created, last used, revoked).
    List {
        /// Only this tenant's keys.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
    },
    /// Revokes a key: requests with it get 401 `api_key_revoked` from then on.
    Revoke {
        /// The key's prefix (`mik_1a2b3c4d`, as `keys list` shows it) or the whole key.
        prefix: String,
    },
}

/// Runs a `keys` command against the configured database (migrated first).
pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (jobs, store) = Backends::connect_database(config).await?;
    jobs.migrate().await.context("migrating the database")?;
    match command {
        KeysCommand::Create {
            tenant,
            name,
            scopes,
        } => {
            let scopes = tenant::parse_scopes(&scopes)
                .map_err(anyhow::Error::msg)
                .context("--scopes")?;
            let created = create_api_key(store.as_ref(), &tenant, &name, &scopes).await?;
            println!("{}", created.secret.expose());
            eprintln!(
                "Created API key {} for tenant {} with scopes {}.\n\
                 This is the only time the key is shown: it cannot be shown again. Store it now.",
                created.record.prefix,
                created.record.tenant_name,
                scope_list(&created.record.scopes)
            );
            Ok(())
        }
        KeysCommand::List { tenant } => list(store.as_ref(), tenant.as_deref()).await,
        KeysCommand::Revoke { prefix } => {
            let prefix = keys::prefix_of(&prefix).with_context(|| {
                format!("{prefix:?} is neither a key prefix (mik_1a2b3c4d) nor a key")
            })?;
            let Some(key) = store.revoke_key(&prefix).await? else {
                bail!("there is no API key {prefix} (`medinform keys list` shows them)");
            };
            println!(
                "Revoked API key {} of tenant {} (revoked {}).",
                key.prefix,
                key.tenant_name,
                shown_time(key.revoked_at)
            );
            Ok(())
        }
    }
}

async fn list(store: &dyn TenantStore, tenant: Option<&str>) -> anyhow::Result<()> {
    let tenant_id = match tenant {
        None => None,
        Some(name) => Some(
            store
                .tenant_by_name(name)
                .await?
                .with_context(|| format!("there is no tenant {name:?}"))?
                .id,
        ),
    };
    let keys = store.list_keys(tenant_id).await?;
    let rows: Vec<[String; 7]> = keys.iter().map(row).collect();
    let header = [
        "PREFIX",
        "TENANT",
        "NAME",
        "SCOPES",
        "CREATED",
        "LAST USED",
        "REVOKED",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if rows.is_empty() {
        eprintln!("No API keys yet: `medinform keys create --tenant NAME` makes one.");
    }
    Ok(())
}

fn row(key: &ApiKey) -> [String; 7] {
    [
        key.prefix.clone(),
        key.tenant_name.clone(),
        if key.name.is_empty() {
            "-".into()
        } else {
            key.name.clone()
        },
        scope_list(&key.scopes),
        shown_time(Some(key.created_at)),
        shown_time(key.last_used_at),
        shown_time(key.revoked_at),
    ]
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn shown_time(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}
