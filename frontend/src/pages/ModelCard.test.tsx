import { render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { setApiKey } from "../lib/settings";
import { MODELS, json, mockFetch, png } from "../test/fixtures";
import { ModelCardPage } from "./ModelCard";

describe("Model card page", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("shows the stage, the targets met and missed, and every figure with its title", async () => {
    setApiKey("mik_1a2b3c4d_secret");
    const mock = mockFetch((url) => {
      if (url.pathname === "/v1/models/tuberculosis") return json({ ...MODELS[1], card: "## Training data\n\nChest X-rays." });
      if (url.pathname.startsWith("/v1/models/tuberculosis/figures/")) return png();
      return undefined;
    });
    render(<ModelCardPage id="tuberculosis" />);
    await screen.findByRole("heading", { level: 1, name: /Tuberculosis/ });
    expect(screen.getByText("Research use only")).toBeTruthy();

    const rows = within(screen.getByRole("table")).getAllByRole("row").slice(1);
    const cells = rows.map((row) => Array.from(row.children, (cell) => cell.textContent));
    expect(cells).toEqual([
      ["Sensitivity", "≥ 90.0%", "91.2%", "✓ Met"],
      ["Specificity", "≥ 70.0%", "65.5%", "✗ Not met"],
      ["ROC AUC", "≥ 0.930", "0.931", "✓ Met"],
    ]);

    const figures = within(screen.getByRole("region", { name: "Figures" }));
    expect(figures.getAllByRole("figure")).toHaveLength(2);
    expect(figures.getByText("ROC curve with the operating point", { selector: "figcaption" })).toBeTruthy();
    await waitFor(() => expect(figures.getAllByRole("img")).toHaveLength(2));
    const img = figures.getByRole("img", { name: "Reliability diagram" }) as HTMLImageElement;
    expect(img.src).toMatch(/^blob:/);
    expect(img.getAttribute("loading")).toBe("lazy");
    // Fetched with the key (an <img src> could not send it).
    const call = mock.mock.calls.find(([u]) => String(u).endsWith("/figures/roc.png"))!;
    expect(new Headers((call[1] as RequestInit).headers).get("Authorization")).toBe("Bearer mik_1a2b3c4d_secret");
  });

  it("says so when a figure is missing, and shows no figures section without figures", async () => {
    mockFetch((url) => {
      if (url.pathname === "/v1/models/tuberculosis") {
        return json({ ...MODELS[1], figures: [{ title: "ROC", url: "/v1/models/tuberculosis/figures/gone.png" }], card: null });
      }
      if (url.pathname === "/v1/models/malaria") return json({ ...MODELS[0], card: null });
      return url.pathname.includes("/figures/")
        ? json({ error: { code: "figure_not_found", message: "no such figure" } }, 404)
        : undefined;
    });
    const { unmount } = render(<ModelCardPage id="tuberculosis" />);
    expect(await screen.findByText(/This figure of the model card is missing/)).toBeTruthy();
    unmount();
    render(<ModelCardPage id="malaria" />);
    await screen.findByRole("heading", { level: 1, name: /Malaria/ });
    expect(screen.queryByRole("region", { name: "Figures" })).toBeNull();
    expect(screen.getByText("Screening", { selector: ".badge" })).toBeTruthy();
  });
});
