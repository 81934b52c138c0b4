#!/usr/bin/env python3
"""GPU sweep: `medinform serve` (embedded) on the CUDA execution provider, over `worker.max_batch`
x `worker.concurrency`, driven with the peers benchmark's batch uploads; images/s, server
CPU-s per 1,000 images, server and host cores in use, GPU utilisation and memory, and what caps
each row (GPU, CPU, or neither).

    cargo build --release --bin medinform
    python3 benches/gpu/sweep.py                                    # CUDA, both models, 4 x 3 rows
    python3 benches/gpu/sweep.py --provider cpu --model malaria --images 200 --max-batch 8,16 --concurrency 1,2

With `--provider cuda` it first asks `nvidia-smi` for a GPU and stops at once without one. It runs
inside the peers benchmark's environment (target/peers-venv, made on first use) and, for CUDA,
loads ONNX Runtime from an `onnxruntime-gpu` environment of its own (target/gpu-venv, from
requirements.txt beside this file). Prints a markdown table, writes target/gpu-sweep.json, and
exits 1 when a row failed (the server did not start, ran on another provider than asked, or did
not finish) or answered wrongly. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import cuda_setup

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent / "peers"
REPO = HERE.parents[1]
MODELS = ["pneumonia", "malaria"]
DEFAULT_IMAGES = {"pneumonia": 2000, "malaria": 10000}
# |Δp| allowed against ONNX Runtime on the CPU: the CPU provider runs the same kernels; a GPU's
# own arithmetic (cuDNN's convolution algorithms, TF32 on Ampere and later) differs a little.
DEFAULT_TOLERANCE = {"cpu": 1e-4, "cuda": 5e-3}
# Settings each row sets itself.
OWN_SETTINGS = {
    "MEDINFORM_INFERENCE_EXECUTION_PROVIDER",
    "MEDINFORM_WORKER_MAX_BATCH",
    "MEDINFORM_WORKER_CONCURRENCY",
    "MEDINFORM_WORKER_PREFETCH",
    "MEDINFORM_WORKER_MODELS",
    "MEDINFORM_INFERENCE_THREADS",
    "MEDINFORM_LOG",
    "MEDINFORM_LOG_FORMAT",
}


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of integers") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers of at least 1")
    return values


def models(text: str) -> list[str]:
    chosen = MODELS if text == "both" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}, both")
    return chosen


def peers_module(name: str) -> ModuleType:
    """One of the peers benchmark's standard-library modules (`environment`, `run`)."""
    if str(PEERS) not in sys.path:
        sys.path.insert(1, str(PEERS))
    return importlib.import_module(name)


def extra_setting(text: str) -> tuple[str, str]:
    name, value = peers_module("run").setting(text)
    if name in OWN_SETTINGS:
        raise argparse.ArgumentTypeError(f"{name} is set by the sweep itself")
    return name, value


def default_gpu() -> int:
    """The GPU ONNX Runtime's device 0 is: the first of CUDA_VISIBLE_DEVICES when it is an index."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--medinform-binary", type=Path, default=REPO / "target" / "release" / "medinform")
    parser.add_argument(
        "--provider", choices=["cuda", "cpu"], default="cuda", help="inference.execution_provider of every row"
    )
    parser.add_argument("--model", type=models, default=MODELS, help="pneumonia, malaria, a comma list, or both")
    parser.add_argument("--max-batch", type=positive_ints, default=[8, 16, 32, 64], metavar="LIST")
    parser.add_argument("--concurrency", type=positive_ints, default=[1, 2, 4], metavar="LIST")
    parser.add_argument(
        "--images",
        type=int,
        metavar="N",
        help=f"images a row (default: {', '.join(f'{m} {n}' for m, n in DEFAULT_IMAGES.items())})",
    )
    parser.add_argument(
        "--ort-library",
        default=os.environ.get("ORT_DYLIB_PATH"),
        help="libonnxruntime.so to load, with its CUDA libraries findable by the loader (default: "
        "$ORT_DYLIB_PATH; else for cuda the onnxruntime-gpu wheel in --gpu-venv, for cpu the peers venv's wheel)",
    )
    parser.add_argument("--gpu-venv", type=Path, default=REPO / "target" / "gpu-venv")
    parser.add_argument("--gpu", type=int, default=default_gpu(), help="nvidia-smi index of the GPU to sample")
    parser.add_argument("--threads", type=int, default=2, help="inference.threads (ONNX Runtime intra-op threads)")
    parser.add_argument("--in-flight", type=int, default=16, help="upload requests (100 images each) in flight")
    parser.add_argument("--warmup", type=int, default=256, help="images a row sends before the timed part")
    parser.add_argument("--poll-interval-ms", type=int, default=50, help="batch status polls")
    parser.add_argument(
        "--tolerance",
        type=float,
        help=f"largest |Δp| against ONNX Runtime on the CPU (default: cpu {DEFAULT_TOLERANCE['cpu']:g}, "
        f"cuda {DEFAULT_TOLERANCE['cuda']:g})",
    )
    parser.add_argument("--row-timeout", type=float, default=600, help="seconds a row may take, start to stop")
    parser.add_argument(
        "--medinform-env",
        type=extra_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another MEDINFORM_* setting for every row (repeatable), e.g. MEDINFORM_WORKER_BATCH_WINDOW_MS=5",
    )
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "peers-venv", help="the peers environment")
    parser.add_argument("--log-dir", type=Path, default=REPO / "target" / "gpu-sweep-logs")
    parser.add_argument("--output", type=Path, default=REPO / "target" / "gpu-sweep.json")
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 1:
        parser.error("--images must be at least 1")
    if min(args.threads, args.in_flight, args.warmup, args.poll_interval_ms) < 1:
        parser.error("--threads, --in-flight, --warmup and --poll-interval-ms must be at least 1")
    if max(args.max_batch) * (max(args.concurrency) + 1) > 65535:
        parser.error("worker.prefetch (max_batch x (concurrency + 1)) must stay within 65535")
    # The server runs from the repository root: paths given relative to here are made absolute.
    args.medinform_binary = args.medinform_binary.resolve()
    if args.ort_library:
        args.ort_library = str(Path(args.ort_library).resolve())
    if args.tolerance is None:
        args.tolerance = DEFAULT_TOLERANCE[args.provider]
    args.default_images = DEFAULT_IMAGES
    return args


def preflight(args: argparse.Namespace) -> str | None:
    """Why the sweep cannot run here, found before any environment is made or anything downloaded."""
    if args.provider == "cuda":
        try:
            found = cuda_setup.gpus()
        except cuda_setup.NoGpu as error:
            return f"--provider cuda needs an NVIDIA GPU: {error}. On a host without one, use --provider cpu."
        if not any(gpu.index == args.gpu for gpu in found):
            return f"--gpu {args.gpu}: nvidia-smi lists GPUs {', '.join(str(gpu.index) for gpu in found)}"
    if not args.medinform_binary.is_file():
        return f"{args.medinform_binary} not found: build it first (cargo build --release --bin medinform)"
    return None


def reexec(environment: ModuleType, python: Path, argv: list[str]) -> None:
    """Replaces this process with sweep.py under `python`, with the peers folder, the training
    pipeline and this folder on PYTHONPATH."""
    env = dict(os.environ)
    environment.add_paths(env)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env["PYTHONPATH"]])
    os.execve(str(python), [str(python), str(HERE / "sweep.py"), *argv], env)


def main() -> int:
    args = parse_args(sys.argv[1:])
    if problem := preflight(args):
        cuda_setup.log(problem)
        return 2
    environment = peers_module("environment")
    if not environment.is_active(args.venv):
        reexec(environment, environment.ensure(args.venv), sys.argv[1:])
    environment.add_paths(os.environ)
    import sweep_run  # only inside the environment: it needs the packages

    return asyncio.run(sweep_run.run(args))


if __name__ == "__main__":
    sys.exit(main())
