"""A server under test: started in its own process group, its output in a log file, its CPU
time summed over its whole process tree, and stopped (the group) when done."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import psutil

READY_TIMEOUT_SECS = 180
STOP_GRACE_SECS = 15


class StartupError(Exception):
    """The server exited, or did not answer, before it was ready."""


def tree_cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU seconds of a process and all its descendants, those still running and
    those it has already waited for."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


class ServerProcess:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.command = command
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            try:
                self.popen = subprocess.Popen(
                    command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as error:
                raise StartupError(f"could not start {command[0]}: {error}") from error
        self.process = psutil.Process(self.popen.pid)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process)

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) if text else "(no output)"

    async def wait_ready(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Returns once `probe` succeeds; raises StartupError if the server exits first or
        READY_TIMEOUT_SECS pass."""
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.popen.poll()
            if code is not None:
                raise StartupError(f"exited with status {code} while starting: {self.log_tail()}")
            try:
                await probe()
                return
            except Exception as error:  # not ready yet: refused connection, 5xx, time-out...
                last = f"{type(error).__name__}: {error}"
            await asyncio.sleep(0.5)
        raise StartupError(f"not ready after {READY_TIMEOUT_SECS} s ({last}): {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after STOP_GRACE_SECS."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_GRACE_SECS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers of the group, if any
        self.popen.wait()
