import { describe, expect, it } from "vitest";

import { job } from "../test/fixtures";
import { orderForReview } from "./Batch";

const result = (p: number, positive: boolean) => ({
  label: positive ? "Tuberculosis" : "Normal",
  probabilities: [],
  finding: "Tuberculosis",
  finding_probability: p,
  threshold: 0.5,
  positive,
});

describe("orderForReview", () => {
  it("lists positives first, most probable first, then the rest by creation", () => {
    const jobs = [
      job("a", { created_at: "2026-01-01T00:00:03Z", result: result(0.1, false) }),
      job("b", { created_at: "2026-01-01T00:00:01Z", result: result(0.6, true) }),
      job("c", { created_at: "2026-01-01T00:00:02Z", status: "queued" }),
      job("d", { created_at: "2026-01-01T00:00:04Z", result: result(0.9, true) }),
    ];
    expect(orderForReview(jobs).map((j) => j.id)).toEqual(["d", "b", "c", "a"]);
  });
});
