"""A tiny ONNX model with fixed weights, for tests that need a real graph before trained ones
exist.

    python -m medinform_train.tiny_model --out DIR [--id tiny] [--layout nchw|nhwc]
        [--color gray|rgb] [--size 32] [--activation softmax|sigmoid|sigmoid_probability|none]
        [--labels Negative,Positive] [--fixed-batch N] [--filter triangle|nearest]
        [--sharpen] [--equalize]

writes DIR/model.onnx, DIR/manifest.toml and DIR/CARD.md. The graph is
Conv 3x3 (4 filters) -> Relu -> GlobalAveragePool -> Flatten -> Gemm, with a dynamic batch axis
(unless --fixed-batch), plus Softmax or Sigmoid for the activations that expect probabilities.
Weights come from a seeded generator, so the same arguments give the same model.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def build_model(
    *,
    layout: str,
    channels: int,
    size: int,
    outputs: int,
    final: str | None,
    fixed_batch: int | None,
    seed: int = 7,
):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    conv_w = rng.normal(0.0, 0.5, size=(4, channels, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.1, size=(4,)).astype(np.float32)
    gemm_w = rng.normal(0.0, 1.0, size=(outputs, 4)).astype(np.float32)
    gemm_b = rng.normal(0.0, 0.1, size=(outputs,)).astype(np.float32)

    batch = fixed_batch if fixed_batch else "batch"
    shape = [batch, channels, size, size] if layout == "nchw" else [batch, size, size, channels]
    nodes = []
    x = "input"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits" if final else "output"], transB=1),
    ]
    if final == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["output"], axis=1))
    elif final == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "medinform_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, outputs])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(gemm_w, "gemm_w"),
            numpy_helper.from_array(gemm_b, "gemm_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="medinform_tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def manifest_text(args: argparse.Namespace, labels: list[str]) -> str:
    channels = 1 if args.color == "gray" else 3
    task = "binary" if len(labels) == 2 else "multiclass"
    lines = [
        f'id = "{args.id}"',
        'version = "0.0.1"',
        'name = "Tiny test model"',
        'modality = "blood_smear_cell"',
        f'task = "{task}"',
        'description = "Fixed random weights; for tests only."',
        'weights = "model.onnx"',
        'card = "CARD.md"',
        "",
        "[input]",
        'name = "input"',
        f'layout = "{args.layout}"',
        f'color = "{args.color}"',
        f"width = {args.size}",
        f"height = {args.size}",
        "",
        "[[input.preprocess]]",
        'op = "resize"',
        f'filter = "{args.filter}"',
    ]
    if args.sharpen:
        lines += ["", "[[input.preprocess]]", 'op = "sharpen"', "kernel = [0, -1, 0, -1, 6, -1, 0, -1, 0]"]
    if args.equalize:
        lines += ["", "[[input.preprocess]]", 'op = "equalize_histogram"']
    mean = ", ".join(["0.5"] * channels)
    std = ", ".join(["0.25"] * channels)
    lines += [
        "",
        "[input.normalize]",
        "scale = 0.00392156862745098",
        f"mean = [{mean}]",
        f"std = [{std}]",
        "",
        "[output]",
        'name = "output"',
        f'activation = "{args.activation}"',
        "labels = [" + ", ".join(f'"{label}"' for label in labels) + "]",
    ]
    if args.activation in ("sigmoid", "sigmoid_probability"):
        lines.append(f'sigmoid_positive = "{labels[-1]}"')
    lines += ["", "[decision]", f'finding = "{labels[-1]}"', "threshold = 0.5", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import onnx

    parser = argparse.ArgumentParser(prog="python -m medinform_train.tiny_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--id", help="model id (default: the folder name)")
    parser.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw")
    parser.add_argument("--color", choices=["gray", "rgb"], default="gray")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--activation", choices=["softmax", "sigmoid", "sigmoid_probability", "none"], default="softmax"
    )
    parser.add_argument("--labels", default="Negative,Positive")
    parser.add_argument("--fixed-batch", type=int)
    parser.add_argument("--filter", choices=["triangle", "nearest"], default="triangle")
    parser.add_argument("--sharpen", action="store_true")
    parser.add_argument("--equalize", action="store_true")
    args = parser.parse_args(argv)
    args.id = args.id or os.path.basename(os.path.normpath(args.out))
    labels = args.labels.split(",")

    single = args.activation in ("sigmoid", "sigmoid_probability")
    final = {"none": "softmax", "sigmoid_probability": "sigmoid"}.get(args.activation)
    model = build_model(
        layout=args.layout,
        channels=1 if args.color == "gray" else 3,
        size=args.size,
        outputs=1 if single else len(labels),
        final=final,
        fixed_batch=args.fixed_batch,
    )
    os.makedirs(args.out, exist_ok=True)
    onnx.save(model, os.path.join(args.out, "model.onnx"))
    with open(os.path.join(args.out, "manifest.toml"), "w") as f:
        f.write(manifest_text(args, labels))
    with open(os.path.join(args.out, "CARD.md"), "w") as f:
        f.write("# Tiny test model\n\nFixed random weights from medinform_train.tiny_model; not a medical model.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
