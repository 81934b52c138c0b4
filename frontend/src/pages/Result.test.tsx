import { fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Job, ScreeningResult } from "../api/types";
import { RESEARCH_SENTENCE } from "../components/common";
import { job, json, modelsRoute, mockFetch, png } from "../test/fixtures";
import { HEATMAP_SENTENCE, ResultPage } from "./Result";

function result(patch: Partial<ScreeningResult> = {}): ScreeningResult {
  return {
    label: "Tuberculosis",
    probabilities: [
      { label: "Normal", probability: 0.2 },
      { label: "Tuberculosis", probability: 0.8 },
    ],
    finding: "Tuberculosis",
    finding_probability: 0.8,
    threshold: 0.42,
    positive: true,
    ...patch,
  };
}

/** Renders the result page of `shown`, answering its job, image and heatmap; returns fetch. */
async function renderResult(shown: Job) {
  const mock = mockFetch(modelsRoute, (url) => {
    if (url.pathname === `/v1/jobs/${shown.id}`) return json(shown);
    if (url.pathname.startsWith(`/v1/jobs/${shown.id}/`)) return png();
    return undefined;
  });
  render(<ResultPage id={shown.id} />);
  await screen.findByTestId("predicted-label");
  return mock;
}

const tuberculosis = (patch: Partial<Job>) =>
  job("j1", { model: "tuberculosis", model_version: "2.0.0", result: result(), ...patch });

describe("Result page", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("never presents a research model's result as a screening result", async () => {
    await renderResult(tuberculosis({ result: result({ stage: "research" }) }));
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Research result");
    expect(screen.getByText("Research use only")).toBeTruthy();
    expect(screen.getByText(RESEARCH_SENTENCE)).toBeTruthy();
    expect(screen.getByText("Research model output")).toBeTruthy();
    expect(document.body.textContent).not.toMatch(/Screen positive|Refer for review|Screening finished/);
    expect(document.querySelector(".verdict-positive")).toBeNull();
  });

  it("badges a screening result quietly", async () => {
    await renderResult(job("j2", { result: result({ stage: "screening" }) }));
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Screening result");
    expect(screen.getByText("Screening", { selector: ".badge" })).toBeTruthy();
    expect(screen.getByText(/Screen positive for Tuberculosis/)).toBeTruthy();
    expect(screen.queryByText(RESEARCH_SENTENCE)).toBeNull();
  });

  it("shows no stage badge for a result of an older model version without a stage", async () => {
    // The model is research today, but this result was made by version 1.0.0, before stages.
    await renderResult(tuberculosis({ model_version: "1.0.0" }));
    await screen.findByText("Tuberculosis (chest X-ray)"); // the model list has arrived
    expect(document.querySelector("[data-stage]")).toBeNull();
    expect(screen.queryByText(RESEARCH_SENTENCE)).toBeNull();
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Screening result");
  });

  it("says a job is for a research model while it waits, when its version is the model's", async () => {
    mockFetch(modelsRoute, (url) =>
      url.pathname === "/v1/jobs/j5" ? json(tuberculosis({ id: "j5", status: "queued", result: undefined })) : undefined,
    );
    render(<ResultPage id="j5" />);
    expect(await screen.findByText("Research use only")).toBeTruthy();
    expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Research result");
  });

  it("stacks the heatmap over the image with a toggle and an opacity slider", async () => {
    const mock = await renderResult(
      job("j3", {
        result: result({ stage: "screening" }),
        links: { self: "/v1/jobs/j3", model: "/v1/models/malaria", heatmap: "/v1/jobs/j3/heatmap.png" },
      }),
    );
    expect(screen.getByText(HEATMAP_SENTENCE)).toBeTruthy();
    const slider = screen.getByRole("slider", { name: /Opacity/ }) as HTMLInputElement;
    expect(slider.value).toBe("60");
    expect(slider.disabled).toBe(true);
    // Not fetched until asked for.
    expect(mock.mock.calls.some(([u]) => String(u).includes("heatmap.png"))).toBe(false);

    fireEvent.click(screen.getByRole("checkbox", { name: "Show heatmap" }));
    const layer = (await screen.findByTestId("heatmap-layer")) as HTMLImageElement;
    expect(mock.mock.calls.map(([u]) => String(u))).toContain("/v1/jobs/j3/heatmap.png?overlay=false");
    expect(layer.style.opacity).toBe("0.6");
    fireEvent.change(slider, { target: { value: "25" } });
    expect(layer.style.opacity).toBe("0.25");

    fireEvent.click(screen.getByRole("checkbox", { name: "Show heatmap" }));
    expect(screen.queryByTestId("heatmap-layer")).toBeNull();
  });

  it("shows a DICOM image's study and fetches its rendering, not the file", async () => {
    const mock = await renderResult(
      tuberculosis({
        id: "j5",
        dicom: {
          study_instance_uid: "1.2.826.0.1.3680043.8.498.1",
          sop_instance_uid: "1.2.826.0.1.3680043.8.498.1.1.1",
          accession_number: "ACC-2026-0042",
          modality: "DX",
          body_part_examined: "CHEST",
          study_date: "2026-12-01",
          patient_pseudonym: "3f1c9a",
        },
        links: { self: "/v1/jobs/j5", model: "/v1/models/tuberculosis", preview: "/v1/jobs/j5/image.png" },
      }),
    );
    expect(screen.getByTestId("dicom-modality").textContent).toContain("DX · CHEST");
    expect(screen.getByTestId("dicom-accession-number").textContent).toContain("ACC-2026-0042");
    expect(screen.getByTestId("dicom-study-instance-uid").textContent).toContain("1.2.826.0.1.3680043.8.498.1");
    expect(screen.getByTestId("dicom-patient-pseudonym").textContent).toContain("3f1c9a");
    expect(screen.queryByTestId("dicom-patient-id")).toBeNull();
    await screen.findByAltText("The uploaded image");
    const urls = mock.mock.calls.map(([u]) => String(u));
    expect(urls).toContain("/v1/jobs/j5/image.png");
    expect(urls).not.toContain("/v1/jobs/j5/image");
  });

  it("offers no heatmap controls when the result has no map", async () => {
    await renderResult(job("j4", { result: result({ stage: "screening" }) }));
    expect(screen.queryByRole("checkbox", { name: "Show heatmap" })).toBeNull();
    expect(screen.queryByRole("slider")).toBeNull();
    expect(screen.queryByText(HEATMAP_SENTENCE)).toBeNull();
  });
});
