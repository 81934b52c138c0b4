"""MedInform itself, driven over its HTTP API as any client drives it.

Embedded mode by default: `medinform serve` on a free port with a throw-away data directory,
one model, no rate limit and no backlog bound (as benches/drive.rs starts it), anonymous on
loopback. With `--medinform-url` an already-running deployment is driven instead (its CPU is
not measured then).

Three rows, each on a freshly started server warmed up with single uploads:
- single uploads: `POST /v1/jobs` (multipart `model` + `image`), 16 in flight; done when no job
  of the run is `queued` or `processing` (two one-row listings per poll);
- single uploads, the image as the body: `POST /v1/jobs?model=...` with the image's bytes and
  its `Content-Type` (as mosec and Starlette take it), 16 in flight, done as above;
- batches: `POST /v1/batches` (JSON), then `POST /v1/batches/{id}/jobs` with 100 `image` parts
  a request, 16 requests in flight; done when the batch's counts say every job is final
  (`GET /v1/batches/{id}` per poll).
Throughput runs from the first request sent to the poll that saw the last job final. Then every
job is read back (`GET /v1/jobs`, 200 a page) and must be `succeeded` with the probabilities
ONNX Runtime gives on the reference tensor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

import client
from common import REPO
from images import ImageFile
from measurement import Measurement
from peers import free_port
from process import ServerProcess, StartupError

BATCH_CHUNK = 100
PAGE = 200
LABELS = {
    "medinform-single": "MedInform single uploads (POST /v1/jobs, 16 in flight)",
    "medinform-raw": "MedInform single uploads, the image as the body (POST /v1/jobs?model=..., 16 in flight)",
    "medinform-batch": f"MedInform batches (POST /v1/batches/{{id}}/jobs, {BATCH_CHUNK} images a request)",
}


@dataclass(frozen=True)
class Api:
    base: str
    headers: dict[str, str]

    async def call(self, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Any:
        return await client.request_json(session, method, self.base + path, headers=self.headers, **kwargs)

    async def submit(self, session: aiohttp.ClientSession, model: str, image: ImageFile) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("image", image.data, filename=image.name, content_type=image.content_type)
        return await self.call(session, "POST", "/v1/jobs", data=form)

    async def submit_raw(self, session: aiohttp.ClientSession, model: str, image: ImageFile) -> dict[str, Any]:
        """The image itself as the body, the model in the query (as mosec and Starlette take it)."""
        headers = {**self.headers, "Content-Type": image.content_type}
        return await client.request_json(
            session, "POST", f"{self.base}/v1/jobs", params={"model": model}, data=image.data, headers=headers
        )

    async def add_to_batch(
        self, session: aiohttp.ClientSession, batch_id: str, images: list[ImageFile]
    ) -> dict[str, Any]:
        form = aiohttp.FormData()
        for image in images:  # each image's file name becomes its job's client_reference
            form.add_field("image", image.data, filename=image.name, content_type=image.content_type)
        return await self.call(session, "POST", f"/v1/batches/{batch_id}/jobs", data=form)

    async def idle(self, session: aiohttp.ClientSession, filters: dict[str, str]) -> bool:
        """Whether no job that `filters` selects is waiting or running. Asked in the order jobs
        move (queued, then processing), so a job cannot slip between the two listings."""
        for status in ("queued", "processing"):
            page = await self.call(session, "GET", "/v1/jobs", params={**filters, "status": status, "limit": "1"})
            if page["jobs"]:
                return False
        return True

    async def jobs(self, session: aiohttp.ClientSession, filters: dict[str, str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {**filters, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
            page = await self.call(session, "GET", "/v1/jobs", params=params)
            found += page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                return found


async def poll_until(done: Callable[[], Awaitable[bool]], interval: float) -> float:
    """perf_counter() of the first poll that found `done`."""
    while not await done():
        await asyncio.sleep(interval)
    return time.perf_counter()


def read_back(
    jobs: list[dict[str, Any]], index_of: Callable[[dict[str, Any]], int | None]
) -> tuple[dict[int, list[float]], list[str]]:
    """Probabilities by image index of the succeeded jobs, and what went wrong with the others."""
    answers: dict[int, list[float]] = {}
    problems: list[str] = []
    for job in jobs:
        index = index_of(job)
        if index is None:
            continue
        if job["status"] == "succeeded":
            answers[index] = [p["probability"] for p in job["result"]["probabilities"]]
        else:
            problems.append(f"job {job['id']} {job['status']}: {job.get('error', {}).get('code')}")
    return answers, problems


async def single_uploads(
    api: Api, session: aiohttp.ClientSession, model: str, images: list[ImageFile], concurrency: int, poll: float,
    *, raw: bool = False,
) -> tuple[float, dict[int, list[float]], list[str]]:
    """Seconds from the first upload to the last job final, answers by index, problems. `raw`:
    each image as the request body (`POST /v1/jobs?model=`) instead of in a form."""
    submit = api.submit_raw if raw else api.submit
    started = time.perf_counter()
    sent = await client.drive(session, lambda s, i: submit(s, model, images[i]), len(images), concurrency)
    finished = time.perf_counter()
    index_by_id = {job["id"]: index for index, job in sent.answers.items()}
    jobs: list[dict[str, Any]] = []
    if index_by_id:
        first = min(datetime.fromisoformat(job["created_at"]) for job in sent.answers.values())
        filters = {"model": model, "created_after": first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        finished = await poll_until(lambda: api.idle(session, filters), poll)
        jobs = await api.jobs(session, filters)
    answers, problems = read_back(jobs, lambda job: index_by_id.get(job["id"]))
    return finished - started, answers, problems + list(sent.failures.values())


async def batch_uploads(
    api: Api, session: aiohttp.ClientSession, model: str, images: list[ImageFile], concurrency: int, poll: float
) -> tuple[float, dict[int, list[float]], list[str]]:
    """Seconds from opening the batch to its last job final, answers by index, problems."""
    started = time.perf_counter()
    batch_id = (await api.call(session, "POST", "/v1/batches", json={"model": model}))["id"]
    chunks = [images[start : start + BATCH_CHUNK] for start in range(0, len(images), BATCH_CHUNK)]
    sent = await client.drive(session, lambda s, k: api.add_to_batch(s, batch_id, chunks[k]), len(chunks), concurrency)
    accepted = sum(len(answer["jobs"]) for answer in sent.answers.values())
    problems = [f"rejected: {r}" for answer in sent.answers.values() for r in answer["rejected"]]

    async def drained() -> bool:
        counts = (await api.call(session, "GET", f"/v1/batches/{batch_id}"))["counts"]
        return counts["total"] >= accepted and counts["queued"] + counts["processing"] == 0

    finished = await poll_until(drained, poll)
    index_by_name = {image.name: index for index, image in enumerate(images)}
    jobs = await api.jobs(session, {"batch_id": batch_id})
    answers, failed = read_back(jobs, lambda job: index_by_name.get(job.get("client_reference", "")))
    return finished - started, answers, problems + failed + list(sent.failures.values())


def embedded_env(model: str, threads: int, ort_library: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINFORM_")}
    env.update(
        MEDINFORM_MODELS_DIR=str(REPO / "models"),
        MEDINFORM_WORKER_MODELS=model,
        MEDINFORM_INFERENCE_THREADS=str(threads),
        # The benchmark measures throughput: anonymous on loopback, no rate limit, no backlog bound.
        MEDINFORM_AUTH_ALLOW_ANONYMOUS="true",
        MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE="0",
        MEDINFORM_JOBS_MAX_BACKLOG="0",
        MEDINFORM_LOG="warn",
        ORT_DYLIB_PATH=str(ort_library),
    )
    env.update(settings)
    return env


async def measure(
    key: str,
    model: str,
    images: list[ImageFile],
    reference: list[list[float]],
    *,
    binary: Path,
    url: str | None,
    api_key: str | None,
    ort_library: Path,
    settings: dict[str, str],
    data_root: Path,
    threads: int,
    concurrency: int,
    warmup: int,
    poll: float,
    log_dir: Path,
) -> Measurement:
    row = Measurement(key, LABELS[key], model)
    if not url and not binary.is_file():
        row.error = f"{binary} not found (cargo build --release, or pass --medinform-binary)"
        return row
    upload = {
        "medinform-single": single_uploads,
        "medinform-raw": functools.partial(single_uploads, raw=True),
        "medinform-batch": batch_uploads,
    }[key]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with contextlib.ExitStack() as stack:
            server: ServerProcess | None = None
            if url:
                api = Api(url.rstrip("/"), headers)
            else:
                data_dir = tempfile.mkdtemp(prefix=f"{key}-{model}-", dir=data_root)
                port = free_port()
                command = [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
                log_path = log_dir / f"{key}-{model}.log"
                server = stack.enter_context(
                    ServerProcess(command, embedded_env(model, threads, ort_library, settings), log_path, REPO)
                )
                api = Api(f"http://127.0.0.1:{port}", headers)
            async with client.new_session(concurrency) as session:
                if server:
                    await server.wait_ready(lambda: api.call(session, "GET", "/readyz", timeout=5))
                # The warm-up goes round the images as many times as it takes.
                warm = [i % len(images) for i in range(warmup)]
                _, answers, problems = await single_uploads(
                    api, session, model, [images[i] for i in warm], concurrency, poll
                )
                row.check(answers, [reference[i] for i in warm], warmup)
                cpu = server.cpu_seconds() if server else 0.0
                seconds, answers, timed_problems = await upload(api, session, model, images, concurrency, poll)
                if server:
                    row.cpu_seconds = server.cpu_seconds() - cpu
    except StartupError as error:
        row.error = str(error)
        return row
    except (aiohttp.ClientError, client.HttpError, TimeoutError) as error:
        row.error = f"failed while measuring: {type(error).__name__}: {error}"
        return row
    row.images, row.seconds = len(answers), seconds
    row.check(answers, reference, len(images))
    if problems or timed_problems:
        row.details["problems"] = (problems + timed_problems)[:5]
    return row
