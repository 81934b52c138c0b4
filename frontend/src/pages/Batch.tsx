import { useState, type MouseEvent } from "react";

import { batchExportPath, downloadWithKey, getBatch, listJobs } from "../api/client";
import type { Batch, Job } from "../api/types";
import { Disclaimer, ErrorMessage, PageHeader, ResearchNote, StageBadge, StatusBadge, isResearch } from "../components/common";
import { describeError } from "../lib/errors";
import { dateTime, percent } from "../lib/format";
import { useDocumentTitle, usePoll } from "../lib/hooks";
import { Link } from "../lib/router";
import { getApiKey } from "../lib/settings";

/** Up to this many jobs are listed on the page (the CSV export has them all). */
const MAX_LISTED = 1000;

interface DriveView {
  batch: Batch;
  jobs: Job[];
}

async function loadDrive(id: string, signal: AbortSignal): Promise<DriveView> {
  const batch = await getBatch(id, signal);
  const jobs: Job[] = [];
  let cursor: string | null = null;
  do {
    const page = await listJobs({ batch_id: id, limit: 200, cursor }, signal);
    jobs.push(...page.jobs);
    cursor = page.next_cursor;
  } while (cursor && jobs.length < MAX_LISTED);
  return { batch, jobs };
}

/** Positives first (most probable first), then the others by creation. */
export function orderForReview(jobs: Job[]): Job[] {
  const positive = jobs.filter((j) => j.result?.positive);
  const rest = jobs.filter((j) => !j.result?.positive);
  positive.sort((a, b) => (b.result?.finding_probability ?? 0) - (a.result?.finding_probability ?? 0));
  rest.sort((a, b) => a.created_at.localeCompare(b.created_at));
  return [...positive, ...rest];
}

function done(batch: Batch): number {
  const c = batch.counts;
  return c.succeeded + c.failed + c.canceled;
}

export function BatchPage({ id }: { id: string }) {
  useDocumentTitle("Screening drive");
  const poll = usePoll((signal) => loadDrive(id, signal), id, {
    again: (view) => view.batch.completed_at === null && done(view.batch) < view.batch.counts.total,
    initialDelayMs: 1000,
    maxDelayMs: 10_000,
  });
  const [exportError, setExportError] = useState<unknown>(null);
  const view = poll.value;

  if (!view) {
    return (
      <>
        <PageHeader title="Screening drive" />
        {poll.error ? <ErrorMessage error={poll.error} /> : <p role="status">Loading the screening drive…</p>}
      </>
    );
  }
  const { batch, jobs } = view;
  const c = batch.counts;
  const finished = done(batch);
  const f = batch.findings;
  const ordered = orderForReview(jobs);
  // A drive of a research model: its results are not screening results, and never read as such.
  const stage = jobs.find((j) => j.result?.stage)?.result?.stage;
  const research = isResearch(stage);
  const [above, below] = research ? ["Above", "Below"] : ["Positive", "Negative"];
  const exportPath = batch.links?.export_csv ?? batchExportPath(batch.id);
  const fileName = `medinform-${batch.model}-${batch.id}.csv`;

  const onExport = (event: MouseEvent<HTMLAnchorElement>) => {
    // With an API key the file must be fetched with it; a plain link cannot send the header.
    if (!getApiKey()) return;
    event.preventDefault();
    setExportError(null);
    downloadWithKey(exportPath, fileName).catch(setExportError);
  };

  return (
    <>
      <PageHeader title="Screening drive">
        <p>
          {[batch.site, batch.campaign].filter(Boolean).join(" · ") || "No site recorded"}
          {batch.operator ? ` · operator ${batch.operator}` : ""} · {batch.model}
          {batch.model_version ? ` ${batch.model_version}` : ""} · started {dateTime(batch.created_at)}{" "}
          <StageBadge stage={stage} />
        </p>
        <ResearchNote stage={stage} />
      </PageHeader>

      <section className="card drive-progress" aria-labelledby="drive-progress">
        <h2 id="drive-progress" className="section-title">
          Progress
        </h2>
        <progress max={Math.max(1, c.total)} value={finished} aria-label="Images screened" className="drive-bar" />
        <p role="status" aria-live="polite" className="status-text">
          {finished} of {c.total} images screened
          {batch.completed_at || finished >= c.total ? " — complete." : "…"}
        </p>
        {poll.error !== null && <p className="hint hint-warning">{describeError(poll.error)} Still trying…</p>}
        <dl className="counts">
          <div>
            <dt>Waiting</dt>
            <dd>{c.queued}</dd>
          </div>
          <div>
            <dt>Screening</dt>
            <dd>{c.processing}</dd>
          </div>
          <div>
            <dt>Done</dt>
            <dd>{c.succeeded}</dd>
          </div>
          <div>
            <dt>Failed</dt>
            <dd>{c.failed}</dd>
          </div>
          <div>
            <dt>Canceled</dt>
            <dd>{c.canceled}</dd>
          </div>
        </dl>
      </section>

      {f && (
        <section className="card" aria-labelledby="drive-findings">
          <h2 id="drive-findings" className="section-title">
            Findings
          </h2>
          <dl className="counts counts-findings">
            <div className="count-positive">
              <dt>{research ? `At or above threshold (${f.finding})` : `Screen positive (${f.finding})`}</dt>
              <dd data-testid="count-positive">{f.positive}</dd>
            </div>
            <div>
              <dt>{research ? "Below threshold" : "Screen negative"}</dt>
              <dd data-testid="count-negative">{f.negative}</dd>
            </div>
            {Object.entries(f.by_label).map(([label, n]) => (
              <div key={label}>
                <dt>Predicted {label}</dt>
                <dd>{n}</dd>
              </div>
            ))}
          </dl>
          <p className="hint">Threshold {percent(f.threshold, 2)} on p({f.finding}).</p>
        </section>
      )}

      <div className="drive-actions">
        <a className="button" href={exportPath} download={fileName} onClick={onExport} data-testid="export-csv">
          Export to CSV
        </a>
        <Link className="button button-secondary" to={`/jobs?batch_id=${encodeURIComponent(batch.id)}`}>
          See in the jobs list
        </Link>
        <Link className="button button-secondary" to={`/upload?model=${encodeURIComponent(batch.model)}`}>
          Screen more images
        </Link>
      </div>
      {exportError !== null && <ErrorMessage error={exportError} />}

      <section aria-labelledby="drive-list">
        <h2 id="drive-list" className="section-title">
          Images, positives first
        </h2>
        {ordered.length === 0 ? (
          <p className="empty">No images in this drive yet.</p>
        ) : (
          <div className="table-scroll" tabIndex={0} role="region" aria-label="Images of the drive">
            <table className="jobs-table">
              <thead>
                <tr>
                  <th scope="col">Reference</th>
                  <th scope="col">Status</th>
                  <th scope="col">Result</th>
                  <th scope="col">p({f?.finding ?? "finding"})</th>
                </tr>
              </thead>
              <tbody>
                {ordered.map((job) => (
                  <tr key={job.id} className={job.result?.positive ? "row-positive" : undefined} data-job={job.id}>
                    <td data-label="Reference">
                      <Link to={`/jobs/${encodeURIComponent(job.id)}`}>{job.client_reference ?? job.id}</Link>
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={job.status} />
                    </td>
                    <td data-label="Result">
                      {job.result ? (
                        <span className={job.result.positive ? "result-chip result-chip-positive" : "result-chip"}>
                          {job.result.positive ? above : below} · {job.result.label}
                        </span>
                      ) : (
                        <span className="muted">–</span>
                      )}
                    </td>
                    <td data-label="Probability">{job.result ? percent(job.result.finding_probability) : "–"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <Disclaimer stage={stage} />
    </>
  );
}
