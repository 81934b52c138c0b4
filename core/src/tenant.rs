//! Tenants: every job, batch and webhook belongs to one, and an API key sees only its own.

pub mod keys;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

crate::id::uuid_id! {
    /// The id of a tenant.
    TenantId
}

impl TenantId {
    /// The tenant of the embedded single-machine mode: requests without a key on loopback act
    /// for it, and the migrations give it every job that existed before tenants did.
    pub const LOCAL: TenantId = TenantId(Uuid::nil());

    /// The name of the [`TenantId::LOCAL`] tenant (its row comes with the migrations).
    pub const LOCAL_NAME: &'static str = "local";
}

/// What an API key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Submit jobs and batches, cancel them.
    Submit,
    /// Read jobs, batches, exports and models.
    Read,
    /// Manage webhooks and signing secrets; implies `submit` and `read`.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are shown.
    pub const ALL: [Scope; 3] = [Scope::Submit, Scope::Read, Scope::Admin];

    /// The scope's name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "submit" => Ok(Self::Submit),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope {other:?} (expected submit, read or admin)"
            )),
        }
    }
}

/// Whether `granted` allows `wanted` (`admin` allows everything).
pub fn allows(granted: &[Scope], wanted: Scope) -> bool {
    granted.contains(&wanted) || granted.contains(&Scope::Admin)
}

/// A tenant: an organisation, or a screening programme, whose data no other tenant's key sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    /// Unique, chosen by the administrator (`medinform keys create --tenant NAME`).
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Checks a tenant name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant name {name:?} is not accepted: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
        ))
    }
}

/// What is stored of an API key: never the key itself, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    /// A label chosen by the administrator ("camp 7 laptop").
    pub name: String,
    /// The shown start of the key, `mik_1a2b3c4d`: in lists and logs.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    /// The last request made with it, to about a minute ([`crate::db::KEY_USE_RESOLUTION`]).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key was revoked: it authenticates no request any more.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Parses a comma-separated scope list (`submit,read`), refusing an empty one.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope: Scope = part.parse()?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("no scope given (expected submit, read and/or admin)".into());
    }
    scopes.sort();
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_and_others_only_themselves() {
        assert!(allows(&[Scope::Admin], Scope::Submit));
        assert!(allows(&[Scope::Admin], Scope::Read));
        assert!(allows(&[Scope::Read], Scope::Read));
        assert!(!allows(&[Scope::Read], Scope::Submit));
        assert!(!allows(&[Scope::Submit, Scope::Read], Scope::Admin));
    }

    #[test]
    fn scope_lists_parse_deduplicated_and_refuse_unknown_or_empty() {
        assert_eq!(
            parse_scopes("read, submit,read").unwrap(),
            vec![Scope::Submit, Scope::Read]
        );
        assert!(parse_scopes("read,write").unwrap_err().contains("write"));
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn tenant_names_are_short_and_plain() {
        assert!(validate_tenant_name("tb-drive_2026.north").is_ok());
        for bad in ["", "two words", "a/b", &"x".repeat(65)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
        }
    }
}
