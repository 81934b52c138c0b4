import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import type { ModelStage } from "../api/types";
import { RESEARCH_SENTENCE, ResearchNote, StageBadge } from "./common";

/** The badge and the sentence, as the pages show them together. */
function renderStage(stage: ModelStage | undefined) {
  return render(
    <>
      <StageBadge stage={stage} />
      <ResearchNote stage={stage} />
    </>,
  );
}

describe("StageBadge", () => {
  it("marks a research model clearly, with its sentence", () => {
    renderStage("research");
    expect(screen.getByText("Research use only").className).toContain("badge-research");
    expect(screen.getByText(RESEARCH_SENTENCE)).toBeTruthy();
  });

  it("marks a screening model quietly, without the sentence", () => {
    renderStage("screening");
    expect(screen.getByText("Screening").className).toContain("badge-screening");
    expect(screen.queryByText(RESEARCH_SENTENCE)).toBeNull();
  });

  it("shows nothing when the stage is unknown (results of older model versions)", () => {
    expect(renderStage(undefined).container.innerHTML).toBe("");
  });
});
