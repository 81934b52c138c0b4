import { useState, type FormEvent } from "react";

import { listJobs, type JobFilters } from "../api/client";
import type { Job, JobStatus } from "../api/types";
import { ErrorMessage, Loading, PageHeader, StageBadge, StatusBadge, isResearch } from "../components/common";
import { dateTime, percent, shortId } from "../lib/format";
import { useDocumentTitle, useLoad, useModels } from "../lib/hooks";
import { Link, navigate, useLocation } from "../lib/router";

const STATUSES: { value: JobStatus | ""; label: string }[] = [
  { value: "", label: "Any status" },
  { value: "queued", label: "Waiting" },
  { value: "processing", label: "Screening" },
  { value: "succeeded", label: "Done" },
  { value: "failed", label: "Failed" },
  { value: "canceled", label: "Canceled" },
];

export const PAGE_SIZE = 25;

function ResultCell({ job }: { job: Job }) {
  if (!job.result) return <span className="muted">–</span>;
  return (
    <>
      <span className={job.result.positive ? "result-chip result-chip-positive" : "result-chip"}>
        {job.result.label} · {percent(job.result.finding_probability)}
      </span>
      {isResearch(job.result.stage) && (
        <>
          {" "}
          <StageBadge stage={job.result.stage} />
        </>
      )}
    </>
  );
}

/** The table of recent jobs; the filters live in the address so that a view can be shared. */
export function JobsPage() {
  useDocumentTitle("Jobs");
  const { query } = useLocation();
  const filters: JobFilters = {
    model: query.get("model") ?? "",
    status: (query.get("status") ?? "") as JobStatus | "",
    batch_id: query.get("batch_id") ?? "",
  };
  const filterKey = JSON.stringify(filters);
  // Cursors of the pages seen so far (null: the first page), reset when the filters change.
  const [pages, setPages] = useState<{ key: string; cursors: (string | null)[] }>({ key: filterKey, cursors: [null] });
  const cursors = pages.key === filterKey ? pages.cursors : [null];
  const cursor = cursors[cursors.length - 1] ?? null;
  const [models] = useModels();
  const [list, retry] = useLoad((signal) => listJobs({ ...filters, limit: PAGE_SIZE, cursor }, signal), [filterKey, cursor]);
  const [batchDraft, setBatchDraft] = useState(filters.batch_id ?? "");

  const setFilter = (name: keyof JobFilters, value: string) => {
    const params = new URLSearchParams(query);
    if (value) params.set(name, value);
    else params.delete(name);
    const search = params.toString();
    navigate(`/jobs${search ? `?${search}` : ""}`, { replace: true });
  };

  const applyBatch = (event: FormEvent) => {
    event.preventDefault();
    setFilter("batch_id", batchDraft.trim());
  };

  return (
    <>
      <PageHeader title="Jobs">
        <p>Recent screenings, newest first.</p>
      </PageHeader>
      <form className="filters" onSubmit={applyBatch} aria-label="Filters">
        <label>
          Service
          <select value={filters.model} onChange={(e) => setFilter("model", e.target.value)}>
            <option value="">Any service</option>
            {models.state === "ready" &&
              models.value.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name ?? m.id}
                </option>
              ))}
          </select>
        </label>
        <label>
          Status
          <select value={filters.status} onChange={(e) => setFilter("status", e.target.value)}>
            {STATUSES.map((s) => (
              <option key={s.value} value={s.value}>
                {s.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Screening drive (batch id)
          <span className="input-with-button">
            <input value={batchDraft} onChange={(e) => setBatchDraft(e.target.value)} placeholder="Any drive" autoComplete="off" />
            <button type="submit" className="button button-secondary button-small">
              Apply
            </button>
          </span>
        </label>
      </form>

      <div className="table-area">
        {list.state === "loading" && <Loading label="Loading jobs…" />}
        {list.state === "error" && <ErrorMessage error={list.error} retry={retry} />}
        {list.state === "ready" && list.value.jobs.length === 0 && (
          <p className="empty">No jobs match these filters{cursors.length > 1 ? " on this page" : ""}.</p>
        )}
        {list.state === "ready" && list.value.jobs.length > 0 && (
          <div className="table-scroll" tabIndex={0} role="region" aria-label="Jobs">
            <table className="jobs-table">
              <thead>
                <tr>
                  <th scope="col">Submitted</th>
                  <th scope="col">Service</th>
                  <th scope="col">Reference</th>
                  <th scope="col">Status</th>
                  <th scope="col">Result</th>
                  <th scope="col">Drive</th>
                </tr>
              </thead>
              <tbody>
                {list.value.jobs.map((job) => (
                  <tr key={job.id} data-job={job.id}>
                    <td data-label="Submitted">
                      <Link to={`/jobs/${encodeURIComponent(job.id)}`}>{dateTime(job.created_at)}</Link>
                    </td>
                    <td data-label="Service">{job.model}</td>
                    <td data-label="Reference">{job.client_reference ?? <span className="muted">{shortId(job.id)}</span>}</td>
                    <td data-label="Status">
                      <StatusBadge status={job.status} />
                    </td>
                    <td data-label="Result">
                      <ResultCell job={job} />
                    </td>
                    <td data-label="Drive">
                      {job.batch_id ? (
                        <Link to={`/batches/${encodeURIComponent(job.batch_id)}`}>{shortId(job.batch_id)}</Link>
                      ) : (
                        <span className="muted">–</span>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
      <nav className="pager" aria-label="Pages">
        <button
          type="button"
          className="button button-secondary"
          disabled={cursors.length <= 1}
          onClick={() => setPages({ key: filterKey, cursors: cursors.slice(0, -1) })}
        >
          Newer
        </button>
        <span className="pager-page">Page {cursors.length}</span>
        <button
          type="button"
          className="button button-secondary"
          disabled={list.state !== "ready" || !list.value.next_cursor}
          onClick={() => {
            if (list.state === "ready" && list.value.next_cursor) {
              setPages({ key: filterKey, cursors: [...cursors, list.value.next_cursor] });
            }
          }}
        >
          Older
        </button>
      </nav>
    </>
  );
}
