#!/usr/bin/env python3
"""How fast a running MedInform API accepts uploads, and how long each acceptance takes.

    python3 benches/peers/accept.py --url http://127.0.0.1:8080 --api-key "$KEY" --images 5000

Sends `POST /v1/jobs` (multipart `model` + `image`) with `--concurrency` requests in flight and
prints uploads accepted per second and the latency percentiles of the accepted ones; with
`--server-pid`, also the API process's own CPU per 1,000 uploads (what sizes an API machine
when the database, the broker and the object store are elsewhere). Meant for
the API alone (`medinform api`, its workers stopped or on other machines), so that what is
measured is accepting: checking, storing, recording and publishing. Images: real chest X-ray
JPEGs of `shared/datasets/covid19` between `--min-kb` and `--max-kb`, reused in turn (the store
keeps one copy of each, as it does for any repeated upload).

Runs in the benchmark's own environment (run.py makes it): target/peers-venv/bin/python.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import psutil

import client
from process import tree_cpu_seconds

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def images(min_kb: int, max_kb: int) -> list[tuple[str, bytes]]:
    found = [
        (path.name, path.read_bytes())
        for path in sorted((SHARED / "datasets" / "covid19" / "images").rglob("*.jpg"))
        if min_kb * 1024 <= path.stat().st_size <= max_kb * 1024
    ]
    if not found:
        raise SystemExit(f"no JPEG of {min_kb}-{max_kb} KB under {SHARED / 'datasets' / 'covid19'}")
    return found


def percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> int:
    files = images(args.min_kb, args.max_kb)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    latencies: dict[int, float] = {}

    async def submit(session: aiohttp.ClientSession, index: int) -> dict:
        name, data = files[index % len(files)]
        form = aiohttp.FormData()
        form.add_field("model", args.model)
        form.add_field("image", data, filename=name, content_type="image/jpeg")
        started = time.perf_counter()
        answer = await client.request_json(session, "POST", args.url.rstrip("/") + "/v1/jobs", data=form, headers=headers)
        latencies[index] = time.perf_counter() - started
        return answer

    async with client.new_session(args.concurrency) as session:
        await client.drive(session, submit, args.warmup, args.concurrency)
        latencies.clear()
        server = psutil.Process(args.server_pid) if args.server_pid else None
        cpu_before = tree_cpu_seconds(server) if server else 0.0
        sent = await client.drive(session, submit, args.images, args.concurrency)
        cpu = tree_cpu_seconds(server) - cpu_before if server else None
    accepted = sorted(latencies[i] * 1000 for i in sent.answers)
    mean_kb = statistics.mean(len(data) for _, data in files) / 1024
    print(f"{len(files)} distinct JPEGs, {mean_kb:.0f} KB on average; {args.concurrency} in flight")
    print(f"accepted {len(sent.answers)} of {args.images} in {sent.seconds:.2f} s: {len(sent.answers) / sent.seconds:.0f} uploads/s")
    if accepted:
        print(
            "latency ms: p50 {:.1f}, p95 {:.1f}, p99 {:.1f}, max {:.1f}".format(
                percentile(accepted, 50), percentile(accepted, 95), percentile(accepted, 99), accepted[-1]
            )
        )
    if cpu is not None and sent.answers:
        per_upload = cpu / len(sent.answers)
        print(
            f"API process CPU: {per_upload * 1000:.2f} CPU-s per 1,000 uploads "
            f"(one core's worth: {1 / per_upload:.0f} uploads/s)"
        )
    for index, reason in list(sent.failures.items())[:5]:
        print(f"failed {index}: {reason}", file=sys.stderr)
    return 1 if sent.failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--model", default="pneumonia")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--min-kb", type=int, default=80)
    parser.add_argument("--max-kb", type=int, default=130)
    parser.add_argument("--server-pid", type=int, help="the API's process id: its CPU per upload is printed")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
