import { useEffect, useId, useRef, useState, type DragEvent, type FormEvent } from "react";

import { ApiError, addBatchJobs, createBatch, createJob, idempotencyKeyFor, newIdempotencyKey } from "../api/client";
import type { Model } from "../api/types";
import { Disclaimer, ErrorMessage, Loading, PageHeader, ResearchNote, isResearch } from "../components/common";
import { describeError, errorCode } from "../lib/errors";
import { fileSize, imageNeeded } from "../lib/format";
import { useDocumentTitle, useModels } from "../lib/hooks";
import { Link, navigate, useLocation } from "../lib/router";
import { getDriveDefaults, setDriveDefaults, type DriveDefaults } from "../lib/settings";

type ItemState = "ready" | "refused" | "uploading" | "sent" | "failed";

interface Item {
  key: number;
  file: File;
  preview: string | null;
  state: ItemState;
  progress: number;
  error: unknown;
  /** The same for every attempt at this file, so that a retry never makes a second job. */
  idempotencyKey: string;
}

/** Images at once per batch request: one, so that each file has its own progress and refusal. */
const PARALLEL_UPLOADS = 2;

/** What the browser can tell before sending: a file that is certainly not an image. */
export function refuseLocally(file: File): ApiError | null {
  if (file.size === 0) return new ApiError("empty_file", 0, "checked in the browser");
  // An empty type means the browser does not know (odd extensions): the server decides. DICOM
  // files are images to the server, whatever type the browser gives them.
  if (file.type && !file.type.startsWith("image/") && file.type !== "application/dicom") {
    return new ApiError("not_an_image", 0, "checked in the browser");
  }
  return null;
}

/** A refusal of this file (4xx) is final; a network or server failure may be sent again. */
function failureState(error: unknown): ItemState {
  return error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429
    ? "refused"
    : "failed";
}

let nextKey = 1;

function toItem(file: File): Item {
  const refusal = refuseLocally(file);
  return {
    key: nextKey++,
    file,
    preview: refusal ? null : URL.createObjectURL(file),
    state: refusal ? "refused" : "ready",
    progress: 0,
    error: refusal,
    idempotencyKey: newIdempotencyKey(),
  };
}

function stateText(item: Item): string {
  switch (item.state) {
    case "ready":
      return "Ready to send";
    case "uploading":
      return `Sending… ${Math.round(item.progress * 100)}%`;
    case "sent":
      return "Sent";
    case "refused":
    case "failed":
      return describeError(item.error);
  }
}

function ServicePicker({ models, value, onChange }: { models: Model[]; value: string; onChange: (id: string) => void }) {
  return (
    <fieldset className="field service-picker">
      <legend>1. Screening service</legend>
      <div className="choices">
        {models.map((model) => {
          const ready = model.status === "ready";
          return (
            <label key={model.id} className={ready ? "choice" : "choice choice-disabled"}>
              <input
                type="radio"
                name="model"
                value={model.id}
                checked={value === model.id}
                disabled={!ready}
                onChange={() => onChange(model.id)}
              />
              <span>
                <span className="choice-name">{model.name ?? model.id}</span>
                {!ready && <span className="choice-note"> — unavailable</span>}
                {ready && isResearch(model.stage) && <span className="choice-note"> — research use only</span>}
              </span>
            </label>
          );
        })}
      </div>
    </fieldset>
  );
}

export function UploadPage() {
  useDocumentTitle("Screen images");
  const [models, retry] = useModels();
  const { query } = useLocation();
  const [model, setModel] = useState(query.get("model") ?? "");
  const [items, setItems] = useState<Item[]>([]);
  const [reference, setReference] = useState("");
  const [drive, setDrive] = useState<DriveDefaults>(getDriveDefaults);
  const [sending, setSending] = useState(false);
  const [formError, setFormError] = useState<unknown>(null);
  const [batchId, setBatchId] = useState<string | null>(null);
  const [dragging, setDragging] = useState(false);
  const itemsRef = useRef(items);
  itemsRef.current = items;
  const ids = useId();

  // Preselect the first ready model (or drop a chosen one that is not ready).
  useEffect(() => {
    if (models.state !== "ready") return;
    const chosen = models.value.find((m) => m.id === model);
    if (!chosen || chosen.status !== "ready") {
      setModel(models.value.find((m) => m.status === "ready")?.id ?? "");
    }
  }, [models, model]);

  // Free the thumbnails' memory when leaving the page.
  useEffect(
    () => () => {
      for (const item of itemsRef.current) if (item.preview) URL.revokeObjectURL(item.preview);
    },
    [],
  );

  const addFiles = (files: FileList | File[] | null) => {
    if (!files || sending) return;
    const added = Array.from(files).map(toItem);
    if (added.length) {
      setItems((current) => [...current.filter((i) => i.state !== "sent"), ...added]);
      setFormError(null);
    }
  };

  const remove = (key: number) => {
    setItems((current) => {
      const item = current.find((i) => i.key === key);
      if (item?.preview) URL.revokeObjectURL(item.preview);
      return current.filter((i) => i.key !== key);
    });
  };

  const update = (key: number, patch: Partial<Item>) =>
    setItems((current) => current.map((i) => (i.key === key ? { ...i, ...patch } : i)));

  const sendable = items.filter((i) => i.state === "ready" || i.state === "failed");
  const isBatch = sendable.length > 1;
  const chosen = models.state === "ready" ? models.value.find((m) => m.id === model) : undefined;

  const sendOne = async (item: Item) => {
    update(item.key, { state: "uploading", progress: 0, error: null });
    try {
      const upload = createJob(
        {
          model,
          image: item.file,
          client_reference: reference.trim() || undefined,
          idempotency_key: idempotencyKeyFor(item.idempotencyKey, model, reference.trim()),
        },
        (progress) => update(item.key, { progress }),
      );
      const job = await upload.promise;
      update(item.key, { state: "sent", progress: 1 });
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (error) {
      update(item.key, { state: failureState(error), error });
    }
  };

  const sendBatch = async (batch: Item[]) => {
    let id = batchId;
    if (!id) {
      setDriveDefaults(drive);
      const created = await createBatch({
        model,
        site: drive.site.trim(),
        campaign: drive.campaign.trim(),
        operator: drive.operator.trim(),
      });
      id = created.id;
      setBatchId(id);
    }
    const queue = [...batch];
    let failures = 0;
    const worker = async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        update(item.key, { state: "uploading", progress: 0, error: null });
        try {
          const answer = await addBatchJobs(id!, [item.file], idempotencyKeyFor(item.idempotencyKey, id!), (progress) =>
            update(item!.key, { progress }),
          ).promise;
          const refused = answer.rejected?.[0];
          if (refused) {
            failures++;
            update(item.key, {
              state: "refused",
              error: new ApiError(refused.error.code, 400, refused.error.message),
            });
          } else {
            update(item.key, { state: "sent", progress: 1 });
          }
        } catch (error) {
          failures++;
          update(item.key, { state: failureState(error), error });
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, worker));
    if (failures === 0) navigate(`/batches/${encodeURIComponent(id)}`);
  };

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setFormError(null);
    if (!model || chosen?.status !== "ready") {
      setFormError(new ApiError("model_unavailable", 0, "no model chosen"));
      return;
    }
    if (sendable.length === 0) return;
    setSending(true);
    try {
      if (sendable.length === 1 && !batchId) await sendOne(sendable[0]!);
      else await sendBatch(sendable);
    } catch (error) {
      setFormError(error);
    } finally {
      setSending(false);
    }
  };

  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    addFiles(event.dataTransfer.files);
  };

  const sent = items.filter((i) => i.state === "sent").length;
  const failed = items.filter((i) => i.state === "failed" || i.state === "refused").length;
  const uploading = items.filter((i) => i.state === "uploading").length;
  const total = items.filter((i) => i.state !== "refused").length;

  if (models.state === "loading") return <Loading label="Loading the screening services…" />;
  if (models.state === "error") return <ErrorMessage error={models.error} retry={retry} />;

  return (
    <>
      <PageHeader title="Screen images">
        <p>One image gives a result in seconds. Several images make a screening drive (a batch) with a summary you can export.</p>
      </PageHeader>
      <form className="upload-form" onSubmit={submit} noValidate={false}>
        <ServicePicker models={models.value} value={model} onChange={setModel} />
        {chosen && <p className="hint">Image needed: {imageNeeded(chosen.modality)}</p>}
        <ResearchNote stage={chosen?.stage} className="notice notice-warning research-notice" />

        <fieldset className="field">
          <legend>2. Images</legend>
          <div
            className={dragging ? "dropzone dropzone-active" : "dropzone"}
            onDragOver={(e) => {
              e.preventDefault();
              setDragging(true);
            }}
            onDragLeave={() => setDragging(false)}
            onDrop={onDrop}
          >
            <p className="dropzone-text">Drop images here, or</p>
            <div className="dropzone-buttons">
              <input
                id={`${ids}-pick`}
                className="file-input"
                type="file"
                accept="image/*,.dcm,application/dicom"
                multiple
                disabled={sending}
                onChange={(e) => {
                  addFiles(e.currentTarget.files);
                  e.currentTarget.value = "";
                }}
                data-testid="file-input"
              />
              <label htmlFor={`${ids}-pick`} className="button">
                Choose images
              </label>
              <input
                id={`${ids}-camera`}
                className="file-input"
                type="file"
                accept="image/*,.dcm,application/dicom"
                capture="environment"
                disabled={sending}
                onChange={(e) => {
                  addFiles(e.currentTarget.files);
                  e.currentTarget.value = "";
                }}
              />
              <label htmlFor={`${ids}-camera`} className="button button-secondary">
                Take a photo
              </label>
            </div>
            <p className="hint">PNG, JPEG, BMP, TIFF, WebP or DICOM (.dcm). Choose several files at once for a screening drive.</p>
          </div>

          {items.length > 0 && (
            <ul className="upload-list" aria-label="Chosen images">
              {items.map((item) => (
                <li key={item.key} className={`upload-item upload-${item.state}`} data-file={item.file.name}>
                  <div className="thumb">
                    {item.preview ? (
                      <img
                        src={item.preview}
                        alt=""
                        decoding="async"
                        onError={() => update(item.key, { preview: null })}
                      />
                    ) : (
                      <span className="thumb-none" aria-hidden="true">
                        ✕
                      </span>
                    )}
                  </div>
                  <div className="upload-body">
                    <div className="upload-name">
                      <span className="file-name">{item.file.name}</span>
                      <span className="file-size">{fileSize(item.file.size)}</span>
                    </div>
                    <progress
                      className="upload-progress"
                      max={1}
                      value={item.state === "sent" ? 1 : item.progress}
                      aria-label={`Upload of ${item.file.name}`}
                      hidden={item.state === "refused" || item.state === "failed"}
                    />
                    <p
                      className={item.state === "refused" || item.state === "failed" ? "upload-state upload-error" : "upload-state"}
                      data-error-code={item.error ? errorCode(item.error) : undefined}
                    >
                      {stateText(item)}
                    </p>
                  </div>
                  {(item.state === "ready" || item.state === "refused" || item.state === "failed") && !sending && (
                    <button type="button" className="button button-small button-secondary" onClick={() => remove(item.key)}>
                      Remove<span className="visually-hidden"> {item.file.name}</span>
                    </button>
                  )}
                </li>
              ))}
            </ul>
          )}
        </fieldset>

        {isBatch || batchId ? (
          <fieldset className="field">
            <legend>3. Screening drive</legend>
            <p className="hint">These are kept in this browser for the next drive.</p>
            <div className="field-grid">
              <label>
                Site
                <input
                  value={drive.site}
                  required
                  maxLength={200}
                  autoComplete="off"
                  disabled={!!batchId}
                  onChange={(e) => setDrive({ ...drive, site: e.target.value })}
                  placeholder="Camp 7"
                />
              </label>
              <label>
                Campaign
                <input
                  value={drive.campaign}
                  maxLength={200}
                  autoComplete="off"
                  disabled={!!batchId}
                  onChange={(e) => setDrive({ ...drive, campaign: e.target.value })}
                  placeholder="TB drive 2026"
                />
              </label>
              <label>
                Operator
                <input
                  value={drive.operator}
                  required
                  maxLength={200}
                  autoComplete="name"
                  disabled={!!batchId}
                  onChange={(e) => setDrive({ ...drive, operator: e.target.value })}
                  placeholder="Your name"
                />
              </label>
            </div>
          </fieldset>
        ) : (
          <div className="field">
            <label htmlFor={`${ids}-ref`}>3. Patient or sample reference (optional)</label>
            <input
              id={`${ids}-ref`}
              value={reference}
              maxLength={200}
              autoComplete="off"
              onChange={(e) => setReference(e.target.value)}
              placeholder="e.g. camp7-slide12"
            />
            <p className="hint">Do not enter names: use the reference of your register.</p>
          </div>
        )}

        <div className="submit-row">
          <button type="submit" className="button button-primary" disabled={sending || sendable.length === 0 || !model}>
            {sending
              ? "Sending…"
              : sendable.length > 1 || batchId
                ? `Send ${sendable.length} images`
                : "Screen this image"}
          </button>
          <p className="upload-summary" role="status" aria-live="polite">
            {sending && uploading > 0 && `Sent ${sent} of ${total} images…`}
            {!sending && sent > 0 && failed > 0 && `${sent} sent, ${failed} not accepted (see above).`}
          </p>
        </div>
        {formError !== null && <ErrorMessage error={formError} />}
        {batchId && !sending && (
          <p>
            <Link to={`/batches/${encodeURIComponent(batchId)}`} className="button button-secondary">
              Go to the screening drive
            </Link>
          </p>
        )}
      </form>
      <Disclaimer stage={chosen?.stage} />
    </>
  );
}
