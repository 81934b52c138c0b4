"""medinform_train.keras_import: the original MedInform malaria model, layer arithmetic on small
made-up Keras files, and refusals."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import onnxruntime as ort
import pytest

from medinform_train import keras_import
from medinform_train.preprocess import load_manifest, preprocess_file

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../../../shared"))
ORIGINAL = os.path.join(SHARED, "models/medinform-original/malaria")
GOLDEN = os.path.join(ORIGINAL, "golden")


def _session(model_dir: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        os.path.join(model_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


# ---------------------------------------------------------------------------------------------
# The original model


def test_original_model_gives_the_keras_probabilities_on_the_golden_cells(tmp_path):
    assert os.path.isfile(os.path.join(ORIGINAL, "malaria2.h5")), (
        f"{ORIGINAL}/malaria2.h5 is missing: the shared folder must sit next to the repository"
    )
    out = tmp_path / "malaria_original"
    assert keras_import.main(["--h5", os.path.join(ORIGINAL, "malaria2.h5"), "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["CARD.md", "manifest.toml", "model.onnx"]

    manifest = load_manifest(out)
    assert manifest["id"] == "malaria_original"
    assert manifest["input"]["layout"] == "nhwc"
    assert [s["op"] for s in manifest["input"]["preprocess"]] == ["resize", "sharpen", "equalize_histogram"]
    assert manifest["output"]["activation"] == "sigmoid_probability"
    assert manifest["output"]["sigmoid_positive"] == "Uninfected"
    assert manifest["decision"]["finding"] == "Parasitized"
    card = (out / "CARD.md").read_text()
    for fact in ("guramritpalsaggu/Medical_Image_Analysis", "MIT", "Copyright (c) 2018 Pankaj Mathur", "not retrained"):
        assert fact in card, fact
    assert "Not measured here" in card

    with open(os.path.join(GOLDEN, "expected_prob_uninfected.json")) as f:
        expected = json.load(f)
    session = _session(str(out))
    worst_tensor = worst_p = 0.0
    for png, keras_p in sorted(expected.items()):
        tensor = preprocess_file(os.path.join(GOLDEN, png), manifest)
        golden = np.load(os.path.join(GOLDEN, png.replace(".png", ".input_nhwc_f32.npy")))
        assert tensor.shape == golden.shape == (125, 125, 3)
        worst_tensor = max(worst_tensor, float(np.abs(tensor - golden).max()))
        (p,) = session.run(["output"], {"input": tensor[None]})
        assert p.shape == (1, 1)
        diff = abs(float(p[0, 0]) - keras_p)
        assert diff < 1e-4, f"{png}: p(uninfected) {float(p[0, 0])}, Keras {keras_p}"
        worst_p = max(worst_p, diff)
    assert worst_tensor < 1 / 255
    print(f"golden: max tensor diff {worst_tensor}, max |p - p_keras| {worst_p:.2e}")

    # The batch axis is dynamic.
    batch = np.stack([np.load(os.path.join(GOLDEN, png.replace(".png", ".input_nhwc_f32.npy"))) for png in sorted(expected)])
    (p,) = session.run(["output"], {"input": batch})
    assert np.abs(p[:, 0] - np.array([expected[k] for k in sorted(expected)])).max() < 1e-4


# ---------------------------------------------------------------------------------------------
# Made-up Keras files


def _layer(class_name: str, name: str, **config) -> dict:
    return {"class_name": class_name, "config": {"name": name, **config}}


def write_keras_h5(path, layers: list[dict], weights: dict[str, list[np.ndarray]], *, functional: bool = False) -> None:
    """A Keras 2.2-style HDF5 model file: model_config (Sequential as a list of layers, or a
    functional chain) and model_weights/<layer>/<layer>/{kernel,bias}:0."""
    if functional:
        chain, previous = [], None
        for layer in layers:
            entry = dict(layer, name=layer["config"]["name"])
            entry["inbound_nodes"] = [[[previous, 0, 0, {}]]] if previous else []
            chain.append(entry)
            previous = entry["name"]
        config = {
            "class_name": "Model",
            "config": {
                "name": "model_1",
                "layers": chain,
                "input_layers": [[chain[0]["name"], 0, 0]],
                "output_layers": [[previous, 0, 0]],
            },
        }
    else:
        config = {"class_name": "Sequential", "config": layers}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([layer["config"]["name"].encode() for layer in layers])
        for layer in layers:
            name = layer["config"]["name"]
            g = group.create_group(name)
            arrays = weights.get(name, [])
            names = [f"{name}/{kind}:0" for kind in ("kernel", "bias")[: len(arrays)]]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, a in zip(names, arrays):
                g.create_dataset(n, data=a.astype(np.float32))


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: int, s: int, padding: str, fill: float):
    """x (H,W,C) -> padded x, output size; TensorFlow semantics."""
    h, w, _ = x.shape
    if padding == "same":
        (t, b), (l, r) = _same_pads(h, k, s), _same_pads(w, k, s)
        x = np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=fill)
    oh, ow = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return x, oh, ow


def keras_reference(x: np.ndarray, layers: list[dict], weights: dict[str, list[np.ndarray]]) -> np.ndarray:
    """What Keras (TensorFlow, channels_last) computes, written out in float64 for one image."""
    x = x.astype(np.float64)
    for layer in layers:
        cls, cfg = layer["class_name"], layer["config"]
        if cls == "Conv2D":
            kernel, bias = (a.astype(np.float64) for a in weights[cfg["name"]])
            k, s = cfg["kernel_size"][0], cfg["strides"][0]
            xp, oh, ow = _windows(x, k, s, cfg["padding"], 0.0)
            y = np.zeros((oh, ow, kernel.shape[3]))
            for i in range(oh):
                for j in range(ow):
                    patch = xp[i * s : i * s + k, j * s : j * s + k, :]
                    y[i, j] = np.tensordot(patch, kernel, axes=3) + bias
            x = y
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            k, s = cfg["pool_size"][0], cfg["strides"][0]
            ones = np.ones(x.shape[:2] + (1,))
            xp, oh, ow = _windows(x, k, s, cfg["padding"], -np.inf if cls == "MaxPooling2D" else 0.0)
            cp, _, _ = _windows(ones, k, s, cfg["padding"], 0.0)
            y = np.zeros((oh, ow, x.shape[2]))
            for i in range(oh):
                for j in range(ow):
                    patch = xp[i * s : i * s + k, j * s : j * s + k, :]
                    if cls == "MaxPooling2D":
                        y[i, j] = patch.max(axis=(0, 1))
                    else:  # padding excluded from the count
                        y[i, j] = patch.sum(axis=(0, 1)) / cp[i * s : i * s + k, j * s : j * s + k].sum()
            x = y
        elif cls == "Flatten":
            x = x.reshape(-1)  # (H, W, C) order
        elif cls == "Dense":
            kernel, bias = (a.astype(np.float64) for a in weights[cfg["name"]])
            x = x @ kernel + bias
        act = cfg.get("activation", "linear") if cls in ("Conv2D", "Dense", "Activation") else "linear"
        if act == "relu":
            x = np.maximum(x, 0)
        elif act == "sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif act == "tanh":
            x = np.tanh(x)
    return x


def _small_model(rng: np.random.RandomState):
    """Odd sizes, strides and SAME padding, so that asymmetric pads, pooling borders and the
    flatten order all matter."""
    layers = [
        _layer("InputLayer", "input_1", batch_input_shape=[None, 11, 9, 3], dtype="float32"),
        _layer("Conv2D", "conv_a", filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same",
               data_format="channels_last", dilation_rate=[1, 1], activation="relu", use_bias=True),
        _layer("Conv2D", "conv_b", filters=5, kernel_size=[2, 2], strides=[1, 1], padding="same",
               data_format="channels_last", dilation_rate=[1, 1], activation="linear", use_bias=True),
        _layer("Activation", "act_b", activation="tanh"),
        _layer("MaxPooling2D", "pool_a", pool_size=[2, 2], strides=[2, 2], padding="same", data_format="channels_last"),
        _layer("Dropout", "drop", rate=0.5),
        _layer("AveragePooling2D", "pool_b", pool_size=[2, 2], strides=[1, 1], padding="same", data_format="channels_last"),
        _layer("Conv2D", "conv_c", filters=3, kernel_size=[2, 2], strides=[1, 1], padding="valid",
               data_format="channels_last", dilation_rate=[1, 1], activation="relu", use_bias=True),
        _layer("Flatten", "flat", data_format="channels_last"),
        _layer("Dense", "dense_a", units=7, activation="relu", use_bias=True),
        _layer("Dense", "dense_b", units=1, activation="linear", use_bias=True),
        _layer("Activation", "out", activation="sigmoid"),
    ]
    weights = {
        "conv_a": [rng.normal(0, 0.5, (3, 3, 3, 4)), rng.normal(0, 0.1, 4)],
        "conv_b": [rng.normal(0, 0.5, (2, 2, 4, 5)), rng.normal(0, 0.1, 5)],
        # 11x9 -> conv_a 6x5 -> conv_b 6x5 -> pool_a 3x3 -> pool_b 3x3 -> conv_c 2x2x3 = 12
        "conv_c": [rng.normal(0, 0.5, (2, 2, 5, 3)), rng.normal(0, 0.1, 3)],
        "dense_a": [rng.normal(0, 0.5, (12, 7)), rng.normal(0, 0.1, 7)],
        "dense_b": [rng.normal(0, 0.5, (7, 1)), rng.normal(0, 0.1, 1)],
    }
    return layers, {k: [a.astype(np.float32) for a in v] for k, v in weights.items()}


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional_chain"])
def test_layers_compute_what_keras_computes(tmp_path, functional):
    rng = np.random.RandomState(3)
    layers, weights = _small_model(rng)
    h5 = tmp_path / "small.h5"
    write_keras_h5(h5, layers, weights, functional=functional)
    out = tmp_path / "small"
    keras_import.import_model(str(h5), str(out), model_id="small", golden_dir=None)

    x = rng.uniform(0, 1, (4, 11, 9, 3)).astype(np.float32)
    (p,) = _session(str(out)).run(["output"], {"input": x})
    expected = np.array([keras_reference(xi, layers, weights) for xi in x])
    assert p.shape == (4, 1)
    np.testing.assert_allclose(p, expected, atol=1e-5)
    # Not a constant: the inputs lead to different outputs.
    assert np.ptp(expected) > 1e-3


def test_a_wrong_flatten_order_would_be_caught(tmp_path):
    """The reference is sensitive to the (H, W, C) flatten order, so the test above checks it."""
    rng = np.random.RandomState(3)
    layers, weights = _small_model(rng)
    x = rng.uniform(0, 1, (11, 9, 3)).astype(np.float32)
    right = keras_reference(x, layers, weights)
    head = keras_reference(x, layers[:8], weights)  # (2, 2, 3), before Flatten
    flat_chw = head.transpose(2, 0, 1).reshape(-1)
    wrong = keras_reference(flat_chw, layers[9:], weights)
    assert abs(float(right[0]) - float(wrong[0])) > 1e-4


def test_unsupported_layer_is_refused_by_name(tmp_path, capsys):
    layers = [
        _layer("InputLayer", "input_1", batch_input_shape=[None, 8, 8, 3], dtype="float32"),
        _layer("Conv2D", "conv2d_1", filters=2, kernel_size=[3, 3], strides=[1, 1], padding="valid",
               data_format="channels_last", dilation_rate=[1, 1], activation="relu", use_bias=True),
        _layer("BatchNormalization", "batch_normalization_1", axis=-1, momentum=0.99, epsilon=0.001),
        _layer("Flatten", "flatten_1", data_format="channels_last"),
        _layer("Dense", "dense_1", units=1, activation="sigmoid", use_bias=True),
    ]
    weights = {
        "conv2d_1": [np.zeros((3, 3, 3, 2), np.float32), np.zeros(2, np.float32)],
        "batch_normalization_1": [np.ones(2, np.float32), np.zeros(2, np.float32)],
        "dense_1": [np.zeros((72, 1), np.float32), np.zeros(1, np.float32)],
    }
    h5 = tmp_path / "bn.h5"
    write_keras_h5(h5, layers, weights)
    out = tmp_path / "bn"

    with pytest.raises(keras_import.KerasImportError, match=r"batch_normalization_1 \(BatchNormalization\)"):
        keras_import.import_model(str(h5), str(out), golden_dir=None)

    assert keras_import.main(["--h5", str(h5), "--out", str(out), "--no-golden-check"]) == 1
    err = capsys.readouterr().err
    assert "unsupported layer type(s): batch_normalization_1 (BatchNormalization)" in err, err
    assert not out.exists(), "a refused import must leave no folder behind"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ls: ls[1]["config"].update(activation="elu"), "activation 'elu' is not supported"),
        (lambda ls: ls[1]["config"].update(padding="causal"), "padding 'causal' is not supported"),
        (lambda ls: ls[1]["config"].update(data_format="channels_first"), "data_format 'channels_first'"),
        (lambda ls: ls[-1]["config"].update(activation="linear"), "not a sigmoid"),
    ],
    ids=["activation", "padding", "channels_first", "no_sigmoid"],
)
def test_unsupported_options_are_refused(tmp_path, change, message):
    layers, weights = _small_model(np.random.RandomState(1))
    change(layers)
    h5 = tmp_path / "m.h5"
    write_keras_h5(h5, layers, weights)
    with pytest.raises(keras_import.KerasImportError, match=message):
        keras_import.import_model(str(h5), str(tmp_path / "m"), golden_dir=None)


def test_branching_functional_model_is_refused(tmp_path):
    layers, weights = _small_model(np.random.RandomState(1))
    h5 = tmp_path / "m.h5"
    write_keras_h5(h5, layers, weights, functional=True)
    with h5py.File(h5, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        # conv_b also reads the input: not a chain any more.
        config["config"]["layers"][2]["inbound_nodes"] = [[["conv_a", 0, 0, {}], ["input_1", 0, 0, {}]]]
        f.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(keras_import.KerasImportError, match="single chain"):
        keras_import.import_model(str(h5), str(tmp_path / "m"), golden_dir=None)


def test_a_wrong_golden_expectation_fails_the_import(tmp_path):
    golden = tmp_path / "golden"
    golden.mkdir()
    rng = np.random.RandomState(5)
    layers, weights = _small_model(rng)
    h5 = tmp_path / "small.h5"
    write_keras_h5(h5, layers, weights)
    x = rng.uniform(0, 1, (11, 9, 3)).astype(np.float32)
    np.save(golden / "cell.input_nhwc_f32.npy", x)
    p = float(keras_reference(x, layers, weights)[0])
    (golden / "expected_prob_uninfected.json").write_text(json.dumps({"cell.png": p}))
    out = tmp_path / "small"
    assert keras_import.main(["--h5", str(h5), "--out", str(out), "--id", "small", "--golden", str(golden)]) == 0

    (golden / "expected_prob_uninfected.json").write_text(json.dumps({"cell.png": p + 1e-3}))
    out2 = tmp_path / "small2"
    with pytest.raises(keras_import.KerasImportError, match="does not reproduce the Keras probabilities"):
        keras_import.import_model(str(h5), str(out2), model_id="small", golden_dir=str(golden))
    assert not out2.exists()
