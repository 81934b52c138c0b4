"""One row of the sweep: `medinform serve` (embedded) with one model, one `worker.max_batch` and
one `worker.concurrency`, on a fresh data folder and a free port, driven with the peers
benchmark's batch uploads (`POST /v1/batches/{id}/jobs`, 100 images a request).

The row: start, wait for /readyz, warm up (a batch of `warmup` images, answers checked), check in
the server's log that the model runs on the provider asked for and that the worker took the
settings, then the timed batch with the GPU sampled, the server's CPU (its process, per thread)
and the host's CPU read before and after. Every answer is checked against ONNX Runtime on the
reference tensor (the peers benchmark's `Measurement.check`).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import client
import medinform
import psutil
from common import REPO
from gpu_sampler import GpuSampler, GpuUsage
from images import ImageFile
from measurement import Measurement
from peers import free_port
from process import ServerProcess, StartupError

# Warnings, plus the registry's "model loaded" (with its provider) and the worker's "worker
# consuming" (with its settings): what the row checks, without a line per request.
LOG_FILTER = "warn,medinform_core::registry=info,medinform_worker=info"
WORKER_SETTINGS = ("max_batch", "concurrency", "prefetch")


@dataclass(frozen=True)
class RowSpec:
    model: str
    max_batch: int
    concurrency: int

    @property
    def prefetch(self) -> int:
        """Deliveries the worker may hold: the batches running and one more filling behind them."""
        return self.max_batch * (self.concurrency + 1)

    @property
    def key(self) -> str:
        return f"{self.model}-b{self.max_batch}-c{self.concurrency}"


@dataclass(frozen=True)
class RowSetup:
    """What every row shares."""

    binary: Path
    provider: str
    ort_library: Path
    library_dirs: list[Path]
    threads: int
    in_flight: int
    warmup: int
    poll: float
    tolerance: float
    gpu_index: int
    row_timeout: float
    extra_env: dict[str, str]
    log_dir: Path
    data_root: Path


@dataclass
class SweepRow:
    """A row's figures; `measurement` holds images, seconds, server CPU and the answer check."""

    spec: RowSpec
    measurement: Measurement
    tolerance: float
    provider: str | None = None
    window_seconds: float | None = None
    gpu: GpuUsage | None = None
    host_busy_cores: float | None = None
    client_cores: float | None = None
    threads_by_name: dict[str, float] = field(default_factory=dict)
    hottest_thread: tuple[str, float] | None = None
    # The server ran on another provider than asked, or with other settings: so would every row.
    stops_sweep: bool = False

    @property
    def server_cores(self) -> float | None:
        """Server CPU-seconds over wall-seconds of the same window."""
        cpu, wall = self.measurement.cpu_seconds, self.window_seconds
        return cpu / wall if cpu is not None and wall else None

    @property
    def wrong(self) -> bool:
        row = self.measurement
        return row.unanswered > 0 or (row.max_delta is not None and row.max_delta > self.tolerance)

    @property
    def failed(self) -> bool:
        return self.measurement.error is not None or self.wrong


@dataclass
class ServerLog:
    """What the row reads in the server's JSON log."""

    providers: dict[str, str] = field(default_factory=dict)
    cuda_fallbacks: list[str] = field(default_factory=list)
    worker: dict[str, Any] = field(default_factory=dict)


def read_log(path: Path) -> ServerLog:
    log = ServerLog()
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        fields = event.get("fields", {}) if isinstance(event, dict) else {}
        message = fields.get("message", "")
        if message == "model loaded":
            log.providers[str(fields.get("model"))] = str(fields.get("provider"))
        elif message.startswith("CUDA was requested but is not available"):
            log.cuda_fallbacks.append(f"{fields.get('model')}: {fields.get('reason')}")
        elif message == "worker consuming":
            log.worker = fields
    return log


def log_problem(log: ServerLog, spec: RowSpec, provider: str) -> str | None:
    """Why the row's figures would not be what they claim, if they would not."""
    ran = log.providers.get(spec.model)
    if log.cuda_fallbacks:
        return f"CUDA was asked for but MedInform ran on the CPU ({'; '.join(log.cuda_fallbacks)})"
    if ran is None:
        return f"the server log has no 'model loaded' line for {spec.model}: where it ran is unknown"
    if ran != provider:
        return f"asked for the {provider} provider, the model ran on {ran}"
    took = {name: log.worker.get(name) for name in WORKER_SETTINGS}
    wanted = {name: getattr(spec, name) for name in WORKER_SETTINGS}
    if took != wanted:
        return f"the worker took {took}, not {wanted}"
    return None


def server_env(spec: RowSpec, setup: RowSetup) -> dict[str, str]:
    settings = {
        "MEDINFORM_INFERENCE_EXECUTION_PROVIDER": setup.provider,
        "MEDINFORM_WORKER_MAX_BATCH": str(spec.max_batch),
        "MEDINFORM_WORKER_CONCURRENCY": str(spec.concurrency),
        "MEDINFORM_WORKER_PREFETCH": str(spec.prefetch),
        "MEDINFORM_LOG": LOG_FILTER,
        "MEDINFORM_LOG_FORMAT": "json",
        **setup.extra_env,
    }
    env = medinform.embedded_env(spec.model, setup.threads, setup.ort_library, settings)
    if setup.library_dirs:
        present = [path for path in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if path]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(path) for path in setup.library_dirs] + present)
    return env


def thread_seconds(process: psutil.Process) -> dict[int, tuple[str, float]]:
    """Name and user + system CPU seconds of each thread of `process`, by thread id."""
    found: dict[int, tuple[str, float]] = {}
    for thread in process.threads():
        try:
            name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        found[thread.id] = (name, thread.user_time + thread.system_time)
    return found


def host_busy_seconds() -> float:
    """CPU-seconds the host's cores spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class Window:
    """The CPU counters around the timed part: the server's (process and threads), the client's
    (this process) and the host's."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.started = time.perf_counter()
        self.server_cpu = server.cpu_seconds()
        self.threads = thread_seconds(server.process)
        self.client_cpu = own_cpu_seconds()
        self.host_busy = host_busy_seconds()

    def close(self, row: SweepRow) -> None:
        wall = time.perf_counter() - self.started
        row.window_seconds = wall
        row.measurement.cpu_seconds = self.server.cpu_seconds() - self.server_cpu
        row.client_cores = (own_cpu_seconds() - self.client_cpu) / wall
        row.host_busy_cores = (host_busy_seconds() - self.host_busy) / wall
        per_thread = {
            tid: (name, seconds - self.threads.get(tid, (name, 0.0))[1])
            for tid, (name, seconds) in thread_seconds(self.server.process).items()
        }
        by_name: dict[str, float] = {}
        for name, seconds in per_thread.values():
            by_name[name] = by_name.get(name, 0.0) + seconds / wall
        row.threads_by_name = dict(sorted(by_name.items(), key=lambda item: -item[1]))
        if per_thread:
            name, seconds = max(per_thread.values(), key=lambda item: item[1])
            row.hottest_thread = (name, seconds / wall)


def cycled(files: list[ImageFile], count: int, prefix: str = "") -> list[ImageFile]:
    """`count` images going round `files`; each copy named apart (a batch knows its images by
    file name)."""
    return [
        ImageFile(f"{prefix}r{index // len(files)}-{files[index % len(files)].name}", files[index % len(files)].data)
        for index in range(count)
    ]


async def measure(
    spec: RowSpec, files: list[ImageFile], reference: list[list[float]], count: int, setup: RowSetup
) -> SweepRow:
    label = f"{spec.model}, max_batch {spec.max_batch}, concurrency {spec.concurrency}"
    row = SweepRow(spec, Measurement(spec.key, label, spec.model), setup.tolerance)
    if not setup.binary.is_file():
        row.measurement.error = f"{setup.binary} not found (cargo build --release --bin medinform)"
        return row
    try:
        await asyncio.wait_for(_measure(row, files, reference, count, setup), setup.row_timeout)
    except StartupError as error:
        row.measurement.error = str(error)
    except (aiohttp.ClientError, client.HttpError) as error:
        row.measurement.error = f"failed while measuring: {type(error).__name__}: {error}"
    except TimeoutError:
        row.measurement.error = (
            f"timed out: a request took over {client.REQUEST_TIMEOUT_SECS} s, "
            f"or the row over {setup.row_timeout:g} s (--row-timeout)"
        )
    return row


async def _measure(
    row: SweepRow, files: list[ImageFile], reference: list[list[float]], count: int, setup: RowSetup
) -> None:
    spec = row.spec
    data_dir = tempfile.mkdtemp(prefix=f"{spec.key}-", dir=setup.data_root)
    port = free_port()
    command = [str(setup.binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
    log_path = setup.log_dir / f"{spec.key}.log"
    api = medinform.Api(f"http://127.0.0.1:{port}", {})
    references = [reference[index % len(files)] for index in range(max(count, setup.warmup))]
    with ServerProcess(command, server_env(spec, setup), log_path, REPO) as server:
        async with client.new_session(setup.in_flight) as session:
            await server.wait_ready(lambda: api.call(session, "GET", "/readyz", timeout=5))
            warm = cycled(files, setup.warmup, prefix="warmup-")
            _, answers, problems = await medinform.batch_uploads(
                api, session, spec.model, warm, setup.in_flight, setup.poll
            )
            row.measurement.check(answers, references, len(warm))
            log = read_log(log_path)
            row.provider = log.providers.get(spec.model)
            if problem := log_problem(log, spec, setup.provider):
                row.measurement.error = problem
                row.stops_sweep = True
                return
            timed = cycled(files, count)
            window = Window(server)
            with GpuSampler(setup.gpu_index) as sampler:
                seconds, answers, timed_problems = await medinform.batch_uploads(
                    api, session, spec.model, timed, setup.in_flight, setup.poll
                )
            window.close(row)
            row.gpu = sampler.usage
    row.measurement.images, row.measurement.seconds = len(answers), seconds
    row.measurement.check(answers, references, count)
    if problems or timed_problems:
        row.measurement.details["problems"] = (problems + timed_problems)[:5]
