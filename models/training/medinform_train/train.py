"""Train a screening model and write its registry folder (manifest.toml, model.onnx, CARD.md).

    python -m medinform_train.train malaria --data ../shared/datasets/malaria --out models/malaria
    python -m medinform_train.train all --data-root ../shared/datasets --models-dir models

Run from `models/training`, or from the repository root with `PYTHONPATH=models/training`.
Without `--data`/`--data-root` the data sets are read from `shared/datasets` next to the
repository; without `--out`/`--models-dir` the folders are written into the repository's
`models/`. Steps, for each model:
1. read the dataset (`data.py`) and split it by `source_id` into train/val/test (70/15/15,
   stratified, fixed seed), so that no patient is on two sides;
2. preprocess every image with `preprocess.py` from the manifest that will ship, i.e. exactly
   the tensors the worker will feed the network;
3. train (AdamW, cosine schedule, augmentation on the training tensors, class-balanced loss),
   keeping the epoch with the best validation ROC AUC;
4. choose the decision threshold on the validation split (`metrics.choose_threshold`);
5. measure the held-out test split once, with that threshold;
6. export ONNX (dynamic batch axis), check that ONNX Runtime reproduces PyTorch on the test
   tensors, and write manifest.toml (with [metrics]) and CARD.md.

CPU by default, CUDA when present; seeds are fixed. Per-model settings are in `specs.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from . import cards, nets
from .data import Sample, grouped_split, load_samples
from .metrics import binary_metrics, choose_threshold, ordinal_metrics
from .preprocess import preprocess_image
from .specs import SPECS, ModelSpec, manifest_for

SEED = 7
# Defaults that do not depend on the working folder: the registry this package lives in, and the
# shared data sets next to the repository.
REGISTRY = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA_ROOT = os.path.abspath(os.path.join(REGISTRY, "..", "..", "shared", "datasets"))


def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tensors(samples: list[Sample], manifest: dict) -> np.ndarray:
    """The network inputs of `samples`, as the worker computes them (float32, N x C x H x W)."""
    out = []
    for s in samples:
        source = s.pixels if s.pixels is not None else s.path
        out.append(preprocess_image(source, manifest))
    return np.stack(out).astype(np.float32)


def augment(x: torch.Tensor, spec: ModelSpec, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving changes on a batch of normalised tensors."""
    n = x.shape[0]
    if spec.flips:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if spec.flips == "both":
            flip = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
            if x.shape[2] == x.shape[3]:
                turn = torch.rand(n, generator=generator) < 0.5
                x = torch.where(turn[:, None, None, None], x.transpose(2, 3), x)
    if spec.shift:
        # A random translation of up to `shift` of the side, with edge padding.
        h, w = x.shape[2], x.shape[3]
        pad = max(1, int(round(spec.shift * max(h, w))))
        padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if spec.rotate or spec.zoom:
        # A random small rotation and zoom about the centre, with edge padding.
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(spec.rotate)
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * spec.zoom
        cos, sin, zero = torch.cos(angle) / scale, torch.sin(angle) / scale, torch.zeros(n)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                      align_corners=False)
    if spec.intensity:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * spec.intensity
        bias = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * spec.intensity
        x = x * gain + bias
    return x


def probabilities(net: nn.Module, x: np.ndarray, device: str, batch: int = 128) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = net(torch.from_numpy(x[i:i + batch]).to(device))
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def score(spec: ModelSpec, probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    if spec.task == "ordinal":
        return ordinal_metrics(probs, y, spec.referable_from, threshold)
    return binary_metrics(probs[:, 1], y == 1, threshold)


def selection_score(spec: ModelSpec, probs: np.ndarray, y: np.ndarray) -> float:
    """What picks the best epoch on validation: ROC AUC (binary), kappa (ordinal)."""
    m = score(spec, probs, y, 0.5)
    value = m["quadratic_weighted_kappa"] if spec.task == "ordinal" else m["roc_auc"]
    return -1.0 if math.isnan(value) else value


def fit(spec: ModelSpec, x_train, y_train, x_val, y_val, device: str, log) -> tuple[nn.Module, dict]:
    channels = x_train.shape[1]
    net = nets.build(spec.arch, len(spec.labels), spec.size, channels, spec.pretrained,
                     **spec.arch_args).to(device)
    if spec.freeze_blocks and hasattr(net, "freeze_stem"):
        net.freeze_stem(spec.freeze_blocks)
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    steps = spec.epochs * math.ceil(len(x_train) / spec.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=spec.lr, total_steps=steps,
                                                   pct_start=0.15)
    counts = np.bincount(y_train, minlength=len(spec.labels)).astype(np.float64)
    weights = torch.tensor(len(y_train) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=0.05)
    generator = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.int64))

    best = (-2.0, None, 0)
    for epoch in range(1, spec.epochs + 1):
        net.train()
        started = time.time()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for i in range(0, len(order), spec.batch):
            idx = order[i:i + spec.batch]
            if len(idx) < 2:
                continue
            xb = augment(xt[idx], spec, generator).to(device)
            loss = loss_fn(net(xb), yt[idx].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        val = selection_score(spec, probabilities(net, x_val, device), y_val)
        log(f"epoch {epoch}/{spec.epochs}: loss {total / len(xt):.4f}, validation "
            f"{'kappa' if spec.task == 'ordinal' else 'AUC'} {val:.4f} ({time.time() - started:.0f}s)")
        if val > best[0]:
            best = (val, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch)
    net.load_state_dict(best[1])
    return net, {"best_epoch": best[2], "validation_selection_score": best[0]}


def export_onnx(net: nn.Module, example: np.ndarray, path: str) -> None:
    """ONNX with a dynamic batch axis; input `input`, output `output` (logits)."""
    net = net.cpu().eval()
    torch.onnx.export(
        net, (torch.from_numpy(example[:1]),), path, input_names=["input"],
        output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17, dynamo=False,
    )


def check_onnx(net: nn.Module, x: np.ndarray, path: str) -> float:
    """Max |p_torch - p_onnxruntime| over `x` (softmax probabilities); raises above 1e-4."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[i:i + 64]})[0]
                             for i in range(0, len(x), 64)])
    onnx_probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    onnx_probs /= onnx_probs.sum(axis=1, keepdims=True)
    torch_probs = probabilities(net.cpu(), x, "cpu")
    diff = float(np.abs(onnx_probs - torch_probs).max())
    if diff > 1e-4:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.2e} (limit 1e-4)")
    return diff


def software_versions() -> str:
    """The library versions that produced and checked the weights, for the model card."""
    import onnx
    import onnxruntime

    return (f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")


def train(spec: ModelSpec, data: str, out: str, samples: list[Sample] | None = None,
          epochs: int | None = None) -> dict:
    """Trains one model into the folder `out` and returns what was measured."""
    log = lambda msg: print(f"[{spec.id}] {msg}", flush=True)  # noqa: E731
    set_seed(SEED)
    torch.set_num_threads(int(os.environ.get("MEDINFORM_TRAIN_THREADS", "2")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if epochs:
        spec = spec.with_epochs(epochs)
    started = time.time()
    samples = samples if samples is not None else spec.load(data)
    split = grouped_split(samples, seed=SEED)
    manifest = manifest_for(spec)
    index = {label: i for i, label in enumerate(spec.labels)}
    arrays = {}
    for name, part in split.items():
        unknown = {s.label for s in part} - set(index)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in {spec.labels}")
        arrays[name] = (tensors(part, manifest), np.array([index[s.label] for s in part]))
        log(f"{name}: {len(part)} images, {len({s.source_id for s in part})} sources, "
            f"per class {np.bincount(arrays[name][1], minlength=len(spec.labels)).tolist()}")
    log(f"preprocessed in {time.time() - started:.0f}s on {device}")

    net, fitted = fit(spec, *arrays["train"], *arrays["val"], device, log)
    val_probs = probabilities(net, arrays["val"][0], device)
    if spec.task == "ordinal":
        p_val = val_probs[:, spec.referable_from:].sum(axis=1)
        threshold = choose_threshold(p_val, arrays["val"][1] >= spec.referable_from)
    else:
        threshold = choose_threshold(val_probs[:, 1], arrays["val"][1] == 1)
    test_probs = probabilities(net, arrays["test"][0], device)
    measured = score(spec, test_probs, arrays["test"][1], threshold)
    by_stratum = {}
    for group in sorted({spec.breakdown(s) for s in split["test"]} - {""}):
        keep = np.array([spec.breakdown(s) == group for s in split["test"]])
        by_stratum[group] = score(spec, test_probs[keep], arrays["test"][1][keep], threshold)
    log("test: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                for k, v in measured.items()}))

    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    export_onnx(net, arrays["test"][0], onnx_path)
    parity = check_onnx(net, arrays["test"][0], onnx_path)
    size_mb = os.path.getsize(onnx_path) / 1e6
    log(f"ONNX {size_mb:.1f} MB, max |p_torch - p_onnxruntime| = {parity:.1e}")
    report = {
        "threshold": threshold,
        "test": measured,
        "test_by_stratum": by_stratum,
        "split": {name: {"images": len(part), "sources": len({s.source_id for s in part})}
                  for name, part in split.items()},
        "parameters": nets.count_parameters(net),
        "onnx_mb": round(size_mb, 2),
        "onnx_parity": parity,
        "seconds": round(time.time() - started),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "software": software_versions(),
        "machine": f"{os.cpu_count()}-core CPU" if device == "cpu" else torch.cuda.get_device_name(),
        **fitted,
    }
    cards.write(spec, out, report, data)
    # Written into the registry: its README's model table follows.
    cards.update_readme(os.path.dirname(os.path.abspath(out)))
    log(f"done in {report['seconds']}s: {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=[*SPECS, "all"])
    parser.add_argument("--data", help="the dataset folder (one model)")
    parser.add_argument("--out", help="the model folder to write (one model)")
    parser.add_argument("--data-root", default=DATA_ROOT,
                        help="the folder of dataset folders (all)")
    parser.add_argument("--models-dir", default=REGISTRY,
                        help="the registry folder (all; default: the repository's models/)")
    parser.add_argument("--epochs", type=int, help="override the spec's epochs")
    args = parser.parse_args(argv)
    if args.model == "all":
        results = {}
        for model_id, spec in SPECS.items():
            if not spec.dataset:
                cards.write_untrained(spec, os.path.join(args.models_dir, model_id))
                print(f"[{model_id}] no dataset: manifest and card only (unavailable)", flush=True)
                continue
            results[model_id] = train(spec, os.path.join(args.data_root, spec.dataset),
                                      os.path.join(args.models_dir, model_id), epochs=args.epochs)
        print(json.dumps({k: v["test"] for k, v in results.items()}, indent=1))
        return 0
    spec = SPECS[args.model]
    if not spec.dataset and not args.data:
        cards.write_untrained(spec, args.out or os.path.join(args.models_dir, args.model))
        return 0
    data = args.data or os.path.join(args.data_root, spec.dataset or args.model)
    train(spec, data, args.out or os.path.join(args.models_dir, args.model), epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
