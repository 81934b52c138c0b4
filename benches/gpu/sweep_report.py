"""The sweep's results: a verdict per row (what caps it), a markdown table on stdout and
everything as JSON.

Verdicts, from the timed window's figures:
- GPU-bound: the GPU was busy at least GPU_BOUND_UTILISATION % of the time on average;
- CPU-bound: the server used at least CPU_BOUND_SHARE of the host's cores, or the host's cores
  (server, load client and anything else) were at least HOST_BUSY_SHARE busy: more cores, or
  less CPU per image (decode, resize, database, queue), would be needed to go faster;
- latency-bound: neither; the pipeline waits on itself (batch window, a serial step, the round
  trips of the client). When one thread of the server was near a full core, it is named: a
  serial step is then the likely cap.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import report
from report import cpu_model
from sweep_row import SweepRow

PACKAGES = ["onnxruntime", "numpy", "pillow", "aiohttp", "psutil"]
GPU_BOUND_UTILISATION = 80.0
CPU_BOUND_SHARE = 0.85
HOST_BUSY_SHARE = 0.90
# A thread this busy (in cores) is a serial step worth naming.
SERIAL_THREAD_CORES = 0.85


def verdict(row: SweepRow, cores: int) -> str:
    if row.measurement.error:
        return "failed"
    server, host = row.server_cores, row.host_busy_cores
    if row.gpu and row.gpu.utilisation_mean >= GPU_BOUND_UTILISATION:
        return f"GPU-bound (GPU busy {row.gpu.utilisation_mean:.0f} %)"
    if server is not None and server >= CPU_BOUND_SHARE * cores:
        return f"CPU-bound (server {server:.1f} of {cores} cores)"
    if host is not None and host >= HOST_BUSY_SHARE * cores:
        return f"CPU-bound (host {host:.1f} of {cores} cores busy, server {server or 0:.1f})"
    gpu = f"GPU busy {row.gpu.utilisation_mean:.0f} %" if row.gpu else "GPU n/a"
    text = f"latency-bound ({gpu}, server {server or 0:.1f} of {cores} cores"
    if row.hottest_thread and row.hottest_thread[1] >= SERIAL_THREAD_CORES:
        name, busy = row.hottest_thread
        text += f"; one thread, {name}, at {busy:.2f} cores: a serial step"
    return text + ")"


def number(value: float | None, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def gpu_cells(row: SweepRow) -> list[str]:
    if row.gpu is None:
        return ["n/a", "n/a"]
    usage = row.gpu
    return [
        f"{usage.utilisation_mean:.0f} / {usage.utilisation_max:.0f}",
        f"{usage.memory_mean_mib:,.0f} / {usage.memory_max_mib:,.0f}",
    ]


def delta_cell(row: SweepRow) -> str:
    return report.delta_cell(row.measurement, row.wrong)


def table_line(row: SweepRow, cores: int, notes: dict[str, int]) -> str:
    spec, measured = row.spec, row.measurement
    head = [spec.model, str(spec.max_batch), str(spec.concurrency)]
    if measured.error:
        note = notes.setdefault(f"{spec.key}: {measured.error}", len(notes) + 1)
        cells = [*head, f"failed [{note}]", *["–"] * 6, delta_cell(row), "failed"]
    else:
        cells = [
            *head,
            number(measured.images_per_second, ",.1f"),
            number(measured.cpu_per_1000, ".2f"),
            number(row.server_cores, ".2f"),
            number(row.host_busy_cores, ".2f"),
            *gpu_cells(row),
            row.hottest_thread[0] + f" {row.hottest_thread[1]:.2f}" if row.hottest_thread else "n/a",
            delta_cell(row),
            verdict(row, cores),
        ]
    return "| " + " | ".join(cells) + " |"


def best_lines(rows: list[SweepRow]) -> list[str]:
    lines = []
    for model in dict.fromkeys(row.spec.model for row in rows):
        measured = [r for r in rows if r.spec.model == model and not r.failed and r.measurement.images_per_second]
        if measured:
            best = max(measured, key=lambda r: r.measurement.images_per_second or 0.0)
            lines.append(
                f"Best for {model}: {best.measurement.images_per_second:,.1f} img/s at max_batch "
                f"{best.spec.max_batch}, concurrency {best.spec.concurrency}."
            )
    return lines


def table(rows: list[SweepRow], settings: dict[str, Any], host: dict[str, Any]) -> str:
    cores = host["cores"]
    header = [
        "model",
        "max_batch",
        "concurrency",
        "img/s",
        "server CPU-s per 1,000 images",
        f"server cores (of {cores})",
        f"host busy cores (of {cores})",
        "GPU util % mean / max",
        "GPU MiB mean / max",
        "busiest server thread (cores)",
        "max \\|Δp\\|",
        "verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    notes: dict[str, int] = {}
    lines += [table_line(row, cores, notes) for row in rows]
    images = ", ".join(f"{model} {count}" for model, count in settings["images"].items())
    best = best_lines(rows)
    lines += [
        *([""] + best if best else []),
        "",
        f"Machine: {host['cpu']}, {cores} cores; {host['gpu']}; {host['date']}.",
        (
            f"MedInform {settings['medinform']} (`serve`, embedded), provider `{settings['provider']}`, "
            f"ONNX Runtime {settings['onnxruntime_library']}, {settings['threads']} intra-op threads; "
            "worker.prefetch = max_batch × (concurrency + 1)."
        ),
        (
            f"Images: {images} a row (going round the data set), batch uploads of 100 images a request, "
            f"{settings['in_flight']} requests in flight (asyncio + aiohttp, on the same cores); warm-up "
            f"{settings['warmup']} images a row; |Δp| against ONNX Runtime (CPU) on the reference tensor, "
            f"flagged (✗) above {settings['tolerance']:g}."
        ),
    ]
    if notes:
        lines.append("")
        lines += [f"[{n}] {text}" for text, n in notes.items()]
    return "\n".join(lines)


def row_json(row: SweepRow, cores: int) -> dict[str, Any]:
    return {
        **row.measurement.to_json(),
        "max_batch": row.spec.max_batch,
        "concurrency": row.spec.concurrency,
        "prefetch": row.spec.prefetch,
        "provider_logged": row.provider,
        "window_seconds": row.window_seconds,
        "server_cores": row.server_cores,
        "host_busy_cores": row.host_busy_cores,
        "client_cores": row.client_cores,
        "server_threads_cores_by_name": row.threads_by_name,
        "busiest_server_thread": (
            {"name": row.hottest_thread[0], "cores": row.hottest_thread[1]} if row.hottest_thread else None
        ),
        "gpu": asdict(row.gpu) if row.gpu else None,
        "tolerance": row.tolerance,
        "flagged": row.wrong,
        "verdict": verdict(row, cores),
    }


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine(gpu: str) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def write_json(path: Path, host: dict[str, Any], settings: dict[str, Any], rows: list[SweepRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": host, "settings": settings, "results": [row_json(row, host["cores"]) for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")
