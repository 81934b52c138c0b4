/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a MedInform started with `infra/run` (or MEDINFORM_API).
const api = process.env.MEDINFORM_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Phones in a field camp: modern browsers, small files.
    target: "es2020",
    sourcemap: false,
  },
  server: {
    proxy: {
      "/v1": api,
      "/healthz": api,
      "/readyz": api,
    },
  },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
    restoreMocks: true,
  },
});
