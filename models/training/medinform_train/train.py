"""Train a screening model and write its registry folder (manifest.toml, model.onnx, CARD.md).

    python -m medinform_train.train malaria --data ../shared/datasets/malaria --out models/malaria
    python -m medinform_train.train all --data-root ../shared/datasets --models-dir models

Run from `models/training`, or from the repository root with `PYTHONPATH=models/training`.
Without `--data`/`--data-root` the data sets are read from `shared/datasets` next to the
repository; without `--out`/`--models-dir` the folders are written into the repository's
`models/`. Steps, for each model (issue 10):
1. read the dataset (`data.py`) and split it by `source_id` into train/val/test (70/15/15,
   stratified, fixed seed; RetinaMNIST: its official train split -> train/val, its official val
   split -> the held-out test), so that no patient is on two sides;
2. preprocess every image with `preprocess.py` from the manifest that will ship, i.e. exactly
   the tensors the worker will feed the network;
3. train (AdamW, one-cycle schedule, modality-fitting augmentation). With `folds` > 1: grouped
   k-fold cross-validation over train+val, each fold model trained for the full schedule and
   scored on its held-out fold (out-of-fold predictions); else one fit, keeping the epoch with
   the best validation score;
4. calibrate: one temperature per network, fitted (NLL) on its out-of-fold/validation logits;
5. choose the decision threshold on the calibrated out-of-fold/validation probabilities
   (`metrics.choose_threshold`: lower 95% bootstrap bound of sensitivity meets the target);
6. measure the held-out test split once, with that threshold, with bootstrap 95% intervals;
7. export ONE ONNX graph (`export.py`: mean of the members' calibrated logits, and the class
   activation map `cam`), check that ONNX Runtime reproduces PyTorch (probabilities and maps),
   measure its speed, draw the figures (`figures.py`), and write manifest.toml (stage, minimum,
   metrics, figures) and CARD.md. The folder is assembled elsewhere and copied in at the end,
   so an interrupted run leaves the previous folder as it was.

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

from . import cards, export, figures, nets
from .data import Sample, grouped_folds, grouped_split
from .metrics import (binary_metrics, bootstrap_intervals, choose_threshold,
                      expected_calibration_error, fit_temperature, ordinal_metrics, softmax)
from .preprocess import preprocess_image
from .specs import SPECS, TRAINING_ORDER, ModelSpec, stage_for

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
    if spec.shift and not (spec.rotate or spec.zoom):
        # A random translation of up to `shift` of the side, with edge padding.
        h, w = x.shape[2], x.shape[3]
        pad = max(1, int(round(spec.shift * max(h, w))))
        padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if spec.rotate or spec.zoom:
        # A random rotation, zoom and shift (up to `shift` of the side) in one affine resampling,
        # with edge padding.
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(spec.rotate)
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * spec.zoom
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        tx, ty = [(torch.rand(n, generator=generator) * 2 - 1) * 2 * spec.shift for _ in range(2)]
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                      align_corners=False)
    if spec.contrast or spec.gamma:
        # On the [0, 1] pixel scale: contrast about each image's mean, then a gamma curve.
        pixels = (x * spec.std + spec.mean).clamp(0, 1)
        if spec.contrast:
            c = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * spec.contrast
            centre = pixels.mean(dim=(1, 2, 3), keepdim=True)
            pixels = ((pixels - centre) * c + centre).clamp(0, 1)
        if spec.gamma:
            g = torch.exp((torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1)
                          * math.log1p(spec.gamma))
            pixels = pixels.clamp_min(1e-6) ** g
        x = (pixels - spec.mean) / spec.std
    if spec.intensity:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * spec.intensity
        bias = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * spec.intensity
        x = x * gain + bias
    return x




def split_samples(spec: ModelSpec, samples: list[Sample]) -> dict[str, list[Sample]]:
    """train/val/test. "official": the dataset's `split` column; its `val` is the held-out test
    (never tuned on) and 15% of its `train` (by source) the internal validation."""
    if spec.split_scheme == "official":
        train_part = [s for s in samples if s.extra.get("split") == "train"]
        test_part = [s for s in samples if s.extra.get("split") == "val"]
        if not train_part or not test_part:
            raise ValueError("an official split needs a `split` column with train and val rows")
        inner = grouped_split(train_part, seed=SEED, fractions=(0.85, 0.15, 0.0))
        return {"train": inner["train"], "val": inner["val"], "test": test_part}
    return grouped_split(samples, seed=SEED)


def logits_of(net: nn.Module, x: np.ndarray, device: str, batch: int = 128) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(torch.from_numpy(x[i:i + batch]).to(device)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def p_finding(spec: ModelSpec, probs: np.ndarray) -> np.ndarray:
    """p(finding): the finding's probability (binary), the referable grades' sum (ordinal)."""
    if spec.task == "ordinal":
        return probs[:, spec.referable_from:].sum(axis=1)
    return probs[:, spec.finding_index]


def has_finding(spec: ModelSpec, y: np.ndarray) -> np.ndarray:
    return y >= spec.referable_from if spec.task == "ordinal" else y == spec.finding_index


def score(spec: ModelSpec, probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    if spec.task == "ordinal":
        return ordinal_metrics(probs, y, spec.referable_from, threshold)
    return binary_metrics(p_finding(spec, probs), has_finding(spec, y), threshold)


def selection_score(spec: ModelSpec, probs: np.ndarray, y: np.ndarray) -> float:
    """What picks the best epoch on validation: ROC AUC (binary), kappa (ordinal)."""
    m = score(spec, probs, y, 0.5)
    value = m["quadratic_weighted_kappa"] if spec.task == "ordinal" else m["roc_auc"]
    return -1.0 if math.isnan(value) else value


def fit(spec: ModelSpec, x_train, y_train, x_val, y_val, device: str, log,
        select: bool = True) -> tuple[nn.Module, dict]:
    """Trains one network. `select`: keep the epoch with the best score on (x_val, y_val);
    else keep the last epoch (cross-validation folds, whose held-out part must stay unseen)."""
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
    weights = None
    if spec.task != "ordinal":
        # Class-balanced for the binary findings; the five grades keep their prevalence (the
        # grade accuracy MedMNIST reports is unweighted).
        counts = np.bincount(y_train, minlength=len(spec.labels)).astype(np.float64)
        weights = torch.tensor(len(y_train) / (len(counts) * np.maximum(counts, 1)),
                               dtype=torch.float32).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.05)
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
        val = selection_score(spec, softmax(logits_of(net, x_val, device)), y_val)
        log(f"epoch {epoch}/{spec.epochs}: loss {total / len(xt):.4f}, "
            f"{'validation' if select else 'held-out fold'} "
            f"{'kappa' if spec.task == 'ordinal' else 'AUC'} {val:.4f} ({time.time() - started:.0f}s)")
        if val > best[0] or not select:
            best = (val, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch)
    net.load_state_dict(best[1])
    return net.cpu().eval(), {"best_epoch": best[2], "selection_score": best[0]}


def software_versions() -> str:
    """The library versions that produced and checked the weights, for the model card."""
    import onnx
    import onnxruntime

    return (f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")


def fit_members(spec: ModelSpec, arrays: dict, split: dict, device: str, log) -> dict:
    """The networks, their temperatures, and the held-out (out-of-fold or validation) calibrated
    probabilities and labels that choose the threshold."""
    if spec.folds > 1:
        pool = split["train"] + split["val"]
        x = np.concatenate([arrays["train"][0], arrays["val"][0]])
        y = np.concatenate([arrays["train"][1], arrays["val"][1]])
        fold_of = grouped_folds(pool, spec.folds, seed=SEED)
        members, temperatures, fitted = [], [], []
        raw = np.zeros((len(y), len(spec.labels)))
        calibrated = np.zeros_like(raw)
        for k in range(spec.folds):
            held = fold_of == k
            log(f"fold {k + 1}/{spec.folds}: train {int((~held).sum())}, held out {int(held.sum())}")
            net, info = fit(spec, x[~held], y[~held], x[held], y[held], device, log, select=False)
            z = logits_of(net, x[held], "cpu")
            t = fit_temperature(z, y[held])
            raw[held], calibrated[held] = softmax(z), softmax(z / t)
            members.append(net)
            temperatures.append(t)
            fitted.append(info)
        return {"members": members, "temperatures": temperatures, "heldout_y": y,
                "heldout_raw": raw, "heldout_probs": calibrated, "fitted": fitted,
                "heldout_name": f"out-of-fold ({spec.folds}-fold grouped CV over train+validation)",
                "folds": [int((fold_of == k).sum()) for k in range(spec.folds)]}
    net, info = fit(spec, *arrays["train"], *arrays["val"], device, log)
    z = logits_of(net, arrays["val"][0], "cpu")
    t = fit_temperature(z, arrays["val"][1])
    return {"members": [net], "temperatures": [t], "heldout_y": arrays["val"][1],
            "heldout_raw": softmax(z), "heldout_probs": softmax(z / t), "fitted": [info],
            "heldout_name": "validation split", "folds": []}


def train(spec: ModelSpec, data: str, out: str, samples: list[Sample] | None = None,
          epochs: int | None = None, benchmark_seconds: float = 3.0) -> dict:
    """Trains one model into the folder `out` and returns what was measured."""
    log = lambda msg: print(f"[{spec.id}] {msg}", flush=True)  # noqa: E731
    set_seed(SEED)
    torch.set_num_threads(int(os.environ.get("MEDINFORM_TRAIN_THREADS", "2")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if epochs:
        spec = spec.with_epochs(epochs)
    started = time.time()
    samples = samples if samples is not None else spec.load(data)
    split = split_samples(spec, samples)
    from .specs import manifest_for

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

    fitted = fit_members(spec, arrays, split, device, log)
    members, temperatures = fitted["members"], fitted["temperatures"]
    half = len(members) > 1 and spec.arch == "efficientnet_lite0"
    if half:
        # Several EfficientNets would pass the 20 MB a model folder may hold: their weights are
        # rounded to float16 values (before anything is measured) and stored as float16.
        for net in members:
            export.round_weights_to_half(net)
    weights = export.cam_class_weights(spec.labels, spec.finding, spec.task, spec.referable_from)
    model = export.CalibratedEnsemble(members, temperatures, weights)
    y_held = fitted["heldout_y"]
    threshold, rule = choose_threshold(p_finding(spec, fitted["heldout_probs"]),
                                       has_finding(spec, y_held), spec.operating_rule,
                                       spec.target_sensitivity)
    log(f"threshold {threshold}: {rule}; temperatures {[round(t, 3) for t in temperatures]}")

    x_test = arrays["test"][0]
    z_test, _ = export.run_torch(model, x_test)
    # "Before calibration": the same members with T = 1.
    uncalibrated = softmax(np.mean([logits_of(m, x_test, "cpu") for m in members], axis=0))

    def write_onnx(onnx_path: str) -> dict:
        export.export(model, x_test, onnx_path, keep_batch_norm=half)
        if half:
            export.store_initializers_as_half(onnx_path)
        parity = export.check(model, x_test, onnx_path)
        speed = {"ensemble": export.images_per_second(onnx_path, x_test,
                                                      seconds=benchmark_seconds)}
        if len(members) > 1:
            single = onnx_path + ".single"
            export.export(export.CalibratedEnsemble(members[:1], temperatures[:1], weights),
                          x_test, single)
            speed["single"] = export.images_per_second(single, x_test, seconds=benchmark_seconds)
            os.remove(single)
        return {"onnx_parity": parity, "images_per_second": speed}

    extra = {
        "members": len(members),
        "half_weights": half,
        "parameters": nets.count_parameters(members[0]),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{os.cpu_count()}-core CPU" if device == "cpu" else torch.cuda.get_device_name(),
        "best_epochs": [f["best_epoch"] for f in fitted["fitted"]],
        "epochs": spec.epochs,
    }
    return finish(spec, data, out, split, arrays, fitted, threshold, rule, softmax(z_test),
                  uncalibrated, write_onnx, extra, log, started)


def finish(spec: ModelSpec, data: str, out: str, split: dict, arrays: dict, fitted: dict,
           threshold: float, rule: str, probs: np.ndarray, uncalibrated: np.ndarray,
           write_onnx, extra: dict, log, started: float) -> dict:
    """Measures the held-out test split once (calibrated `probs`, and `uncalibrated` for the
    calibration figures), writes the ONNX file (`write_onnx(path)` returns its parity and speed),
    the figures, manifest.toml and CARD.md into a staging folder, then replaces `out`'s files."""
    import shutil
    import tempfile

    y_test = arrays["test"][1]
    y_held = fitted["heldout_y"]
    temperatures = fitted["temperatures"]
    positive = has_finding(spec, y_test)
    measured = score(spec, probs, y_test, threshold)
    measured.update(bootstrap_intervals(p_finding(spec, probs), positive, threshold))
    if spec.task == "ordinal":
        measured["accuracy_ci"] = bootstrap_grade_accuracy(probs, y_test)
    calibration = {
        "ece_before": expected_calibration_error(p_finding(spec, uncalibrated), positive),
        "ece_after": expected_calibration_error(p_finding(spec, probs), positive),
        "heldout_ece_before": expected_calibration_error(p_finding(spec, fitted["heldout_raw"]),
                                                         has_finding(spec, y_held)),
        "heldout_ece_after": expected_calibration_error(p_finding(spec, fitted["heldout_probs"]),
                                                        has_finding(spec, y_held)),
    }
    heldout = score(spec, fitted["heldout_probs"], y_held, threshold)
    by_stratum = {}
    for group in sorted({spec.breakdown(s) for s in split["test"]} - {""}):
        keep = np.array([spec.breakdown(s) == group for s in split["test"]])
        by_stratum[group] = score(spec, probs[keep], y_test[keep], threshold)
    log("test: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                for k, v in measured.items()}))

    staging = tempfile.mkdtemp(prefix=f"medinform-{spec.id}-")
    onnx_path = os.path.join(staging, "model.onnx")
    written = write_onnx(onnx_path)
    size_mb = export.size_mb(onnx_path)
    log(f"ONNX {size_mb:.1f} MB, parity {written['onnx_parity']}, "
        f"images/s {written['images_per_second']}")

    pf = p_finding(spec, probs)
    t_text = (f"{temperatures[0]:.2f}" if len(temperatures) == 1
              else "/".join(f"{t:.2f}" for t in temperatures))
    figures.roc(os.path.join(staging, "figures", "roc.png"), pf, positive,
                {**measured, "threshold": threshold}, spec.finding if spec.task != "ordinal"
                else "referable")
    figures.reliability(os.path.join(staging, "figures", "reliability.png"),
                        p_finding(spec, uncalibrated), pf, positive, calibration["ece_before"],
                        calibration["ece_after"], t_text,
                        spec.finding if spec.task != "ordinal" else "referable")
    if spec.task == "ordinal":
        figures.confusion(os.path.join(staging, "figures", "confusion.png"),
                          measured["confusion"], spec.labels, "grades, held-out (official val)")
    else:
        predicted = pf >= threshold
        matrix = [[int(np.sum(~positive & ~predicted)), int(np.sum(~positive & predicted))],
                  [int(np.sum(positive & ~predicted)), int(np.sum(positive & predicted))]]
        other = [label for label in spec.labels if label != spec.finding][0]
        figures.confusion(os.path.join(staging, "figures", "confusion.png"), matrix,
                          [other, spec.finding], f"held-out test, threshold {threshold:.4g}")

    report = {
        "threshold": threshold,
        "threshold_rule": rule,
        "test": measured,
        "heldout": heldout,
        "heldout_name": fitted["heldout_name"],
        "test_by_stratum": by_stratum,
        "calibration": calibration,
        "temperatures": temperatures,
        "folds": fitted["folds"],
        "split": {name: {"images": len(part), "sources": len({s.source_id for s in part})}
                  for name, part in split.items()},
        "onnx_mb": round(size_mb, 2),
        "seconds": round(time.time() - started),
        "software": software_versions(),
        **written,
        **extra,
    }
    report["stage"], report["stage_reasons"] = stage_for(spec, cards.manifest_metrics(spec, report))
    cards.write(spec, staging, report, data)
    reports = os.environ.get("MEDINFORM_REPORT_DIR")
    if reports:
        # Everything measured, as JSON, for the record (outside the registry).
        os.makedirs(reports, exist_ok=True)
        with open(os.path.join(reports, f"{spec.id}.json"), "w") as f:
            json.dump(report, f, indent=1, default=float)
    # The folder is complete: it replaces the previous one's files.
    os.makedirs(out, exist_ok=True)
    for name in ("model.onnx", "manifest.toml", "CARD.md"):
        target = os.path.join(out, name)
        if os.path.exists(target):
            os.remove(target)
    shutil.rmtree(os.path.join(out, "figures"), ignore_errors=True)
    shutil.copytree(os.path.join(staging, "figures"), os.path.join(out, "figures"))
    for name in ("model.onnx", "CARD.md", "manifest.toml"):
        shutil.copy(os.path.join(staging, name), os.path.join(out, name))
    shutil.rmtree(staging, ignore_errors=True)
    # Written into the registry: its README's model table follows.
    cards.update_readme(os.path.dirname(os.path.abspath(out)))
    log(f"done in {report['seconds']}s ({report['stage']}): {out}")
    return report




def bootstrap_grade_accuracy(probs: np.ndarray, y: np.ndarray, resamples: int = 1000) -> list:
    """95% percentile-bootstrap interval of the five-grade accuracy."""
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    rng = np.random.default_rng(SEED)
    values = [correct[rng.integers(0, len(y), len(y))].mean() for _ in range(resamples)]
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


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
        for model_id in TRAINING_ORDER:
            spec = SPECS[model_id]
            if not spec.dataset:
                cards.write_untrained(spec, os.path.join(args.models_dir, model_id))
                print(f"[{model_id}] no dataset: manifest and card only (unavailable)", flush=True)
                continue
            results[model_id] = train(spec, os.path.join(args.data_root, spec.dataset),
                                      os.path.join(args.models_dir, model_id), epochs=args.epochs)
        print(json.dumps({k: v["test"] for k, v in results.items()}, indent=1, default=str))
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
