"""Fair lanes: how long a clinic's single upload takes while a drive's batch drains.

Starts `medinform serve` (embedded, one model, the peers benchmark's settings) three times:

1. idle: single uploads one at a time (`POST /v1/jobs`, one every --interval seconds), each
   timed from the upload to the poll that saw it final;
2. batch alone: a batch of --batch images (`POST /v1/batches/{id}/jobs`, 100 images a request,
   4 requests in flight), timed from the first request to the poll that saw every job final;
3. batch + singles: the same batch, and the same single uploads sent all the while it drains,
   from a second client process (a clinic is not the drive's client).

It prints the singles' latency p50/p99 idle and under load (goal: p99 under load below twice the
idle p99), and the batch's images/s alone and with the singles (goal: under 10 % lost). Every job
must end `succeeded`.

    cargo build --release --bin medinform
    python3 benches/lanes/fairness.py [--model malaria] [--batch 20000] [--setting NAME=VALUE]

It runs in the peers benchmark's virtual environment (target/peers-venv, made on first use) and
uses its modules (load client, images, server process).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "benches" / "peers"
sys.path.insert(1, str(PEERS))


def peers(name: str):
    return importlib.import_module(name)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_final(api, session, job_id: str, poll: float) -> dict:
    while True:
        job = await api.call(session, "GET", f"/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        await asyncio.sleep(poll)


async def singles(api, session, model: str, images: list, interval: float, poll: float,
                  until, count: int) -> tuple[list[float], list[str], list[float]]:
    """Uploads one image at a time, every `interval` s: `count` of them, or until `until()` is
    true (when given).
    Answers each upload's latency (upload to final), the problems, and each upload's answer
    time (upload to 202) on its own."""
    latencies: list[float] = []
    answered: list[float] = []
    phases: list[tuple[float, float]] = []
    problems: list[str] = []
    index = 0
    while (until is None and index < count) or (until is not None and not until()):
        started = time.perf_counter()
        job = await api.submit(session, model, images[index % len(images)])
        answered.append(time.perf_counter() - started)
        job = await wait_final(api, session, job["id"], poll)
        latencies.append(time.perf_counter() - started)
        if job["status"] != "succeeded":
            problems.append(f"single {job['id']}: {job['status']}")
        else:
            phases.append(phases_of(job))
        index += 1
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return latencies, problems, answered, phases


def phases_of(job: dict) -> tuple[float, float]:
    """The server's own clock on a job: accepted -> claimed (the queue and the claim's commit),
    claimed -> finished (inference and the result's commit), in seconds."""
    created, started, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at"))
    return (started - created).total_seconds(), (finished - started).total_seconds()


def singles_in_a_process(base: str, model: str, images: list, interval: float, poll: float, stop):
    """`singles` in a process of its own (a clinic is not the drive's client): its own event loop
    and connection, so the drive's requests (100-image forms built and answers parsed in the
    drive's loop) do not delay its uploads or its clock. Runs until `stop` (a manager's Event)."""
    medinform, client = peers("medinform"), peers("client")

    async def run():
        api = medinform.Api(base, {})
        async with client.new_session(1) as session:
            return await singles(api, session, model, images, interval, poll, stop.is_set, 0)

    return asyncio.run(run())


async def batch(api, session, model: str, images: list, poll: float) -> tuple[float, int, list[str]]:
    medinform = peers("medinform")
    seconds, answers, problems = await medinform.batch_uploads(api, session, model, images, 4, poll)
    return seconds, len(answers), problems


async def run_server(args, name: str, work) -> dict:
    medinform, process, client = peers("medinform"), peers("process"), peers("client")
    data_dir = tempfile.mkdtemp(prefix=f"lanes-{name}-", dir=args.data_root)
    port = peers("peers").free_port()
    command = [str(args.medinform_binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
    env = medinform.embedded_env(args.model, args.threads, args.ort_library, dict(args.setting))
    log = args.log_dir / f"{name}.log"
    with process.ServerProcess(command, env, log, REPO) as server:
        api = medinform.Api(f"http://127.0.0.1:{port}", {})
        async with client.new_session(16) as session:
            await server.wait_ready(lambda: api.call(session, "GET", "/readyz", timeout=5))
            # Warm-up: the model's first runs, and the database's first pages.
            await singles(api, session, args.model, args.images, 0.0, args.poll, None, 20)
            return await work(api, session)


def phase_figures(phases: list[tuple[float, float]]) -> dict:
    queued = [q for q, _ in phases]
    running = [r for _, r in phases]
    return {"queued_to_claimed_p50_ms": percentile(queued, 0.5) * 1e3,
            "queued_to_claimed_p99_ms": percentile(queued, 0.99) * 1e3,
            "claimed_to_finished_p50_ms": percentile(running, 0.5) * 1e3,
            "claimed_to_finished_p99_ms": percentile(running, 0.99) * 1e3}


async def main(args) -> int:
    images = peers("images").load(args.model, min(args.batch, peers("images").DEFAULT_COUNTS[args.model]))
    batch_images = [images[i % len(images)] for i in range(args.batch)]
    # Distinct names: each image's file name becomes its job's client_reference.
    batch_images = [type(image)(f"{i:06d}-{image.name}", image.data) for i, image in enumerate(batch_images)]
    args.images = images

    async def idle(api, session):
        return await singles(api, session, args.model, images, args.interval, args.poll, None, args.singles)

    async def alone(api, session):
        return await batch(api, session, args.model, batch_images, args.poll)

    async def loaded(api, session):
        done = asyncio.Event()

        async def drive():
            try:
                return await batch(api, session, args.model, batch_images, args.poll)
            finally:
                done.set()

        # The singles start once the batch's first images are in, from a process of their own.
        drive_task = asyncio.create_task(drive())
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(1, mp_context=context) as pool:
            stop = manager.Event()
            await asyncio.sleep(2.0)
            single_task = asyncio.get_running_loop().run_in_executor(
                pool, singles_in_a_process, api.base, args.model, images, args.interval, args.poll, stop
            )
            await done.wait()
            stop.set()
            return await drive_task, await single_task

    idle_latency, idle_problems, idle_answered, idle_phases = await run_server(args, "idle", idle)
    alone_seconds, alone_images, alone_problems = await run_server(args, "batch-alone", alone)
    (load_seconds, load_images, load_problems), (load_latency, single_problems, load_answered, load_phases) = await run_server(
        args, "batch-and-singles", loaded
    )
    problems = idle_problems + alone_problems + load_problems + single_problems
    figures = {
        "model": args.model,
        "settings": dict(args.setting),
        "batch_images": args.batch,
        "single_interval_s": args.interval,
        "poll_interval_s": args.poll,
        "idle": {"singles": len(idle_latency), "p50_ms": percentile(idle_latency, 0.5) * 1e3,
                 "p90_ms": percentile(idle_latency, 0.9) * 1e3,
                 "p99_ms": percentile(idle_latency, 0.99) * 1e3,
                 "upload_answered_p50_ms": percentile(idle_answered, 0.5) * 1e3,
                 "upload_answered_p99_ms": percentile(idle_answered, 0.99) * 1e3,
                 **phase_figures(idle_phases)},
        "under_load": {"singles": len(load_latency), "p50_ms": percentile(load_latency, 0.5) * 1e3,
                       "p90_ms": percentile(load_latency, 0.9) * 1e3,
                       "p99_ms": percentile(load_latency, 0.99) * 1e3,
                       "mean_ms": statistics.fmean(load_latency) * 1e3,
                       "upload_answered_p50_ms": percentile(load_answered, 0.5) * 1e3,
                       "upload_answered_p99_ms": percentile(load_answered, 0.99) * 1e3,
                       **phase_figures(load_phases)},
        "batch_alone": {"images": alone_images, "seconds": alone_seconds,
                        "images_per_s": alone_images / alone_seconds},
        "batch_with_singles": {"images": load_images, "seconds": load_seconds,
                               "images_per_s": load_images / load_seconds},
        "problems": problems[:10],
    }
    ratio = figures["under_load"]["p99_ms"] / figures["idle"]["p99_ms"]
    lost = 1 - figures["batch_with_singles"]["images_per_s"] / figures["batch_alone"]["images_per_s"]
    figures["p99_ratio"] = ratio
    figures["batch_throughput_lost"] = lost
    print(json.dumps(figures, indent=2))
    print(
        f"\n{args.model}: single upload p50/p99 idle {figures['idle']['p50_ms']:.1f}/"
        f"{figures['idle']['p99_ms']:.1f} ms, while {args.batch} images drain "
        f"{figures['under_load']['p50_ms']:.1f}/{figures['under_load']['p99_ms']:.1f} ms "
        f"(p99 {ratio:.2f}x idle; goal < 2x); batch {figures['batch_alone']['images_per_s']:.0f} img/s "
        f"alone, {figures['batch_with_singles']['images_per_s']:.0f} with the singles "
        f"({lost * 100:.1f} % lost; goal < 10 %)"
    )
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    if problems or alone_images < args.batch or load_images < args.batch:
        print(f"problems: {problems[:10]}", file=sys.stderr)
        return 1
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="malaria", choices=["malaria", "pneumonia"])
    parser.add_argument("--batch", type=int, default=20000, help="images in the drive's batch")
    parser.add_argument("--singles", type=int, default=100, help="single uploads on the idle server")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between single uploads")
    parser.add_argument("--poll", type=float, default=0.005, help="seconds between polls of a single job")
    parser.add_argument("--threads", type=int, default=2, help="inference.threads")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda text: tuple(text.split("=", 1)),
                        help="a MEDINFORM_* variable for the server, e.g. MEDINFORM_INFERENCE_BULK_NICE=10")
    parser.add_argument("--medinform-binary", type=Path, default=REPO / "target" / "release" / "medinform")
    parser.add_argument("--ort-library", type=Path, default=None)
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "peers-venv")
    parser.add_argument("--log-dir", type=Path, default=REPO / "target" / "lanes-logs")
    parser.add_argument("--output", type=Path, default=REPO / "target" / "lanes-fairness.json")
    args = parser.parse_args()
    environment = peers("environment")
    if not environment.is_active(args.venv):
        python = environment.ensure(args.venv)
        env = dict(os.environ)
        environment.add_paths(env)
        os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    args.data_root = Path(tempfile.mkdtemp(prefix="lanes-"))
    if args.ort_library is None:
        found = os.environ.get("ORT_DYLIB_PATH")
        if not found:
            import onnxruntime

            capi = Path(onnxruntime.__file__).parent / "capi"
            found = str(next(capi.glob("libonnxruntime.so.*")))
        args.ort_library = Path(found)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
