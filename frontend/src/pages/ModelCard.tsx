import { getModel } from "../api/client";
import { Disclaimer, ErrorMessage, Loading, PageHeader } from "../components/common";
import { imageNeeded, modalityLabel, percent } from "../lib/format";
import { useDocumentTitle, useLoad } from "../lib/hooks";
import { Markdown } from "../lib/markdown";
import { Link } from "../lib/router";

export function ModelCardPage({ id }: { id: string }) {
  const [model, retry] = useLoad((signal) => getModel(id, signal), [id]);
  useDocumentTitle(model.state === "ready" ? `${model.value.name ?? id} model card` : "Model card");
  if (model.state === "loading") return <Loading label="Loading the model card…" />;
  if (model.state === "error") return <ErrorMessage error={model.error} retry={retry} />;
  const m = model.value;
  const metrics = m.metrics;
  const ready = m.status === "ready";
  return (
    <>
      <PageHeader title={m.name ?? m.id}>
        <p>
          {modalityLabel(m.modality)} · version {m.version ?? "–"} ·{" "}
          <span className={ready ? "badge badge-ready" : "badge badge-unavailable"}>{ready ? "Available" : "Unavailable"}</span>
        </p>
      </PageHeader>
      {!ready && (
        <div className="notice notice-warning">
          <p>This model is not available on this server{m.reason ? `: ${m.reason}` : "."}</p>
        </div>
      )}
      <section className="card" aria-labelledby="card-summary">
        <h2 id="card-summary" className="section-title">
          At a glance
        </h2>
        <dl className="facts">
          <div>
            <dt>Image needed</dt>
            <dd>{imageNeeded(m.modality)}</dd>
          </div>
          {m.labels && (
            <div>
              <dt>Classes</dt>
              <dd>{m.labels.join(", ")}</dd>
            </div>
          )}
          {m.finding && m.threshold !== undefined && (
            <div>
              <dt>Decision</dt>
              <dd>
                positive for {m.finding} when p({m.finding}) ≥ {percent(m.threshold, 2)}
              </dd>
            </div>
          )}
        </dl>
        {metrics && (
          <dl className="counts metrics">
            {metrics.accuracy !== undefined && (
              <div>
                <dt>Accuracy</dt>
                <dd>{percent(metrics.accuracy)}</dd>
              </div>
            )}
            {metrics.sensitivity !== undefined && (
              <div>
                <dt>Sensitivity</dt>
                <dd>{percent(metrics.sensitivity)}</dd>
              </div>
            )}
            {metrics.specificity !== undefined && (
              <div>
                <dt>Specificity</dt>
                <dd>{percent(metrics.specificity)}</dd>
              </div>
            )}
            {metrics.roc_auc !== undefined && (
              <div>
                <dt>ROC AUC</dt>
                <dd>{metrics.roc_auc.toFixed(3)}</dd>
              </div>
            )}
          </dl>
        )}
        {metrics?.n !== undefined && (
          <p className="hint">
            Measured on {metrics.n.toLocaleString()} held-out images{metrics.split ? ` (${metrics.split} split)` : ""}.
          </p>
        )}
        {ready && (
          <p>
            <Link className="button" to={`/upload?model=${encodeURIComponent(m.id)}`}>
              Screen images with this model
            </Link>
          </p>
        )}
      </section>
      <article className="card model-card" aria-label="Model card">
        {m.card ? <Markdown text={m.card} headingOffset={1} /> : <p>This model has no card.</p>}
      </article>
      <Disclaimer />
    </>
  );
}
