import { useRef } from "react";

import { fetchModelFigure, getModel } from "../api/client";
import type { ModelFigure, ModelMetrics, ModelMinimum } from "../api/types";
import { Disclaimer, ErrorMessage, Loading, PageHeader, ResearchNote, StageBadge } from "../components/common";
import { describeError, errorCode } from "../lib/errors";
import { imageNeeded, metricName, metricValue, modalityLabel, percent } from "../lib/format";
import { useDocumentTitle, useLoad, useNearViewport, useObjectUrl } from "../lib/hooks";
import { Markdown } from "../lib/markdown";
import { Link } from "../lib/router";

/** The headline metrics of "At a glance", in this order, when the card has them. */
const GLANCE_METRICS = ["accuracy", "sensitivity", "specificity", "roc_auc"] as const;

/** A numeric `[metrics]` value, or undefined (absent, or not a number). */
function measured(metrics: ModelMetrics | undefined, key: string): number | undefined {
  const value = metrics?.[key];
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

/** What stage "screening" requires against what the model measured, one row per minimum. */
export function TargetsTable({ minimum, metrics }: { minimum: ModelMinimum; metrics: ModelMetrics | undefined }) {
  return (
    <div className="table-scroll">
      <table className="targets-table">
        <thead>
          <tr>
            <th scope="col">Measure</th>
            <th scope="col">Minimum</th>
            <th scope="col">Measured</th>
            <th scope="col">Target</th>
          </tr>
        </thead>
        <tbody>
          {Object.entries(minimum).map(([key, target]) => {
            const value = measured(metrics, key);
            const met = value !== undefined && value >= target;
            return (
              <tr key={key} data-metric={key}>
                <th scope="row">{metricName(key)}</th>
                <td>≥ {metricValue(key, target)}</td>
                <td>{value === undefined ? "–" : metricValue(key, value)}</td>
                <td>
                  {value === undefined ? (
                    <span className="target-missed">Not measured</span>
                  ) : met ? (
                    <span className="target-met">
                      <span aria-hidden="true">✓ </span>Met
                    </span>
                  ) : (
                    <span className="target-missed">
                      <span aria-hidden="true">✗ </span>Not met
                    </span>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** One figure, fetched with the key when it comes near the screen, in a box that does not move. */
function Figure({ figure }: { figure: ModelFigure }) {
  const ref = useRef<HTMLElement>(null);
  const near = useNearViewport(ref);
  const image = useObjectUrl((signal) => fetchModelFigure(figure.url, signal), near ? figure.url : null);
  return (
    <figure className="model-figure" ref={ref}>
      <div className="model-figure-frame">
        {image.url ? (
          <img src={image.url} alt={figure.title} loading="lazy" decoding="async" />
        ) : (
          <span className="model-figure-placeholder" data-error-code={image.error ? errorCode(image.error) : undefined}>
            {image.error ? describeError(image.error) : "Loading the figure…"}
          </span>
        )}
      </div>
      <figcaption>{figure.title}</figcaption>
    </figure>
  );
}

/** The model's figures (ROC curve, reliability diagram, confusion matrix…), each with its title. */
export function FigureList({ figures }: { figures: ModelFigure[] }) {
  return (
    <section className="card model-figures" aria-labelledby="card-figures">
      <h2 id="card-figures" className="section-title">
        Figures
      </h2>
      <div className="figure-list">
        {figures.map((figure) => (
          <Figure key={figure.url} figure={figure} />
        ))}
      </div>
    </section>
  );
}

export function ModelCardPage({ id }: { id: string }) {
  const [model, retry] = useLoad((signal) => getModel(id, signal), [id]);
  useDocumentTitle(model.state === "ready" ? `${model.value.name ?? id} model card` : "Model card");
  if (model.state === "loading") return <Loading label="Loading the model card…" />;
  if (model.state === "error") return <ErrorMessage error={model.error} retry={retry} />;
  const m = model.value;
  const metrics = m.metrics;
  const ready = m.status === "ready";
  const figures = m.figures ?? [];
  const glance = GLANCE_METRICS.flatMap((key) => {
    const value = measured(metrics, key);
    return value === undefined ? [] : [{ key, value }];
  });
  return (
    <>
      <PageHeader title={m.name ?? m.id}>
        <p>
          {modalityLabel(m.modality)} · version {m.version ?? "–"} ·{" "}
          <span className={ready ? "badge badge-ready" : "badge badge-unavailable"}>{ready ? "Available" : "Unavailable"}</span>{" "}
          <StageBadge stage={m.stage} />
        </p>
        <ResearchNote stage={m.stage} />
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
        {glance.length > 0 && (
          <dl className="counts metrics">
            {glance.map(({ key, value }) => (
              <div key={key}>
                <dt>{metricName(key)}</dt>
                <dd>{metricValue(key, value)}</dd>
              </div>
            ))}
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
      {m.minimum && Object.keys(m.minimum).length > 0 && (
        <section className="card" aria-labelledby="card-targets">
          <h2 id="card-targets" className="section-title">
            Screening targets
          </h2>
          <p className="hint">
            A model is offered for screening only when every figure measured on held-out data meets the
            minimum below; otherwise it is for research use only.
          </p>
          <TargetsTable minimum={m.minimum} metrics={metrics} />
        </section>
      )}
      <div className={figures.length > 0 ? "model-card-layout" : undefined}>
        <article className="card model-card" aria-label="Model card">
          {m.card ? <Markdown text={m.card} headingOffset={1} /> : <p>This model has no card.</p>}
        </article>
        {figures.length > 0 && <FigureList figures={figures} />}
      </div>
      <Disclaimer stage={m.stage} />
    </>
  );
}
