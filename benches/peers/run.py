#!/usr/bin/env python3
"""Side-by-side benchmark: MedInform against the Python model servers a team would otherwise
pick (mosec, LitServe, BentoML, Starlette + uvicorn), on the shipped ONNX models, with the same
images, the same load client and the same ONNX Runtime, one server at a time.

    python3 benches/peers/run.py                                # both models, every row
    python3 benches/peers/run.py --model malaria --images 64 --only mosec,medinform

Makes (once) and uses its own virtual environment (target/peers-venv, from requirements.txt),
prints a markdown table and writes target/peers-results.json. Exits 1 when a row could not run,
or a server answered wrongly (|Δp| > 1e-4 against ONNX Runtime on the reference tensor, or a
job that did not succeed). See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import environment

ROWS = ["onnxruntime", "python-loop", "mosec", "litserve", "bentoml", "starlette", "medinform"]


def names(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ROWS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return chosen


def setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("MEDINFORM_"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MEDINFORM_NAME=VALUE")
    return name, value


def parse_args(argv: list[str]) -> argparse.Namespace:
    repo = environment.REPO
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", choices=["pneumonia", "malaria", "both"], default="both")
    parser.add_argument(
        "--images", type=int, metavar="N", help="images per model (default: pneumonia 600, malaria 3000)"
    )
    parser.add_argument(
        "--only", type=names, default=ROWS, metavar="LIST", help=f"rows to run, comma-separated: {','.join(ROWS)}"
    )
    parser.add_argument("--skip", type=names, default=[], metavar="LIST", help="rows not to run")
    parser.add_argument("--medinform-binary", type=Path, default=repo / "target" / "release" / "medinform")
    parser.add_argument(
        "--medinform-url", metavar="URL", help="drive this running MedInform instead of starting the binary"
    )
    parser.add_argument(
        "--medinform-api-key",
        default=os.environ.get("MEDINFORM_API_KEY"),
        help="API key for --medinform-url (default: $MEDINFORM_API_KEY)",
    )
    parser.add_argument(
        "--medinform-env",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a MEDINFORM_* setting for the embedded MedInform (repeatable), e.g. MEDINFORM_INFERENCE_SPINNING=true",
    )
    parser.add_argument(
        "--ort-library",
        default=os.environ.get("ORT_DYLIB_PATH"),
        help="libonnxruntime.so for the embedded MedInform (default: $ORT_DYLIB_PATH, else the venv's wheel's)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="ONNX Runtime intra-op threads, every session and MedInform"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests per server, their answers checked")
    parser.add_argument("--poll-interval-ms", type=int, default=50, help="MedInform status polls")
    parser.add_argument("--venv", type=Path, default=repo / "target" / "peers-venv")
    parser.add_argument("--output", type=Path, default=repo / "target" / "peers-results.json")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep MedInform's data folders (under target/) after the run, e.g. for runs back to back",
    )
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 1:
        parser.error("--images must be at least 1")
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    if not environment.is_active(args.venv):
        environment.reexec(environment.ensure(args.venv), sys.argv[1:])
    environment.add_paths(os.environ)
    import benchmark  # only inside the environment: it needs the packages

    selected = [name for name in args.only if name not in args.skip]
    return asyncio.run(benchmark.run(args, selected))


if __name__ == "__main__":
    sys.exit(main())
