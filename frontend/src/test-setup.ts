import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

import { resetModelsCache } from "./lib/hooks";

afterEach(() => {
  cleanup();
  resetModelsCache();
  window.localStorage.clear();
  window.history.replaceState(null, "", "/");
});

// jsdom has no object URLs.
if (!URL.createObjectURL) {
  URL.createObjectURL = () => "blob:test";
  URL.revokeObjectURL = () => undefined;
}
