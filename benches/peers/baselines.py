"""What the hardware and Python give without a server, measured in this process:

- ONNX Runtime alone: the reference tensors, stacked into batches beforehand, run through the
  session at each batch size; the row is the fastest batch size (inference only);
- one Python loop: the image files decoded by Pillow, preprocessed by the numpy reference and run
  16 at a time.

CPU is this process's user + system time over the timed loop (ONNX Runtime's threads included).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import psutil

from common import Screener
from images import ImageFile
from measurement import Measurement

LOOP_BATCH = 16


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def onnxruntime_alone(
    screener: Screener, tensors: Sequence[np.ndarray], reference: Sequence[list[float]], batch_sizes: Sequence[int]
) -> Measurement:
    by_size: dict[int, Measurement] = {}
    for size in batch_sizes:
        if size > len(tensors):
            continue
        batches = [np.stack(tensors[start : start + size]) for start in range(0, len(tensors), size)]
        screener.run(batches[0])  # warm-up: first-run allocations at this shape
        row = Measurement("onnxruntime", f"ONNX Runtime alone, batch {size}", screener.manifest["id"], len(tensors))
        cpu, started = cpu_seconds(), time.perf_counter()
        answers = [p for batch in batches for p in screener.run(batch)]
        row.seconds, row.cpu_seconds = time.perf_counter() - started, cpu_seconds() - cpu
        row.check(dict(enumerate(answers)), reference, len(tensors))
        by_size[size] = row
    best = max(by_size.values(), key=lambda row: row.images_per_second or 0.0)
    best.label = "ONNX Runtime alone, inference only, best batch"
    best.details = {
        "best_batch_size": next(size for size, row in by_size.items() if row is best),
        "images_per_second_by_batch_size": {size: row.images_per_second for size, row in by_size.items()},
    }
    return best


def python_loop(screener: Screener, images: Sequence[ImageFile], reference: Sequence[list[float]]) -> Measurement:
    row = Measurement(
        "python-loop",
        f"one Python loop: Pillow decode + numpy preprocess + inference, batch {LOOP_BATCH}",
        screener.manifest["id"],
        len(images),
    )
    screener.screen([image.data for image in images[:LOOP_BATCH]])  # warm-up
    cpu, started = cpu_seconds(), time.perf_counter()
    answers = [
        p
        for start in range(0, len(images), LOOP_BATCH)
        for p in screener.screen([image.data for image in images[start : start + LOOP_BATCH]])
    ]
    row.seconds, row.cpu_seconds = time.perf_counter() - started, cpu_seconds() - cpu
    row.check(dict(enumerate(answers)), reference, len(images))
    return row
