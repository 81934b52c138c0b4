// API error codes -> sentences a health worker understands. The API's own message is never shown
// raw: it is written for developers. Unknown codes get a sentence too (with the HTTP status class).

import { ApiError } from "../api/client";

const SENTENCES: Record<string, string> = {
  image_too_large: "This image is too large to send. Take a smaller photo or lower the camera resolution, then try again.",
  not_an_image: "This file is not an image. Choose a photo or scan (PNG, JPEG, BMP, TIFF, WebP or DICOM).",
  unsupported_transfer_syntax: "This DICOM file is compressed in a way the service cannot read. Export it uncompressed (or as JPEG) from the X-ray unit or PACS and try again.",
  multiframe_not_supported: "This DICOM file holds several images. Send one image (one frame) at a time.",
  no_pixel_data: "This DICOM file holds no image (it may be a report). Choose the image file.",
  modality_mismatch: "This DICOM image is not the kind this screening service reads (its modality or body part differs). Choose the matching service.",
  unsupported_image_format: "This image format is not accepted. Save the image as PNG or JPEG and try again.",
  corrupt_image: "This image is damaged or incomplete and cannot be read. Copy it again from the camera or scanner.",
  image_dimensions_too_large: "This image has too many pixels. Resize it to a smaller size and try again.",
  empty_file: "This file is empty. Choose the image again.",
  unknown_model: "This screening service does not exist on this server. Go back to the home page and choose one from the list.",
  model_not_found: "This screening service does not exist on this server.",
  model_unavailable: "This screening service is not available on this server at the moment. Choose another one or ask your administrator.",
  model_research_only: "This server does not accept research models, and this one has not met its screening targets. Choose a screening service instead.",
  heatmap_unavailable: "There is no heatmap for this result: the model does not draw one, or the screening has not finished.",
  figure_not_found: "This figure of the model card is missing on this server.",
  service_unavailable: "The service is temporarily unavailable. Wait a minute and try again.",
  queue_full: "The service is busy with many images. Wait a minute and try again.",
  rate_limited: "Too many requests in a short time. Wait a moment and try again.",
  unauthorized: "This server needs an API key. Enter your key on the Settings page.",
  api_key_revoked: "Your API key has been withdrawn. Ask your administrator for a new key and enter it on the Settings page.",
  insufficient_scope: "Your API key does not allow this action. Ask your administrator for a key that does.",
  job_not_found: "This screening could not be found. It may belong to another account, or the link is wrong.",
  invalid_job_id: "This link does not point to a screening. Check the address.",
  batch_not_found: "This screening drive could not be found. It may belong to another account, or the link is wrong.",
  job_not_cancelable: "This screening has already started or finished, so it can no longer be canceled.",
  idempotency_key_reused: "This upload was already sent with different details. Start the upload again.",
  invalid_field: "Some of the details entered are not valid. Check the form and try again.",
  invalid_client_reference: "The patient or sample reference is too long (200 characters at most) or contains invalid characters.",
  missing_field: "Something required is missing from the form. Choose a service and an image, then try again.",
  invalid_multipart: "The upload did not arrive complete. Try again.",
  invalid_cursor: "This page of the list is no longer valid. Go back to the first page.",
  invalid_query: "These filters are not valid. Clear them and try again.",
  not_found: "This page or item does not exist on this server.",
  method_not_allowed: "This server does not offer this feature yet. Ask your administrator to update MedInform.",
  network_error: "The service cannot be reached. Check the network connection and try again.",
  unexpected_response: "The service gave an answer this page cannot read. Try again, or ask your administrator.",
  upload_aborted: "The upload was stopped before it finished.",
  // Reasons a job failed or was canceled (Job.error.code).
  canceled: "This screening was canceled before it ran.",
  deadline_exceeded: "This screening was not started before its deadline, so it was canceled.",
  image_missing: "The stored image could not be found, so it could not be screened. Upload it again.",
  storage_unavailable: "The image store could not be reached, so it could not be screened. Upload it again later.",
  inference_failed: "The model could not process this image. Upload it again, or try another image.",
};

export function sentenceForCode(code: string, status = 0): string {
  const known = SENTENCES[code];
  if (known) return known;
  if (status >= 500) return "Something went wrong on the server. Try again in a minute; if it keeps happening, tell your administrator.";
  if (status === 404) return SENTENCES.not_found!;
  if (status >= 400) return "The service could not accept this request. Check what you entered and try again.";
  return "Something went wrong. Try again; if it keeps happening, tell your administrator.";
}

/** Any thrown value -> one sentence. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return sentenceForCode(error.code, error.status);
  if (error instanceof TypeError) return SENTENCES.network_error!;
  return sentenceForCode("unknown");
}

/** The stable code, for tests and data attributes. */
export function errorCode(error: unknown): string {
  return error instanceof ApiError ? error.code : "unknown";
}
