"""Reproduce a model card's metrics from a dataset folder, with the shipped ONNX file.

    python -m medinform_train.evaluate --model-dir models/malaria --data ../shared/datasets/malaria
    python -m medinform_train.evaluate --model-dir models/covid19 --data ... --split all

Reads the manifest, splits the dataset exactly as training did (same seed, by `source_id`),
preprocesses each image with the numpy twin of the worker's preprocessing, runs the ONNX model
through ONNX Runtime on the CPU and prints the metrics at the manifest's threshold as JSON
(`--split test` by default: the held-out split of the card; `all` evaluates every image, e.g. a
new dataset from another site), with per-group figures where the model's spec names groups
(`by_source`: site or source dataset; `by_diagnosis` for skin lesions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .metrics import binary_metrics, ordinal_metrics
from .preprocess import load_manifest
from .reference import probabilities, session_for
from .specs import SPECS
from .train import DATA_ROOT, split_samples, tensors


def evaluate(model_dir: str, data: str | None = None, split: str = "test") -> dict:
    """The model's metrics on `split` of the dataset folder `data` (default: its data set in
    shared/datasets next to the repository), at the manifest's threshold."""
    manifest = load_manifest(model_dir)
    spec = SPECS.get(manifest["id"])
    if spec is None:
        raise SystemExit(f"{manifest['id']} has no training spec: cannot read its dataset")
    if data is None:
        if spec.dataset is None:
            raise SystemExit(f"{manifest['id']} has no data set: pass --data")
        data = os.path.join(DATA_ROOT, spec.dataset)
    samples = spec.load(data)
    chosen = samples if split == "all" else split_samples(spec, samples)[split]
    labels = manifest["output"]["labels"]
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[s.label] for s in chosen])
    x = tensors(chosen, manifest)
    session = session_for(model_dir, manifest)
    input_name = manifest["input"]["name"]
    raw = np.concatenate([session.run([manifest["output"]["name"]], {input_name: x[i:i + 64]})[0]
                          for i in range(0, len(x), 64)])
    probs = np.array([probabilities(row, manifest) for row in raw])
    threshold = manifest["decision"]["threshold"]
    first = labels.index(manifest["decision"]["finding"])

    def measure(keep: np.ndarray) -> dict:
        if manifest["task"] == "ordinal":
            return ordinal_metrics(probs[keep], y[keep], first, threshold)
        return binary_metrics(probs[keep, first], y[keep] == first, threshold)

    result = measure(np.ones(len(y), dtype=bool))
    # Per group (site, source dataset or diagnosis, as the spec says), as the card reports them.
    groups = sorted({spec.breakdown(s) for s in chosen} - {""})
    if groups:
        result[f"by_{spec.breakdown_title}"] = {
            name: measure(np.array([spec.breakdown(s) == name for s in chosen])) for name in groups}
    return result


def rounded(value):
    """Floats to 4 decimals, in nested dicts too, for printing."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data", help="the dataset folder (default: the model's data set in "
                        "shared/datasets next to the repository)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    args = parser.parse_args(argv)
    result = evaluate(args.model_dir, args.data, args.split)
    result = rounded(result)
    print(json.dumps({"model": os.path.basename(os.path.normpath(args.model_dir)),
                      "split": args.split, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
