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
    stage: "screening",
    heatmap: true,
  },
  {
    id: "tuberculosis",
    status: "ready",
    version: "2.0.0",
    name: "Tuberculosis (chest X-ray)",
    modality: "chest_xray",
    task: "binary",
    labels: ["Normal", "Tuberculosis"],
    finding: "Tuberculosis",
    threshold: 0.42,
    metrics: { sensitivity: 0.912, specificity: 0.655, roc_auc: 0.931 },
    stage: "research",
    minimum: { sensitivity: 0.9, specificity: 0.7, roc_auc: 0.93 },
    heatmap: true,
    figures: [
      { title: "ROC curve with the operating point", url: "/v1/models/tuberculosis/figures/roc.png" },
      { title: "Reliability diagram", url: "/v1/models/tuberculosis/figures/reliability.png" },
    ],
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

/** A PNG answer (the bytes do not matter to jsdom). */
export function png(): Response {
  return new Response(new Uint8Array([0x89, 0x50, 0x4e, 0x47]), { headers: { "Content-Type": "image/png" } });
}

export interface SentRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

/** Replaces XMLHttpRequest (uploads) with one that answers `status` and `body`; returns what was sent. */
export function mockXhr(status: number, body: unknown): SentRequest[] {
  const sent: SentRequest[] = [];
  class FakeXhr {
    status = status;
    responseText = JSON.stringify(body);
    upload = { onprogress: null };
    onload: (() => void) | null = null;
    private readonly request: SentRequest = { method: "", url: "", headers: {}, body: null };
    open(method: string, url: string) {
      this.request.method = method;
      this.request.url = url;
    }
    setRequestHeader(name: string, value: string) {
      this.request.headers[name] = value;
    }
    getResponseHeader() {
      return null;
    }
    send(requestBody: unknown) {
      this.request.body = requestBody;
      sent.push(this.request);
      setTimeout(() => this.onload?.(), 0);
    }
    abort() {}
  }
  vi.stubGlobal("XMLHttpRequest", FakeXhr);
  return sent;
}
