//! Screening a batch of encoded images with one model: decode, preprocess, one model run.
//!
//! The worker and the `medinform screen` command both come through here, so an image gives the
//! same result whether it was uploaded or screened locally. This is CPU work: call it from a
//! blocking thread, never from the async runtime.

use ndarray::Array3;

use crate::imaging::{self, ImageLimits, ImageRejection};
use crate::job::{FailureCode, JobFailure, Priority, ScreeningResult};
use crate::registry::{InferenceError, Model};

/// Why one image could not be screened.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    /// The bytes are not an image the service reads (it passed the upload's checks only if it
    /// was damaged later, or was screened locally without them). Retrying cannot help.
    #[error("{0}")]
    Image(#[from] ImageRejection),
    /// The model could not run. May be transient (a model being reloaded, a GPU out of memory).
    #[error("{0}")]
    Inference(#[from] InferenceError),
}

impl ScreenError {
    /// The stable code for the job's failure record.
    pub fn code(&self) -> FailureCode {
        match self {
            Self::Image(e) => e.code(),
            Self::Inference(e) => e.code(),
        }
    }

    /// True when another attempt cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Image(_))
    }

    /// The failure as a job records it.
    pub fn to_failure(&self) -> JobFailure {
        JobFailure::new(self.code(), self.to_string())
    }
}

/// Screens `images` with `model`, returning one outcome per image, in order. The images that
/// decode are run together in one batch; if that run fails, each is run alone so that one bad
/// input cannot fail its neighbours. The runs are the interactive lane's (a person waits
/// for them).
pub fn screen<B: AsRef<[u8]>>(
    model: &Model,
    images: &[B],
    limits: &ImageLimits,
) -> Vec<Result<ScreeningResult, ScreenError>> {
    let inputs = images
        .iter()
        .map(|bytes| prepare(model, bytes.as_ref(), limits))
        .collect();
    screen_prepared(model, inputs, Priority::Interactive)
}

/// The model's input for an encoded image: decoded, then preprocessed.
pub fn prepare(
    model: &Model,
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<Array3<f32>, ScreenError> {
    let img = imaging::decode(bytes, limits)?;
    model.check_dicom(&img)?;
    Ok(model.preprocess(&img)?)
}

/// Screens inputs already prepared (or the reason each could not be), returning one outcome
/// per input, in order, as [`screen`] does, on `lane`'s session ([`Model::predict`]).
pub fn screen_prepared(
    model: &Model,
    prepared: Vec<Result<Array3<f32>, ScreenError>>,
    lane: Priority,
) -> Vec<Result<ScreeningResult, ScreenError>> {
    let mut outcomes: Vec<Option<Result<ScreeningResult, ScreenError>>> =
        Vec::with_capacity(prepared.len());
    let mut inputs = Vec::with_capacity(prepared.len());
    let mut slots = Vec::with_capacity(prepared.len());
    for (slot, input) in prepared.into_iter().enumerate() {
        match input {
            Ok(input) => {
                outcomes.push(None);
                inputs.push(input);
                slots.push(slot);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }

    match model.predict(&inputs, lane) {
        Ok(results) => {
            for (slot, result) in slots.into_iter().zip(results) {
                outcomes[slot] = Some(Ok(result));
            }
        }
        Err(e) if inputs.len() == 1 => outcomes[slots[0]] = Some(Err(e.into())),
        Err(e) => {
            tracing::warn!(model = model.id(), error = %e, "batch run failed; running one by one");
            for (slot, input) in slots.into_iter().zip(inputs) {
                let single = model
                    .predict(std::slice::from_ref(&input), lane)
                    .map_err(ScreenError::from)
                    .and_then(|mut r| {
                        r.pop().ok_or_else(|| {
                            ScreenError::Inference(InferenceError::Output {
                                id: model.id().to_owned(),
                                message: "no result for the image".to_owned(),
                            })
                        })
                    });
                outcomes[slot] = Some(single);
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every image has an outcome"))
        .collect()
}
