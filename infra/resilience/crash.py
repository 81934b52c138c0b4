#!/usr/bin/env python3
"""Crash test: `medinform serve` (embedded: SQLite, local folder, in-process queue) is killed with
SIGKILL at random moments while clients submit jobs, and started again at once on the same port
and data folder.

Each job is submitted with its own Idempotency-Key and retried with the same key after every
failure (connection error, 5xx, 409 idempotency_request_in_progress after its Retry-After) until a
202. Then every key is sent once more, and the test asserts: every key got a 202; each key's
answers (and the later retry) name one job; the store holds exactly one job per key; every job
succeeded.

    .venv/bin/python infra/resilience/crash.py [--jobs 300] [--kills 8] [--key-timeout 60] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import support
from support import Http, Report, Service

NAME = "crash"


class Killer(threading.Thread):
    """Kills the service at random moments of the run (when a random share of the keys is
    done, plus up to 300 ms) and starts it again at once."""

    def __init__(self, service: Service, http: Http, submitter: support.Submitter, kills: int,
                 rng: random.Random):
        super().__init__(daemon=True)
        self.service, self.http, self.submitter, self.rng = service, http, submitter, rng
        total = len(submitter.keys)
        low, high = max(1, total // 20), max(2, total * 85 // 100)
        self.thresholds = sorted(rng.sample(range(low, high), min(kills, high - low)))
        self.stop = threading.Event()
        self.kills = 0
        self.restarts: list[float] = []  # seconds from the kill until /healthz answered
        self.error: str | None = None

    def run(self) -> None:
        for threshold in self.thresholds:
            while self.submitter.resolved < threshold and not self.stop.is_set():
                time.sleep(0.02)
            if self.stop.is_set():
                return
            time.sleep(self.rng.uniform(0, 0.3))
            killed_at = time.monotonic()
            self.service.kill9()
            self.kills += 1
            try:
                self.service.start()
                self.service.wait_http(self.http, "/healthz", timeout=60)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                self.error = str(e)
                return
            self.restarts.append(time.monotonic() - killed_at)


def run(args: argparse.Namespace, report: Report) -> None:
    rng = random.Random(args.seed)
    with support.temp_dir("crash", args.keep) as tmp:
        data_dir = tmp / "data"
        port = support.free_port()
        env = support.child_env({
            "MEDINFORM_MODELS_DIR": str(support.REPO / "models"),
            "MEDINFORM_WORKER_MODELS": support.MODEL,
            "MEDINFORM_MODELS_ALLOW_RESEARCH": "true",  # the malaria model is research-stage
            "MEDINFORM_INFERENCE_THREADS": "1",
            "MEDINFORM_INFERENCE_ONNXRUNTIME_LIBRARY": support.onnxruntime_library(),
            "MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE": "0",
            "MEDINFORM_SERVER_SHUTDOWN_GRACE_SECS": "5",
            "MEDINFORM_SERVER_WEB_DIR": str(tmp / "no-web-app"),
        })
        binary = support.private_binary(args.binary, tmp)
        argv = [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
        service = Service("medinform serve", argv, env, tmp, tmp / "serve.log")
        http = Http(port)  # anonymous: embedded mode on loopback
        try:
            keys = support.make_keys("crash", support.malaria_cells(args.jobs, rng))
            service.start()
            startup = service.wait_http(http, "/readyz", timeout=120)
            support.log(f"{NAME}: medinform serve ready on port {port} in {startup:.1f} s; "
                        f"{args.jobs} jobs, {args.kills} kills, concurrency {args.concurrency}")

            submitter = support.Submitter(http, keys, args.concurrency, args.key_timeout, rng=rng)
            killer = Killer(service, http, submitter, args.kills, rng)
            started = time.monotonic()
            killer.start()
            submitter.run()
            killer.stop.set()
            killer.join()
            submit_time = time.monotonic() - started
            if not service.alive:  # the last restart failed
                service.start()
                service.wait_http(http, "/healthz", timeout=60)

            support.log(f"{NAME}: submissions done in {submit_time:.1f} s; replaying every key")
            accepted = [k for k in keys if k.outcome == "accepted"]
            replay_problems = support.replay_round(http, accepted, args.concurrency)
            support.log(f"{NAME}: waiting for every job to be final")
            store, final_wait = support.wait_until_final(http, timeout=90, expected=len(accepted))

            report.figure("kills (SIGKILL) during the run", f"{killer.kills} of {len(killer.thresholds)} planned")
            if killer.restarts:
                report.figure("restart, kill to /healthz (s)",
                              f"mean {sum(killer.restarts) / len(killer.restarts):.2f}, max {max(killer.restarts):.2f}")
            report.figure("submission phase (s)", f"{submit_time:.1f}")
            report.check("the service came back after every kill",
                         killer.error is None and killer.kills == len(killer.thresholds),
                         killer.error or f"{killer.kills} kills")
            support.job_checks(report, http, keys, submitter.attempts, replay_problems, store, final_wait)
        except Exception:
            support.log(f"{NAME}: the last lines of the service's log:\n{service.log_tail(40)}")
            raise
        finally:
            service.stop(grace=10)
        if not report.ok:
            errors = support.error_lines(service.log_text())
            if errors:
                support.log(f"{NAME}: errors in the service's log:\n" + "\n".join(errors))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    support.common_arguments(p)
    p.add_argument("--kills", type=int, default=8, help="SIGKILLs during the run")
    return p


if __name__ == "__main__":
    support.main(NAME, run, parser())
