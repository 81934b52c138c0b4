"""The run itself, inside the benchmark's environment: for each model, the images and their
reference answers, then each selected row in turn (baselines, peers, MedInform), one server at a
time, then the table and the JSON."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnxruntime

import baselines
import images
import medinform
import peers
import report
from common import REPO, Screener
from measurement import Measurement

ORT_BATCH_SIZES = [1, 4, 8, 16, 32, 64]


def log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def bundled_onnxruntime_library() -> Path:
    """The ONNX Runtime library of this environment's wheel: the one the peers use."""
    return Path(onnxruntime.__file__).parent / "capi" / f"libonnxruntime.so.{onnxruntime.__version__}"


def summary(row: Measurement) -> str:
    if row.error:
        return f"{row.label}: did not run: {row.error}"
    cpu = f", {row.cpu_per_1000:.2f} CPU-s/1,000" if row.cpu_per_1000 is not None else ""
    flag = " FLAGGED" if row.wrong else ""
    return f"{row.label}: {row.images_per_second:,.1f} img/s{cpu}, max |Δp| {row.max_delta:.1e}{flag}"


async def run(args: argparse.Namespace, selected: list[str]) -> int:
    models = ["pneumonia", "malaria"] if args.model == "both" else [args.model]
    ort_library = Path(args.ort_library) if args.ort_library else bundled_onnxruntime_library()
    settings = {
        "images": {model: args.images or images.DEFAULT_COUNTS[model] for model in models},
        "threads": args.threads,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "poll_interval_ms": args.poll_interval_ms,
        "medinform": args.medinform_url or str(args.medinform_binary),
        "medinform_env": dict(args.medinform_env),
        "onnxruntime_library": str(ort_library),
    }
    log_dir = REPO / "target" / "peers-logs"
    # MedInform's data folders are kept until the whole run ends: deleting thousands of image
    # files between rows would make the next row's file creation slower (ext4 skips inodes freed
    # in the last minutes), which no real deployment does between uploads. `--keep-data` keeps
    # them after the run too, so that runs back to back do not slow each other down that way.
    if args.keep_data:
        data_root = Path(tempfile.mkdtemp(prefix="medinform-peers-", dir=REPO / "target"))
        print(f"[peers] data folders kept in {data_root}", file=sys.stderr)
        return await _run(args, selected, models, ort_library, settings, log_dir, data_root)
    with tempfile.TemporaryDirectory(prefix="medinform-peers-", dir=REPO / "target") as data_root:
        return await _run(args, selected, models, ort_library, settings, log_dir, Path(data_root))


async def _run(
    args: argparse.Namespace,
    selected: list[str],
    models: list[str],
    ort_library: Path,
    settings: dict,
    log_dir: Path,
    data_root: Path,
) -> int:
    rows: list[Measurement] = []
    for model in models:
        files = images.load(model, settings["images"][model])
        screener = Screener.load(model, args.threads)
        tensors = [screener.tensor(image.data) for image in files]
        reference = [screener.run(tensor[None])[0] for tensor in tensors]
        log(f"{model}: {len(files)} images, reference answers ready")
        if "onnxruntime" in selected:
            rows.append(baselines.onnxruntime_alone(screener, tensors, reference, ORT_BATCH_SIZES))
            log(summary(rows[-1]))
        if "python-loop" in selected:
            rows.append(baselines.python_loop(screener, files, reference))
            log(summary(rows[-1]))
        del screener, tensors  # the session's threads and memory are not left beside the servers
        common = {"threads": args.threads, "concurrency": args.concurrency, "warmup": args.warmup, "log_dir": log_dir}
        for peer in peers.PEERS:
            if peer.key in selected:
                log(f"{model}: starting {peer.label}")
                rows.append(await peers.measure(peer, model, files, reference, **common))
                log(summary(rows[-1]))
        if "medinform" in selected:
            for key in medinform.LABELS:
                log(f"{model}: starting {medinform.LABELS[key]}")
                rows.append(
                    await medinform.measure(
                        key,
                        model,
                        files,
                        reference,
                        binary=args.medinform_binary,
                        url=args.medinform_url,
                        api_key=args.medinform_api_key,
                        ort_library=ort_library,
                        settings=settings["medinform_env"],
                        data_root=data_root,
                        poll=args.poll_interval_ms / 1000,
                        **common,
                    )
                )
                log(summary(rows[-1]))
    host = report.machine()
    print(report.table(rows, models, settings, host))
    report.write_json(args.output, host, settings, rows)
    log(f"written {args.output}; server logs in {log_dir}")
    return 1 if any(row.error or row.wrong for row in rows) else 0
