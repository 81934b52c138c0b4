"""The load client every server gets: asyncio + aiohttp, a fixed number of requests in flight.

`drive` sends requests 0..count-1 through `concurrency` lanes; each lane sends its next request
as soon as its previous one is answered, so exactly `concurrency` requests are in flight until
the last ones. A request that fails, however it fails, is recorded with its reason, never
retried.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp

T = TypeVar("T")
Send = Callable[[aiohttp.ClientSession, int], Awaitable[T]]

# Every request of the benchmark is answered well within this, or counted as failed.
REQUEST_TIMEOUT_SECS = 300


class HttpError(Exception):
    """A request answered with a status other than 2xx."""


@dataclass
class Drive(Generic[T]):
    """What one drive got back: answers and failures by request index, and when it ran."""

    answers: dict[int, T] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def new_session(concurrency: int) -> aiohttp.ClientSession:
    # A few connections more than the lanes, for the status polls that run beside them.
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECS))


async def drive(session: aiohttp.ClientSession, send: Send[T], count: int, concurrency: int) -> Drive[T]:
    result: Drive[T] = Drive()
    indices = iter(range(count))

    async def lane() -> None:
        for index in indices:  # shared: each lane takes the next index
            try:
                result.answers[index] = await send(session, index)
            except Exception as error:  # any failure (refused, 5xx, an answer of the wrong shape) is a result
                result.failures[index] = f"{type(error).__name__}: {error}"

    result.started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    result.finished = time.perf_counter()
    return result


async def request_json(
    session: aiohttp.ClientSession, method: str, url: str, *, timeout: float | None = None, **kwargs: Any
) -> Any:
    """The JSON body of a 2xx answer; `HttpError` otherwise."""
    if timeout is not None:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
        if not 200 <= response.status < 300:
            raise HttpError(f"{method} {url}: {response.status} {body[:300].decode(errors='replace')}")
        return json.loads(body)
