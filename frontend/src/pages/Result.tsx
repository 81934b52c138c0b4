import { useEffect, useState } from "react";

import { cancelJob, fetchJobImage, getJob } from "../api/client";
import { FINAL_STATUSES, type Job } from "../api/types";
import { Disclaimer, ErrorMessage, PageHeader, ProbabilityBars, StatusBadge } from "../components/common";
import { describeError, errorCode, sentenceForCode } from "../lib/errors";
import { dateTime, percent } from "../lib/format";
import { loadModels, useDocumentTitle, usePoll } from "../lib/hooks";
import { Link } from "../lib/router";

function statusSentence(job: Job): string {
  switch (job.status) {
    case "queued":
      return "Waiting for the model…";
    case "processing":
      return "The model is looking at the image…";
    case "succeeded":
      return "Screening finished.";
    case "failed":
      return "The screening could not be completed.";
    case "canceled":
      return "The screening was canceled.";
  }
}

function JobImage({ id }: { id: string }) {
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState<unknown>(null);
  useEffect(() => {
    const controller = new AbortController();
    let objectUrl: string | null = null;
    fetchJobImage(id, controller.signal).then(
      (u) => {
        objectUrl = u;
        setUrl(u);
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setFailed(error ?? "failed");
      },
    );
    return () => {
      controller.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [id]);
  return (
    <figure className="result-image">
      <div className="result-image-frame">
        {url ? (
          <img src={url} alt="The uploaded image" />
        ) : (
          <span className="result-image-placeholder" data-error-code={failed ? errorCode(failed) : undefined}>
            {failed ? "The image cannot be shown here." : "Loading the image…"}
          </span>
        )}
      </div>
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

function ModelName({ id }: { id: string }) {
  const [name, setName] = useState(id);
  useEffect(() => {
    let live = true;
    loadModels().then(
      (models) => {
        const found = models.find((m) => m.id === id)?.name;
        if (live && found) setName(found);
      },
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [id]);
  return <>{name}</>;
}

function Outcome({ job }: { job: Job }) {
  const result = job.result;
  if (job.status === "failed" || job.status === "canceled") {
    return (
      <div className="notice notice-error" data-error-code={job.error?.code}>
        <p>{job.error ? sentenceForCode(job.error.code) : statusSentence(job)}</p>
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
      <div className={result.positive ? "verdict verdict-positive" : "verdict verdict-negative"}>
        <p className="verdict-label">
          <span className="verdict-caption">Predicted</span> <strong data-testid="predicted-label">{result.label}</strong>
        </p>
        <p className="verdict-text">
          {result.positive
            ? `Screen positive for ${result.finding}: ${percent(result.finding_probability)} is at or above the threshold of ${percent(result.threshold, 2)}. Refer for review.`
            : `Screen negative for ${result.finding}: ${percent(result.finding_probability)} is below the threshold of ${percent(result.threshold, 2)}.`}
        </p>
      </div>
      <h2 className="section-title">Probability of each class</h2>
      <ProbabilityBars
        probabilities={result.probabilities}
        finding={result.finding}
        threshold={result.threshold}
        label={result.label}
      />
      <p className="hint">
        The mark on the {result.finding} bar is the decision threshold ({percent(result.threshold, 2)}).
      </p>
    </>
  );
}

export function ResultPage({ id }: { id: string }) {
  useDocumentTitle("Result");
  const poll = usePoll((signal) => getJob(id, signal), id, {
    again: (job) => !FINAL_STATUSES.includes(job.status),
  });
  const job = poll.value;
  // Until the job has been read once, an error replaces the page; later ones only warn.
  const fatal = !job && poll.error;

  return (
    <>
      <PageHeader title="Screening result" />
      {fatal ? (
        <ErrorMessage error={poll.error} />
      ) : (
        <div className="result-layout">
          <JobImage id={id} />
          <section className="result-panel" aria-labelledby="result-status">
            <div className="result-status">
              <h2 id="result-status" className="visually-hidden">
                Status
              </h2>
              {job ? <StatusBadge status={job.status} /> : <span className="badge">Loading</span>}
              <p role="status" aria-live="polite" className="status-text">
                {job ? statusSentence(job) : "Loading…"}
              </p>
            </div>
            {poll.error !== null && job && (
              <p className="hint hint-warning">{describeError(poll.error)} Still trying…</p>
            )}
            {job && <Outcome job={job} />}
            <Disclaimer />
            <dl className="facts facts-result">
              <div>
                <dt>Service</dt>
                <dd>{job ? <ModelName id={job.model} /> : "–"}</dd>
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
