//! DICOM instances that PACS and modalities send (DICOMweb STOW-RS, DIMSE C-STORE): each is
//! routed to models by `dicom.routes`, screened as a job of the study's batch for that model, or
//! stored and reported when no rule takes it.
//!
//! One [`Ingest`] serves one STOW-RS request or one C-STORE association: it remembers the
//! batch of each study and model it has used, so that the instances of one study become one
//! batch. Every step is idempotent: an instance sent again (a PACS retry) answers the jobs it
//! already made, and a study's batch is found again by its key.

pub mod scp;

use std::collections::HashMap;

use bytes::Bytes;
use medinform_core::batch::NewBatch;
use medinform_core::imaging::{DicomAttributes, ImageRejection, dicom};
use medinform_core::job::{BatchId, Job, Priority};
use medinform_core::queue::bulk_rank;
use medinform_core::storage::{dicom_instance_key, sha256_hex};

use crate::auth::Caller;
use crate::hold::BatchHold;
use crate::routes::submit::{self, Metadata};
use crate::{ApiError, AppState, ErrorCode};

/// What became of one instance.
#[derive(Debug)]
pub enum Outcome {
    /// Stored: screened by the jobs (one per routed model), or, with none, stored and not
    /// screened because no routing rule takes it.
    Stored {
        instance: InstanceIds,
        jobs: Vec<Job>,
    },
    /// Not stored, with the DICOM failure reason and a message for a person.
    Failed {
        instance: InstanceIds,
        reason: FailureReason,
        message: String,
    },
}

/// The identifiers of an instance (absent when the file could not be read).
#[derive(Debug, Clone, Default)]
pub struct InstanceIds {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
}

/// Why an instance was not stored: the Failure Reason (0008,1197) values of PS3.18 Table I.2-2,
/// which are also C-STORE status codes (PS3.4 Table B.2-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// `A700`: out of resources (the backlog is full, a backend is down).
    OutOfResources,
    /// `A900`: the data set does not match what was asked (another study than the path's, an
    /// image a routed model does not read).
    DataSetMismatch,
    /// `C000`: cannot understand (not DICOM, damaged, no image, an unread pixel layout).
    CannotUnderstand,
    /// `C122`: the instance's transfer syntax is not decoded.
    TransferSyntaxNotSupported,
    /// `0110`: a general processing failure (a routed model that cannot run).
    ProcessingFailure,
}

impl FailureReason {
    /// The code, for the DICOM JSON response and the C-STORE status.
    pub fn code(self) -> u16 {
        match self {
            Self::OutOfResources => 0xA700,
            Self::DataSetMismatch => 0xA900,
            Self::CannotUnderstand => 0xC000,
            Self::TransferSyntaxNotSupported => 0xC122,
            Self::ProcessingFailure => 0x0110,
        }
    }

    fn of(error: &ApiError) -> Self {
        match error.code() {
            ErrorCode::UnsupportedTransferSyntax => Self::TransferSyntaxNotSupported,
            ErrorCode::ModalityMismatch => Self::DataSetMismatch,
            ErrorCode::QueueFull | ErrorCode::ServiceUnavailable | ErrorCode::ImageTooLarge => {
                Self::OutOfResources
            }
            ErrorCode::UnknownModel
            | ErrorCode::ModelUnavailable
            | ErrorCode::ModelResearchOnly
            | ErrorCode::InternalError => Self::ProcessingFailure,
            _ => Self::CannotUnderstand,
        }
    }
}

/// Takes the instances of one request or association for one tenant.
pub struct Ingest {
    state: AppState,
    caller: Caller,
    /// The study a STOW-RS request names in its path: instances of another are refused.
    study: Option<String>,
    /// The batch of each (study, model) this ingest has used, held open while the request or
    /// association lasts (the study may have more instances to come).
    batches: HashMap<(String, String), BatchHold>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("tenant", &self.caller.tenant)
            .field("study", &self.study)
            .field("batches", &self.batches().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(state: AppState, caller: Caller, study: Option<String>) -> Self {
        Self {
            state,
            caller,
            study,
            batches: HashMap::new(),
        }
    }

    /// The batches the instances went to, by study and model.
    pub fn batches(&self) -> impl Iterator<Item = BatchId> + '_ {
        self.batches.values().map(BatchHold::batch)
    }

    /// Routes, stores and screens one instance.
    pub async fn take(&mut self, bytes: Bytes) -> Outcome {
        let header = bytes.clone();
        let read = tokio::task::spawn_blocking(move || {
            let file = dicom::parse(&header)?;
            Ok::<_, ImageRejection>(file.attributes())
        })
        .await;
        let attributes = match read {
            Ok(Ok(attributes)) => attributes,
            Ok(Err(rejection)) => {
                let error = ApiError::from(rejection);
                return Outcome::Failed {
                    instance: InstanceIds::default(),
                    reason: FailureReason::of(&error),
                    message: error.to_string(),
                };
            }
            Err(e) => return failed_internally(InstanceIds::default(), e.into()),
        };
        let instance = InstanceIds {
            sop_class_uid: attributes.sop_class_uid.clone(),
            sop_instance_uid: attributes.sop_instance_uid.clone(),
        };
        if let Some(study) = &self.study
            && attributes.study_instance_uid.as_deref() != Some(study.as_str())
        {
            return Outcome::Failed {
                instance,
                reason: FailureReason::DataSetMismatch,
                message: format!(
                    "The instance belongs to study {}, not to the study {study} of the request's path.",
                    attributes.study_instance_uid.as_deref().unwrap_or("(none)")
                ),
            };
        }
        let models: Vec<String> = self
            .state
            .dicom
            .route(
                attributes.modality.as_deref(),
                attributes.body_part_examined.as_deref(),
            )
            .into_iter()
            .map(str::to_owned)
            .collect();
        if models.is_empty() {
            return match self.store_unrouted(bytes, &attributes).await {
                Ok(()) => Outcome::Stored {
                    instance,
                    jobs: Vec::new(),
                },
                Err(error) => failed(instance, error),
            };
        }
        let mut jobs = Vec::with_capacity(models.len());
        for model in models {
            match self.screen(&model, bytes.clone(), &attributes).await {
                Ok(job) => jobs.push(job),
                // An instance is stored by all its models or reported failed; the jobs of the
                // models before stay (their results are valid), and a retry answers them.
                Err(error) => return failed(instance, error),
            }
        }
        Outcome::Stored { instance, jobs }
    }

    /// One routed model's job for the instance, in the study's batch for that model.
    async fn screen(
        &mut self,
        model: &str,
        bytes: Bytes,
        attributes: &DicomAttributes,
    ) -> Result<Job, ApiError> {
        let ready = submit::ready_model(&self.state, model)?;
        let key = attributes
            .study_instance_uid
            .as_ref()
            .map(|study| (study.clone(), model.to_owned()));
        let batch = match &key {
            Some(key) => Some(self.batch(key).await?),
            None => None,
        };
        let tenant_queued =
            crate::admission::check_backlog(&self.state, self.caller.tenant, 1, true)
                .await?
                .unwrap_or(0);
        let metadata = Metadata {
            client_reference: attributes.accession_number.clone(),
            priority: Priority::Bulk,
            rank: bulk_rank(tenant_queued),
            ..Metadata::default()
        };
        // The same instance sent again for the same model answers its job.
        let submission_key = attributes
            .sop_instance_uid
            .as_ref()
            .map(|uid| format!("dicom:{uid}:{model}"));
        let job = submit::accept(
            &self.state,
            &self.caller,
            &ready,
            batch,
            bytes,
            metadata,
            submission_key,
        )
        .await?;
        if let Some(hold) = key.and_then(|key| self.batches.get_mut(&key)) {
            hold.added();
        }
        Ok(job)
    }

    /// The batch of a (study, model): opened on the study's first instance (or found, when an
    /// earlier request or association opened it) and held, found again after.
    async fn batch(&mut self, key: &(String, String)) -> Result<BatchId, ApiError> {
        if let Some(hold) = self.batches.get(key) {
            return Ok(hold.batch());
        }
        let (study, model) = key;
        let batch = self
            .state
            .backends
            .batches
            .insert_batch(&NewBatch {
                id: BatchId::new(),
                tenant_id: self.caller.tenant,
                model: model.to_owned(),
                site: None,
                campaign: None,
                operator: None,
                client_reference: Some(format!("study {study}")).filter(|r| r.len() <= 200),
                tags: vec!["dicom".to_owned()],
                submission_key: Some(format!("dicom-study:{study}:{model}")),
            })
            .await?;
        let hold = BatchHold::take(&self.state, batch.id).await?;
        self.batches.insert(key.clone(), hold);
        Ok(batch.id)
    }

    /// Stores an instance no rule routes, under the tenant's patient-data rule, where the
    /// orphan sweep does not look (no job refers to it).
    async fn store_unrouted(
        &self,
        bytes: Bytes,
        attributes: &DicomAttributes,
    ) -> Result<(), ApiError> {
        let rule = submit::patient_data(&self.state, self.caller.tenant).await?;
        let policy = self.state.dicom.clone();
        let attributes = attributes.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let (stored, _) =
                dicom::apply_patient_data(&bytes, &attributes, rule, &policy.pseudonym_key)?;
            Ok::<_, ImageRejection>(stored.map(Bytes::from).unwrap_or(bytes))
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
        let key = dicom_instance_key(&sha256_hex(&stored));
        self.state
            .backends
            .blobs
            .put(&key, stored, "application/dicom")
            .await?;
        tracing::info!(tenant = %self.caller.tenant, "a DICOM instance no routing rule takes was stored, not screened");
        Ok(())
    }
}

fn failed(instance: InstanceIds, error: ApiError) -> Outcome {
    match error {
        ApiError::Internal(e) => return failed_internally(instance, e),
        ApiError::Unavailable(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "a DICOM instance could not be stored"
            );
            return Outcome::Failed {
                instance,
                reason: FailureReason::OutOfResources,
                message: "A database, storage or queue service is unreachable; nothing was \
                          stored. Send the instance again later."
                    .to_owned(),
            };
        }
        ApiError::Client { .. } => {}
    }
    Outcome::Failed {
        instance,
        reason: FailureReason::of(&error),
        message: error.to_string(),
    }
}

fn failed_internally(instance: InstanceIds, error: anyhow::Error) -> Outcome {
    tracing::error!(
        error = format!("{error:#}"),
        "a DICOM instance could not be taken"
    );
    Outcome::Failed {
        instance,
        reason: FailureReason::ProcessingFailure,
        message: "Something failed on the server; it has been logged.".to_owned(),
    }
}
