"""The Python model servers MedInform is compared with, each started from servers/ in its own
process group, serving one model, with one inference worker process:

| key | server | how requests reach the model |
| --- | --- | --- |
| mosec | mosec, dynamic batching | raw body, batches of at most 16, 20 ms wait |
| litserve | LitServe | multipart `image`, max_batch_size 16, batch_timeout 20 ms |
| bentoml | BentoML, batchable API | multipart `images`, adaptive batches of at most 16 |
| starlette | Starlette + uvicorn | raw body, one inference per request |

Each is started, probed until it answers, warmed up (its answers checked), driven over every
image with the shared load client, checked again, and stopped.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp

import client
from common import MODEL_ENV, REPO, THREADS_ENV
from images import ImageFile
from measurement import Measurement
from process import ServerProcess, StartupError

SERVERS_DIR = Path(__file__).resolve().parent / "servers"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    command: Callable[[int], list[str]]
    path: str
    # Multipart field that carries the file; None: the file is the raw request body.
    field: str | None
    # One image's probabilities from the answer's JSON.
    unwrap: Callable[[Any], list[float]]

    def body(self, image: ImageFile) -> bytes | aiohttp.FormData:
        if self.field is None:
            return image.data
        form = aiohttp.FormData()
        form.add_field(self.field, image.data, filename=image.name, content_type=image.content_type)
        return form


def probabilities_of(answer: Any) -> list[float]:
    return answer["probabilities"]


def first_probabilities_of(answer: Any) -> list[float]:
    [one] = answer  # a batchable BentoML API answers a list per request: one image sent, one result
    return one["probabilities"]


PEERS = [
    Peer(
        "mosec",
        f"mosec {version('mosec')}, dynamic batching (max 16, 20 ms)",
        lambda port: [
            sys.executable,
            str(SERVERS_DIR / "mosec_server.py"),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        "/inference",
        None,
        probabilities_of,
    ),
    Peer(
        "litserve",
        f"LitServe {version('litserve')}, batching (max 16, 20 ms)",
        lambda port: [sys.executable, str(SERVERS_DIR / "litserve_server.py"), "--port", str(port)],
        "/predict",
        "image",
        probabilities_of,
    ),
    Peer(
        "bentoml",
        f"BentoML {version('bentoml')}, batchable API (max 16, adaptive wait)",
        lambda port: [
            str(BIN / "bentoml"),
            "serve",
            "bentoml_service:Screening",
            "--working-dir",
            str(SERVERS_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "/screen",
        "images",
        first_probabilities_of,
    ),
    Peer(
        "starlette",
        f"Starlette {version('starlette')} + uvicorn {version('uvicorn')}, one inference per request",
        lambda port: [
            str(BIN / "uvicorn"),
            "starlette_server:app",
            "--app-dir",
            str(SERVERS_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        "/screen",
        None,
        probabilities_of,
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(
    peer: Peer,
    model: str,
    images: list[ImageFile],
    reference: list[list[float]],
    *,
    threads: int,
    concurrency: int,
    warmup: int,
    log_dir: Path,
) -> Measurement:
    row = Measurement(peer.key, peer.label, model)
    port = free_port()
    url = f"http://127.0.0.1:{port}{peer.path}"
    env = {
        **os.environ,
        MODEL_ENV: model,
        THREADS_ENV: str(threads),
        # BentoML keeps its home (models, bentos, logs) here rather than in ~/bentoml.
        "BENTOML_HOME": str(REPO / "target" / "peers-bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }

    async def send(session: aiohttp.ClientSession, index: int) -> list[float]:
        answer = await client.request_json(session, "POST", url, data=peer.body(images[index]))
        return peer.unwrap(answer)

    try:
        with ServerProcess(peer.command(port), env, log_dir / f"{peer.key}-{model}.log", SERVERS_DIR) as server:
            async with client.new_session(concurrency) as session:
                await server.wait_ready(
                    lambda: client.request_json(session, "POST", url, data=peer.body(images[0]), timeout=10)
                )
                # The warm-up goes round the images as many times as it takes.
                warm = await client.drive(session, lambda s, i: send(s, i % len(images)), warmup, concurrency)
                row.check(warm.answers, [reference[i % len(images)] for i in range(warmup)], warmup)
                cpu = server.cpu_seconds()
                timed = await client.drive(session, send, len(images), concurrency)
                row.cpu_seconds = server.cpu_seconds() - cpu
    except StartupError as error:
        row.error = str(error)
        return row
    row.images, row.seconds = len(timed.answers), timed.seconds
    row.check(timed.answers, reference, len(images))
    if timed.failures or warm.failures:
        row.details["failures"] = sorted({*timed.failures.values(), *warm.failures.values()})[:5]
    return row
