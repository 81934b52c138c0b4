import { useEffect, useRef, useState, type RefObject } from "react";

import { listModels } from "../api/client";
import type { Model } from "../api/types";

export type Loadable<T> =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "ready"; value: T };

/** Runs `load` when `deps` change; aborts the previous run. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): [Loadable<T>, () => void] {
  const [result, setResult] = useState<Loadable<T>>({ state: "loading" });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    setResult((previous) => (previous.state === "ready" ? previous : { state: "loading" }));
    load(controller.signal).then(
      (value) => {
        if (!controller.signal.aborted) setResult({ state: "ready", value });
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setResult({ state: "error", error });
      },
    );
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, generation]);
  return [result, () => setGeneration((g) => g + 1)];
}

export interface ObjectUrl {
  url: string | null;
  error: unknown;
}

/**
 * An image fetched with the key (`load` returns an object URL) once `key` is set; a null key loads
 * nothing yet. The URL is revoked when the key changes or the component goes away.
 */
export function useObjectUrl(load: (signal: AbortSignal) => Promise<string>, key: string | null): ObjectUrl {
  const [image, setImage] = useState<ObjectUrl>({ url: null, error: null });
  useEffect(() => {
    setImage({ url: null, error: null });
    if (key === null) return;
    const controller = new AbortController();
    let objectUrl: string | null = null;
    load(controller.signal).then(
      (url) => {
        if (controller.signal.aborted) {
          URL.revokeObjectURL(url);
          return;
        }
        objectUrl = url;
        setImage({ url, error: null });
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setImage({ url: null, error: error ?? "failed" });
      },
    );
    return () => {
      controller.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return image;
}

/**
 * Whether the element has come near the viewport (and stays true from then on), so that images
 * below the fold are fetched only when the reader gets there. Without IntersectionObserver: at once.
 */
export function useNearViewport(ref: RefObject<Element | null>, margin = "300px"): boolean {
  const [near, setNear] = useState(() => typeof IntersectionObserver === "undefined");
  useEffect(() => {
    const element = ref.current;
    if (near || !element) return;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) setNear(true);
      },
      { rootMargin: margin },
    );
    observer.observe(element);
    return () => observer.disconnect();
  }, [near, ref, margin]);
  return near;
}

export interface PollOptions<T> {
  /** Whether to fetch again after this value. */
  again: (value: T) => boolean;
  /** First delay, then multiplied by `factor` up to `maxDelayMs`. */
  initialDelayMs?: number;
  factor?: number;
  maxDelayMs?: number;
}

export interface Poll<T> {
  value: T | null;
  error: unknown;
  /** True while more polls will follow. */
  polling: boolean;
}

/**
 * Fetches, then fetches again with a growing delay (backoff) while `again(value)` holds. A
 * failed fetch keeps the last value and retries with the same backoff; the error is reported
 * until a fetch succeeds. Polls slow down while the tab is hidden.
 */
export function usePoll<T>(
  fetchOnce: (signal: AbortSignal) => Promise<T>,
  key: string,
  options: PollOptions<T>,
): Poll<T> {
  const { initialDelayMs = 500, factor = 1.6, maxDelayMs = 8000 } = options;
  const again = useRef(options.again);
  again.current = options.again;
  const [poll, setPoll] = useState<Poll<T>>({ value: null, error: null, polling: true });

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let delay = initialDelayMs;
    setPoll({ value: null, error: null, polling: true });
    const tick = async () => {
      let more = true;
      try {
        const value = await fetchOnce(controller.signal);
        if (controller.signal.aborted) return;
        more = again.current(value);
        setPoll({ value, error: null, polling: more });
      } catch (error) {
        if (controller.signal.aborted) return;
        setPoll((p) => ({ ...p, error, polling: true }));
      }
      if (!more) return;
      const hidden = typeof document !== "undefined" && document.visibilityState === "hidden";
      timer = setTimeout(tick, hidden ? Math.max(delay, maxDelayMs) : delay);
      delay = Math.min(maxDelayMs, delay * factor);
    };
    void tick();
    return () => {
      controller.abort();
      if (timer) clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return poll;
}

// The model list changes only when the server restarts: fetched once per page load.
let modelsPromise: Promise<Model[]> | null = null;

export function loadModels(): Promise<Model[]> {
  if (!modelsPromise) {
    modelsPromise = listModels().catch((e: unknown) => {
      modelsPromise = null;
      throw e;
    });
  }
  return modelsPromise;
}

/** For tests: forget the cached model list. */
export function resetModelsCache(): void {
  modelsPromise = null;
}

export function useModels(): [Loadable<Model[]>, () => void] {
  return useLoad(() => loadModels(), []);
}

/** One model of the cached list (undefined until it is loaded, or when it is not listed). */
export function useModel(id: string | undefined): Model | undefined {
  const [model, setModel] = useState<Model | undefined>(undefined);
  useEffect(() => {
    if (!id) return;
    let live = true;
    loadModels().then(
      (models) => {
        if (live) setModel(models.find((m) => m.id === id));
      },
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [id]);
  return model;
}

export function useDocumentTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · MedInform` : "MedInform";
  }, [title]);
}
