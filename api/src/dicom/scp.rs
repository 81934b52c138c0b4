//! The DICOM C-STORE and C-ECHO service (DIMSE over TCP, PS3.7 and PS3.8), to which modalities
//! and PACS send images: on `dicom.listen`, as the AE title `dicom.ae_title`.
//!
//! - **Who.** An association is accepted when its called AE title is `dicom.ae_title` and its
//!   calling AE title one of `dicom.callers` whose tenant exists (tenants are made by `medinform
//!   keys create --tenant`); any other is rejected (A-ASSOCIATE-RJ, permanent: "called AE title
//!   not recognized", "calling AE title not recognized"). Its instances belong to the caller's
//!   tenant.
//! - **What.** Verification (C-ECHO) and the image storage SOP classes of
//!   [`STORAGE_SOP_CLASSES`], each in exactly the transfer syntaxes the service decodes
//!   ([`decoded_transfer_syntaxes`]): a presentation context that proposes none of them is
//!   rejected ("transfer syntaxes not supported"), so that the sender converts the image or
//!   fails at once rather than sending what would be refused.
//! - **How.** Each C-STORE's data set becomes a Part 10 file, taken by the association's one
//!   [`Ingest`]: the instances of a study sent in one association go to one batch per model,
//!   which does not complete (nor is announced) before the association ends. The C-STORE-RSP
//!   status is 0000 when the instance is stored, else the code of its
//!   [`FailureReason`] with the reason in Error Comment (0000,0902).
//! - **Limits.** `dicom.max_associations` at once: the next connection is accepted only when an
//!   association ends, so that more wait (in the listen backlog) for a free one; PDUs of at most
//!   [`MAX_PDU_LENGTH`] bytes; a data set over `limits.max_upload_bytes` is read, dropped and
//!   answered A700; the association request must come within [`REQUEST_TIMEOUT`] and each next
//!   PDU within [`IDLE_TIMEOUT`].
//! - **Shutdown.** No connection is accepted any more; an association finishes the operation it
//!   is in (the C-STORE being received or taken is answered), then this side releases it
//!   (A-RELEASE); one still open after `server.shutdown_grace_secs` is closed.
//!
//! Patient identity is never logged: only AE titles, SOP Instance UIDs and statuses.

mod callers;
mod dimse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::DefaultNegotiation;
use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::{Pdu, ServerAssociationOptions};
use medinform_core::config::DicomConfig;
use medinform_core::imaging::dicom::decoded_transfer_syntaxes;
use medinform_core::tenant::{Scope, TenantId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::callers::{CallerTenants, Gate, TenantIds};
use self::dimse::{Command, DataSet, Incoming, Request};
use super::{FailureReason, Ingest, Outcome};
use crate::AppState;
use crate::auth::Caller;

/// The largest PDU taken (the Maximum Length announced): large enough that an image arrives in
/// few PDUs, small enough that a connection holds little memory before its data set.
const MAX_PDU_LENGTH: u32 = 128 * 1024;
/// How long a connection may take to send its association request (PS3.8's ARTIM timer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an association may stay silent, in an operation or between two: a sender that died
/// without closing its connection gives its place back.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long sending a PDU may take (a caller that stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the caller has to answer the release that a shutdown asks for.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The storage SOP classes negotiated: the single-frame images whose pixels the service reads.
/// Radiographs (the chest models), photographs and microscopy (malaria, skin, retina) and the
/// common cross-sectional images (stored, and screened where a rule routes them). A multi-frame
/// object, a structured report or a presentation state is not negotiated ("abstract syntax not
/// supported").
const STORAGE_SOP_CLASSES: &[&str] = &[
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::DIGITAL_INTRA_ORAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_INTRA_ORAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    uids::CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::NUCLEAR_MEDICINE_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::VL_ENDOSCOPIC_IMAGE_STORAGE,
    uids::VL_MICROSCOPIC_IMAGE_STORAGE,
    uids::VL_SLIDE_COORDINATES_MICROSCOPIC_IMAGE_STORAGE,
    uids::VL_PHOTOGRAPHIC_IMAGE_STORAGE,
    uids::OPHTHALMIC_PHOTOGRAPHY8_BIT_IMAGE_STORAGE,
    uids::OPHTHALMIC_PHOTOGRAPHY16_BIT_IMAGE_STORAGE,
    uids::DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE,
];

/// A bound, not yet serving, DICOM service (so that tests can bind port 0 and learn the
/// address).
pub struct DicomServer {
    listener: TcpListener,
    state: AppState,
}

impl DicomServer {
    pub async fn bind(addr: SocketAddr, state: AppState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding dicom.listen {addr}"))?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`, then stops accepting and lets the open associations finish
    /// their operation and be released, for up to `grace`.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let Self { listener, state } = self;
        let service = Arc::new(Service {
            state,
            tenants: CallerTenants::default(),
        });
        let config = service.config();
        tracing::info!(%addr, ae_title = %config.ae_title, "DICOM service listening");
        let free = Arc::new(Semaphore::new(config.max_associations));
        let mut associations = JoinSet::new();
        loop {
            let place = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                place = free.clone().acquire_owned() => place.context("the association bound")?,
            };
            let (socket, peer) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accepting a DICOM connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            while associations.try_join_next().is_some() {}
            let span = tracing::info_span!(
                "dicom_association",
                %peer,
                calling_ae = tracing::field::Empty
            );
            let service = service.clone();
            let stop = shutdown.clone();
            associations.spawn(
                async move {
                    service.associate(socket, stop).await;
                    drop(place);
                }
                .instrument(span),
            );
        }
        drop(listener);
        let finished = tokio::time::timeout(grace, async {
            while associations.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                open = associations.len(),
                "DICOM associations still open after the grace period; closing them"
            );
            associations.shutdown().await;
        }
        tracing::info!("DICOM service stopped");
        Ok(())
    }
}

/// What every association shares.
struct Service {
    state: AppState,
    tenants: CallerTenants,
}

impl Service {
    fn config(&self) -> &DicomConfig {
        &self.state.dicom
    }

    /// Negotiates an association on `socket` and serves it until it is released or aborted.
    async fn associate(&self, socket: TcpStream, shutdown: CancellationToken) {
        let tenants = self.tenants.look_up(&self.state).await;
        let options = self.options(tenants.clone());
        let request = tokio::time::timeout(REQUEST_TIMEOUT, options.establish_async(socket));
        let established = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            established = request => established,
        };
        let association = match established {
            Ok(Ok(association)) => association,
            // A rejection is logged by the gate; anything else is not a DICOM peer.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no association");
                return;
            }
            Err(_) => {
                tracing::debug!("no association request in time");
                return;
            }
        };
        let calling_ae = association.peer_ae_title().to_owned();
        tracing::Span::current().record("calling_ae", calling_ae.as_str());
        // The gate let it in, so its tenant is known.
        let Some(tenant) = tenants.of(self.config(), &calling_ae) else {
            let _ = association.abort().await;
            return;
        };
        let contexts = association.presentation_contexts();
        let accepted = contexts
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        for refused in contexts
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::TransferSyntaxesNotSupported)
        {
            tracing::info!(
                sop_class = %refused.abstract_syntax,
                "presentation context rejected: it proposes no transfer syntax the service decodes"
            );
        }
        tracing::info!(accepted, proposed = contexts.len(), "association accepted");
        self.serve_association(association, calling_ae, tenant, shutdown)
            .await;
    }

    /// The negotiation: who may associate, the SOP classes and transfer syntaxes, the limits.
    fn options(
        &self,
        tenants: TenantIds,
    ) -> ServerAssociationOptions<'static, Gate, DefaultNegotiation> {
        let config = self.config();
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(Gate {
                config: self.state.dicom.clone(),
                tenants,
            })
            .ae_title(config.ae_title.clone())
            .max_pdu_length(MAX_PDU_LENGTH)
            .write_timeout(WRITE_TIMEOUT)
            .with_abstract_syntax(uids::VERIFICATION);
        for sop_class in STORAGE_SOP_CLASSES {
            options = options.with_abstract_syntax(*sop_class);
        }
        for transfer_syntax in decoded_transfer_syntaxes() {
            options = options.with_transfer_syntax(transfer_syntax);
        }
        options
    }

    /// Answers the requests of an association until it ends. A shutdown between two operations
    /// releases it.
    async fn serve_association(
        &self,
        mut association: AsyncServerAssociation<TcpStream>,
        calling_ae: String,
        tenant: TenantId,
        shutdown: CancellationToken,
    ) {
        let caller = Caller {
            tenant,
            scopes: vec![Scope::Submit],
            key_prefix: None,
        };
        let mut ingest = Ingest::new(self.state.clone(), caller, None);
        let mut incoming = Incoming::new(self.state.limits.max_bytes);
        loop {
            let next = tokio::time::timeout(IDLE_TIMEOUT, association.receive());
            let received = if incoming.is_idle() {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return release(association).await,
                    received = next => received,
                }
            } else {
                next.await
            };
            let pdu = match received {
                Ok(Ok(pdu)) => pdu,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "association ended without a release");
                    return;
                }
                Err(_) => {
                    tracing::info!(timeout = ?IDLE_TIMEOUT, "association silent too long: aborted");
                    let _ = association.abort().await;
                    return;
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for fragment in data {
                        let outcome = match incoming.push(fragment) {
                            Ok(None) => continue,
                            Ok(Some(request)) => {
                                self.answer(&mut association, &calling_ae, &mut ingest, request)
                                    .await
                            }
                            Err(violation) => Err(anyhow::anyhow!(violation)),
                        };
                        if let Err(e) = outcome {
                            tracing::warn!(error = %format!("{e:#}"), "association aborted");
                            let _ = association.abort().await;
                            return;
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if let Err(e) = association.send(&Pdu::ReleaseRP).await {
                        tracing::debug!(error = %e, "answering the release failed");
                    }
                    tracing::info!("association released");
                    return;
                }
                Pdu::AbortRQ { source } => {
                    tracing::info!(?source, "association aborted by the caller");
                    return;
                }
                other => {
                    tracing::warn!(
                        pdu = %other.short_description(),
                        "unexpected PDU: association aborted"
                    );
                    let _ = association.abort().await;
                    return;
                }
            }
        }
    }

    /// Carries out one request and sends its response. An error is a protocol violation or a
    /// connection that failed: the association is aborted.
    async fn answer(
        &self,
        association: &mut AsyncServerAssociation<TcpStream>,
        calling_ae: &str,
        ingest: &mut Ingest,
        request: Request,
    ) -> anyhow::Result<()> {
        let Request {
            presentation_context_id: id,
            command,
            data_set,
        } = request;
        let transfer_syntax = association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == id && pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| pc.transfer_syntax.clone())
            .with_context(|| format!("a request on presentation context {id}, not accepted"))?;
        let (status, comment) = match (command.field, data_set) {
            (dimse::C_ECHO_RQ, _) => (dimse::SUCCESS, None),
            (dimse::C_STORE_RQ, DataSet::Received(data_set)) => {
                self.store(ingest, &command, &transfer_syntax, calling_ae, data_set)
                    .await
            }
            (dimse::C_STORE_RQ, DataSet::TooLarge(bytes)) => {
                let reason = FailureReason::OutOfResources;
                log_store(&command, reason.code(), 0);
                let message =
                    format!("The instance ({bytes} bytes) is over limits.max_upload_bytes.");
                (reason.code(), Some(message))
            }
            (dimse::C_STORE_RQ, DataSet::None) => {
                let reason = FailureReason::CannotUnderstand;
                log_store(&command, reason.code(), 0);
                (
                    reason.code(),
                    Some("The C-STORE request has no data set.".to_owned()),
                )
            }
            (field, _) => {
                tracing::info!(
                    command = %format!("{field:04X}H"),
                    "an operation the service does not provide"
                );
                (dimse::UNRECOGNIZED_OPERATION, None)
            }
        };
        let response = dimse::response(id, &command, status, comment.as_deref())?;
        association
            .send(&Pdu::PData {
                data: vec![response],
            })
            .await
            .context("sending the response")
    }

    /// Takes a C-STORE's data set: its status, and the reason in words when it failed.
    async fn store(
        &self,
        ingest: &mut Ingest,
        command: &Command,
        transfer_syntax: &str,
        calling_ae: &str,
        data_set: Vec<u8>,
    ) -> (u16, Option<String>) {
        let file = match dimse::part10(
            command,
            transfer_syntax,
            calling_ae,
            &self.config().ae_title,
            &data_set,
        ) {
            Ok(file) => file,
            Err(e) => {
                let reason = FailureReason::CannotUnderstand;
                log_store(command, reason.code(), 0);
                return (
                    reason.code(),
                    Some(format!("No file meta group can be made: {e}")),
                );
            }
        };
        drop(data_set);
        match ingest.take(Bytes::from(file)).await {
            Outcome::Stored { jobs, .. } => {
                log_store(command, dimse::SUCCESS, jobs.len());
                (dimse::SUCCESS, None)
            }
            Outcome::Failed {
                reason, message, ..
            } => {
                log_store(command, reason.code(), 0);
                (reason.code(), Some(message))
            }
        }
    }
}

/// One C-STORE in the log: the instance's UID and the status, never what the data set holds.
fn log_store(command: &Command, status: u16, jobs: usize) {
    tracing::info!(
        sop_instance_uid = %command.sop_instance_uid,
        status = %format!("{status:04X}"),
        jobs,
        "C-STORE"
    );
}

/// Releases the association from this side (a shutdown); closes it when the caller does not
/// answer in time.
async fn release(association: AsyncServerAssociation<TcpStream>) {
    match tokio::time::timeout(RELEASE_TIMEOUT, association.release()).await {
        Ok(Ok(())) => tracing::info!("association released for the shutdown"),
        Ok(Err(e)) => tracing::info!(error = %e, "association closed for the shutdown"),
        Err(_) => tracing::info!("association closed for the shutdown: no release answer"),
    }
}
