import { render, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { RESEARCH_SENTENCE } from "../components/common";
import { modelsRoute, mockFetch } from "../test/fixtures";
import { HomePage } from "./Home";

async function card(name: RegExp): Promise<HTMLElement> {
  return (await screen.findByRole("heading", { name })).closest("li")!;
}

describe("Home page", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("badges each service with its stage; a research one says what its results are for", async () => {
    mockFetch(modelsRoute);
    render(<HomePage />);
    const research = await card(/Tuberculosis/);
    expect(within(research).getByText("Research use only")).toBeTruthy();
    expect(within(research).getByText(RESEARCH_SENTENCE)).toBeTruthy();

    const screening = await card(/Malaria/);
    expect(within(screening).getByText("Screening")).toBeTruthy();
    expect(within(screening).queryByText("Research use only")).toBeNull();
    expect(within(screening).queryByText(RESEARCH_SENTENCE)).toBeNull();

    // A model whose manifest says nothing of a stage (here: unavailable) gets no stage badge.
    expect((await card(/Diabetic retinopathy/)).querySelector("[data-stage]")).toBeNull();
  });
});
