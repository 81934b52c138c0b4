"""Import the original MedInform Keras 2 malaria model (HDF5) as a registry folder.

    python -m medinform_train.keras_import --h5 PATH/malaria2.h5 --out DIR
        [--id malaria_original] [--version 1.0.0] [--golden PATH/golden | --no-golden-check]

writes DIR/model.onnx, DIR/manifest.toml and DIR/CARD.md. The HDF5 file is read with h5py
alone (no TensorFlow): the architecture from the `model_config` JSON attribute, the weights from
`model_weights/<layer>/<weight name>`. The ONNX graph is written node by node with
`onnx.helper`:

- the input `input` is NHWC float32 with a dynamic batch axis, as Keras saw it, and is transposed
  to NCHW for the convolutions;
- `Conv2D` becomes `Conv` (kernel HWIO -> OIHW; `same` padding is TensorFlow's SAME, whose extra
  row/column goes at the bottom/right, so the pads are computed from the static shapes);
- `MaxPooling2D` / `AveragePooling2D` become `MaxPool` / `AveragePool` (padding excluded from the
  average, as in TensorFlow);
- `Flatten` transposes back to NHWC first, so that the flattened order is Keras' and the `Dense`
  kernels apply unchanged;
- `Dense` becomes `Gemm`; `Dropout` and `InputLayer` vanish (inference); activations `relu`,
  `sigmoid`, `softmax`, `tanh` and `linear` become their ONNX operators.

Anything else (another layer type, `channels_first`, a branching functional model, a layer option
that would change the arithmetic) is refused with an error naming the layer, never approximated.
The output `output` is (N, 1): the model's sigmoid probability that the cell is UNINFECTED.

After export the graph is run with ONNX Runtime on the golden input tensors next to the HDF5 file
(`golden/*.input_nhwc_f32.npy`) and must give the probabilities that Keras gave
(`golden/expected_prob_uninfected.json`) within 1e-4, or the import fails and nothing is left in
DIR. The weights are the original app's (MIT licence): an import's output is not committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Largest |p_onnx - p_keras| accepted on the golden tensors.
TOLERANCE = 1e-4

SUPPORTED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "MaxPooling2D",
    "AveragePooling2D",
    "Flatten",
    "Dense",
    "Dropout",
    "Activation",
)
SUPPORTED_ACTIVATIONS = ("linear", "relu", "sigmoid", "softmax", "tanh")

SOURCE_REPO = "guramritpalsaggu/Medical_Image_Analysis"
SOURCE_FILE = "app/models/malaria2.h5"
SHARPEN_KERNEL = [0, -1, 0, -1, 6, -1, 0, -1, 0]


class KerasImportError(Exception):
    """The HDF5 file cannot be imported faithfully (the message says which layer and why)."""


# ---------------------------------------------------------------------------------------------
# Reading the HDF5 file


@dataclass
class KerasModel:
    keras_version: str
    backend: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    layers: list[dict[str, Any]]  # {"class_name", "config"} in order
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer name -> arrays


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _linear_layers(model_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers of a Sequential model, or of a functional model that is a single chain."""
    class_name = model_config.get("class_name")
    config = model_config.get("config")
    if class_name == "Sequential":
        # Keras <= 2.2: the config is the list of layers; later: {"name", "layers"}.
        layers = config if isinstance(config, list) else (config or {}).get("layers")
        if not isinstance(layers, list):
            raise KerasImportError("Sequential model_config without a list of layers")
        return layers
    if class_name in ("Model", "Functional"):
        layers = config.get("layers") or []
        inputs = config.get("input_layers") or []
        outputs = config.get("output_layers") or []
        if len(inputs) != 1 or len(outputs) != 1:
            raise KerasImportError(
                f"functional model with {len(inputs)} input(s) and {len(outputs)} output(s): "
                "only a single chain of layers is supported"
            )
        previous = None
        for layer in layers:
            inbound = layer.get("inbound_nodes") or []
            sources = [node[0] for call in inbound for node in call] if inbound else []
            if previous is None:
                if sources:
                    raise KerasImportError(
                        f"layer {layer.get('name')!r}: the first layer of the chain has inputs {sources}"
                    )
            elif len(inbound) != 1 or sources != [previous]:
                raise KerasImportError(
                    f"layer {layer.get('name')!r} takes {sources or 'no input'} "
                    f"(called {len(inbound)} time(s)), not the single previous layer {previous!r}: "
                    "only a single chain of layers is supported"
                )
            previous = layer.get("name")
        if layers and outputs[0][0] != previous:
            raise KerasImportError(
                f"the model's output is {outputs[0][0]!r}, not the last layer {previous!r}"
            )
        return layers
    raise KerasImportError(f"model class {class_name!r} is not supported (Sequential or a chain of layers)")


def read_h5(path: str) -> KerasModel:
    """The architecture and weights of a Keras 2 HDF5 model file."""
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise KerasImportError(f"{path}: no model_config attribute (a weights-only file?)")
        model_config = json.loads(_text(f.attrs["model_config"]))
        keras_version = _text(f.attrs.get("keras_version", "unknown"))
        backend = _text(f.attrs.get("backend", "unknown"))
        if not keras_version.startswith("2."):
            raise KerasImportError(f"{path}: Keras {keras_version}; only Keras 2 HDF5 files are supported")
        layers = _linear_layers(model_config)

        # Refuse unsupported layers before anything else, naming all of them.
        unsupported = [
            f"{layer.get('config', {}).get('name', '?')} ({layer.get('class_name')})"
            for layer in layers
            if layer.get("class_name") not in SUPPORTED_LAYERS
        ]
        if unsupported:
            raise KerasImportError(
                "unsupported layer type(s): "
                + ", ".join(unsupported)
                + f"; supported: {', '.join(SUPPORTED_LAYERS)}"
            )

        input_shape = None
        first = layers[0]["config"] if layers else {}
        shape = first.get("batch_input_shape")
        if shape is not None:
            input_shape = shape[1:]
        if input_shape is None or len(input_shape) != 3 or any(d is None for d in input_shape):
            raise KerasImportError(
                f"the input shape must be a fixed (height, width, channels), got {input_shape}"
            )

        group = f["model_weights"] if "model_weights" in f else f
        weights: dict[str, list[np.ndarray]] = {}
        for layer in layers:
            name = layer["config"]["name"]
            if name not in group:
                weights[name] = []
                continue
            g = group[name]
            names = [_text(n) for n in g.attrs.get("weight_names", [])]
            weights[name] = [np.asarray(g[n], dtype=np.float32) for n in names]
    return KerasModel(
        keras_version=keras_version,
        backend=backend,
        input_shape=(int(input_shape[0]), int(input_shape[1]), int(input_shape[2])),
        layers=layers,
        weights=weights,
    )


# ---------------------------------------------------------------------------------------------
# Building the ONNX graph


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise KerasImportError(f"layer {layer!r}: {what} must be one or two integers, got {value!r}")


def _padding(
    padding: str, size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
    dilation: tuple[int, int], layer: str,
) -> tuple[list[int], tuple[int, int]]:
    """ONNX pads [top, left, bottom, right] and the output size for Keras `padding`."""
    if padding == "valid":
        out = tuple(
            (n - ((k - 1) * d + 1)) // s + 1 for n, k, s, d in zip(size, kernel, strides, dilation)
        )
        if any(o < 1 for o in out):
            raise KerasImportError(f"layer {layer!r}: the input {size} is smaller than its window")
        return [0, 0, 0, 0], out  # type: ignore[return-value]
    if padding == "same":
        # TensorFlow SAME: out = ceil(n / s); the odd pixel of padding goes after (bottom/right).
        out, before, after = [], [], []
        for n, k, s, d in zip(size, kernel, strides, dilation):
            o = -(-n // s)
            total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
            out.append(o)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after, (out[0], out[1])
    raise KerasImportError(f"layer {layer!r}: padding {padding!r} is not supported (valid or same)")


class GraphBuilder:
    def __init__(self, model: KerasModel):
        self.model = model
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: set[str] = set()
        self.x = "input"
        h, w, c = model.input_shape
        # Current tensor: ("nchw", (C, H, W)) or ("flat", (features,)).
        self.layout = "nhwc_input"
        self.shape: tuple[int, ...] = (h, w, c)
        # The last non-linear activation applied since the last layer with weights or pooling.
        self.final_activation: str | None = None

    def _name(self, base: str) -> str:
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def _node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        from onnx import helper

        out = self._name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.x = out
        return out

    def _const(self, array: np.ndarray, base: str) -> str:
        from onnx import numpy_helper

        name = self._name(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def _to_nchw(self, layer: str) -> None:
        if self.layout == "nhwc_input":
            h, w, c = self.shape
            self._node("Transpose", [self.x], "input_nchw", perm=[0, 3, 1, 2])
            self.layout, self.shape = "nchw", (c, h, w)
        elif self.layout != "nchw":
            raise KerasImportError(f"layer {layer!r} needs an image tensor, but its input is already flattened")

    def _activation(self, activation: str, layer: str) -> None:
        if activation not in SUPPORTED_ACTIVATIONS:
            raise KerasImportError(
                f"layer {layer!r}: activation {activation!r} is not supported ({', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        if activation == "linear":
            return
        if activation == "softmax":
            if self.layout != "flat":
                raise KerasImportError(f"layer {layer!r}: softmax is only supported on a flat (N, features) tensor")
            self._node("Softmax", [self.x], f"{layer}_softmax", axis=-1)
        else:
            op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation]
            self._node(op, [self.x], f"{layer}_{activation}")
        self.final_activation = activation

    def _weights(self, layer: str, use_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
        arrays = self.model.weights.get(layer, [])
        expected = 2 if use_bias else 1
        if len(arrays) != expected:
            raise KerasImportError(f"layer {layer!r}: expected {expected} weight array(s), found {len(arrays)}")
        return arrays[0], (arrays[1] if use_bias else None)

    def add(self, class_name: str, config: dict[str, Any]) -> None:
        name = config["name"]
        if config.get("data_format", "channels_last") != "channels_last":
            raise KerasImportError(f"layer {name!r}: data_format {config['data_format']!r} is not supported")
        if class_name in ("InputLayer", "Dropout"):
            return  # nothing at inference
        if class_name != "Activation":
            self.final_activation = None
        if class_name == "Activation":
            self._activation(config["activation"], name)
        elif class_name == "Conv2D":
            self._conv(config, name)
        elif class_name in ("MaxPooling2D", "AveragePooling2D"):
            self._pool(class_name, config, name)
        elif class_name == "Flatten":
            if self.layout == "nhwc_input":
                self._node("Flatten", [self.x], f"{name}", axis=1)
                h, w, c = self.shape
            elif self.layout == "nchw":
                c, h, w = self.shape
                # Keras flattens (H, W, C): go back to NHWC so the Dense kernels apply as they are.
                self._node("Transpose", [self.x], f"{name}_nhwc", perm=[0, 2, 3, 1])
                self._node("Flatten", [self.x], f"{name}", axis=1)
            else:
                return
            self.layout, self.shape = "flat", (h * w * c,)
        elif class_name == "Dense":
            self._dense(config, name)
        else:  # read_h5 refuses these already; kept for graphs built from other sources
            raise KerasImportError(f"layer {name!r}: unsupported layer type {class_name!r}")

    def _conv(self, config: dict[str, Any], name: str) -> None:
        self._to_nchw(name)
        c, h, w = self.shape
        kernel_size = _pair(config["kernel_size"], "kernel_size", name)
        strides = _pair(config.get("strides", 1), "strides", name)
        dilation = _pair(config.get("dilation_rate", 1), "dilation_rate", name)
        if config.get("groups", 1) != 1:
            raise KerasImportError(f"layer {name!r}: grouped convolutions are not supported")
        use_bias = bool(config.get("use_bias", True))
        kernel, bias = self._weights(name, use_bias)
        filters = int(config["filters"])
        if kernel.shape != (*kernel_size, c, filters):
            raise KerasImportError(
                f"layer {name!r}: kernel shape {kernel.shape}, expected {(*kernel_size, c, filters)}"
            )
        pads, (oh, ow) = _padding(config.get("padding", "valid"), (h, w), kernel_size, strides, dilation, name)
        inputs = [self.x, self._const(kernel.transpose(3, 2, 0, 1), f"{name}_kernel")]
        if bias is not None:
            inputs.append(self._const(bias, f"{name}_bias"))
        self._node(
            "Conv", inputs, name, kernel_shape=list(kernel_size), strides=list(strides),
            dilations=list(dilation), pads=pads,
        )
        self.shape = (filters, oh, ow)
        self._activation(config.get("activation", "linear"), name)

    def _pool(self, class_name: str, config: dict[str, Any], name: str) -> None:
        self._to_nchw(name)
        c, h, w = self.shape
        pool = _pair(config.get("pool_size", 2), "pool_size", name)
        strides = _pair(config.get("strides") or pool, "strides", name)
        pads, (oh, ow) = _padding(config.get("padding", "valid"), (h, w), pool, strides, (1, 1), name)
        if class_name == "MaxPooling2D":
            self._node("MaxPool", [self.x], name, kernel_shape=list(pool), strides=list(strides), pads=pads)
        else:
            # TensorFlow averages over the window's pixels inside the image only.
            self._node(
                "AveragePool", [self.x], name, kernel_shape=list(pool), strides=list(strides), pads=pads,
                count_include_pad=0,
            )
        self.shape = (c, oh, ow)

    def _dense(self, config: dict[str, Any], name: str) -> None:
        if self.layout != "flat":
            raise KerasImportError(f"layer {name!r}: Dense on an image tensor (no Flatten before it) is not supported")
        use_bias = bool(config.get("use_bias", True))
        kernel, bias = self._weights(name, use_bias)
        units = int(config["units"])
        if kernel.shape != (self.shape[0], units):
            raise KerasImportError(f"layer {name!r}: kernel shape {kernel.shape}, expected {(self.shape[0], units)}")
        inputs = [self.x, self._const(kernel, f"{name}_kernel")]
        if bias is not None:
            inputs.append(self._const(bias, f"{name}_bias"))
        self._node("Gemm", inputs, name)
        self.shape = (units,)
        self._activation(config.get("activation", "linear"), name)

    def build(self, graph_name: str):
        import onnx
        from onnx import TensorProto, helper

        for layer in self.model.layers:
            self.add(layer["class_name"], layer["config"])
        if self.layout != "flat" or self.shape != (1,):
            raise KerasImportError(
                f"the model's output has shape {self.shape}: a single sigmoid probability (N, 1) is expected"
            )
        if self.final_activation != "sigmoid":
            raise KerasImportError(
                f"the model ends with {self.final_activation or 'no activation'!r}, not a sigmoid: "
                "a sigmoid probability is expected"
            )
        # Name the final tensor "output".
        last = self.nodes[-1]
        last.output[0] = "output"
        last.name = "output"
        h, w, c = self.model.input_shape
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", h, w, c])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="medinform_train.keras_import"
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def to_onnx(model: KerasModel, graph_name: str = "keras_import"):
    return GraphBuilder(model).build(graph_name)


# ---------------------------------------------------------------------------------------------
# The golden check


def check_golden(onnx_path: str, golden_dir: str) -> dict[str, tuple[float, float]]:
    """Runs the exported graph on `golden_dir/*.input_nhwc_f32.npy` and compares with
    `expected_prob_uninfected.json`; returns {png name: (onnx p, keras p)}; raises when a
    probability is off by TOLERANCE or more."""
    import onnxruntime as ort

    expected_path = os.path.join(golden_dir, "expected_prob_uninfected.json")
    with open(expected_path) as f:
        expected: dict[str, float] = json.load(f)
    if not expected:
        raise KerasImportError(f"{expected_path} lists no image")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    names = sorted(expected)
    tensors = []
    for png in names:
        npy = os.path.join(golden_dir, png[: -len(".png")] + ".input_nhwc_f32.npy")
        if not os.path.exists(npy):
            raise KerasImportError(f"{npy} is missing (listed in {expected_path})")
        tensors.append(np.load(npy).astype(np.float32))
    (out,) = session.run(["output"], {"input": np.stack(tensors)})
    results = {png: (float(p), float(expected[png])) for png, p in zip(names, np.asarray(out).ravel())}
    bad = {png: v for png, v in results.items() if not abs(v[0] - v[1]) < TOLERANCE}
    if bad:
        lines = [f"  {png}: onnx {p:.6f}, keras {k:.6f}" for png, (p, k) in sorted(bad.items())]
        raise KerasImportError(
            f"the exported graph does not reproduce the Keras probabilities (tolerance {TOLERANCE}):\n"
            + "\n".join(lines)
        )
    return results


# ---------------------------------------------------------------------------------------------
# Manifest and card


def manifest_text(model_id: str, version: str, model: KerasModel) -> str:
    h, w, c = model.input_shape
    if c != 3:
        raise KerasImportError(f"the input has {c} channel(s); the malaria model reads RGB (3)")
    kernel = ", ".join(str(k) for k in SHARPEN_KERNEL)
    return "\n".join(
        [
            f'id = "{model_id}"',
            f'version = "{version}"',
            'name = "Malaria (original MedInform Keras model)"',
            'modality = "blood_smear_cell"',
            'task = "binary"',
            'description = "Thin blood smear single-cell crop, RGB: parasitized or uninfected. '
            'The original MedInform app\'s Keras 2 CNN, imported unchanged."',
            'weights = "model.onnx"',
            'card = "CARD.md"',
            "",
            "[input]",
            'name = "input"',
            'layout = "nhwc"',
            'color = "rgb"',
            f"width = {w}",
            f"height = {h}",
            "",
            "# The original server's preprocessing, in its order.",
            "[[input.preprocess]]",
            'op = "resize"',
            'filter = "nearest"',
            "",
            "[[input.preprocess]]",
            'op = "sharpen"',
            f"kernel = [{kernel}]",
            "",
            "[[input.preprocess]]",
            'op = "equalize_histogram"',
            "",
            "[input.normalize]",
            "scale = 0.00392156862745098",
            "mean = [0.0, 0.0, 0.0]",
            "std = [1.0, 1.0, 1.0]",
            "",
            "[output]",
            'name = "output"',
            "# The network outputs sigmoid(logit) = p(Uninfected).",
            'activation = "sigmoid_probability"',
            'labels = ["Uninfected", "Parasitized"]',
            'sigmoid_positive = "Uninfected"',
            "",
            "[decision]",
            'finding = "Parasitized"',
            "threshold = 0.5",
            "",
        ]
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_text(
    model_id: str, version: str, model: KerasModel, h5_path: str, params: int,
    golden: dict[str, tuple[float, float]] | None,
) -> str:
    h, w, c = model.input_shape
    layers = " -> ".join(
        layer["class_name"] for layer in model.layers if layer["class_name"] not in ("InputLayer",)
    )
    lines = [
        "# Malaria (original MedInform Keras model)",
        "",
        f"Model id `{model_id}`, version `{version}`.",
        "",
        "## Provenance",
        "",
        f"- The trained malaria cell classifier of the original MedInform web app: public repository "
        f"`{SOURCE_REPO}`, branch master, file `{SOURCE_FILE}`.",
        "- Licence: MIT, \"Copyright (c) 2018 Pankaj Mathur\" (as carried in that repository's LICENSE). "
        "The MIT notice travels with these weights; they are not part of this repository.",
        f"- Imported, not retrained: `medinform_train.keras_import` converted `{os.path.basename(h5_path)}` "
        f"(sha256 `{_sha256(h5_path)}`, Keras {model.keras_version}, backend {model.backend}) to ONNX "
        "layer by layer with the weights unchanged.",
        "",
        "## Network",
        "",
        f"- {layers}.",
        f"- {params:,} parameters. Input {h}x{w}x{c} RGB, NHWC, float32 in [0, 1].",
        "- Output: one value, the sigmoid probability that the cell is **uninfected**; the worker reports "
        "p(Parasitized) = 1 - p and flags a cell as parasitized when that is >= 0.5.",
        "",
        "## Preprocessing",
        "",
        "Exactly the original server's, declared in `manifest.toml`: resize to "
        f"{w}x{h} with nearest-neighbour sampling (Pillow NEAREST); sharpen with the 3x3 kernel "
        "[[0,-1,0],[-1,6,-1],[0,-1,0]] (OpenCV filter2D, reflect-101 border, saturating cast); "
        "equalise the histogram of the Y channel of OpenCV's YUV and convert back to RGB; divide by "
        "255. Without the sharpen and equalisation steps the model misclassifies parasitized cells.",
        "",
        "## Verification of the import",
        "",
    ]
    if golden:
        worst = max(abs(p - k) for p, k in golden.values())
        lines += [
            f"ONNX Runtime on the {len(golden)} golden input tensors of the original pipeline gives "
            f"the probabilities Keras gave within {worst:.1e} (limit {TOLERANCE:g}):",
            "",
            "| image | p(uninfected), ONNX | p(uninfected), Keras |",
            "|---|---|---|",
        ]
        lines += [f"| {png} | {p:.6f} | {k:.6f} |" for png, (p, k) in sorted(golden.items())]
    else:
        lines += ["Not checked against golden Keras outputs (`--no-golden-check`)."]
    lines += [
        "",
        "## Metrics",
        "",
        "Not measured here. This model reads 125x125 RGB cell crops; the malaria data set available to "
        "this project holds 50x50 grayscale cells, which are not the input this model expects, so a "
        "score on them would not describe it. The weights file records no held-out metrics either. "
        "The golden check above shows only that the import reproduces the original model; it is not "
        "an accuracy measurement.",
        "",
        "## Limitations",
        "",
        "- Trained on single-cell crops of thin blood smears; not for whole smear images or other stains.",
        "- Its training data, split and validation are those of the original app and are not documented "
        "with the weights: treat it as a research reference, not a validated screening model.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def import_model(
    h5_path: str, out_dir: str, *, model_id: str = "malaria_original", version: str = "1.0.0",
    golden_dir: str | None = None,
) -> dict[str, tuple[float, float]] | None:
    """Writes out_dir/{model.onnx, manifest.toml, CARD.md}; returns the golden comparison (None
    when `golden_dir` is None). Nothing is left in out_dir when it fails."""
    import re

    import onnx

    if not re.fullmatch(r"[a-z0-9_]+", model_id):
        raise KerasImportError(f"--id {model_id!r} must be [a-z0-9_]+")
    if not version.strip() or '"' in version or "\\" in version:
        raise KerasImportError(f"--version {version!r} must be a non-empty string without quotes or backslashes")
    if golden_dir is not None and not os.path.isfile(os.path.join(golden_dir, "expected_prob_uninfected.json")):
        raise KerasImportError(
            f"{golden_dir}: no expected_prob_uninfected.json to check the import against "
            "(name the golden folder with --golden DIR, or skip the check with --no-golden-check)"
        )
    model = read_h5(h5_path)
    onnx_model = to_onnx(model, graph_name=model_id)
    params = sum(int(np.prod(a.shape)) for arrays in model.weights.values() for a in arrays)

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".keras_import_", dir=parent)
    try:
        onnx_path = os.path.join(staging, "model.onnx")
        onnx.save(onnx_model, onnx_path)
        golden = check_golden(onnx_path, golden_dir) if golden_dir is not None else None
        with open(os.path.join(staging, "manifest.toml"), "w") as f:
            f.write(manifest_text(model_id, version, model))
        with open(os.path.join(staging, "CARD.md"), "w") as f:
            f.write(card_text(model_id, version, model, h5_path, params, golden))
        os.makedirs(out_dir, exist_ok=True)
        for name in ("model.onnx", "manifest.toml", "CARD.md"):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medinform_train.keras_import", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--h5", required=True, help="the Keras 2 HDF5 model file (malaria2.h5)")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--id", default="malaria_original", help="model id (default: malaria_original)")
    parser.add_argument("--version", default="1.0.0", help="model version (default: 1.0.0)")
    golden = parser.add_mutually_exclusive_group()
    golden.add_argument(
        "--golden", help="folder with *.input_nhwc_f32.npy and expected_prob_uninfected.json "
        "(default: golden/ next to the HDF5 file)"
    )
    golden.add_argument(
        "--no-golden-check", action="store_true", help="do not compare with recorded Keras outputs"
    )
    args = parser.parse_args(argv)
    golden_dir = None
    if not args.no_golden_check:
        golden_dir = args.golden or os.path.join(os.path.dirname(os.path.abspath(args.h5)), "golden")
    try:
        results = import_model(args.h5, args.out, model_id=args.id, version=args.version, golden_dir=golden_dir)
    except KerasImportError as e:
        print(f"keras_import: {args.h5}: {e}", file=sys.stderr)
        return 1
    if results:
        worst = max(abs(p - k) for p, k in results.values())
        for png, (p, k) in sorted(results.items()):
            print(f"{png}: p(uninfected) onnx {p:.6f} keras {k:.6f} |diff| {abs(p - k):.2e}")
        print(f"max |p_onnx - p_keras| = {worst:.2e} over {len(results)} golden tensors")
    print(f"wrote {args.out}/model.onnx, manifest.toml, CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
