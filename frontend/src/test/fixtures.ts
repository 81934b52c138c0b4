import { vi } from "vitest";

import type { Job, Model } from "../api/types";

export const MODELS: Model[] = [
  {
    id: "malaria",
    status: "ready",
    version: "1.0.0",
    name: "Malaria (blood-smear cell)",
    description: "A single red-cell crop.",
    modality: "blood_smear_cell",
    task: "binary",
    labels: ["Uninfected", "Parasitized"],
    finding: "Parasitized",
    threshold: 0.7269,
    metrics: { sensitivity: 0.9275, specificity: 0.9841 },
  },
  {
    id: "diabetic_retinopathy",
    status: "unavailable",
    reason: "the weights file model.onnx is missing",
    version: "0.0.0",
    name: "Diabetic retinopathy (fundus)",
    modality: "fundus",
  },
];

export function job(id: string, patch: Partial<Job> = {}): Job {
  return {
    id,
    model: "malaria",
    model_version: "1.0.0",
    status: "succeeded",
    created_at: "2026-05-01T10:00:00Z",
    started_at: "2026-05-01T10:00:01Z",
    finished_at: "2026-05-01T10:00:02Z",
    tags: [],
    links: { self: `/v1/jobs/${id}`, model: "/v1/models/malaria" },
    ...patch,
  };
}

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

type Route = (url: URL, init: RequestInit | undefined) => Response | undefined;

/** Replaces fetch with routes; unmatched requests answer a JSON 404. Returns the mock. */
export function mockFetch(...routes: Route[]) {
  const mock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), "http://localhost");
    for (const route of routes) {
      const response = route(url, init);
      if (response) return response;
    }
    return json({ error: { code: "not_found", message: "No such resource." } }, 404);
  });
  vi.stubGlobal("fetch", mock);
  return mock;
}

export const modelsRoute: Route = (url) => (url.pathname === "/v1/models" ? json({ models: MODELS }) : undefined);
