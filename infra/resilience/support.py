"""What the resilience scenarios share: processes, HTTP, test images, the submitting client and
the checks that every scenario makes on its jobs.

Standard library only, plus numpy and pillow (infra/requirements.txt) to turn the malaria cells
of ../shared/datasets into PNG files.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import http.client
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("MEDINFORM_TEST_DATASETS", REPO.parent / "shared" / "datasets"))
MODEL = "malaria"
FINAL = {"succeeded", "failed", "canceled"}


def log(message: str) -> None:
    print(f"[resilience] {message}", flush=True)


# --- the report --------------------------------------------------------------------------------


@dataclass
class Report:
    """The checks and figures of one scenario."""

    scenario: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        log(f"{'ok    ' if ok else 'FAILED'} {self.scenario}: {name}" + (f" ({detail})" if detail else ""))
        return ok

    def figure(self, name: str, value: object) -> None:
        self.figures.append((name, str(value)))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def print(self) -> None:
        width = max((len(n) for n, _ in self.figures), default=0)
        print(f"\n---- {self.scenario}: figures ----", flush=True)
        for name, value in self.figures:
            print(f"  {name:<{width}}  {value}")
        print(f"---- {self.scenario}: checks ----")
        for name, ok, detail in self.checks:
            print(f"  {'ok    ' if ok else 'FAILED'}  {name}" + (f": {detail}" if detail else ""))
        verdict = "passed" if self.ok else "FAILED"
        print(f"---- {self.scenario}: {verdict} ----", flush=True)


def totals_line(reports: Iterable[Report]) -> str:
    """The line infra/test's summary counts: one test per scenario."""
    reports = list(reports)
    passed = sum(r.ok for r in reports)
    return f"resilience: {passed} passed, {len(reports) - passed} failed, 0 skipped"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--binary", type=Path, default=REPO / "target" / "debug" / "medinform",
                        help="the medinform binary (default target/debug/medinform)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) after the run")
    parser.add_argument("--jobs", type=int, default=300, help="jobs (idempotency keys) to submit")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--key-timeout", type=float, default=60.0,
                        help="seconds a key may take from its first attempt to a 202 before it counts as failed")


Scenario = Callable[[argparse.Namespace, Report], None]


def main(name: str, run: Scenario, parser: argparse.ArgumentParser) -> None:
    """Entry point of a scenario run alone: its report, the totals line, exit status 1 on failure."""
    args = parser.parse_args()
    install_signal_handlers()
    report = run_scenario(name, run, args)
    print(totals_line([report]), flush=True)
    sys.exit(0 if report.ok else 1)


def run_scenario(name: str, run: Scenario, args: argparse.Namespace) -> Report:
    """Runs a scenario; an exception becomes a failed check (the scenario's cleanup has run)."""
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    report = Report(name)
    log(f"{name}: seed {args.seed}")
    started = time.monotonic()
    try:
        run(args, report)
    except Exception as e:  # noqa: BLE001 - any failure of the harness is a failed scenario
        if not isinstance(e, RuntimeError):  # RuntimeError: a failure the harness explains
            traceback.print_exc()
        report.check("the scenario ran to its end", False, f"{type(e).__name__}: {e}")
    report.figure("seed", args.seed)
    report.figure("wall time (s)", f"{time.monotonic() - started:.1f}")
    report.print()
    return report


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP end the run through the normal unwinding, so that cleanups run."""

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


# --- temporary folders, ports, processes ------------------------------------------------------


@contextlib.contextmanager
def temp_dir(prefix: str, keep: bool):
    path = Path(tempfile.mkdtemp(prefix=f"medinform-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def onnxruntime_library() -> str:
    """ORT_DYLIB_PATH, or the library of the repository's .venv."""
    configured = os.environ.get("ORT_DYLIB_PATH")
    if configured:
        return str(Path(configured).resolve())
    found = sorted(REPO.glob(".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*"))
    if not found:
        raise RuntimeError("no ONNX Runtime library: set ORT_DYLIB_PATH or run infra/setup-python.sh --runtime")
    return str(found[-1])


def child_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without its MEDINFORM_* variables (medinform refuses unknown
    ones, and a developer's own settings must not leak in), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDINFORM_")}
    env.setdefault("MEDINFORM_LOG", "info,sqlx=warn,lapin=warn,ort=warn,aws=warn")
    env.update(settings)
    return env


def private_binary(binary: Path, folder: Path) -> Path:
    """A copy of `binary` in `folder`, so that every start and restart of the run runs the same
    program even when a build replaces the original meanwhile."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(f"{binary} is missing: build it with `cargo build --bin medinform`")
    copy = folder / "medinform"
    shutil.copy2(binary, copy)
    return copy


class Service:
    """A medinform process with its output appended to a log file; can be killed and started again."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Once stopped, never started again: a thread that restarts the service (the crash
        # scenario's killer) cannot leave a process behind the cleanup.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self.name} was stopped for good")
            self.starts += 1
            with open(self.log_path, "ab") as out:
                out.write(f"\n===== start {self.starts} of {self.name} at {time.time():.3f} =====\n".encode())
                out.flush()
                self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace: float = 15.0) -> None:
        """For good: SIGTERM, then SIGKILL after `grace` seconds."""
        with self._lock:
            self._stopped = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {grace:.0f} s of SIGTERM: killing it")
            self.kill9()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float, after: int = 0) -> float:
        """Seconds until `needle` appears in the log past offset `after`; raises on exit or timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if needle in self.log_text()[after:]:
                return time.monotonic() - started
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.returncode} before logging {needle!r}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not log {needle!r} within {timeout:.0f} s:\n{self.log_tail()}")

    def wait_http(self, client: "Http", path: str, timeout: float, want: int = 200) -> float:
        """Seconds until GET `path` answers `want`; raises if the process exits or time runs out."""
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < timeout:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.returncode} while starting:\n{self.log_tail()}")
            try:
                answer = client.request("GET", path, timeout=5)
                if answer.status == want:
                    return time.monotonic() - started
                last = f"{answer.status} {answer.body[:200]!r}"
            except (OSError, HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {want} on {path} within {timeout:.0f} s (last: {last}):\n"
                           f"{self.log_tail()}")


def error_lines(text: str, last: int = 10) -> list[str]:
    """A log's panics and errors, without the access log's lines for 5xx answers."""
    lines = [line for line in text.splitlines()
             if ("panicked" in line or " ERROR " in line) and "tower_http::trace" not in line]
    return lines[-last:]


def run_command(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} … exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


# --- HTTP --------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return ""


class Http:
    """A fresh connection per request: a connection to a process that was killed is never reused."""

    def __init__(self, port: int, api_key: str | None = None):
        self.port, self.api_key = port, api_key

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
        headers = dict(headers or {})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            connection.close()

    def get_json(self, path: str, timeout: float = 30):
        answer = self.request("GET", path, timeout=timeout)
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {answer.body[:300]!r}")
        return answer.json()

    def list_jobs(self) -> list[dict]:
        """Every job of the caller's tenant (GET /v1/jobs, following next_cursor)."""
        jobs, cursor = [], None
        while True:
            query = {"limit": "200"}
            if cursor:
                query["cursor"] = cursor
            page = self.get_json("/v1/jobs?" + urllib.parse.urlencode(query))
            jobs.extend(page["jobs"])
            cursor = page.get("next_cursor")
            if not cursor:
                return jobs


def multipart(fields: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data form; a new boundary every time."""
    boundary = f"resilience{uuid.uuid4().hex}"
    out = io.BytesIO()
    for name, file_name, data in fields:
        out.write(f"--{boundary}\r\n".encode())
        if file_name is None:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{file_name}"\r\n'
                      "Content-Type: image/png\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# --- test images -------------------------------------------------------------------------------


def malaria_cells(count: int, rng: random.Random) -> list[bytes]:
    """`count` distinct 50x50 grayscale cells of the malaria set as PNG files."""
    import numpy as np
    from PIL import Image

    path = DATASETS / "malaria" / "malaria_cells_50px_gray.npz"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing (see ../shared/datasets/PROVENANCE.md)")
    with np.load(path) as data:
        images = data["images"]
        picked = rng.sample(range(len(images)), count)
        cells = []
        for index in picked:
            out = io.BytesIO()
            Image.fromarray(images[index]).save(out, format="PNG")
            cells.append(out.getvalue())
    return cells


# --- the client --------------------------------------------------------------------------------


@dataclass
class Key:
    """One idempotency key: one job the client wants, and what it got."""

    index: int
    key: str
    image: bytes
    due: float = 0.0
    first_attempt: float | None = None
    attempts: int = 0
    answers: list[tuple[str, bool]] = field(default_factory=list)  # (job id, replayed) of 2xx answers
    outcome: str = "pending"  # pending, accepted, rejected, timed_out
    last: str = ""  # the last answer that was not a 202
    accepted_at: float | None = None

    @property
    def job_ids(self) -> set[str]:
        return {job_id for job_id, _ in self.answers}


def make_keys(prefix: str, images: list[bytes]) -> list[Key]:
    run_id = uuid.uuid4().hex[:8]
    return [Key(i, f"{prefix}-{run_id}-{i:04d}", image) for i, image in enumerate(images)]


@dataclass
class Attempt:
    key: str
    started: float
    ended: float
    kind: str  # accepted, replayed, connection_error, server_error, in_progress, rate_limited, timeout, rejected
    detail: str


RETRYABLE_CODES = {"idempotency_request_in_progress", "rate_limited", "request_timeout"}


class Submitter:
    """Sends one POST /v1/jobs per key until it gets a 202, retrying with the same key after a
    connection error, a 5xx, a 408, a 429 or a 409 `idempotency_request_in_progress` (after its
    Retry-After). Keys wait in a queue ordered by when they are due, so that a key that keeps
    getting 409 holds no thread. `rate` (keys per second) spreads the first attempts out."""

    def __init__(self, client: Http, keys: list[Key], concurrency: int, key_timeout: float,
                 rate: float | None = None, rng: random.Random | None = None):
        self.client, self.keys, self.concurrency, self.key_timeout = client, keys, concurrency, key_timeout
        self.rng = rng or random.Random()
        self.attempts: list[Attempt] = []
        self.lock = threading.Condition()
        self.resolved = 0
        self.started_at = time.monotonic()
        self.heap: list[tuple[float, int, int]] = []
        for i, key in enumerate(keys):
            assert key.index == i
            key.due = self.started_at + (i / rate if rate else 0.0)
            self.heap.append((key.due, i, i))
        heapq.heapify(self.heap)
        self.seq = len(keys)

    def run(self) -> None:
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _next(self) -> Key | None:
        with self.lock:
            while True:
                if not self.heap:
                    if self.resolved >= len(self.keys):
                        self.lock.notify_all()
                        return None
                    self.lock.wait(0.5)
                    continue
                due, _, index = self.heap[0]
                now = time.monotonic()
                if due > now:
                    self.lock.wait(min(due - now, 0.5))
                    continue
                heapq.heappop(self.heap)
                return self.keys[index]

    def _settle(self, key: Key, outcome: str | None, retry_in: float | None) -> None:
        with self.lock:
            if outcome is not None:
                key.outcome = outcome
                self.resolved += 1
            else:
                key.due = time.monotonic() + retry_in
                self.seq += 1
                heapq.heappush(self.heap, (key.due, self.seq, key.index))
            self.lock.notify_all()

    def _work(self) -> None:
        while (key := self._next()) is not None:
            now = time.monotonic()
            if key.first_attempt is None:
                key.first_attempt = now
            elif now - key.first_attempt > self.key_timeout:
                self._settle(key, "timed_out", None)
                continue
            key.attempts += 1
            try:
                kind, detail, retry_in = self.attempt(key)
            except Exception as e:  # noqa: BLE001 - an answer the client cannot read: retried
                kind, detail, retry_in = "unreadable", f"{type(e).__name__}: {e}", 1.0
            self.attempts.append(Attempt(key.key, now, time.monotonic(), kind, detail))
            if kind in ("accepted", "replayed"):
                key.accepted_at = time.monotonic()
                self._settle(key, "accepted", None)
            elif kind == "rejected":
                key.last = detail
                self._settle(key, "rejected", None)
            else:
                key.last = f"{kind}: {detail}"
                # Jitter, so that the retries of one restart do not arrive in step.
                self._settle(key, None, retry_in * (0.75 + 0.5 * self.rng.random()))
                if kind == "connection_error":
                    time.sleep(0.1)  # the service is down: this client pauses too

    def attempt(self, key: Key) -> tuple[str, str, float]:
        """One POST; (kind, detail, seconds before a retry)."""
        return submit(self.client, key)


def submit(client: Http, key: Key) -> tuple[str, str, float]:
    # The key as client_reference too: the store's jobs can be traced back to their key.
    body, content_type = multipart([("model", None, MODEL.encode()),
                                    ("client_reference", None, key.key.encode()),
                                    ("image", f"{key.key}.png", key.image)])
    headers = {"Content-Type": content_type, "Idempotency-Key": key.key}
    try:
        answer = client.request("POST", "/v1/jobs", body=body, headers=headers, timeout=30)
    except socket.timeout as e:
        return "timeout", str(e) or "timed out", 1.0
    except (OSError, HTTPException) as e:
        return "connection_error", f"{type(e).__name__}: {e}", 0.3 + 0.2 * min(key.attempts, 5)
    retry_after = _retry_after(answer, 1.0)
    if answer.status == 202:
        job_id = answer.json()["id"]
        replayed = answer.headers.get("idempotent-replayed") == "true"
        key.answers.append((job_id, replayed))
        return ("replayed" if replayed else "accepted"), job_id, 0
    if answer.status >= 500:
        return "server_error", f"{answer.status} {answer.error_code or answer.body[:120]!r}", retry_after
    code = answer.error_code
    if code in RETRYABLE_CODES:
        kind = "in_progress" if code == "idempotency_request_in_progress" else "rate_limited"
        return kind, f"{answer.status} {code}", retry_after
    return "rejected", f"{answer.status} {code or answer.body[:200]!r}", 0


def _retry_after(answer: Answer, default: float) -> float:
    try:
        return max(0.1, float(answer.headers.get("retry-after", default)))
    except ValueError:
        return default


def replay_round(client: Http, keys: list[Key], concurrency: int) -> dict[str, str]:
    """POSTs every key once more after the run; a key must replay the job it named. Returns
    key -> what went wrong (absent when the replay named the same job, marked replayed)."""
    problems: dict[str, str] = {}
    todo = list(keys)
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not todo:
                    return
                key = todo.pop()
            before = len(key.answers)
            kind, detail, _ = "connection_error", "", 0.0
            for _ in range(5):  # the service is stable now; a connection error is retried a little
                kind, detail, _ = submit(client, key)
                if kind != "connection_error":
                    break
                time.sleep(0.5)
            with lock:
                if kind != "replayed":
                    problems[key.key] = f"{kind}: {detail}"
                elif len(key.answers) > before and len(key.job_ids) > 1:
                    problems[key.key] = f"replayed {detail}, another job than its first answer"

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return problems


def wait_until_final(client: Http, timeout: float, expected: int = 0) -> tuple[list[dict], float]:
    """Polls the job list until every job is final (and there are at least `expected`); returns
    the last listing and the seconds it took. On timeout returns the last listing as it is."""
    started = time.monotonic()
    jobs: list[dict] = []
    while True:
        try:
            jobs = client.list_jobs()
        except (OSError, RuntimeError, HTTPException) as e:
            log(f"listing jobs failed: {e}")
        if len(jobs) >= expected and all(j["status"] in FINAL for j in jobs):
            return jobs, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return jobs, time.monotonic() - started
        time.sleep(1.0)


def by_status(jobs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return dict(sorted(counts.items()))


def sample(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f", … ({len(items)} in all)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def job_checks(report: Report, client: Http, keys: list[Key], attempts: list[Attempt],
               replay_problems: dict[str, str], store: list[dict], final_wait: float) -> None:
    """What every scenario asserts on its jobs: every key accepted, one job per key (also on a
    replay), exactly one job in the store per key, every job found and succeeded."""
    accepted = [k for k in keys if k.outcome == "accepted"]
    timed_out = [k for k in keys if k.outcome in ("timed_out", "pending")]
    rejected = [k for k in keys if k.outcome == "rejected"]
    kinds: dict[str, int] = {}
    for a in attempts:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
    report.figure("keys", len(keys))
    report.figure("requests (POST /v1/jobs)",
                  f"{len(attempts)}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    details: dict[str, int] = {}
    for a in attempts:
        if a.kind not in ("accepted", "replayed"):
            details[a.detail[:90]] = details.get(a.detail[:90], 0) + 1
    for detail, count in sorted(details.items(), key=lambda item: -item[1])[:4]:
        report.figure("  failed attempts", f"{count}x {detail}")
    report.figure("retries (same key again)", len(attempts) - sum(1 for k in keys if k.attempts))
    report.figure("keys accepted / timed out / rejected", f"{len(accepted)} / {len(timed_out)} / {len(rejected)}")
    waits = sorted(k.accepted_at - k.first_attempt for k in accepted if k.accepted_at and k.first_attempt)
    if waits:
        report.figure("first attempt to 202, per key (s)",
                      f"median {waits[len(waits) // 2]:.2f}, max {waits[-1]:.2f}; "
                      f"{sum(1 for k in accepted if k.attempts > 1)} keys needed more than one attempt")
    if timed_out:
        lasts: dict[str, int] = {}
        for k in timed_out:
            lasts[k.last] = lasts.get(k.last, 0) + 1
        report.figure("last answer of timed-out keys", "; ".join(f"{v}x {k}" for k, v in lasts.items()))

    detail = ""
    if timed_out:
        example = timed_out[0]
        detail += f"{len(timed_out)} keys got no 202 within the key timeout (e.g. {example.key}: {example.last})"
    if rejected:
        example = rejected[0]
        detail += ("; " if detail else "") + f"{len(rejected)} keys were refused (e.g. {example.key}: {example.last})"
    report.check("every key got a 202", not timed_out and not rejected, detail)

    split = {k.key: sorted(k.job_ids) for k in keys if len(k.job_ids) > 1}
    bad_replays = {k: v for k, v in replay_problems.items() if any(key.key == k for key in accepted)}
    detail = ""
    if split:
        first = next(iter(split.items()))
        detail += f"{len(split)} keys named two or more jobs (e.g. {first[0]}: {', '.join(first[1])})"
    if bad_replays:
        first = next(iter(bad_replays.items()))
        detail += ("; " if detail else "") + (f"{len(bad_replays)} accepted keys did not replay their job "
                                              f"(e.g. {first[0]}: {first[1]})")
    report.check("each key's answers name one job, and a later retry replays it", not split and not bad_replays, detail)

    named = {job_id for k in keys for job_id in k.job_ids}
    in_store = [j["id"] for j in store]
    store_ids = set(in_store)
    orphans = store_ids - named
    per_key: dict[str, list[str]] = {k.key: [] for k in keys}
    foreign = []
    for job in store:
        if job.get("client_reference") in per_key:
            per_key[job["client_reference"]].append(job["id"])
        else:
            foreign.append(job["id"])
    duplicated = {k: ids for k, ids in per_key.items() if len(ids) > 1}
    without = [k for k, ids in per_key.items() if not ids]
    report.figure("jobs in the store", f"{len(in_store)} for {len(keys)} keys: {len(duplicated)} keys with two "
                  f"or more jobs, {len(without)} keys with none, {len(orphans)} jobs that no answer names")
    detail = f"{len(in_store)} jobs in the store for {len(keys)} keys"
    if duplicated:
        first = next(iter(duplicated.items()))
        detail += f"; {len(duplicated)} keys have two or more jobs (e.g. {first[0]}: {', '.join(first[1])})"
    if without:
        detail += f"; {len(without)} keys have no job (e.g. {without[0]})"
    if orphans:
        detail += f"; {len(orphans)} jobs that no key's answer names (e.g. {sample(orphans, 1)})"
    if foreign:
        detail += f"; {len(foreign)} jobs of no key of this run"
    if len(in_store) != len(store_ids):
        detail += "; the listing repeats jobs"
    report.check("exactly one job per key in the store (no duplicates)",
                 len(in_store) == len(keys) and not orphans and not duplicated and not without and not foreign
                 and len(store_ids) == len(in_store), detail)

    missing = []
    for job_id in sorted(named - store_ids):
        try:
            answer = client.request("GET", f"/v1/jobs/{job_id}")
            if answer.status != 200:
                missing.append(f"{job_id} ({answer.status} {answer.error_code})")
        except (OSError, HTTPException) as e:
            missing.append(f"{job_id} ({e})")
    report.check("every job a 202 named exists", not missing,
                 f"{len(missing)} lost: {sample(missing, 3)}" if missing else "")

    counts = by_status(store)
    report.figure("jobs by status", ", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
    report.figure("seconds until every job was final", f"{final_wait:.1f}")
    not_ok = [j for j in store if j["status"] != "succeeded"]
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    if not_ok:
        errors = {}
        for j in not_ok:
            reason = j["status"] + (f" {j['error']['code']}" if j.get("error") else "")
            errors[reason] = errors.get(reason, 0) + 1
        detail += "; not succeeded: " + ", ".join(f"{v}x {k}" for k, v in errors.items())
    report.check("every job succeeded (none stuck or failed)", bool(store) and not not_ok, detail)
