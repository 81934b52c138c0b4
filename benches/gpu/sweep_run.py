"""The sweep itself, inside the peers benchmark's environment: the ONNX Runtime library for the
provider (for CUDA, the onnxruntime-gpu environment), then for each model its images and their
reference answers, then one fresh `medinform serve` per (max_batch, concurrency), then the table
and the JSON."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import images
from benchmark import bundled_onnxruntime_library
from common import REPO, Screener
from cuda_setup import CudaRuntime, NoGpu, RuntimeSetupError, ensure_runtime, gpus
from sweep_report import machine, table, verdict, write_json
from sweep_row import RowSetup, RowSpec, SweepRow, measure


def log(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def gpu_description(index: int) -> str:
    try:
        found = gpus()
    except NoGpu as error:
        return f"no GPU ({error})"
    chosen = next((gpu for gpu in found if gpu.index == index), None)
    return chosen.describe() if chosen else f"no GPU {index} (nvidia-smi lists {len(found)})"


def runtime(args: argparse.Namespace) -> CudaRuntime:
    """The library MedInform loads, and for CUDA the folders of the NVIDIA libraries."""
    if args.ort_library:
        return CudaRuntime(Path(args.ort_library), [])
    if args.provider == "cpu":
        return CudaRuntime(bundled_onnxruntime_library(), [])
    return ensure_runtime(args.gpu_venv)


def summary(row: SweepRow, cores: int) -> str:
    measured = row.measurement
    if measured.error:
        return f"{measured.label}: FAILED: {measured.error}"
    flag = " FLAGGED (wrong or missing answers)" if row.wrong else ""
    return (
        f"{measured.label}: {measured.images_per_second:,.1f} img/s, {measured.cpu_per_1000:.2f} CPU-s/1,000, "
        f"max |Δp| {measured.max_delta:.1e}{flag}; {verdict(row, cores)}"
    )


def reference_answers(model: str, files: list[images.ImageFile], threads: int) -> list[list[float]]:
    """ONNX Runtime (CPU) on the reference tensor of each image, one image a run."""
    screener = Screener.load(model, threads)
    return [screener.run(screener.tensor(image.data)[None])[0] for image in files]


async def sweep(args: argparse.Namespace, setup: RowSetup, counts: dict[str, int], cores: int) -> list[SweepRow]:
    rows: list[SweepRow] = []
    for model, count in counts.items():
        files = images.load(model, min(count, images.DEFAULT_COUNTS[model]))
        reference = reference_answers(model, files, args.threads)
        log(f"{model}: {len(files)} distinct images, reference answers ready")
        for max_batch in args.max_batch:
            for concurrency in args.concurrency:
                spec = RowSpec(model, max_batch, concurrency)
                log(f"{spec.key}: starting medinform serve ({args.provider})")
                row = await measure(spec, files, reference, count, setup)
                rows.append(row)
                log(summary(row, cores))
                if row.stops_sweep:
                    log("stopping the sweep: every other row would fail the same way")
                    return rows
    return rows


async def run(args: argparse.Namespace) -> int:
    try:
        found = runtime(args)
    except RuntimeSetupError as error:
        log(f"cannot run on {args.provider}: {error}")
        return 2
    counts = {model: args.images or args.default_images[model] for model in args.model}
    log_dir = args.log_dir
    settings: dict[str, Any] = {
        "provider": args.provider,
        "images": counts,
        "max_batch": args.max_batch,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "in_flight": args.in_flight,
        "warmup": args.warmup,
        "poll_interval_ms": args.poll_interval_ms,
        "tolerance": args.tolerance,
        "gpu_index": args.gpu,
        "medinform": str(args.medinform_binary),
        "medinform_env": dict(args.medinform_env),
        "onnxruntime_library": str(found.onnxruntime_library),
        "library_dirs": [str(path) for path in found.library_dirs],
    }
    host = machine(gpu_description(args.gpu))
    log(f"{host['gpu']}; ONNX Runtime {found.onnxruntime_library}")
    # The data folders are kept until the whole sweep ends, as in the peers benchmark: deleting
    # thousands of files between rows would slow the next row's file creation.
    with tempfile.TemporaryDirectory(prefix="medinform-gpu-sweep-", dir=REPO / "target") as data_root:
        setup = RowSetup(
            binary=args.medinform_binary,
            provider=args.provider,
            ort_library=found.onnxruntime_library,
            library_dirs=found.library_dirs,
            threads=args.threads,
            in_flight=args.in_flight,
            warmup=args.warmup,
            poll=args.poll_interval_ms / 1000,
            tolerance=args.tolerance,
            gpu_index=args.gpu,
            row_timeout=args.row_timeout,
            extra_env=dict(args.medinform_env),
            log_dir=log_dir,
            data_root=Path(data_root),
        )
        rows = await sweep(args, setup, counts, host["cores"])
    print(table(rows, settings, host))
    write_json(args.output, host, settings, rows)
    log(f"written {args.output}; server logs in {log_dir}")
    return 1 if not rows or any(row.failed for row in rows) else 0
