import { useState } from "react";

import { cancelJob, fetchJobHeatmap, fetchJobImage, getJob } from "../api/client";
import {
  FINAL_STATUSES,
  type DicomAttributes,
  type Job,
  type Model,
  type ModelStage,
  type ScreeningResult,
} from "../api/types";
import {
  Disclaimer,
  ErrorMessage,
  PageHeader,
  ProbabilityBars,
  ResearchNote,
  StageBadge,
  StatusBadge,
  isResearch,
} from "../components/common";
import { describeError, errorCode, sentenceForCode } from "../lib/errors";
import { dateTime, percent } from "../lib/format";
import { useDocumentTitle, useModel, useObjectUrl, usePoll } from "../lib/hooks";
import { Link } from "../lib/router";

/** What a heatmap is and is not, in one sentence, wherever one is offered. */
export const HEATMAP_SENTENCE =
  "The heatmap shows which parts of the image pushed the model towards its finding. It is not a lesion outline and does not show everything a clinician would look at.";

/** The heatmap's opacity (percent) until the user moves the slider. */
const DEFAULT_HEATMAP_OPACITY = 60;

/**
 * The stage of the model that made (or will make) this job: the result's own once there is one
 * (absent for older model versions); before that, the model's, if it is still the same version.
 */
function jobStage(job: Job, model: Model | undefined): ModelStage | undefined {
  if (job.result) return job.result.stage;
  return model?.version === job.model_version ? model.stage : undefined;
}

function statusSentence(job: Job, research: boolean): string {
  switch (job.status) {
    case "queued":
      return "Waiting for the model…";
    case "processing":
      return "The model is looking at the image…";
    case "succeeded":
      return research ? "The research model finished." : "Screening finished.";
    case "failed":
      return "The screening could not be completed.";
    case "canceled":
      return "The screening was canceled.";
  }
}

/**
 * The uploaded image (rendered as a PNG by the server when a browser cannot show it: DICOM);
 * with `heatmap`, a toggle that stacks the model's heatmap (the colour map alone, fetched the
 * first time it is shown) over it, and an opacity slider. Waits for the job (`rendered`
 * undefined) to know which to fetch.
 */
function JobImage({ id, heatmap, rendered }: { id: string; heatmap: boolean; rendered: boolean | undefined }) {
  const image = useObjectUrl(
    (signal) => fetchJobImage(id, signal, rendered),
    rendered === undefined ? null : `${id}:${rendered}`,
  );
  const [shown, setShown] = useState(false);
  const [requested, setRequested] = useState(false);
  const [opacity, setOpacity] = useState(DEFAULT_HEATMAP_OPACITY);
  const map = useObjectUrl((signal) => fetchJobHeatmap(id, false, signal), heatmap && requested ? id : null);
  const toggle = (show: boolean) => {
    setShown(show);
    if (show) setRequested(true);
  };
  return (
    <figure className="result-image">
      <div className="result-image-frame">
        {image.url ? (
          <img src={image.url} alt="The uploaded image" />
        ) : (
          <span
            className="result-image-placeholder"
            data-error-code={image.error ? errorCode(image.error) : undefined}
          >
            {image.error ? "The image cannot be shown here." : "Loading the image…"}
          </span>
        )}
        {heatmap && shown && image.url && map.url && (
          <img
            className="heatmap-layer"
            src={map.url}
            alt="The heatmap over the image"
            style={{ opacity: opacity / 100 }}
            data-testid="heatmap-layer"
          />
        )}
      </div>
      {heatmap && (
        <div className="heatmap-controls">
          <div className="heatmap-row">
            <label className="toggle">
              <input type="checkbox" checked={shown} onChange={(event) => toggle(event.target.checked)} />
              Show heatmap
            </label>
            <span
              className="heatmap-status"
              role="status"
              data-error-code={shown && map.error ? errorCode(map.error) : undefined}
            >
              {shown && (map.error ? describeError(map.error) : map.url ? "" : "Loading the heatmap…")}
            </span>
          </div>
          <label className="heatmap-opacity">
            <span>
              Opacity<span className="visually-hidden"> of the heatmap</span>
            </span>
            <input
              type="range"
              min={0}
              max={100}
              step={5}
              value={opacity}
              disabled={!shown}
              aria-valuetext={`${opacity}%`}
              onChange={(event) => setOpacity(Number(event.target.value))}
            />
            <output aria-hidden="true">{opacity}%</output>
          </label>
          <p className="hint">{HEATMAP_SENTENCE}</p>
        </div>
      )}
    </figure>
  );
}

/** Cancels a job that is still waiting (409 job_not_cancelable once it has started). */
function CancelButton({ id }: { id: string }) {
  const [state, setState] = useState<{ busy: boolean; error: unknown }>({ busy: false, error: null });
  const cancel = async () => {
    setState({ busy: true, error: null });
    try {
      await cancelJob(id);
      setState({ busy: false, error: null });
    } catch (error) {
      setState({ busy: false, error });
    }
  };
  return (
    <>
      <button type="button" className="button button-secondary" onClick={() => void cancel()} disabled={state.busy}>
        {state.busy ? "Canceling…" : "Cancel this screening"}
      </button>
      {state.error !== null && <ErrorMessage error={state.error} />}
    </>
  );
}

/** The verdict in words; a research model's never reads as a screening decision. */
function verdictSentence(result: ScreeningResult, research: boolean): string {
  const p = percent(result.finding_probability);
  const threshold = percent(result.threshold, 2);
  if (research) {
    return result.positive
      ? `The research model gives ${result.finding} ${p}, at or above its threshold of ${threshold}. This is not a screening result.`
      : `The research model gives ${result.finding} ${p}, below its threshold of ${threshold}. This is not a screening result.`;
  }
  return result.positive
    ? `Screen positive for ${result.finding}: ${p} is at or above the threshold of ${threshold}. Refer for review.`
    : `Screen negative for ${result.finding}: ${p} is below the threshold of ${threshold}.`;
}

function verdictClass(result: ScreeningResult, research: boolean): string {
  if (research) return "verdict verdict-research";
  return result.positive ? "verdict verdict-positive" : "verdict verdict-negative";
}

function Outcome({ job, research }: { job: Job; research: boolean }) {
  const result = job.result;
  if (job.status === "failed" || job.status === "canceled") {
    return (
      <div className="notice notice-error" data-error-code={job.error?.code}>
        <p>{job.error ? sentenceForCode(job.error.code) : statusSentence(job, research)}</p>
      </div>
    );
  }
  if (!result) {
    return (
      <div className="result-pending" aria-hidden="true">
        <div className="skeleton skeleton-title" />
        <div className="skeleton skeleton-bar" />
        <div className="skeleton skeleton-bar" />
      </div>
    );
  }
  return (
    <>
      <div className={verdictClass(result, research)}>
        <p className="verdict-label">
          <span className="verdict-caption">{research ? "Research model output" : "Predicted"}</span>{" "}
          <strong data-testid="predicted-label">{result.label}</strong>
        </p>
        <p className="verdict-text">{verdictSentence(result, research)}</p>
      </div>
      <h2 className="section-title">Probability of each class</h2>
      <ProbabilityBars
        probabilities={result.probabilities}
        finding={result.finding}
        threshold={result.threshold}
        label={result.label}
      />
      <p className="hint">
        {result.probabilities.some((p) => p.label === result.finding)
          ? `The mark on the ${result.finding} bar is the decision threshold (${percent(result.threshold, 2)}).`
          : `The decision threshold (${percent(result.threshold, 2)}) applies to p(${result.finding}), ${percent(result.finding_probability)} here: the sum of the grades it covers.`}
      </p>
    </>
  );
}

/** The DICOM identifiers of the study, as rows of the facts list. */
function DicomFacts({ dicom }: { dicom: DicomAttributes }) {
  const rows: [string, string | undefined][] = [
    ["Modality", [dicom.modality, dicom.body_part_examined].filter(Boolean).join(" · ") || undefined],
    ["Study date", dicom.study_date],
    ["Accession number", dicom.accession_number],
    ["Patient ID", dicom.patient_id],
    ["Patient pseudonym", dicom.patient_pseudonym],
    ["Study Instance UID", dicom.study_instance_uid],
    ["SOP Instance UID", dicom.sop_instance_uid],
  ];
  return (
    <>
      {rows
        .filter(([, value]) => value)
        .map(([label, value]) => (
          <div key={label} data-testid={`dicom-${label.toLowerCase().replaceAll(" ", "-")}`}>
            <dt>{label}</dt>
            <dd className={label.endsWith("UID") || label.includes("pseudonym") ? "uid" : undefined}>{value}</dd>
          </div>
        ))}
    </>
  );
}

export function ResultPage({ id }: { id: string }) {
  useDocumentTitle("Result");
  const poll = usePoll((signal) => getJob(id, signal), id, {
    again: (job) => !FINAL_STATUSES.includes(job.status),
  });
  const job = poll.value;
  const model = useModel(job?.model);
  const stage = job ? jobStage(job, model) : undefined;
  const research = isResearch(stage);
  // Until the job has been read once, an error replaces the page; later ones only warn.
  const fatal = !job && poll.error;

  return (
    <>
      <PageHeader title={research ? "Research result" : "Screening result"} />
      {fatal ? (
        <ErrorMessage error={poll.error} />
      ) : (
        <div className="result-layout">
          <JobImage id={id} heatmap={Boolean(job?.links.heatmap)} rendered={job ? Boolean(job.links.preview) : undefined} />
          <section className="result-panel" aria-labelledby="result-status">
            <div className="result-status">
              <h2 id="result-status" className="visually-hidden">
                Status
              </h2>
              {job ? <StatusBadge status={job.status} /> : <span className="badge">Loading</span>}
              <StageBadge stage={stage} />
              <p role="status" aria-live="polite" className="status-text">
                {job ? statusSentence(job, research) : "Loading…"}
              </p>
            </div>
            <ResearchNote stage={stage} className="notice notice-warning research-notice" />
            {poll.error !== null && job && (
              <p className="hint hint-warning">{describeError(poll.error)} Still trying…</p>
            )}
            {job && <Outcome job={job} research={research} />}
            <Disclaimer stage={stage} />
            <dl className="facts facts-result">
              <div>
                <dt>Service</dt>
                <dd>{job ? (model?.name ?? job.model) : "–"}</dd>
              </div>
              <div>
                <dt>Model version</dt>
                <dd>
                  {job ? (
                    <>
                      {job.model_version} ·{" "}
                      <Link to={`/models/${encodeURIComponent(job.model)}`}>model card</Link>
                    </>
                  ) : (
                    "–"
                  )}
                </dd>
              </div>
              <div>
                <dt>Threshold</dt>
                <dd>{job?.result ? `${percent(job.result.threshold, 2)} on p(${job.result.finding})` : "–"}</dd>
              </div>
              <div>
                <dt>Reference</dt>
                <dd>{job?.client_reference ?? "–"}</dd>
              </div>
              <div>
                <dt>Submitted</dt>
                <dd>{dateTime(job?.created_at)}</dd>
              </div>
              {job?.dicom && <DicomFacts dicom={job.dicom} />}
              {job?.batch_id && (
                <div>
                  <dt>Screening drive</dt>
                  <dd>
                    <Link to={`/batches/${encodeURIComponent(job.batch_id)}`}>open the drive</Link>
                  </dd>
                </div>
              )}
            </dl>
            <div className="result-actions">
              {job?.status === "queued" && <CancelButton id={job.id} />}
              <Link className="button" to={job ? `/upload?model=${encodeURIComponent(job.model)}` : "/upload"}>
                Screen another image
              </Link>
            </div>
          </section>
        </div>
      )}
    </>
  );
}
