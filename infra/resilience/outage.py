#!/usr/bin/env python3
"""Broker-outage test: `medinform api` and `medinform worker` (PostgreSQL, RabbitMQ, S3) reach
RabbitMQ through a TCP proxy. While clients submit jobs at a steady pace, the proxy closes every
broker connection and refuses new ones for a while, then lets them through again.

Asserts: the API answered 202 to every submission during the outage; /readyz said the queue was
unavailable during it and ready after it; neither process exited; after the restoration every
accepted job succeeded, with exactly one job per Idempotency-Key.

Needs PostgreSQL (a throw-away database is created and dropped), RabbitMQ (queues and exchanges
under a prefix of the run's own, deleted afterwards) and an S3 server (a key prefix of the run's
own), from the variables infra/test sets:

    MEDINFORM_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/postgres
    MEDINFORM_TEST_AMQP_URL      default amqp://guest:guest@127.0.0.1:5672/%2f
    MEDINFORM_TEST_S3_ENDPOINT, _BUCKET, _REGION, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY  (required)

    .venv/bin/python infra/resilience/outage.py [--jobs 300] [--outage 20] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import broker
import support
from support import Http, Report, Service

NAME = "outage"
S3_VARIABLES = ["MEDINFORM_TEST_S3_ENDPOINT", "MEDINFORM_TEST_S3_BUCKET", "MEDINFORM_TEST_S3_ACCESS_KEY_ID",
                "MEDINFORM_TEST_S3_SECRET_ACCESS_KEY"]


@dataclass
class Probe:
    at: float
    ready_status: int | None  # None: no answer
    queue_ok: bool | None
    api_alive: bool
    worker_alive: bool


class Monitor(threading.Thread):
    """Polls /readyz and whether both processes live, twice a second."""

    def __init__(self, http: Http, api: Service, worker: Service):
        super().__init__(daemon=True)
        self.http, self.api, self.worker = http, api, worker
        self.probes: list[Probe] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            status, queue_ok = None, None
            try:
                answer = self.http.request("GET", "/readyz", timeout=10)
                status = answer.status
                queue_ok = answer.json()["checks"]["queue"]["ok"]
            except Exception:  # noqa: BLE001 - no answer is recorded as such
                pass
            self.probes.append(Probe(time.monotonic(), status, queue_ok, self.api.alive, self.worker.alive))
            self.stop.wait(0.5)


class Outage(threading.Thread):
    def __init__(self, proxy: broker.BrokerProxy, start_at: float, seconds: float):
        super().__init__(daemon=True)
        self.proxy, self.start_at, self.seconds = proxy, start_at, seconds
        self.cut_at: float | None = None
        self.restored_at: float | None = None
        self.cut_connections = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.start_at - time.monotonic()))
            self.cut_connections = self.proxy.cut()
            self.cut_at = time.monotonic()
            support.log(f"{NAME}: broker cut off ({self.cut_connections} connections closed)")
            time.sleep(self.seconds)
            self.proxy.restore()
            self.restored_at = time.monotonic()
            support.log(f"{NAME}: broker reachable again")
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            self.error = f"{type(e).__name__}: {e}"


def psql(admin_url: str, sql: str) -> None:
    if shutil.which("psql") is None:
        raise RuntimeError("psql is not installed (Debian: apt-get install postgresql-client)")
    done = subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def run(args: argparse.Namespace, report: Report) -> None:
    rng = random.Random(args.seed)
    missing = [name for name in S3_VARIABLES if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set: run it with infra/test, which starts a Garage S3 "
                           "server, or set the MEDINFORM_TEST_S3_* variables")
    admin_url = os.environ.get("MEDINFORM_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    amqp = broker.AmqpUrl.parse(os.environ.get("MEDINFORM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    run_id = uuid.uuid4().hex
    database = f"medinform_resilience_{run_id}"
    prefix = f"resilience-{run_id[:12]}"

    with support.temp_dir("outage", args.keep) as tmp:
        proxy = broker.BrokerProxy(amqp.host, amqp.port)
        services: list[Service] = []
        created_database = False
        try:
            proxy_port = proxy.start()
            psql(admin_url, f'create database "{database}"')
            created_database = True
            env = support.child_env({
                "MEDINFORM_DATA_DIR": str(tmp / "data"),
                "MEDINFORM_DATABASE_URL": with_database(admin_url, database),
                "MEDINFORM_QUEUE_URL": amqp.via("127.0.0.1", proxy_port),
                "MEDINFORM_QUEUE_PREFIX": prefix,
                "MEDINFORM_STORAGE_BACKEND": "s3",
                "MEDINFORM_STORAGE_S3_ENDPOINT": os.environ["MEDINFORM_TEST_S3_ENDPOINT"],
                "MEDINFORM_STORAGE_S3_BUCKET": os.environ["MEDINFORM_TEST_S3_BUCKET"],
                "MEDINFORM_STORAGE_S3_REGION": os.environ.get("MEDINFORM_TEST_S3_REGION", "garage"),
                "MEDINFORM_STORAGE_S3_ACCESS_KEY_ID": os.environ["MEDINFORM_TEST_S3_ACCESS_KEY_ID"],
                "MEDINFORM_STORAGE_S3_SECRET_ACCESS_KEY": os.environ["MEDINFORM_TEST_S3_SECRET_ACCESS_KEY"],
                "MEDINFORM_STORAGE_S3_FORCE_PATH_STYLE": "true",
                "MEDINFORM_STORAGE_S3_PREFIX": f"{prefix}/",
                "MEDINFORM_MODELS_DIR": str(support.REPO / "models"),
                "MEDINFORM_MODELS_ALLOW_RESEARCH": "true",  # the malaria model is research-stage
                "MEDINFORM_WORKER_MODELS": support.MODEL,
                "MEDINFORM_INFERENCE_THREADS": "1",
                "MEDINFORM_INFERENCE_ONNXRUNTIME_LIBRARY": support.onnxruntime_library(),
                "MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE": "0",
                "MEDINFORM_SERVER_SHUTDOWN_GRACE_SECS": "5",
                "MEDINFORM_SERVER_WEB_DIR": str(tmp / "no-web-app"),
            })
            binary = str(support.private_binary(args.binary, tmp))
            # Applies the migrations too, before api and worker start.
            out = support.run_command([binary, "keys", "create", "--tenant", f"resilience-{run_id[:8]}",
                                       "--name", "outage test", "--scopes", "submit,read"], env, tmp)
            api_key = next((line.strip() for line in out.splitlines() if line.startswith("mik_")), None)
            if not api_key:
                raise RuntimeError(f"`medinform keys create` printed no key:\n{out}")

            port = support.free_port()
            api = Service("medinform api", [binary, "api", "--listen", f"127.0.0.1:{port}"], env, tmp, tmp / "api.log")
            worker = Service("medinform worker", [binary, "worker"], env, tmp, tmp / "worker.log")
            services += [api, worker]
            http = Http(port, api_key)
            api.start()
            worker.start()
            api.wait_http(http, "/readyz", timeout=120)
            worker.wait_for_log("worker consuming", timeout=120)
            support.log(f"{NAME}: api on port {port} and worker ready, RabbitMQ through 127.0.0.1:{proxy_port}; "
                        f"{args.jobs} jobs over {args.submit_secs:.0f} s, outage of {args.outage:.0f} s "
                        f"from {args.cut_at:.0f} s")

            keys = support.make_keys("outage", support.malaria_cells(args.jobs, rng))
            monitor = Monitor(Http(port), api, worker)
            monitor.start()
            submitter = support.Submitter(http, keys, args.concurrency, args.key_timeout,
                                          rate=args.jobs / args.submit_secs, rng=rng)
            outage = Outage(proxy, submitter.started_at + args.cut_at, args.outage)
            outage.start()
            worker_log_before = len(worker.log_text())
            submitter.run()
            outage.join()
            submit_time = time.monotonic() - submitter.started_at
            accepted = [k for k in keys if k.outcome == "accepted"]
            support.log(f"{NAME}: submissions done in {submit_time:.1f} s; waiting for every job to be final")
            store, final_wait = support.wait_until_final(http, timeout=args.final_timeout, expected=len(accepted))
            all_final_at = time.monotonic()
            replay_problems = support.replay_round(http, accepted, args.concurrency)
            monitor.stop.set()
            monitor.join()

            figures_and_checks(report, args, api, worker, proxy, outage, monitor, submitter,
                               worker_log_before, submit_time, all_final_at)
            support.job_checks(report, http, keys, submitter.attempts, replay_problems, store, final_wait)
        except Exception:
            for service in services:
                support.log(f"{NAME}: the last lines of the {service.name} log:\n{service.log_tail(25)}")
            raise
        finally:
            for service in services:
                service.stop(grace=15)
            proxy.close()
            cleanup(admin_url if created_database else None, database, amqp, prefix)
        if not report.ok:
            for service in services:
                errors = support.error_lines(service.log_text())
                if errors:
                    support.log(f"{NAME}: errors in the {service.name} log:\n" + "\n".join(errors))


def figures_and_checks(report: Report, args, api: Service, worker: Service, proxy: broker.BrokerProxy,
                       outage: Outage, monitor: Monitor, submitter: support.Submitter, worker_log_before: int,
                       submit_time: float, all_final_at: float) -> None:
    if outage.error or outage.cut_at is None or outage.restored_at is None:
        report.check("the broker was cut off and restored", False, outage.error or "the outage did not happen")
        return
    cut, restored = outage.cut_at, outage.restored_at
    report.figure("outage (s)", f"{restored - cut:.1f}, from {cut - submitter.started_at:.1f} s into the run")
    report.figure("broker connections closed by the cut", outage.cut_connections)
    report.figure("proxied connections in all", proxy.connections)
    report.figure("submission phase (s)", f"{submit_time:.1f}")
    report.check("the cut closed live broker connections (API and worker)", outage.cut_connections >= 2,
                 f"{outage.cut_connections} closed")

    during = [a for a in submitter.attempts if cut <= a.started and a.ended <= restored]
    refused = [a for a in during if a.kind not in ("accepted", "replayed")]
    report.figure("POST /v1/jobs during the outage", f"{len(during)}, {len(during) - len(refused)} answered 202")
    detail = f"{len(during) - len(refused)} of {len(during)} answered 202"
    if refused:
        detail += f"; e.g. {refused[0].kind}: {refused[0].detail}"
    report.check("the API answered 202 to every submission during the outage", bool(during) and not refused, detail)
    others = [a for a in submitter.attempts if a.kind not in ("accepted", "replayed")]
    report.figure("POST /v1/jobs not answered 202 (whole run)",
                  f"{len(others)}" + (f", e.g. {others[0].kind}: {others[0].detail}" if others else ""))

    # The API notices a closed connection on its next use: a second of grace after the cut.
    window = [p for p in monitor.probes if cut + 1.0 <= p.at <= restored]
    said_down = [p for p in window if p.ready_status == 503 and p.queue_ok is False]
    report.figure("/readyz during the outage", f"{len(said_down)} of {len(window)} probes: 503, queue not ok")
    detail = f"{len(said_down)} of {len(window)} probes"
    other = next((p for p in window if p not in said_down), None)
    if other is not None:
        detail += f"; e.g. status {other.ready_status}, queue ok {other.queue_ok}"
    report.check("/readyz reported the queue unavailable during the outage",
                 bool(window) and other is None, detail)
    back = next((p for p in monitor.probes if p.at > restored and p.ready_status == 200), None)
    report.check("/readyz was ready again after the restoration", back is not None,
                 f"after {back.at - restored:.1f} s" if back else "never within the run")

    died = [p for p in monitor.probes if not (p.api_alive and p.worker_alive)]
    alive = not died and api.alive and worker.alive
    report.check("neither the API nor the worker exited", alive,
                 "" if alive else f"api exit status {api.returncode}, worker exit status {worker.returncode}")

    log = worker.log_text()[worker_log_before:]
    report.figure("worker log: 'subscription closed; reconnecting'", log.count("subscription closed; reconnecting"))
    report.figure("worker log: 'job queue error; retrying'", log.count("job queue error; retrying"))
    report.figure("worker log: 'worker consuming again'", log.count("worker consuming again"))
    report.figure("worker log: 're-published jobs'", log.count("re-published jobs"))
    report.figure("seconds from restoration until every job was final", f"{all_final_at - restored:.1f}")


def cleanup(admin_url: str | None, database: str, amqp: broker.AmqpUrl, prefix: str) -> None:
    if admin_url:
        try:
            psql(admin_url, f'drop database if exists "{database}" with (force)')
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            support.log(f"{NAME}: could not drop database {database}: {e}")
    try:
        broker.delete_topology(amqp, [f"{prefix}.jobs.{support.MODEL}", f"{prefix}.dead"],
                               [f"{prefix}.jobs", f"{prefix}.dead"])
    except Exception as e:  # noqa: BLE001 - cleanup goes on
        support.log(f"{NAME}: could not delete the RabbitMQ queues of prefix {prefix}: {e}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    support.common_arguments(p)
    p.add_argument("--submit-secs", type=float, default=40.0, help="seconds over which the jobs are submitted")
    p.add_argument("--cut-at", type=float, default=8.0, help="seconds into the run when the broker is cut off")
    p.add_argument("--outage", type=float, default=20.0, help="seconds the broker stays cut off")
    p.add_argument("--final-timeout", type=float, default=150.0,
                   help="seconds to wait, after the submissions, for every job to be final")
    return p


if __name__ == "__main__":
    support.main(NAME, run, parser())
