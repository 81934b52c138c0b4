"""GPU utilisation and memory over a timed window, from `nvidia-smi` running in the background:

    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 -i N

`utilization.gpu` is the share of each sample period in which a kernel ran on the GPU (any
process's); `memory.used` is the whole GPU's, in MiB. Without nvidia-smi the window has no
samples and the figures read "n/a".
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from dataclasses import dataclass
from statistics import fmean
from types import TracebackType
from typing import Self

STOP_GRACE_SECS = 5


@dataclass(frozen=True)
class GpuUsage:
    """The samples of one window, summarised."""

    samples: int
    utilisation_mean: float
    utilisation_max: float
    memory_mean_mib: float
    memory_max_mib: float

    @classmethod
    def of(cls, samples: list[tuple[float, float]]) -> GpuUsage | None:
        if not samples:
            return None
        utilisation = [u for u, _ in samples]
        memory = [m for _, m in samples]
        return cls(len(samples), fmean(utilisation), max(utilisation), fmean(memory), max(memory))


def parse_sample(line: str) -> tuple[float, float] | None:
    """`utilisation, memory` from one CSV line; None for anything else ("[N/A]", a header)."""
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != 2:
        return None
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        return None


class GpuSampler:
    """Samples one GPU every `interval_ms` while the `with` block runs; `usage` afterwards."""

    def __init__(self, gpu_index: int, interval_ms: int = 200) -> None:
        self.command = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "-lms",
            str(interval_ms),
            "-i",
            str(gpu_index),
        ]
        self.samples: list[tuple[float, float]] = []
        self.popen: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> Self:
        if shutil.which("nvidia-smi") is None:
            return self
        self.popen = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in self.popen.stdout:
            if sample := parse_sample(line):
                self.samples.append(sample)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_GRACE_SECS)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        if self.reader:
            self.reader.join(STOP_GRACE_SECS)

    @property
    def usage(self) -> GpuUsage | None:
        return GpuUsage.of(self.samples)
