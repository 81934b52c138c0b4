//! The images of one multi-image request, accepted one at a time into one batch: a refused
//! image is listed and the others still go in.

use std::sync::Arc;

use axum::extract::Multipart;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use medinform_core::batch::Batch;
use medinform_core::job::{BatchId, Job, Priority};
use medinform_core::queue::bulk_rank;
use medinform_core::registry::Model;
use medinform_core::view::JobView;
use serde::Serialize;

use crate::auth::Caller;
use crate::fields::ClientReference;
use crate::hold::BatchHold;
use crate::idempotency::SubmissionKey;
use crate::routes::submit::{self, Metadata};
use crate::{ApiError, AppState, ErrorCode};

/// Most images one request may carry; the rest of the request is refused image by image.
pub const MAX_IMAGES_PER_REQUEST: usize = 500;

/// The jobs a multi-image request created, and the images it refused.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Submitted {
    pub jobs: Vec<JobView>,
    pub rejected: Vec<Rejected>,
}

/// An image of a multi-image request that was refused; the others were still accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// Position of the image among the request's images, from 0.
    pub index: usize,
    pub file_name: Option<String>,
    pub error: crate::ErrorDetail,
}

/// Images of one request accepted at once: each waits on its image file's and its job's
/// durable writes, so a few in flight keep the request moving, while memory holds no more than
/// these images.
const IMAGES_IN_FLIGHT: usize = 4;

/// Accepts the images of one request into one batch, a few at a time ([`IMAGES_IN_FLIGHT`]),
/// answering them in the request's order.
pub(super) struct Images {
    model: (Arc<Model>, String),
    batch: BatchId,
    /// The batch's site, which its jobs take.
    site: Option<String>,
    index: usize,
    /// The request's, when it has an `Idempotency-Key`: each image's job is keyed by its index.
    submission: Option<SubmissionKey>,
    in_flight: FuturesOrdered<BoxFuture<'static, Taken>>,
    /// Keeps the batch from completing until the last image is in; `None` once let go.
    hold: Option<BatchHold>,
}

/// An image of the request once it is read: where it stands in the request, and its outcome.
struct Taken {
    index: usize,
    file_name: Option<String>,
    outcome: Result<Job, ApiError>,
}

/// An image as read from the form, with its client reference, or why it cannot be taken.
type Read = Result<(Bytes, Option<String>), ApiError>;

impl Images {
    /// Ready to take images into `batch`, which stays open until [`finish`](Self::finish).
    pub(super) async fn open(
        state: &AppState,
        model: (Arc<Model>, String),
        batch: &Batch,
        submission: Option<SubmissionKey>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            model,
            batch: batch.id,
            site: batch.site.clone(),
            index: 0,
            submission,
            in_flight: FuturesOrdered::new(),
            hold: Some(BatchHold::take(state, batch.id).await?),
        })
    }

    /// Every field of the form: a `client_reference` names the next image.
    pub(super) async fn all(
        &mut self,
        state: &AppState,
        caller: &Caller,
        form: &mut Multipart,
        out: &mut Submitted,
    ) -> Result<(), ApiError> {
        let mut reference = None;
        while let Some(field) = form.next_field().await.map_err(submit::multipart_error)? {
            match field.name() {
                Some("image") => {
                    self.take(state, caller, field, reference.take(), out)
                        .await?;
                }
                Some("client_reference") => {
                    let value = submit::read_text(field, "client_reference").await?;
                    reference = ClientReference::parse(&value)?.map(String::from);
                }
                _ => {}
            }
        }
        self.finish(out).await
    }

    /// Reads one image and starts accepting it, once fewer than [`IMAGES_IN_FLIGHT`] are in
    /// flight (those that finish are listed in `out`). Errors of the service itself (database,
    /// storage down) end the request.
    pub(super) async fn take(
        &mut self,
        state: &AppState,
        caller: &Caller,
        field: axum::extract::multipart::Field<'_>,
        reference: Option<String>,
        out: &mut Submitted,
    ) -> Result<(), ApiError> {
        if self.in_flight.len() >= IMAGES_IN_FLIGHT
            && let Some(taken) = self.in_flight.next().await
        {
            self.list(taken, out)?;
        }
        let index = self.index;
        self.index += 1;
        let file_name = field.file_name().map(str::to_owned);
        let image = submit::read_image(field, state.limits.max_bytes).await;
        // Without a client_reference of its own, an image is known by its file name, which
        // must then be one.
        let reference = match (reference, file_name.as_deref()) {
            (Some(reference), _) => Ok(Some(reference)),
            (None, Some(name)) => {
                ClientReference::from_file_name(name).map(|r| r.map(String::from))
            }
            (None, None) => Ok(None),
        };
        let read = image.and_then(|image| reference.map(|r| (image, r)));
        // A task of its own, so that it goes on while the next image is read.
        let accepting = tokio::spawn(self.accept(state.clone(), caller.clone(), index, read));
        self.in_flight.push_back(Box::pin(async move {
            Taken {
                index,
                file_name,
                outcome: accepting
                    .await
                    .unwrap_or_else(|e| Err(ApiError::Internal(e.into()))),
            }
        }));
        Ok(())
    }

    /// Waits for the images still in flight, lists them in `out`, and lets go of the batch.
    pub(super) async fn finish(&mut self, out: &mut Submitted) -> Result<(), ApiError> {
        while let Some(taken) = self.in_flight.next().await {
            self.list(taken, out)?;
        }
        match self.hold.take() {
            Some(hold) => hold.release().await,
            None => Ok(()),
        }
    }

    /// Lists an image's job, or its refusal; errors of the service itself (database, storage
    /// down) end the request.
    fn list(&mut self, taken: Taken, out: &mut Submitted) -> Result<(), ApiError> {
        match taken.outcome {
            Ok(job) => {
                if let Some(hold) = &mut self.hold {
                    hold.added();
                }
                out.jobs.push(job.into());
            }
            Err(ApiError::Client { code, message, .. }) => out.rejected.push(Rejected {
                index: taken.index,
                file_name: taken.file_name,
                error: crate::ErrorDetail {
                    code: code.as_str(),
                    message,
                },
            }),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// One image's job, or why it was refused.
    fn accept(
        &self,
        state: AppState,
        caller: Caller,
        index: usize,
        read: Read,
    ) -> impl Future<Output = Result<Job, ApiError>> + Send + 'static {
        let model = self.model.clone();
        let batch = self.batch;
        let site = self.site.clone();
        let submission_key = self.submission.as_ref().map(|key| key.part(index));
        async move {
            let (image, reference) = read?;
            if index >= MAX_IMAGES_PER_REQUEST {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!(
                        "A request carries at most {MAX_IMAGES_PER_REQUEST} images; send the \
                         rest in another request."
                    ),
                ));
            }
            // A full backlog refuses this image (listed in `rejected`), not those before it.
            let tenant_queued = crate::admission::check_backlog(&state, caller.tenant, 1, true)
                .await?
                .unwrap_or(0);
            let metadata = Metadata {
                client_reference: reference,
                site,
                priority: Priority::Bulk,
                rank: bulk_rank(tenant_queued),
                ..Metadata::default()
            };
            submit::accept(
                &state,
                &caller,
                &model,
                Some(batch),
                image,
                metadata,
                submission_key,
            )
            .await
        }
    }
}

/// A request that ends before its images are all in (an error, or a client gone) lets go of the
/// batch once those already being accepted are, so that none of them is left out of it.
impl Drop for Images {
    fn drop(&mut self) {
        let Some(mut hold) = self.hold.take() else {
            return;
        };
        let mut in_flight = std::mem::take(&mut self.in_flight);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while let Some(taken) = in_flight.next().await {
                    if taken.outcome.is_ok() {
                        hold.added();
                    }
                }
                if let Err(e) = hold.release().await {
                    tracing::warn!(error = %e, "could not let go of a batch: its hold lapses with its lease");
                }
            });
        }
    }
}
