// The one place that talks to the MedInform API. Every request sends the API key (Settings) as
// `Authorization: Bearer <key>` when one is set; every failure becomes an ApiError with the API's
// stable code (or `network_error` / `unexpected_response`), which lib/errors.ts turns into a
// sentence.

import { getApiKey } from "../lib/settings";
import type {
  Batch,
  BatchJobs,
  Job,
  JobList,
  JobStatus,
  Model,
  ModelDetail,
  NewBatch,
  WhoAmI,
} from "./types";

/** A failed request: the API's error code and message, or a network failure. */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  /** Seconds the server asked us to wait (Retry-After), when it said. */
  readonly retryAfter: number | null;

  constructor(code: string, status: number, message: string, retryAfter: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function authHeaders(): Record<string, string> {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function parseRetryAfter(value: string | null): number | null {
  if (!value) return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** Turns an error response body (any shape) into an ApiError. */
export function errorFromBody(status: number, body: unknown, retryAfter: string | null): ApiError {
  const detail =
    typeof body === "object" && body !== null && "error" in body
      ? (body as { error: unknown }).error
      : null;
  if (typeof detail === "object" && detail !== null) {
    const { code, message } = detail as { code?: unknown; message?: unknown };
    if (typeof code === "string") {
      return new ApiError(
        code,
        status,
        typeof message === "string" ? message : code,
        parseRetryAfter(retryAfter),
      );
    }
  }
  return new ApiError(`http_${status}`, status, `HTTP ${status}`, parseRetryAfter(retryAfter));
}

async function readError(response: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's HTML page, an empty body): the status says enough.
  }
  return errorFromBody(response.status, body, response.headers.get("Retry-After"));
}

/** fetch with the API key, turning network failures and error statuses into ApiError. */
export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  for (const [name, value] of Object.entries(authHeaders())) headers.set(name, value);
  if (!headers.has("Accept")) headers.set("Accept", "application/json");
  let response: Response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError("network_error", 0, String(e));
  }
  if (!response.ok) throw await readError(response);
  return response;
}

async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await apiFetch(path, signal ? { signal } : {});
  try {
    return (await response.json()) as T;
  } catch {
    throw new ApiError("unexpected_response", response.status, "The answer was not JSON.");
  }
}

async function postJson<T>(path: string, body: unknown): Promise<T> {
  const response = await apiFetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return (await response.json()) as T;
}

// --- Models -----------------------------------------------------------------------------------

export async function listModels(signal?: AbortSignal): Promise<Model[]> {
  const body = await getJson<{ models: Model[] }>("/v1/models", signal);
  return body.models;
}

export function getModel(id: string, signal?: AbortSignal): Promise<ModelDetail> {
  return getJson<ModelDetail>(`/v1/models/${encodeURIComponent(id)}`, signal);
}

/** A figure of a model card (its `url` from the model) as an object URL. */
export function fetchModelFigure(url: string, signal?: AbortSignal): Promise<string> {
  return fetchObjectUrl(url, signal);
}

// --- Jobs -------------------------------------------------------------------------------------

export function getJob(id: string, signal?: AbortSignal): Promise<Job> {
  return getJson<Job>(`/v1/jobs/${encodeURIComponent(id)}`, signal);
}

export interface JobFilters {
  model?: string;
  status?: JobStatus | "";
  batch_id?: string;
  client_reference?: string;
  limit?: number;
  cursor?: string | null;
}

export function jobsQuery(filters: JobFilters): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const query = params.toString();
  return query ? `?${query}` : "";
}

export function listJobs(filters: JobFilters, signal?: AbortSignal): Promise<JobList> {
  return getJson<JobList>(`/v1/jobs${jobsQuery(filters)}`, signal);
}

export async function cancelJob(id: string): Promise<Job> {
  const response = await apiFetch(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  return (await response.json()) as Job;
}

/**
 * An image of the API as an object URL: an <img src> cannot send the key, so the image is fetched
 * with it. The caller revokes the URL when it is done with it.
 */
export async function fetchObjectUrl(path: string, signal?: AbortSignal): Promise<string> {
  const init: RequestInit = { headers: { Accept: "image/*" } };
  if (signal) init.signal = signal;
  const response = await apiFetch(path, init);
  return URL.createObjectURL(await response.blob());
}

/** The uploaded image as an object URL. */
export function fetchJobImage(id: string, signal?: AbortSignal, rendered = false): Promise<string> {
  return fetchObjectUrl(`/v1/jobs/${encodeURIComponent(id)}/${rendered ? "image.png" : "image"}`, signal);
}

/**
 * The job's heatmap as an object URL: with `overlay`, the image blended with the colour map; without,
 * the colour map alone (transparent where the map is zero), to stack over the image.
 */
export function fetchJobHeatmap(id: string, overlay: boolean, signal?: AbortSignal): Promise<string> {
  return fetchObjectUrl(`/v1/jobs/${encodeURIComponent(id)}/heatmap.png?overlay=${overlay}`, signal);
}

// --- Uploads (XMLHttpRequest: fetch cannot report upload progress) ---------------------------

export interface UploadHandle<T> {
  promise: Promise<T>;
  abort: () => void;
}

/** Posts a multipart form, reporting the fraction sent (0..1) to `onProgress`. */
export function postForm<T>(
  path: string,
  form: FormData,
  onProgress?: (fraction: number) => void,
  extraHeaders: Record<string, string> = {},
): UploadHandle<T> {
  const xhr = new XMLHttpRequest();
  const promise = new Promise<T>((resolve, reject) => {
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries({ ...authHeaders(), ...extraHeaders })) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total > 0) onProgress?.(event.loaded / event.total);
    };
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress?.(1);
        resolve(body as T);
      } else {
        reject(errorFromBody(xhr.status, body, xhr.getResponseHeader("Retry-After")));
      }
    };
    xhr.onerror = () => reject(new ApiError("network_error", 0, "network error"));
    xhr.ontimeout = () => reject(new ApiError("network_error", 0, "timeout"));
    xhr.onabort = () => reject(new ApiError("upload_aborted", 0, "aborted"));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

export interface NewJob {
  model: string;
  image: File;
  client_reference?: string;
  batch_id?: string;
  /** Sent as Idempotency-Key: sending the same upload again (after a lost answer) makes no second job. */
  idempotency_key?: string;
}

export function createJob(job: NewJob, onProgress?: (fraction: number) => void): UploadHandle<Job> {
  const form = new FormData();
  form.append("model", job.model);
  if (job.client_reference) form.append("client_reference", job.client_reference);
  if (job.batch_id) form.append("batch_id", job.batch_id);
  form.append("image", job.image, job.image.name);
  const headers: Record<string, string> = job.idempotency_key ? { "Idempotency-Key": job.idempotency_key } : {};
  return postForm<Job>("/v1/jobs", form, onProgress, headers);
}

/** A random key (crypto.randomUUID needs HTTPS, which a camp's laptop on the LAN may not have). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The key of one request made from a file's random key and what the request asks (service,
 * reference, batch): the same request sent again gets the same key, a changed one a new key (the
 * server refuses a key reused for another request). Hashed, because a key must be printable ASCII
 * without spaces and a reference may hold anything.
 */
export function idempotencyKeyFor(fileKey: string, ...request: string[]): string {
  // FNV-1a (32 bits) over the UTF-16 code units: a fingerprint, not a security measure.
  const text = request.join("\u0000");
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  }
  return `${fileKey}-${hash.toString(16).padStart(8, "0")}`;
}

// --- Batches ----------------------------------------------------------------------------------

export function createBatch(batch: NewBatch): Promise<Batch> {
  return postJson<Batch>("/v1/batches", batch);
}

export function getBatch(id: string, signal?: AbortSignal): Promise<Batch> {
  return getJson<Batch>(`/v1/batches/${encodeURIComponent(id)}`, signal);
}

/**
 * Adds images to a batch; each image's client_reference is its file name. The server applies a
 * client_reference to the image that follows it, so each one goes just before its image. Send the
 * same `idempotencyKey` again when retrying the same images: a retry then makes no second jobs.
 */
export function addBatchJobs(
  batchId: string,
  images: File[],
  idempotencyKey: string,
  onProgress?: (fraction: number) => void,
): UploadHandle<BatchJobs> {
  const form = new FormData();
  for (const image of images) {
    form.append("client_reference", image.name.slice(0, 200));
    form.append("image", image, image.name);
  }
  return postForm<BatchJobs>(`/v1/batches/${encodeURIComponent(batchId)}/jobs`, form, onProgress, {
    "Idempotency-Key": idempotencyKey,
  });
}

export function batchExportPath(id: string): string {
  return `/v1/batches/${encodeURIComponent(id)}/export.csv`;
}

/** Downloads a file with the key (a plain link cannot send it) and saves it as `fileName`. */
export async function downloadWithKey(path: string, fileName: string): Promise<void> {
  const response = await apiFetch(path, { headers: { Accept: "*/*" } });
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// --- Auth -------------------------------------------------------------------------------------

/** Checks a key (or, with none, what the server grants without one). */
export async function whoami(key?: string | null): Promise<WhoAmI> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response: Response;
  try {
    response = await fetch("/v1/auth/whoami", { headers });
  } catch (e) {
    throw new ApiError("network_error", 0, String(e));
  }
  if (!response.ok) throw await readError(response);
  return (await response.json()) as WhoAmI;
}
