import { afterEach, describe, expect, it, vi } from "vitest";

import { setApiKey } from "../lib/settings";
import { json, mockFetch } from "../test/fixtures";
import { ApiError, createJob, getJob, jobsQuery, listModels } from "./client";

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
    const headers: Record<string, string> = {};
    class FakeXhr {
      status = 202;
      responseText = JSON.stringify({ id: "j1" });
      upload = { onprogress: null };
      onload: (() => void) | null = null;
      open() {}
      setRequestHeader(name: string, value: string) {
        headers[name] = value;
      }
      getResponseHeader() {
        return null;
      }
      send() {
        setTimeout(() => this.onload?.(), 0);
      }
      abort() {}
    }
    vi.stubGlobal("XMLHttpRequest", FakeXhr);
    const job = await createJob({
      model: "malaria",
      image: new File(["x"], "a.png", { type: "image/png" }),
      idempotency_key: "k-1",
    }).promise;
    expect(job.id).toBe("j1");
    expect(headers.Authorization).toBe("Bearer mik_1a2b3c4d_secret");
    expect(headers["Idempotency-Key"]).toBe("k-1");
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
