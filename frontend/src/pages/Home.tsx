import type { Model } from "../api/types";
import { ErrorMessage, Loading, PageHeader, ResearchNote, StageBadge } from "../components/common";
import { imageNeeded, modalityLabel, percent } from "../lib/format";
import { useDocumentTitle, useModels } from "../lib/hooks";
import { Link } from "../lib/router";

function ModelCard({ model }: { model: Model }) {
  const ready = model.status === "ready";
  const headingId = `model-${model.id}`;
  return (
    <li className={ready ? "card service" : "card service service-unavailable"} aria-labelledby={headingId} data-model={model.id}>
      <div className="service-top">
        <span className="service-modality">{modalityLabel(model.modality)}</span>
        <span className={ready ? "badge badge-ready" : "badge badge-unavailable"}>
          {ready ? "Available" : "Unavailable"}
        </span>
      </div>
      <h2 id={headingId} className="service-name">
        {model.name ?? model.id}
      </h2>
      {model.stage && (
        <div className="service-stage">
          <StageBadge stage={model.stage} />
          <ResearchNote stage={model.stage} />
        </div>
      )}
      {model.description && <p className="service-description">{model.description}</p>}
      <dl className="facts">
        <div>
          <dt>Image needed</dt>
          <dd>{imageNeeded(model.modality)}</dd>
        </div>
        {model.finding && (
          <div>
            <dt>Looks for</dt>
            <dd>{model.finding}</dd>
          </div>
        )}
        {model.metrics?.sensitivity !== undefined && model.metrics.specificity !== undefined && (
          <div>
            <dt>Measured</dt>
            <dd>
              sensitivity {percent(model.metrics.sensitivity)}, specificity{" "}
              {percent(model.metrics.specificity)}
            </dd>
          </div>
        )}
        <div>
          <dt>Version</dt>
          <dd>{model.version ?? "–"}</dd>
        </div>
      </dl>
      {!ready && (
        <p className="service-reason">
          Not available on this server{model.reason ? `: ${model.reason}` : "."}
        </p>
      )}
      <div className="service-actions">
        {ready ? (
          <Link className="button" to={`/upload?model=${encodeURIComponent(model.id)}`}>
            Screen images<span className="visually-hidden"> for {model.name ?? model.id}</span>
          </Link>
        ) : (
          <span className="button button-disabled" aria-disabled="true">
            Cannot be chosen
          </span>
        )}
        <Link className="button button-secondary" to={`/models/${encodeURIComponent(model.id)}`}>
          Model card<span className="visually-hidden"> of {model.name ?? model.id}</span>
        </Link>
      </div>
    </li>
  );
}

export function HomePage() {
  useDocumentTitle("Screening services");
  const [models, retry] = useModels();
  return (
    <>
      <PageHeader title="Screening services">
        <p>
          Choose a service to screen one image, or many images from a screening drive. Each service
          is a model trained for one kind of image.
        </p>
      </PageHeader>
      {models.state === "loading" && <Loading label="Loading the screening services…" />}
      {models.state === "error" && <ErrorMessage error={models.error} retry={retry} />}
      {models.state === "ready" && (
        <ul className="service-grid" aria-label="Screening services">
          {models.value.map((model) => (
            <ModelCard key={model.id} model={model} />
          ))}
        </ul>
      )}
    </>
  );
}
