"""The shipped ONNX graph: the calibrated logits and the class activation map of one network or
the average of several (cross-validation fold models), its check against PyTorch, and its speed.

The graph has one input `input` [batch, C, H, W] and two outputs (models/README.md, issue 10):
- `output` [batch, classes]: the mean over members of logits_i / T_i (temperature scaling, each
  member with its own temperature);
- `cam` [batch, h, w]: the mean over members of (sum_k v[k] F_i[k]) / T_i, where F_i is member
  i's last feature map (before global average pooling) and v = sum_c a[c] W_i[c] its classifier
  weights combined by the finding's class weights `a`: binary: +1 for the finding and -1 for the
  other class, so that mean(cam) plus the bias difference is the finding-vs-other logit
  difference; ordinal: the mean over referable grades minus the mean over the other grades.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

OPSET = 17


def cam_class_weights(labels: list[str], finding: str, task: str, referable_from: int) -> list[float]:
    """The weights `a` over classes that turn classifier rows into the map's channel weights."""
    if task == "ordinal":
        n = len(labels)
        ref = n - referable_from
        return [-1 / referable_from if c < referable_from else 1 / ref for c in range(n)]
    if len(labels) != 2:
        raise ValueError("a binary map needs exactly two labels")
    return [1.0 if label == finding else -1.0 for label in labels]


class CalibratedEnsemble(nn.Module):
    """Members' calibrated logits and class activation maps, averaged (see the module text)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float],
                 class_weights: list[float]):
        super().__init__()
        if len(members) != len(temperatures) or not members:
            raise ValueError("one temperature per member, at least one member")
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps = [], []
        for member, t in zip(self.members, self.temperatures):
            features = member.feature_map(x)
            head = member.classifier
            logits.append(head(features.mean(dim=(2, 3))) / t)
            channel = (self.class_weights[:, None] * head.weight).sum(dim=0)
            maps.append((features * channel[None, :, None, None]).sum(dim=1) / t)
        if len(logits) == 1:
            return logits[0], maps[0]
        return torch.stack(logits).mean(dim=0), torch.stack(maps).mean(dim=0)


def run_torch(model: nn.Module, x: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated logits, maps) of `model` (an ensemble) on the CPU, float32."""
    model = model.cpu().eval()
    logits, maps = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z, m = model(torch.from_numpy(x[i:i + batch]))
            logits.append(z.numpy())
            maps.append(m.numpy())
    return np.concatenate(logits), np.concatenate(maps)


def round_weights_to_half(net: nn.Module) -> None:
    """Rounds every float parameter and buffer to the nearest float16 value (kept as float32),
    so that the graph can store them as float16 without changing a single computation."""
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())


def store_initializers_as_half(path: str, min_size: int = 1024) -> int:
    """Rewrites the ONNX file's float32 initializers that are exactly float16 values (at least
    `min_size` elements) as float16 + a Cast to float32: the same numbers in half the bytes.
    Returns how many were converted."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    casts, kept, converted = [], [], 0
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if (array.dtype == np.float32 and array.size >= min_size
                and np.array_equal(array.astype(np.float16).astype(np.float32), array)):
            half = numpy_helper.from_array(array.astype(np.float16), init.name + "_fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name],
                                          to=onnx.TensorProto.FLOAT, name=f"cast_{init.name}"))
            converted += 1
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return converted


def export(model: CalibratedEnsemble, example: np.ndarray, path: str,
           keep_batch_norm: bool = False) -> None:
    """ONNX opset 17, input `input`, outputs `output` and `cam`, dynamic batch axis.
    `keep_batch_norm`: keep BatchNormalization nodes (the model is in eval mode either way)
    instead of folding them into the convolutions, so that float16-exact weights stay exact."""
    model = model.cpu().eval()
    torch.onnx.export(
        model, (torch.from_numpy(example[:1]),), path, input_names=["input"],
        output_names=["output", "cam"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}, "cam": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE if keep_batch_norm else torch.onnx.TrainingMode.EVAL,
    )


def session(path: str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path: str, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    s = session(path)
    logits, maps = [], []
    for i in range(0, len(x), batch):
        z, m = s.run(["output", "cam"], {"input": x[i:i + batch]})
        logits.append(z)
        maps.append(m)
    return np.concatenate(logits), np.concatenate(maps)


def check(model: CalibratedEnsemble, x: np.ndarray, path: str, limit: float = 1e-4) -> dict:
    """ONNX Runtime against PyTorch on `x`: max |p| difference of the softmax probabilities and
    the max |cam| difference relative to max |cam|; raises above `limit`."""
    from .metrics import softmax

    z_onnx, m_onnx = run_onnx(path, x)
    z_torch, m_torch = run_torch(model, x)
    probs = float(np.abs(softmax(z_onnx) - softmax(z_torch)).max())
    scale = max(float(np.abs(m_torch).max()), 1e-12)
    cam = float(np.abs(m_onnx - m_torch).max()) / scale
    if probs > limit or cam > limit:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch: probabilities {probs:.2e}, "
                           f"map {cam:.2e} relative (limit {limit:.0e})")
    return {"probabilities": probs, "cam_relative": cam}


def images_per_second(path: str, x: np.ndarray, threads: int = 2, batch: int = 16,
                      seconds: float = 3.0) -> float:
    """ONNX Runtime throughput on this machine: `threads` threads, batches of `batch`."""
    s = session(path, threads)
    reps = int(np.ceil(batch / len(x)))
    xb = np.concatenate([x] * reps)[:batch]
    s.run(["output", "cam"], {"input": xb})  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2 * batch:
        s.run(["output", "cam"], {"input": xb})
        done += batch
    return done / (time.perf_counter() - started)


def size_mb(path: str) -> float:
    return os.path.getsize(path) / 1e6
