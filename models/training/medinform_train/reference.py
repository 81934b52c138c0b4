"""The parity reference: ONNX Runtime (Python) probabilities for image files.

    python -m medinform_train.reference --model-dir models/malaria cell1.png cell2.png
    python -m medinform_train.reference --model-dir models/malaria npz:/path/cells.npz#17

prints one JSON line per input, in order:

    {"file": "cell1.png", "model": "malaria", "version": "1.0.0",
     "labels": ["Uninfected", "Parasitized"], "raw": [...], "probabilities": [...],
     "heatmap": {"width": 6, "height": 6, "values": [...]}}

`heatmap` (the second ONNX output named by the manifest's `output.heatmap`, the class activation
map of the finding, row-major float32 values) is there only when the manifest declares one.

Inputs are preprocessed with `medinform_train.preprocess` (the numpy twin of the Rust worker's
preprocessing) and run on the CPU. `npz:PATH#INDEX` reads `images[INDEX]` (uint8, (H,W) or
(H,W,C)) from a numpy archive. `--dump-inputs DIR` also writes each input tensor to
DIR/<n>.npy, so that a test can compare tensors as well as probabilities.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

from .preprocess import load_manifest, preprocess_file, preprocess_image


def load_input(spec: str, manifest: dict[str, Any]) -> np.ndarray:
    """One input tensor (no batch axis) from a file path or `npz:PATH#INDEX`."""
    if spec.startswith("npz:"):
        path, _, index = spec[4:].rpartition("#")
        if not path or not index.isdigit():
            raise SystemExit(f"bad npz input {spec!r}: expected npz:PATH#INDEX")
        with np.load(path) as archive:
            pixels = np.asarray(archive["images"][int(index)])
        return preprocess_image(pixels, manifest)
    return preprocess_file(spec, manifest)


def probabilities(raw: np.ndarray, manifest: dict[str, Any]) -> list[float]:
    """Class probabilities (class order) from one image's output values, per
    `output.activation` (computed in double precision, like the worker)."""
    output = manifest["output"]
    activation = output["activation"]
    labels = output["labels"]
    values = [float(v) for v in np.asarray(raw, dtype=np.float32).ravel()]
    if activation == "softmax":
        top = max(values)
        exp = [math.exp(v - top) for v in values]
        total = sum(exp)
        return [e / total for e in exp]
    if activation == "none":
        return values
    if activation in ("sigmoid", "sigmoid_probability"):
        p = values[0]
        if activation == "sigmoid":
            p = 1.0 / (1.0 + math.exp(-p))
        positive = labels.index(output["sigmoid_positive"])
        probs = [1.0 - p, 1.0 - p]
        probs[positive] = p
        return probs
    raise ValueError(f"unknown output.activation {activation!r}")


def session_for(model_dir: str, manifest: dict[str, Any]):
    import onnxruntime as ort

    weights = os.path.join(model_dir, manifest.get("weights", "model.onnx"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(weights, options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medinform_train.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="a model folder (manifest.toml + weights)")
    parser.add_argument("--dump-inputs", metavar="DIR", help="also write each input tensor to DIR/<n>.npy")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="image files or npz:PATH#INDEX")
    args = parser.parse_args(argv)

    manifest = load_manifest(args.model_dir)
    session = session_for(args.model_dir, manifest)
    input_name = manifest["input"]["name"]
    output_name = manifest["output"]["name"]
    heatmap_name = manifest["output"].get("heatmap")
    names = [output_name] + ([heatmap_name] if heatmap_name else [])
    if args.dump_inputs:
        os.makedirs(args.dump_inputs, exist_ok=True)
    for n, spec in enumerate(args.inputs):
        tensor = load_input(spec, manifest)
        if args.dump_inputs:
            np.save(os.path.join(args.dump_inputs, f"{n}.npy"), tensor)
        outputs = session.run(names, {input_name: tensor[None, ...]})
        raw = outputs[0]
        line = {
            "file": spec,
            "model": manifest.get("id"),
            "version": manifest.get("version"),
            "labels": manifest["output"]["labels"],
            "raw": [float(v) for v in np.asarray(raw, dtype=np.float32).ravel()],
            "probabilities": probabilities(raw, manifest),
        }
        if heatmap_name:
            cam = np.asarray(outputs[1], dtype=np.float32)[0]
            line["heatmap"] = {"width": int(cam.shape[1]), "height": int(cam.shape[0]),
                               "values": [float(v) for v in cam.ravel()]}
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
