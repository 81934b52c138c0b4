//! Who may associate with the C-STORE service, checked on the A-ASSOCIATE-RQ, and the tenant
//! each caller's instances belong to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use medinform_core::config::DicomConfig;
use medinform_core::tenant::TenantId;

use crate::AppState;

/// Who may associate, checked on the A-ASSOCIATE-RQ: the called AE title must be
/// `dicom.ae_title` and the calling one a key of `dicom.callers` whose tenant exists.
pub struct Gate {
    pub config: Arc<DicomConfig>,
    pub tenants: TenantIds,
}

impl AccessControl for Gate {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        // As `dicom.callers`, without regard to case or surrounding spaces.
        if !called_ae_title
            .trim()
            .eq_ignore_ascii_case(self.config.ae_title.trim())
        {
            tracing::warn!(
                calling_ae = calling_ae_title,
                called_ae = called_ae_title,
                "association rejected: the called AE title is not dicom.ae_title"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let Some(tenant) = self.config.caller_tenant(calling_ae_title) else {
            tracing::warn!(
                calling_ae = calling_ae_title,
                "association rejected: the calling AE title is not in dicom.callers"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        };
        if self.tenants.ids.contains_key(tenant) {
            return Ok(());
        }
        if self.tenants.lookup_failed {
            tracing::warn!(
                calling_ae = calling_ae_title,
                tenant,
                "association rejected: the caller's tenant cannot be looked up now"
            );
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        }
        tracing::warn!(
            calling_ae = calling_ae_title,
            tenant,
            "association rejected: the caller's tenant in dicom.callers does not exist \
             (make it with `medinform keys create --tenant`)"
        );
        Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
    }
}

/// The tenants of `dicom.callers`, by name: looked up at each association until found, then
/// kept (a tenant is never deleted), so that one made after start-up is served without a
/// restart.
#[derive(Default)]
pub struct CallerTenants {
    found: Mutex<HashMap<String, TenantId>>,
}

/// The tenants known when an association request arrives.
#[derive(Clone)]
pub struct TenantIds {
    ids: HashMap<String, TenantId>,
    /// A lookup failed (the database is unreachable).
    lookup_failed: bool,
}

impl TenantIds {
    /// The tenant of a calling AE title.
    pub fn of(&self, config: &DicomConfig, calling_ae_title: &str) -> Option<TenantId> {
        let name = config.caller_tenant(calling_ae_title)?;
        self.ids.get(name).copied()
    }
}

impl CallerTenants {
    /// The tenants of `dicom.callers` that exist now.
    pub async fn look_up(&self, state: &AppState) -> TenantIds {
        let mut missing: Vec<String> = {
            let found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .dicom
                .callers
                .values()
                .filter(|name| !found.contains_key(name.as_str()))
                .cloned()
                .collect()
        };
        missing.sort();
        missing.dedup();
        let mut lookup_failed = false;
        for name in missing {
            match state.backends.tenants.tenant_by_name(&name).await {
                Ok(Some(tenant)) => {
                    self.found
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name, tenant.id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        tenant = %name,
                        error = %e,
                        "looking up a DICOM caller's tenant failed"
                    );
                    lookup_failed = true;
                }
            }
        }
        let ids = self
            .found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TenantIds { ids, lookup_failed }
    }
}
