"""The results: a markdown table on stdout and everything as JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from measurement import TOLERANCE, Measurement

ORDER = [
    "onnxruntime",
    "python-loop",
    "mosec",
    "litserve",
    "bentoml",
    "starlette",
    "medinform-single",
    "medinform-raw",
    "medinform-batch",
]
PEER_KEYS = ["mosec", "litserve", "bentoml", "starlette"]
MEDINFORM_KEYS = ["medinform-single", "medinform-raw", "medinform-batch"]
PACKAGES = ["onnxruntime", "numpy", "pillow", "mosec", "litserve", "bentoml", "starlette", "uvicorn", "aiohttp"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in PACKAGES},
    }


def rate_cell(row: Measurement | None, note: dict[str, int]) -> str:
    if row is None:
        return "–"
    if row.error:
        return f"did not run [{footnote(row, note)}]"
    text = f"{row.images_per_second:,.1f}"
    if "best_batch_size" in row.details:
        text += f" (batch {row.details['best_batch_size']})"
    return text


def footnote(row: Measurement, note: dict[str, int]) -> int:
    return note.setdefault(f"{row.model}: {row.error}", len(note) + 1)


def delta_cell(row: Measurement, wrong: bool | None = None) -> str:
    """The largest |Δp| and the unanswered images; marked when `wrong` (by default the row's
    own verdict, at the peers benchmark's tolerance)."""
    if row.max_delta is None:
        return "–"
    text = f"{row.max_delta:.1e}"
    if row.unanswered:
        text += f", {row.unanswered} unanswered"
    return f"**{text} ✗**" if (row.wrong if wrong is None else wrong) else text


def joined(rows: list[Measurement | None], cell: Any) -> str:
    return " / ".join("–" if row is None or row.error else cell(row) for row in rows)


def table(rows: list[Measurement], models: list[str], settings: dict[str, Any], host: dict[str, Any]) -> str:
    by_key: dict[str, dict[str, Measurement]] = {}
    for row in rows:
        by_key.setdefault(row.key, {})[row.model] = row
    best_peer = {
        model: max(
            (r for k in PEER_KEYS if (r := by_key.get(k, {}).get(model)) and r.images_per_second and not r.wrong),
            key=lambda r: r.images_per_second or 0.0,
            default=None,
        )
        for model in models
    }
    per_model = " / ".join(models)
    header = (
        ["server"]
        + [f"{model} img/s" for model in models]
        + [f"server CPU-s per 1,000 images ({per_model})", f"max \\|Δp\\| ({per_model})"]
        + [f"MedInform / best peer, {model}" for model in models]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    notes: dict[str, int] = {}
    for key in [k for k in ORDER if k in by_key]:
        cells = by_key[key]
        ordered = [cells.get(model) for model in models]
        label = next(iter(cells.values())).label
        line = [label] + [rate_cell(row, notes) for row in ordered]
        line.append(
            joined(ordered, lambda r: f"{r.cpu_per_1000:.2f}" if r.cpu_per_1000 is not None else "not measured")
        )
        line.append(joined(ordered, delta_cell))
        for model, row in zip(models, ordered, strict=True):
            best = best_peer[model]
            if key in MEDINFORM_KEYS and row and row.images_per_second and best:
                line.append(f"{row.images_per_second / best.images_per_second:.2f}× ({best.key})")
            else:
                line.append("")
        lines.append("| " + " | ".join(line) + " |")
    counts = ", ".join(f"{model} {settings['images'][model]}" for model in models)
    lines += [
        "",
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['date']}; ONNX Runtime "
        f"{host['packages']['onnxruntime']} on the CPU, {settings['threads']} intra-op threads in every session; "
        f"Python {host['python']}.",
        f"Images: {counts}; client: {settings['concurrency']} requests in flight "
        f"(asyncio + aiohttp {host['packages']['aiohttp']}), on the same "
        f"cores as the server; warm-up {settings['warmup']} requests; |Δp| against ONNX Runtime on the reference "
        f"tensor, flagged (✗) above {TOLERANCE:g}.",
    ]
    if notes:
        lines.append("")
        lines += [f"[{n}] {text}" for text, n in notes.items()]
    return "\n".join(lines)


def write_json(path: Path, host: dict[str, Any], settings: dict[str, Any], rows: list[Measurement]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": host, "settings": settings, "results": [row.to_json() for row in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")
