import { afterEach, describe, expect, it, vi } from "vitest";

import { setApiKey } from "../lib/settings";
import { json, mockFetch, mockXhr, png } from "../test/fixtures";
import {
  ApiError,
  addBatchJobs,
  createJob,
  fetchJobHeatmap,
  fetchModelFigure,
  getJob,
  idempotencyKeyFor,
  jobsQuery,
  listModels,
} from "./client";

function headerOf(mock: ReturnType<typeof mockFetch>, name: string): string | null {
  const init = mock.mock.calls[0]![1] as RequestInit;
  return new Headers(init.headers).get(name);
}

describe("API client", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("sends Authorization: Bearer <key> when a key is set", async () => {
    setApiKey("mik_1a2b3c4d_secret");
    const mock = mockFetch(() => json({ models: [] }));
    await listModels();
    expect(headerOf(mock, "Authorization")).toBe("Bearer mik_1a2b3c4d_secret");
  });

  it("sends no Authorization header without a key", async () => {
    const mock = mockFetch(() => json({ models: [] }));
    await listModels();
    expect(headerOf(mock, "Authorization")).toBeNull();
  });

  it("puts the key on uploads too (XMLHttpRequest)", async () => {
    setApiKey("mik_1a2b3c4d_secret");
    const sent = mockXhr(202, { id: "j1" });
    const job = await createJob({
      model: "malaria",
      image: new File(["x"], "a.png", { type: "image/png" }),
      idempotency_key: "k-1",
    }).promise;
    expect(job.id).toBe("j1");
    expect(sent[0]!.headers.Authorization).toBe("Bearer mik_1a2b3c4d_secret");
    expect(sent[0]!.headers["Idempotency-Key"]).toBe("k-1");
  });

  it("adds batch images with an Idempotency-Key, each client_reference just before its image", async () => {
    const sent = mockXhr(202, { jobs: [], rejected: [] });
    const images = [new File(["a"], "a.png", { type: "image/png" }), new File(["b"], "b.png", { type: "image/png" })];
    await addBatchJobs("b-1", images, "key-1").promise;
    expect(sent[0]!.url).toBe("/v1/batches/b-1/jobs");
    expect(sent[0]!.headers["Idempotency-Key"]).toBe("key-1");
    // The server gives a client_reference to the image that follows it.
    const fields = Array.from((sent[0]!.body as FormData).entries(), ([name, value]) =>
      typeof value === "string" ? `${name}=${value}` : `${name}:${value.name}`,
    );
    expect(fields).toEqual(["client_reference=a.png", "image:a.png", "client_reference=b.png", "image:b.png"]);
  });

  it("makes request keys the server accepts: the same for the same request, new for another", () => {
    const key = idempotencyKeyFor("f00d", "malaria", "Patient 12 — Ward é");
    expect(key).toMatch(/^[\x21-\x7e]{1,255}$/);
    expect(idempotencyKeyFor("f00d", "malaria", "Patient 12 — Ward é")).toBe(key);
    expect(idempotencyKeyFor("f00d", "malaria", "Patient 13 — Ward é")).not.toBe(key);
    expect(idempotencyKeyFor("f00d", "malaria", "")).not.toBe(idempotencyKeyFor("f00d", "malaria"));
  });

  it("fetches figures and heatmaps with the key, as object URLs", async () => {
    setApiKey("mik_1a2b3c4d_secret");
    const mock = mockFetch(() => png());
    expect(await fetchJobHeatmap("j 1", false)).toMatch(/^blob:/);
    expect(String(mock.mock.calls[0]![0])).toBe("/v1/jobs/j%201/heatmap.png?overlay=false");
    expect(headerOf(mock, "Authorization")).toBe("Bearer mik_1a2b3c4d_secret");
    await fetchModelFigure("/v1/models/tuberculosis/figures/roc.png");
    expect(String(mock.mock.calls[1]![0])).toBe("/v1/models/tuberculosis/figures/roc.png");
  });

  it("turns an error body into an ApiError with the API's code", async () => {
    mockFetch(() => json({ error: { code: "job_not_found", message: "There is no job x." } }, 404));
    const error = await getJob("x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).code).toBe("job_not_found");
    expect((error as ApiError).status).toBe(404);
  });

  it("turns a non-JSON error and a network failure into codes", async () => {
    mockFetch(() => new Response("<html>bad gateway</html>", { status: 502 }));
    expect(((await getJob("x").catch((e: unknown) => e)) as ApiError).code).toBe("http_502");
    vi.stubGlobal("fetch", vi.fn().mockRejectedValue(new TypeError("Failed to fetch")));
    expect(((await getJob("x").catch((e: unknown) => e)) as ApiError).code).toBe("network_error");
  });

  it("builds job list queries without empty filters", () => {
    expect(jobsQuery({ model: "malaria", status: "", batch_id: undefined, limit: 25, cursor: null })).toBe(
      "?model=malaria&limit=25",
    );
    expect(jobsQuery({})).toBe("");
  });
});
