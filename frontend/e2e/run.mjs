#!/usr/bin/env node
// End-to-end tests of the web app against the real MedInform service in embedded mode, driven
// with playwright-core and the system Chromium (no browser download).
//
//   node e2e/run.mjs                  starts ../target/debug/medinform serve on a free port with a
//                                     temporary data dir and server.web_dir = dist, runs the tests,
//                                     stops it
//   MEDINFORM_E2E_BASE=http://...     runs against a service that is already running
//   MEDINFORM_E2E_ONLY=home,upload    runs only the tests whose id is listed
//
// Each test is reported on its own line ("ok"/"FAILED"), then one line the infra/test summary
// reads: "e2e: N passed, N failed, N skipped". Screenshots of every main page (desktop and phone),
// and of the page of each failed test (failed-<id>.png), go to e2e/screenshots/ (gitignored). Environment: MEDINFORM_E2E_CHROMIUM (default
// /usr/bin/chromium), MEDINFORM_E2E_BINARY (default ../target/debug/medinform), ORT_DYLIB_PATH
// (passed to the service).

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const frontend = resolve(here, "..");
const repo = resolve(frontend, "..");
const shared = resolve(repo, "../shared");
const screenshots = join(here, "screenshots");
const chromiumPath = process.env.MEDINFORM_E2E_CHROMIUM ?? "/usr/bin/chromium";
const only = (process.env.MEDINFORM_E2E_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

// --- Fixtures ---------------------------------------------------------------------------------

const cellDir = join(shared, "models/medinform-original/malaria/golden");
function cellImages() {
  if (!existsSync(cellDir)) throw new Error(`${cellDir} is missing: the tests upload real cell images from it`);
  return readdirSync(cellDir)
    .filter((f) => f.endsWith(".png"))
    .sort()
    .map((f) => join(cellDir, f));
}

/** A real DICOM file that pydicom-data ships (in the project's .venv, or $MEDINFORM_PYTHON's). */
function dicomTestFile(name) {
  const python = process.env.MEDINFORM_PYTHON ?? join(repo, ".venv/bin/python");
  const script = "import sys; from pydicom.data import get_testdata_file; print(get_testdata_file(sys.argv[1]))";
  return execFileSync(python, ["-c", script, name], { encoding: "utf8" }).trim();
}

const scratch = mkdtempSync(join(tmpdir(), "medinform-e2e-"));
const notAnImage = join(scratch, "notes.txt");
writeFileSync(notAnImage, "Patient list, not an image.\n");
const fakePng = join(scratch, "scan.png");
writeFileSync(fakePng, "this is text with a .png name\n");

// --- The service ------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function waitForHealthy(base, child, seconds) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`medinform exited with ${child.exitCode} before it was healthy`);
    try {
      const response = await fetch(`${base}/healthz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${base}/healthz did not answer within ${seconds} s`);
}

async function startService() {
  if (process.env.MEDINFORM_E2E_BASE) return { base: process.env.MEDINFORM_E2E_BASE.replace(/\/$/, ""), stop: async () => {} };
  const binary = resolve(process.env.MEDINFORM_E2E_BINARY ?? join(repo, "target/debug/medinform"));
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run cargo build --bin medinform first`);
  if (!existsSync(join(frontend, "dist/index.html"))) throw new Error("dist/index.html is missing: run npm run build first");
  if (!process.env.ORT_DYLIB_PATH && !existsSync(join(repo, ".venv"))) {
    console.log("[e2e] warning: ORT_DYLIB_PATH is not set and there is no .venv: the models will be unavailable (run infra/setup-python.sh --runtime)");
  }
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = join(scratch, "data");
  const log = [];
  // MEDINFORM_E2E_* are this runner's: medinform would refuse them as unknown settings.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("MEDINFORM_E2E_")));
  const child = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
    cwd: repo,
    env: { ...env, MEDINFORM_SERVER_WEB_DIR: join(frontend, "dist"), MEDINFORM_MODELS_DIR: join(repo, "models") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const stream of [child.stdout, child.stderr]) stream.on("data", (chunk) => log.push(String(chunk)));
  try {
    await waitForHealthy(base, child, 60);
  } catch (e) {
    child.kill("SIGTERM");
    throw new Error(`${e.message}\n--- medinform log ---\n${log.join("").slice(-4000)}`);
  }
  console.log(`[e2e] medinform serve on ${base} (data in ${dataDir})`);
  return {
    base,
    log,
    stop: () =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        child.once("exit", () => {
          clearTimeout(timer);
          done();
        });
        child.kill("SIGTERM");
      }),
  };
}

// --- A tiny test runner ---------------------------------------------------------------------

const tests = [];
function test(id, name, fn) {
  tests.push({ id, name, fn });
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/** The state earlier tests leave for later ones (the job of the upload, the batch). */
const state = { jobId: null, batchId: null };

async function openPage(context, base, path) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}${path}`);
  page.errors = errors;
  return page;
}

/**
 * Waits until `done()` holds, failing at once (with the page's sentence and the API's code) when
 * the page shows an error instead: a missing endpoint fails in a second, not at the timeout.
 */
async function waitForOrError(page, done, what, timeout = 20_000, scope = page) {
  const deadline = Date.now() + timeout;
  const errors = scope.locator("[data-error-code]");
  for (;;) {
    if (await done()) return;
    for (let i = 0, n = await errors.count(); i < n; i++) {
      const error = errors.nth(i);
      if (await error.isVisible()) {
        const text = (await error.innerText()).trim().replace(/\s+/g, " ");
        throw new Error(`waiting for ${what}, the page shows an error instead: "${text}" (code ${await error.getAttribute("data-error-code")})`);
      }
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await page.waitForTimeout(200);
  }
}

const visible = (locator) => () => locator.first().isVisible();

async function uploadOne(page, file) {
  await page.getByTestId("file-input").setInputFiles(file);
}

/** GET from the API itself (embedded mode answers without a key), to check the pages against it. */
async function api(base, path) {
  const response = await fetch(`${base}${path}`, { headers: { Accept: "application/json" } });
  assert(response.ok, `GET ${path} answered ${response.status}`);
  return response.json();
}

const RESEARCH_SENTENCE = "This model has not met its screening targets on held-out data";
const HEATMAP_SENTENCE = "The heatmap shows which parts of the image pushed the model towards its finding.";
const STAGE_BADGE = { screening: "Screening", research: "Research use only" };

/** The stage badge in `scope` says `stage` (and a research one comes with its sentence). */
async function assertStage(scope, stage, where) {
  const badge = scope.locator("[data-stage]");
  assert((await badge.count()) === 1, `${where}: expected one stage badge, saw ${await badge.count()}`);
  assert(await badge.isVisible(), `${where}: the stage badge is not visible`);
  assert((await badge.getAttribute("data-stage")) === stage, `${where}: badge for ${await badge.getAttribute("data-stage")}, the API says ${stage}`);
  assert((await badge.innerText()).trim().toLowerCase() === STAGE_BADGE[stage].toLowerCase(), `${where}: badge reads "${await badge.innerText()}"`);
  const sentences = await scope.getByText(RESEARCH_SENTENCE).count();
  assert(sentences === (stage === "research" ? 1 : 0), `${where}: ${sentences} research sentences for a ${stage} model`);
}

/** Scrolls each model-card figure into view (they load lazily) and waits until its image is decoded. */
async function loadFigures(page) {
  const figures = page.locator(".model-figure");
  const n = await figures.count();
  for (let i = 0; i < n; i++) {
    const figure = figures.nth(i);
    await figure.scrollIntoViewIfNeeded();
    await waitForOrError(page, visible(figure.locator("img")), `figure ${i + 1}`, 15_000, figure);
    await figure.locator("img").evaluate((img) => img.decode());
  }
  await page.evaluate(() => window.scrollTo(0, 0));
  return n;
}

/** The page must not scroll sideways on a phone (tables scroll inside their own box). */
async function sidewaysOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

function phoneContext(browser) {
  return browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
}

// --- The tests --------------------------------------------------------------------------------

test("home", "home: the six services as cards, each with its stage badge; unavailable ones not selectable", async ({ context, base }) => {
  const { models } = await api(base, "/v1/models");
  const page = await openPage(context, base, "/");
  await page.getByRole("heading", { level: 1, name: "Screening services" }).waitFor();
  const cards = page.locator("li.service");
  await cards.first().waitFor();
  assert((await cards.count()) === 6, `expected 6 service cards, saw ${await cards.count()}`);
  for (const model of models) {
    const card = page.locator(`li.service[data-model="${model.id}"]`);
    const ready = model.status === "ready";
    const availability = await card.locator(ready ? ".badge-ready" : ".badge-unavailable").innerText();
    assert(availability.includes(ready ? "Available" : "Unavailable"), `${model.id} is not shown as ${model.status}`);
    if (!ready) {
      assert((await card.getByRole("link", { name: /Screen images/ }).count()) === 0, `unavailable ${model.id} offers a Screen link`);
      continue;
    }
    assert(model.stage === "screening" || model.stage === "research", `GET /v1/models gives ${model.id} no stage`);
    await assertStage(card, model.stage, `home card of ${model.id}`);
  }
  // Retinopathy at 28 px is for research (issue 10): never offered as a screening service.
  const dr = models.find((m) => m.id === "diabetic_retinopathy");
  assert(dr?.status !== "ready" || dr.stage === "research", "diabetic retinopathy is offered for screening");
  assert(models.find((m) => m.id === "malaria")?.status === "ready", "malaria is not available");
  await shot(page, "home-desktop");

  await page.goto(`${base}/upload`);
  for (const model of models.filter((m) => m.status !== "ready")) {
    const radio = page.getByRole("radio", { name: new RegExp(model.name) });
    await radio.waitFor();
    assert(await radio.isDisabled(), `the ${model.id} radio can be chosen`);
  }
  assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
});

test("upload", "upload: one real cell image gives a result with probability bars", async ({ context, base }) => {
  const page = await openPage(context, base, "/upload?model=malaria");
  const [cell] = cellImages().filter((f) => f.includes("Parasitized"));
  await uploadOne(page, cell);
  await page.locator(".upload-item .thumb img").waitFor();
  await page.getByLabel(/Patient or sample reference/).fill("e2e-cell-1");
  await shot(page, "upload-desktop");
  await page.getByRole("button", { name: "Screen this image" }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  state.jobId = page.url().split("/").pop();
  // Errors of the result panel only: the image beside it has its own test (result-image).
  await waitForOrError(page, visible(page.getByTestId("predicted-label")), "the result", 60_000, page.locator(".result-panel"));
  const bars = page.getByRole("meter");
  assert((await bars.count()) === 2, `expected 2 probability bars, saw ${await bars.count()}`);
  const values = await page.locator(".prob-value").allInnerTexts();
  assert(values.every((v) => /^\d{1,3}\.\d%$/.test(v)), `bars do not show percents: ${values}`);
  const sum = values.reduce((s, v) => s + parseFloat(v), 0);
  assert(Math.abs(sum - 100) < 0.5, `probabilities add up to ${sum}%`);
  const { result } = await api(base, `/v1/jobs/${state.jobId}`);
  assert(result.stage === "screening" || result.stage === "research", `the new result has no stage: ${JSON.stringify(result.stage)}`);
  const research = result.stage === "research";
  await assertStage(page.locator(".result-panel"), result.stage, "result page");
  const heading = await page.getByRole("heading", { level: 1 }).innerText();
  assert(heading === (research ? "Research result" : "Screening result"), `a ${result.stage} result is headed "${heading}"`);
  assert(await page.getByText(research ? "Research output, not a diagnosis." : "Screening aid, not a diagnosis.").isVisible(), "no disclaimer");
  const status = await page.locator(".result-status").getByRole("status").innerText();
  assert(status.includes(research ? "The research model finished" : "Screening finished"), `status did not say finished: ${status}`);
  assert(await page.getByRole("link", { name: "model card" }).isVisible(), "no link to the model card");
  assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
  await shot(page, "result-desktop");
});

test("result-image", "result: the uploaded image is shown (GET /v1/jobs/{id}/image)", async ({ context, base }) => {
  assert(state.jobId, "needs the job of the upload test");
  const page = await openPage(context, base, `/jobs/${state.jobId}`);
  const img = page.locator(".result-image img");
  await waitForOrError(page, visible(img), "the uploaded image", 15_000);
  const width = await img.evaluate((el) => el.naturalWidth);
  assert(width > 0, "the image did not load");
});

test("dicom", "dicom: a CR chest X-ray (.dcm) is screened; the result shows its study and the rendered image", async ({ context, base }) => {
  const page = await openPage(context, base, "/upload?model=tuberculosis");
  await uploadOne(page, dicomTestFile("RG1_UNCR.dcm"));
  await page.getByRole("button", { name: "Screen this image" }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  await waitForOrError(page, visible(page.getByTestId("predicted-label")), "the result", 120_000, page.locator(".result-panel"));
  const modality = await page.getByTestId("dicom-modality").innerText();
  assert(modality.includes("CR") && modality.includes("CHEST"), `modality row: ${modality}`);
  const study = await page.getByTestId("dicom-study-instance-uid").innerText();
  assert(study.includes("1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"), `study row: ${study}`);
  assert((await page.getByTestId("dicom-patient-id").count()) === 0, "the default rule drops the Patient ID, yet it is shown");
  const img = page.locator(".result-image img");
  await waitForOrError(page, visible(img), "the rendered DICOM image", 30_000);
  const width = await img.evaluate((el) => el.naturalWidth);
  assert(width === 1841, `the rendered image is ${width} px wide, not the file's 1841`);
  assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
  await shot(page, "result-dicom-desktop");
});

test("refusal", "refusal: a text file and a fake PNG are refused with sentences", async ({ context, base }) => {
  const page = await openPage(context, base, "/upload?model=malaria");
  await uploadOne(page, notAnImage);
  const refused = page.locator('.upload-item[data-file="notes.txt"]');
  await refused.waitFor();
  assert((await refused.innerText()).includes("This file is not an image."), "no refusal sentence for notes.txt");
  await refused.getByRole("button", { name: /Remove/ }).click();

  // A file named .png whose bytes are text: the browser cannot tell, the API refuses it.
  await uploadOne(page, fakePng);
  await page.getByRole("button", { name: "Screen this image" }).click();
  const item = page.locator('.upload-item[data-file="scan.png"] .upload-error');
  await item.waitFor();
  const text = await item.innerText();
  const code = await item.getAttribute("data-error-code");
  assert(["not_an_image", "corrupt_image", "unsupported_image_format"].includes(code), `unexpected code ${code}`);
  assert(!text.includes("{") && !text.includes(code), `raw error shown: ${text}`);
  assert(/image/i.test(text), `refusal sentence does not explain: ${text}`);
  await shot(page, "upload-refused-desktop");
});

test("model-card", "model card: what the model was trained on and how well it measured", async ({ context, base }) => {
  const page = await openPage(context, base, "/models/malaria");
  await page.getByRole("heading", { level: 1, name: /Malaria/ }).waitFor();
  await page.getByRole("heading", { name: /Training data/i }).waitFor();
  assert((await page.locator(".model-card table").count()) >= 1, "the card's metric tables were not rendered");
  assert((await page.locator(".metrics dd").count()) >= 3, "no metric summary");
  assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
  await shot(page, "model-card-desktop");
});

test("model-card-figures", "model card: the figures load beside the text, with the stage and the targets met or not", async ({ browser, context, base }) => {
  const { models } = await api(base, "/v1/models");
  const withFigures = models.filter((m) => m.status === "ready" && m.figures?.length);
  assert(withFigures.length > 0, "no model lists figures in GET /v1/models");
  const model = withFigures.find((m) => m.id === "malaria") ?? withFigures[0];
  const path = `/models/${model.id}`;
  const check = async (page, name) => {
    await waitForOrError(page, visible(page.getByRole("heading", { level: 1, name: model.name, exact: true })), "the model card", 15_000);
    await assertStage(page.locator(".page-header"), model.stage, `model card of ${model.id}`);
    const n = await loadFigures(page);
    assert(n === model.figures.length, `${n} figures shown, the API lists ${model.figures.length}`);
    for (let i = 0; i < n; i++) {
      const figure = page.locator(".model-figure").nth(i);
      const width = await figure.locator("img").evaluate((img) => img.naturalWidth);
      assert(width > 0, `figure ${model.figures[i].url} did not load`);
      const caption = (await figure.locator("figcaption").innerText()).trim();
      assert(caption === model.figures[i].title.trim(), `figure ${i + 1} is captioned "${caption}"`);
    }
    if (model.minimum) {
      const rows = page.locator(".targets-table tbody tr");
      assert((await rows.count()) === Object.keys(model.minimum).length, "the targets table does not list every minimum");
      const verdicts = await page.locator(".targets-table tbody td:last-child").allInnerTexts();
      assert(verdicts.every((v) => /Met|Not met|Not measured/.test(v)), `targets without a verdict: ${verdicts}`);
    }
    assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
    await shot(page, name);
  };
  await check(await openPage(context, base, path), "model-card-figures-desktop");
  const phone = await phoneContext(browser);
  try {
    const page = await openPage(phone, base, path);
    await check(page, "model-card-figures-phone");
    const overflow = await sidewaysOverflow(page);
    assert(overflow <= 1, `the model card is ${overflow}px wider than the phone`);
  } finally {
    await phone.close();
  }
});

test("heatmap", "result: the heatmap toggle stacks the map over the image and the slider sets its opacity", async ({ browser, context, base }) => {
  assert(state.jobId, "needs the job of the upload test");
  const job = await api(base, `/v1/jobs/${state.jobId}`);
  assert(job.links?.heatmap, `the malaria job has no links.heatmap (result.heatmap: ${job.result?.heatmap ? "present" : "absent"})`);
  const check = async (page, name) => {
    await waitForOrError(page, visible(page.getByTestId("predicted-label")), "the result", 30_000, page.locator(".result-panel"));
    const image = page.locator(".result-image img").first();
    await waitForOrError(page, visible(image), "the uploaded image", 15_000);
    assert(await page.getByText(HEATMAP_SENTENCE).isVisible(), "no sentence on what a heatmap is");
    const slider = page.getByRole("slider", { name: /Opacity/ });
    assert(await slider.isDisabled(), "the opacity slider works while the heatmap is hidden");
    await page.getByRole("checkbox", { name: "Show heatmap" }).check();
    const layer = page.getByTestId("heatmap-layer");
    await waitForOrError(page, visible(layer), "the heatmap", 15_000, page.locator(".result-image"));
    await layer.evaluate((img) => img.decode());
    const [mapWidth, imageWidth] = [await layer.evaluate((img) => img.naturalWidth), await image.evaluate((img) => img.naturalWidth)];
    assert(mapWidth > 0 && mapWidth === imageWidth, `the heatmap is ${mapWidth} px wide, the image ${imageWidth} px`);
    const box = [await layer.boundingBox(), await image.boundingBox()];
    assert(JSON.stringify(box[0]) === JSON.stringify(box[1]), `the heatmap does not lie over the image: ${JSON.stringify(box)}`);
    const opacity = () => layer.evaluate((img) => getComputedStyle(img).opacity);
    assert((await opacity()) === "0.6", `the heatmap starts at opacity ${await opacity()}`);
    await slider.focus();
    for (let i = 0; i < 7; i++) await page.keyboard.press("ArrowLeft");
    assert((await opacity()) === "0.25", `after the slider, the heatmap's opacity is ${await opacity()}`);
    for (let i = 0; i < 7; i++) await page.keyboard.press("ArrowRight");
    assert(page.errors.length === 0, `page errors: ${page.errors.join("; ")}`);
    await shot(page, name);
  };
  await check(await openPage(context, base, `/jobs/${state.jobId}`), "result-heatmap-desktop");
  const phone = await phoneContext(browser);
  try {
    const page = await openPage(phone, base, `/jobs/${state.jobId}`);
    await check(page, "result-heatmap-phone");
    const overflow = await sidewaysOverflow(page);
    assert(overflow <= 1, `the result page is ${overflow}px wider than the phone`);
  } finally {
    await phone.close();
  }
});

test("batch", "batch: several images make a drive; counts per finding; CSV export has a row per image", async ({ context, base }) => {
  const page = await openPage(context, base, "/upload?model=malaria");
  const images = cellImages().slice(0, 4);
  await page.getByTestId("file-input").setInputFiles(images);
  await page.getByLabel("Site").fill("Camp 7");
  await page.getByLabel("Campaign").fill("Malaria drive e2e");
  await page.getByLabel("Operator").fill("E2E tester");
  await page.getByRole("button", { name: `Send ${images.length} images` }).click();
  await waitForOrError(page, async () => /\/batches\/[0-9a-f-]{36}$/.test(page.url()), "the batch page", 60_000);
  state.batchId = page.url().split("/").pop();
  await waitForOrError(page, visible(page.getByText(`${images.length} of ${images.length} images screened`)), "the batch to finish", 90_000);
  const positive = Number(await page.getByTestId("count-positive").innerText());
  const negative = Number(await page.getByTestId("count-negative").innerText());
  assert(positive + negative === images.length, `positives ${positive} + negatives ${negative} != ${images.length}`);
  const rows = page.locator("table.jobs-table tbody tr");
  assert((await rows.count()) === images.length, `the list has ${await rows.count()} rows`);
  if (positive > 0) assert((await rows.first().getAttribute("class"))?.includes("row-positive"), "positives are not first");
  await shot(page, "batch-desktop");

  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
  const csv = readFileSync(await download.path(), "utf8").trim().split(/\r?\n/);
  assert(csv[0].includes("job_id"), `CSV header: ${csv[0]}`);
  assert(csv.length === images.length + 1, `the CSV has ${csv.length - 1} rows for ${images.length} images`);
});

test("jobs", "jobs: the table lists the jobs, filters by model", async ({ context, base }) => {
  const page = await openPage(context, base, "/jobs");
  await waitForOrError(page, visible(page.locator("table.jobs-table tbody tr")), "the jobs table", 15_000);
  const count = await page.locator("table.jobs-table tbody tr").count();
  assert(count >= 1, "no job listed");
  if (state.jobId) assert((await page.locator(`tr[data-job="${state.jobId}"]`).count()) === 1, "the uploaded job is not listed");
  await page.getByLabel("Status").selectOption("succeeded");
  await page.waitForURL(/status=succeeded/);
  await shot(page, "jobs-desktop");
});

test("settings", "settings: without a key the server says who we are (GET /v1/auth/whoami)", async ({ context, base }) => {
  const page = await openPage(context, base, "/settings");
  await page.getByRole("button", { name: "Check the connection" }).click();
  await waitForOrError(page, visible(page.getByTestId("whoami")), "the whoami answer", 10_000);
  assert((await page.getByTestId("whoami").innerText()).includes("local"), "whoami did not name the local tenant");
  await shot(page, "settings-desktop");
});

test("phone", "phone: every main page fits a 390 px screen (screenshots)", async ({ browser, base }) => {
  const context = await phoneContext(browser);
  try {
    const pages = [
      ["home", "/"],
      ["upload", "/upload?model=malaria"],
      ["model-card", "/models/tuberculosis"],
      ["settings", "/settings"],
      ["jobs", "/jobs"],
      ...(state.jobId ? [["result", `/jobs/${state.jobId}`]] : []),
      ...(state.batchId ? [["batch", `/batches/${state.batchId}`]] : []),
    ];
    const wide = [];
    for (const [name, path] of pages) {
      const page = await openPage(context, base, path);
      await page.locator("main h1").first().waitFor();
      if (name === "result") await page.getByTestId("predicted-label").waitFor({ timeout: 30_000 });
      if (name === "home") await page.locator("li.service").first().waitFor();
      if (name === "upload") {
        await uploadOne(page, cellImages()[0]);
        await page.locator(".upload-item").waitFor();
      }
      if (name === "model-card") await loadFigures(page);
      await page.waitForLoadState("networkidle");
      const overflow = await sidewaysOverflow(page);
      if (overflow > 1) wide.push(`${name} (${overflow}px)`);
      await shot(page, `${name}-phone`);
      await page.close();
    }
    assert(wide.length === 0, `pages wider than the phone: ${wide.join(", ")}`);
  } finally {
    await context.close();
  }
});

test("keyboard", "keyboard: the skip link is the first stop and focus is visible", async ({ context, base }) => {
  const page = await openPage(context, base, "/");
  await page.locator("li.service").first().waitFor();
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.textContent?.trim());
  assert(focused === "Skip to content", `first Tab stop: ${focused}`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert(outline !== "none", "the focused skip link has no outline");
  await page.keyboard.press("Enter");
  const hash = await page.evaluate(() => document.activeElement?.id);
  assert(hash === "main", `Enter on the skip link focused ${hash}`);
});

// --- Main ---------------------------------------------------------------------------------------

async function main() {
  const selected = only.length ? tests.filter((t) => only.includes(t.id)) : tests;
  const skipped = tests.length - selected.length;
  rmSync(screenshots, { recursive: true, force: true });
  let service;
  let browser;
  let passed = 0;
  let failed = 0;
  try {
    service = await startService();
    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    for (const t of selected) {
      const context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
      context.setDefaultTimeout(20_000);
      const started = Date.now();
      try {
        await t.fn({ browser, context, base: service.base });
        passed++;
        console.log(`ok      ${t.id}: ${t.name} (${Date.now() - started} ms)`);
      } catch (e) {
        failed++;
        // What the page looked like when the test failed.
        const last = context.pages().at(-1);
        if (last) await shot(last, `failed-${t.id}`).catch(() => undefined);
        console.log(`FAILED  ${t.id}: ${t.name} (${Date.now() - started} ms)\n        ${String(e?.message ?? e).split("\n").join("\n        ")}`);
      } finally {
        await context.close();
      }
    }
  } catch (e) {
    console.error(`[e2e] could not run: ${e?.message ?? e}`);
    failed += selected.length - passed - failed || 1;
  } finally {
    await browser?.close();
    await service?.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
  console.log(`[e2e] screenshots in ${screenshots}`);
  console.log(`e2e: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(failed ? 1 : 0);
}

await main();
