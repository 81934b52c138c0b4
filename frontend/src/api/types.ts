// The shapes of the MedInform API v1 (see the API contract and api/src/routes).

export type ModelStatus = "ready" | "unavailable";

/**
 * `screening`: the model met the minimum its manifest declares on held-out data. `research`: it
 * did not (or declares no minimum); its results must not guide care.
 */
export type ModelStage = "screening" | "research";

export interface ModelInput {
  name?: string;
  layout?: string;
  color?: "gray" | "rgb" | string;
  width?: number;
  height?: number;
}

export interface ModelMetrics {
  split?: string;
  n?: number;
  accuracy?: number;
  sensitivity?: number;
  specificity?: number;
  roc_auc?: number;
  [other: string]: unknown;
}

/** What stage `screening` requires: each `metrics[key] >= value`. */
export type ModelMinimum = Record<string, number>;

/** A picture drawn from the held-out predictions (ROC curve, reliability diagram, …). */
export interface ModelFigure {
  title: string;
  /** `/v1/models/{id}/figures/{name}` (needs the key: fetched, then shown as a blob URL). */
  url: string;
}

export interface Model {
  id: string;
  status: ModelStatus;
  reason?: string;
  version?: string;
  name?: string;
  description?: string;
  modality?: string;
  task?: string;
  labels?: string[];
  finding?: string;
  threshold?: number;
  input?: ModelInput;
  metrics?: ModelMetrics;
  stage?: ModelStage;
  minimum?: ModelMinimum;
  /** Whether the model exports a heatmap (class activation map) with each result. */
  heatmap?: boolean;
  figures?: ModelFigure[];
  links?: { self: string };
}

export interface ModelDetail extends Model {
  card: string | null;
}

export type JobStatus = "queued" | "processing" | "succeeded" | "failed" | "canceled";

export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "canceled"];

export interface Probability {
  label: string;
  probability: number;
}

/** The low-resolution class activation map of the finding (raw values, row-major). */
export interface Heatmap {
  width: number;
  height: number;
  values: number[];
}

export interface ScreeningResult {
  label: string;
  probabilities: Probability[];
  finding: string;
  finding_probability: number;
  threshold: number;
  positive: boolean;
  /** The model's stage when it made this result; absent on results of older model versions. */
  stage?: ModelStage;
  heatmap?: Heatmap;
}

export interface ErrorDetail {
  code: string;
  message: string;
}

export interface Job {
  id: string;
  model: string;
  model_version: string;
  status: JobStatus;
  client_reference?: string;
  site?: string;
  tags?: string[];
  batch_id?: string;
  deadline?: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  result?: ScreeningResult;
  error?: ErrorDetail;
  /** The study the image belongs to, when it came as a DICOM file. */
  dicom?: DicomAttributes;
  /**
   * `heatmap`: the map as a PNG (`GET /v1/jobs/{id}/heatmap.png`), only when the result has one;
   * `preview`: the image rendered as a PNG, for an image a browser cannot show (DICOM).
   */
  links: { self: string; model: string; image?: string; heatmap?: string; preview?: string };
}

/** The identifiers a DICOM image carried (patient identity only as the server's rule allows). */
export interface DicomAttributes {
  study_instance_uid?: string;
  series_instance_uid?: string;
  sop_instance_uid?: string;
  sop_class_uid?: string;
  accession_number?: string;
  modality?: string;
  body_part_examined?: string;
  study_date?: string;
  patient_id?: string;
  patient_pseudonym?: string;
}

export interface JobList {
  jobs: Job[];
  next_cursor: string | null;
}

export interface BatchCounts {
  total: number;
  queued: number;
  processing: number;
  succeeded: number;
  failed: number;
  canceled: number;
}

export interface BatchFindings {
  finding: string;
  threshold: number;
  positive: number;
  negative: number;
  by_label: Record<string, number>;
}

export interface Batch {
  id: string;
  model: string;
  model_version?: string;
  site?: string;
  campaign?: string;
  operator?: string;
  client_reference?: string;
  tags: string[];
  created_at: string;
  completed_at: string | null;
  counts: BatchCounts;
  findings?: BatchFindings;
  links: { self: string; jobs: string; export_csv: string; export_json: string };
}

export interface Rejected {
  index: number;
  file_name?: string;
  error: ErrorDetail;
}

export interface BatchJobs {
  jobs: Job[];
  rejected: Rejected[];
}

export interface NewBatch {
  model: string;
  site?: string;
  campaign?: string;
  operator?: string;
  client_reference?: string;
  tags?: string[];
}

export interface WhoAmI {
  tenant: string;
  key: string | null;
  scopes: string[];
  anonymous: boolean;
}
