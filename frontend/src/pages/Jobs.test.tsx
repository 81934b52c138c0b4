import { fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { job, json, modelsRoute, mockFetch } from "../test/fixtures";
import { JobsPage } from "./Jobs";

describe("Jobs page", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("pages through jobs with the API's cursor, and back", async () => {
    const mock = mockFetch(modelsRoute, (url) => {
      if (url.pathname !== "/v1/jobs") return undefined;
      return url.searchParams.get("cursor") === "page2"
        ? json({ jobs: [job("j3", { client_reference: "third" })], next_cursor: null })
        : json({
            jobs: [job("j1", { client_reference: "first" }), job("j2", { client_reference: "second" })],
            next_cursor: "page2",
          });
    });
    window.history.replaceState(null, "", "/jobs?model=malaria");
    render(<JobsPage />);
    expect(await screen.findByText("first")).toBeTruthy();
    expect(screen.getByText("second")).toBeTruthy();
    const newer = screen.getByRole("button", { name: "Newer" }) as HTMLButtonElement;
    const older = screen.getByRole("button", { name: "Older" }) as HTMLButtonElement;
    expect(newer.disabled).toBe(true);

    fireEvent.click(older);
    expect(await screen.findByText("third")).toBeTruthy();
    expect(screen.queryByText("first")).toBeNull();
    expect(screen.getByText("Page 2")).toBeTruthy();
    expect(older.disabled).toBe(true);
    const pageTwo = mock.mock.calls.map(([u]) => String(u)).find((u) => u.includes("cursor=page2"));
    expect(pageTwo).toContain("model=malaria");

    fireEvent.click(newer);
    expect(await screen.findByText("first")).toBeTruthy();
    expect(screen.getByText("Page 1")).toBeTruthy();
  });

  it("explains an error instead of showing it raw", async () => {
    mockFetch(modelsRoute, (url) =>
      url.pathname === "/v1/jobs" ? json({ error: { code: "invalid_cursor", message: "bad cursor" } }, 400) : undefined,
    );
    window.history.replaceState(null, "", "/jobs");
    render(<JobsPage />);
    expect(await screen.findByText(/This page of the list is no longer valid/)).toBeTruthy();
    expect(screen.queryByText(/bad cursor/)).toBeNull();
  });
});
