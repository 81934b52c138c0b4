"""Bring a model trained by the previous pipeline (version 1.0.0, one ONNX output) to the
issue-10 registry format without retraining it: the same network weights, plus

- temperature scaling fitted (NLL) on its validation split, baked into the graph (logits / T);
- the class activation map `cam`, computed in the graph from the last feature map (the input of
  the global average pooling) and the classifier (Gemm) weights, as `export.py` defines it;
- a new decision threshold by `metrics.choose_threshold` on the calibrated validation
  probabilities, bootstrap intervals, ECE, figures, stage, cost.

    python -m medinform_train.repackage malaria [--model-dir models/malaria] [--data ...]

The split is re-derived exactly as the weights were trained (same function and seed; the number
of test images is checked against the old manifest). The old weights chose their epoch on that
same validation split, so a threshold and temperature chosen there are somewhat optimistic; the
card says so. The version becomes 1.1.0: same weights, new outputs and operating point.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time

import numpy as np

from . import export
from .metrics import choose_threshold, fit_temperature, softmax
from .preprocess import load_manifest
from .specs import SPECS
from .train import DATA_ROOT, REGISTRY, finish, has_finding, p_finding, split_samples, tensors

VERSION = "1.1.0"


def graph_parts(model) -> dict:
    """The names the new outputs hang on: the feature map F (input of the ReduceMean over H, W),
    the classifier Gemm's weight and bias initializers, and the logits output."""
    from onnx import helper

    nodes = list(model.graph.node)
    output = model.graph.output[0].name
    gemm = next(n for n in nodes if n.op_type == "Gemm" and n.output[0] == output)
    flatten = next(n for n in nodes if n.output[0] == gemm.input[0])
    pool = next(n for n in nodes if n.output[0] == flatten.input[0])
    axes = next((helper.get_attribute_value(a) for a in pool.attribute if a.name == "axes"), None)
    if pool.op_type != "ReduceMean" or list(axes) != [2, 3]:
        raise ValueError(f"unexpected pooling {pool.op_type} {axes}")
    transposed = next((helper.get_attribute_value(a) for a in gemm.attribute
                       if a.name == "transB"), 0)
    if not transposed:
        raise ValueError("expected a Gemm with transB = 1 (PyTorch Linear)")
    return {"features": pool.input[0], "weight": gemm.input[1], "bias": gemm.input[2],
            "gemm": gemm, "output": output}


def rewrite(source: str, target: str, temperature: float, class_weights: list[float],
            map_size: tuple[int, int]) -> None:
    """Writes `target`: the graph of `source` with `output` = logits / T and `cam` [batch, h, w]."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(source)
    parts = graph_parts(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight = inits[parts["weight"]].astype(np.float64)  # [classes, K]
    channel = (np.asarray(class_weights) @ weight) / temperature
    parts["gemm"].output[0] = "logits_uncalibrated"
    graph = model.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "temperature"),
        numpy_helper.from_array(channel.astype(np.float32).reshape(1, -1, 1, 1), "cam_weights"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "cam_axes"),
    ])
    graph.node.extend([
        helper.make_node("Div", ["logits_uncalibrated", "temperature"], [parts["output"]],
                         name="calibrate"),
        helper.make_node("Mul", [parts["features"], "cam_weights"], ["cam_terms"], name="cam_mul"),
        helper.make_node("ReduceSum", ["cam_terms", "cam_axes"], ["cam"], keepdims=0,
                         name="cam_sum"),
    ])
    graph.output.append(helper.make_tensor_value_info("cam", onnx.TensorProto.FLOAT,
                                                      ["batch", *map_size]))
    onnx.checker.check_model(model)
    onnx.save(model, target)


def raw_logits(path: str, x: np.ndarray) -> np.ndarray:
    s = export.session(path)
    return np.concatenate([s.run(None, {"input": x[i:i + 64]})[0]
                           for i in range(0, len(x), 64)]).astype(np.float64)


def old_card_line(folder: str, prefix: str) -> str:
    with open(os.path.join(folder, "CARD.md")) as f:
        for line in f:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    return "not recorded"


def repackage(model_id: str, model_dir: str, data: str, benchmark_seconds: float = 3.0) -> dict:
    log = lambda msg: print(f"[{model_id}] {msg}", flush=True)  # noqa: E731
    started = time.time()
    old = load_manifest(model_dir)
    if old["version"] != "1.0.0" or old["output"].get("heatmap"):
        raise SystemExit(f"{model_dir}: version {old['version']} is not a 1.0.0 single-output model")
    old_weights = os.path.join(model_dir, old["weights"])
    spec = dataclasses.replace(SPECS[model_id], version=VERSION, size=old["input"]["width"],
                               folds=1)
    samples = spec.load(data)
    split = split_samples(spec, samples)
    if len(split["test"]) != old["metrics"]["n"]:
        raise SystemExit(f"{model_id}: the test split has {len(split['test'])} images, the old "
                         f"manifest {old['metrics']['n']}: not the split the weights knew")
    index = {label: i for i, label in enumerate(spec.labels)}
    arrays = {}
    for name in ("val", "test"):
        part = split[name]
        arrays[name] = (tensors(part, old), np.array([index[s.label] for s in part]))
    log(f"preprocessed in {time.time() - started:.0f}s")
    z_val = raw_logits(old_weights, arrays["val"][0])
    z_test = raw_logits(old_weights, arrays["test"][0])
    y_val = arrays["val"][1]
    t = fit_temperature(z_val, y_val)
    fitted = {"temperatures": [t], "heldout_y": y_val, "heldout_raw": softmax(z_val),
              "heldout_probs": softmax(z_val / t), "heldout_name": "validation split",
              "folds": []}
    threshold, rule = choose_threshold(p_finding(spec, fitted["heldout_probs"]),
                                       has_finding(spec, y_val), spec.operating_rule,
                                       spec.target_sensitivity)
    log(f"T = {t:.4f}, threshold {threshold}: {rule}")
    weights = export.cam_class_weights(spec.labels, spec.finding, spec.task, spec.referable_from)
    x_test = arrays["test"][0]

    def write_onnx(path: str) -> dict:
        import onnx

        probe = path + ".probe"
        # The map's size: run the pooled feature map once.
        model = onnx.load(old_weights)
        parts = graph_parts(model)
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            parts["features"], onnx.TensorProto.FLOAT, None))
        onnx.save(model, probe)
        s = export.session(probe)
        z_probe, features = s.run(None, {"input": x_test})
        os.remove(probe)
        rewrite(old_weights, path, t, weights, features.shape[2:])
        z_new, cam = export.run_onnx(path, x_test)
        # Checks, independent of the rewritten graph: the logits are the old ones over T, and
        # the map is the feature map weighted by the classifier rows (numpy, float64).
        from onnx import numpy_helper

        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        channel = np.asarray(weights) @ inits[parts["weight"]].astype(np.float64) / t
        expected = np.einsum("k,bkhw->bhw", channel, features.astype(np.float64))
        probs = float(np.abs(softmax(z_new) - softmax(z_probe / t)).max())
        cam_rel = float(np.abs(cam - expected).max() / max(np.abs(expected).max(), 1e-12))
        if probs > 1e-4 or cam_rel > 1e-4:
            raise RuntimeError(f"rewritten graph differs: {probs:.2e}, map {cam_rel:.2e}")
        speed = {"ensemble": export.images_per_second(path, x_test, seconds=benchmark_seconds)}
        return {"onnx_parity": {"probabilities": probs, "cam_relative": cam_rel},
                "images_per_second": speed}

    params = re.search(r"([\d,]+) parameters", old_card_line(model_dir, "- Architecture:"))
    extra = {
        "members": 1, "half_weights": False, "device": "cpu", "torch_threads": 2,
        "parameters": int(params.group(1).replace(",", "")) if params else 0,
        "machine": f"{os.cpu_count()}-core CPU", "best_epochs": [], "epochs": spec.epochs,
        "repackaged_from": "1.0.0",
        "old_training": old_card_line(model_dir, "- Training:"),
        "old_threshold": old["decision"]["threshold"],
        "old_metrics": old["metrics"],
    }
    return finish(spec, data, model_dir, split, arrays, fitted, threshold, rule,
                  softmax(z_test / t), softmax(z_test), write_onnx, extra, log, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=[m for m, s in SPECS.items() if s.task == "binary"])
    parser.add_argument("--model-dir")
    parser.add_argument("--data")
    args = parser.parse_args(argv)
    spec = SPECS[args.model]
    repackage(args.model, args.model_dir or os.path.join(REGISTRY, args.model),
              args.data or os.path.join(DATA_ROOT, spec.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
