import { describe, expect, it } from "vitest";

import { ApiError } from "../api/client";
import { describeError, sentenceForCode } from "./errors";

describe("error sentences", () => {
  it("turns every code of the API contract into a sentence, never the code itself", () => {
    const codes = [
      "image_too_large", "not_an_image", "unsupported_image_format", "corrupt_image",
      "image_dimensions_too_large", "empty_file", "unknown_model", "model_unavailable",
      "service_unavailable", "queue_full", "rate_limited", "unauthorized", "api_key_revoked",
      "insufficient_scope", "job_not_found", "batch_not_found", "job_not_cancelable",
      "idempotency_key_reused", "invalid_field", "missing_field", "invalid_multipart",
      "invalid_cursor", "invalid_query", "model_research_only", "heatmap_unavailable", "figure_not_found",
      "unsupported_transfer_syntax", "multiframe_not_supported", "no_pixel_data", "modality_mismatch",
    ];
    const sentences = new Set<string>();
    for (const code of codes) {
      const sentence = sentenceForCode(code);
      expect(sentence).toMatch(/^[A-Z].*\.$/);
      expect(sentence).not.toContain(code);
      expect(sentence).not.toMatch(/[{}]/);
      sentences.add(sentence);
    }
    // Each code says something of its own.
    expect(sentences.size).toBe(codes.length);
  });

  it("says plainly what is wrong with a refused file", () => {
    expect(sentenceForCode("image_too_large")).toContain("too large");
    expect(sentenceForCode("not_an_image")).toContain("not an image");
  });

  it("explains the refusals of research models, heatmaps and figures", () => {
    expect(sentenceForCode("model_research_only", 422)).toContain("research");
    expect(sentenceForCode("heatmap_unavailable", 404)).toContain("no heatmap");
    expect(sentenceForCode("figure_not_found", 404)).toContain("figure");
  });

  it("falls back to a sentence by status class for unknown codes", () => {
    expect(sentenceForCode("brand_new_code", 503)).toContain("went wrong on the server");
    expect(sentenceForCode("brand_new_code", 400)).toContain("could not accept");
    expect(sentenceForCode("brand_new_code")).toContain("Something went wrong");
  });

  it("describes network failures and non-API errors", () => {
    expect(describeError(new ApiError("network_error", 0, "Failed to fetch"))).toContain("cannot be reached");
    expect(describeError(new TypeError("Failed to fetch"))).toContain("cannot be reached");
    expect(describeError(new Error("boom"))).toContain("Something went wrong");
    expect(describeError(new ApiError("unauthorized", 401, "Missing key"))).toContain("Settings");
  });
});
