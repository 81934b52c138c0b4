//! The images of one multi-image request, accepted one at a time into one batch: a refused
//! image is listed and the others still go in.

use axum::extract::Multipart;
use medinform_core::batch::Batch;
use medinform_core::job::BatchId;
use medinform_core::view::JobView;
use serde::Serialize;

use crate::auth::Caller;
use crate::fields::ClientReference;
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

/// Accepts the images of one request into one batch, one at a time (memory holds one image).
pub(super) struct Images {
    model: (std::sync::Arc<medinform_core::registry::Model>, String),
    batch: BatchId,
    /// The batch's site, which its jobs take.
    site: Option<String>,
    index: usize,
    /// The request's, when it has an `Idempotency-Key`: each image's job is keyed by its index.
    submission: Option<SubmissionKey>,
}

impl Images {
    pub(super) fn new(
        model: (std::sync::Arc<medinform_core::registry::Model>, String),
        batch: &Batch,
        submission: Option<SubmissionKey>,
    ) -> Self {
        Self {
            model,
            batch: batch.id,
            site: batch.site.clone(),
            index: 0,
            submission,
        }
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
        Ok(())
    }

    /// One image: a job, or a rejection that leaves the others alone. Errors of the service
    /// itself (database, storage down) end the request.
    pub(super) async fn take(
        &mut self,
        state: &AppState,
        caller: &Caller,
        field: axum::extract::multipart::Field<'_>,
        reference: Option<String>,
        out: &mut Submitted,
    ) -> Result<(), ApiError> {
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
        let outcome = match image.and_then(|image| reference.map(|r| (image, r))) {
            Ok(_) if index >= MAX_IMAGES_PER_REQUEST => Err(ApiError::new(
                ErrorCode::InvalidField,
                format!(
                    "A request carries at most {MAX_IMAGES_PER_REQUEST} images; send the rest in \
                     another request."
                ),
            )),
            // A full backlog refuses this image (listed in `rejected`), not those before it.
            Ok((image, reference)) => match crate::admission::check_backlog(state, 1).await {
                Ok(()) => {
                    let metadata = Metadata {
                        client_reference: reference,
                        site: self.site.clone(),
                        ..Metadata::default()
                    };
                    submit::accept(
                        state,
                        caller,
                        &self.model,
                        Some(self.batch),
                        image,
                        metadata,
                        self.submission.as_ref().map(|key| key.part(index)),
                    )
                    .await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(job) => out.jobs.push(job.into()),
            Err(ApiError::Client { code, message, .. }) => out.rejected.push(Rejected {
                index,
                file_name,
                error: crate::ErrorDetail {
                    code: code.as_str(),
                    message,
                },
            }),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
