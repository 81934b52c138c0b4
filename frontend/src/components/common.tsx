import type { ReactNode } from "react";

import type { JobStatus, ModelStage, Probability } from "../api/types";
import { describeError, errorCode } from "../lib/errors";
import { percent, statusWord } from "../lib/format";

/** An error as a sentence (role=alert so that screen readers announce it). */
export function ErrorMessage({ error, retry }: { error: unknown; retry?: () => void }) {
  return (
    <div className="notice notice-error" role="alert" data-error-code={errorCode(error)}>
      <p>{describeError(error)}</p>
      {retry && (
        <button type="button" className="button button-secondary" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <p className="loading" role="status">
      <span className="spinner" aria-hidden="true" /> {label}
    </p>
  );
}

export function Disclaimer({ stage }: { stage?: ModelStage | undefined }) {
  return (
    <aside className="disclaimer" aria-label="Important">
      <strong>{stage === "research" ? "Research output, not a diagnosis." : "Screening aid, not a diagnosis."}</strong>{" "}
      A trained health worker decides what to do next; a result here never rules disease in or out on
      its own.
    </aside>
  );
}

/** What a research model's results are for, next to its badge wherever the model or a result shows. */
export const RESEARCH_SENTENCE =
  "This model has not met its screening targets on held-out data; its result is for research and must not guide care.";

/** Any declared stage but `screening` counts as research; an unknown (undeclared) one does not. */
export function isResearch(stage: ModelStage | undefined): boolean {
  return stage !== undefined && stage !== "screening";
}

/**
 * A model's stage: a clear badge for research, a quiet one for screening, nothing when unknown
 * (results of model versions older than stages).
 */
export function StageBadge({ stage }: { stage: ModelStage | undefined }) {
  if (stage === undefined) return null;
  return stage === "screening" ? (
    <span className="badge badge-screening" data-stage="screening">
      Screening
    </span>
  ) : (
    <span className="badge badge-research" data-stage="research">
      Research use only
    </span>
  );
}

/** The sentence under a research badge (nothing for other stages). */
export function ResearchNote({ stage, className = "research-note" }: { stage: ModelStage | undefined; className?: string }) {
  if (!isResearch(stage)) return null;
  return (
    <p className={className} data-testid="research-note">
      {RESEARCH_SENTENCE}
    </p>
  );
}

export function StatusBadge({ status }: { status: JobStatus | string }) {
  return <span className={`badge badge-${status}`}>{statusWord(status)}</span>;
}

/** One bar per class, with its probability in percent; the finding's threshold is marked. */
export function ProbabilityBars({
  probabilities,
  finding,
  threshold,
  label,
}: {
  probabilities: Probability[];
  finding?: string;
  threshold?: number;
  label?: string;
}) {
  return (
    <ul className="prob-bars" aria-label="Probability of each class">
      {probabilities.map((p) => {
        const isFinding = p.label === finding;
        const value = Math.max(0, Math.min(1, p.probability));
        return (
          <li key={p.label} className={p.label === label ? "prob prob-top" : "prob"}>
            <div className="prob-head">
              <span className="prob-label">
                {p.label}
                {p.label === label && <span className="visually-hidden"> (predicted)</span>}
              </span>
              <span className="prob-value" data-testid={`prob-${p.label}`}>
                {percent(value)}
              </span>
            </div>
            <div
              className={isFinding ? "prob-track prob-track-finding" : "prob-track"}
              role="meter"
              aria-label={`${p.label} probability`}
              aria-valuemin={0}
              aria-valuemax={100}
              aria-valuenow={Math.round(value * 1000) / 10}
              aria-valuetext={percent(value)}
            >
              <div className="prob-fill" style={{ width: `${value * 100}%` }} />
              {isFinding && threshold !== undefined && (
                <div
                  className="prob-threshold"
                  style={{ left: `${Math.max(0, Math.min(1, threshold)) * 100}%` }}
                  title={`Threshold ${percent(threshold, 2)}`}
                  aria-hidden="true"
                />
              )}
            </div>
          </li>
        );
      })}
    </ul>
  );
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <header className="page-header">
      <h1>{title}</h1>
      {children && <div className="page-lead">{children}</div>}
    </header>
  );
}
