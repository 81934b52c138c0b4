"""Issue 10's parts on their own: grouped cross-validation folds, the threshold rule, temperature
scaling, calibration error, the class activation map (ONNX against PyTorch), the reference's
heatmap, and bringing a 1.0.0 model to the new format."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from medinform_train import export, nets, repackage
from medinform_train.data import Sample, grouped_folds
from medinform_train.metrics import (bootstrap_intervals, choose_threshold,
                                     expected_calibration_error, fit_temperature,
                                     sensitivity_lower_bounds, softmax)
from medinform_train.specs import SPECS, stage_for

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_folds_keep_each_source_in_one_fold_and_balance_the_classes():
    samples = [Sample(label="Pos" if i % 3 == 0 else "Neg", source_id=f"p{i // 3}",
                      stratum=f"s{(i // 3) % 2}") for i in range(600)]
    fold_of = grouped_folds(samples, 5, seed=7)
    assert set(fold_of.tolist()) == set(range(5))
    by_source: dict[str, set] = {}
    for s, k in zip(samples, fold_of):
        by_source.setdefault(s.source_id, set()).add(int(k))
    assert all(len(folds) == 1 for folds in by_source.values())
    sizes = np.bincount(fold_of)
    assert sizes.max() - sizes.min() <= 6
    for k in range(5):
        labels = [s.label for s, f in zip(samples, fold_of) if f == k]
        assert 0.2 < labels.count("Pos") / len(labels) < 0.45
    assert (grouped_folds(samples, 5, seed=7) == fold_of).all(), "deterministic"


def test_the_threshold_is_the_highest_whose_lower_sensitivity_bound_meets_the_target():
    rng = np.random.default_rng(0)
    positive = rng.random(600) < 0.5
    scores = np.clip(rng.normal(np.where(positive, 0.7, 0.35), 0.15), 0.001, 0.999)
    t, rule = choose_threshold(scores, positive, "sensitivity", 0.90)
    candidates = np.unique(scores)
    lower = sensitivity_lower_bounds(scores, positive, candidates)
    ok = candidates[lower >= 0.90]
    # The threshold sits halfway below the highest qualifying score.
    assert ok.max() - 0.01 < t <= ok.max()
    assert sensitivity_lower_bounds(scores, positive, np.array([t]))[0] >= 0.90
    # Every higher candidate misses the target.
    assert (lower[candidates > ok.max()] < 0.90).all()
    # A stricter target gives a lower threshold.
    assert choose_threshold(scores, positive, "sensitivity", 0.97)[0] < t


def test_bootstrap_intervals_hold_the_point_estimate():
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.4
    scores = np.clip(rng.normal(np.where(positive, 0.65, 0.35), 0.2), 0, 1)
    ci = bootstrap_intervals(scores, positive, 0.5)
    sens = np.mean(scores[positive] >= 0.5)
    assert ci["sensitivity_ci"][0] < sens < ci["sensitivity_ci"][1]
    assert ci["roc_auc_ci"][1] - ci["roc_auc_ci"][0] < 0.2


def test_temperature_scaling_recovers_an_overconfident_scale():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0, 2, (4000, 2))
    y = np.array([rng.random() < p for p in softmax(true_logits)[:, 1]]).astype(int)
    t = fit_temperature(true_logits * 3.0, y)
    assert 2.6 < t < 3.4
    before = expected_calibration_error(softmax(true_logits * 3.0)[:, 1], y == 1)
    after = expected_calibration_error(softmax(true_logits * 3.0 / t)[:, 1], y == 1)
    assert after < before


def test_expected_calibration_error_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    positive = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    # Bins: [0.0,0.1): |0.05 - 0| x2; [0.9,1.0]: |0.95 - 0.5| x2; [0.5,0.6): |0.55 - 1| x2.
    expected = (2 * 0.05 + 2 * 0.45 + 2 * 0.45) / 6
    assert expected_calibration_error(p, positive) == pytest.approx(expected)


def test_stage_is_screening_only_when_every_minimum_is_met():
    spec = SPECS["tuberculosis"]
    good = {"sensitivity": 0.92, "specificity": 0.75, "roc_auc": 0.95}
    assert stage_for(spec, good)[0] == "screening"
    assert stage_for(spec, {**good, "specificity": 0.69})[0] == "research"
    assert stage_for(spec, {"sensitivity": 0.95})[0] == "research"
    dr = SPECS["diabetic_retinopathy"]
    stage, reasons = stage_for(dr, {"roc_auc": 0.99, "grade_accuracy": 0.9, "grade_roc_auc": 0.9})
    assert stage == "research" and "28x28" in reasons[0]


def tiny_members(arch: str, classes: int, channels: int, size: int, n: int = 2):
    torch.manual_seed(0)
    members = []
    for _ in range(n):
        if arch == "small_cnn":
            net = nets.SmallCNN(classes, channels, widths=(4, 8, 8))
        else:
            net = nets.EfficientNetLite0(classes, size, channels)
        # Trained a few steps so that batch-norm statistics and weights are not at their init.
        optimiser = torch.optim.SGD(net.parameters(), lr=0.05)
        for _ in range(3):
            x = torch.randn(8, channels, size, size)
            loss = nn_loss(net(x), torch.randint(0, classes, (8,)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        members.append(net.eval())
    return members


def nn_loss(logits, y):
    return torch.nn.functional.cross_entropy(logits, y)


def cam_by_hand(members, temperatures, x, class_weights):
    """The contract's map, computed from each network's feature map and classifier in PyTorch,
    without the export module."""
    maps, logits = [], []
    with torch.no_grad():
        for net, t in zip(members, temperatures):
            f = net.feature_map(torch.from_numpy(x)).double()
            w = net.classifier.weight.double()
            v = sum(a * w[c] for c, a in enumerate(class_weights))
            maps.append(torch.einsum("k,bkhw->bhw", v, f) / t)
            logits.append(net(torch.from_numpy(x)).double() / t)
    return torch.stack(maps).mean(0).numpy(), torch.stack(logits).mean(0).numpy()


@pytest.mark.parametrize("arch,task", [("small_cnn", "binary"), ("small_cnn", "ordinal"),
                                       ("efficientnet_lite0", "binary")])
def test_the_onnx_map_is_the_cam_of_the_pytorch_networks(tmp_path, arch, task):
    labels = SPECS["diabetic_retinopathy"].labels if task == "ordinal" else ["Normal", "Finding"]
    size = 32
    members = tiny_members(arch, len(labels), 1, size)
    temperatures = [1.7, 0.8]
    weights = export.cam_class_weights(labels, labels[2] if task == "ordinal" else "Finding",
                                       task, 2)
    model = export.CalibratedEnsemble(members, temperatures, weights)
    x = np.random.default_rng(0).normal(size=(5, 1, size, size)).astype(np.float32)
    path = str(tmp_path / "model.onnx")
    export.export(model, x, path)
    z_onnx, cam_onnx = export.run_onnx(path, x)
    cam_ref, z_ref = cam_by_hand(members, temperatures, x, weights)
    assert cam_onnx.shape == cam_ref.shape and cam_onnx.ndim == 3
    assert np.abs(cam_onnx - cam_ref).max() <= 1e-4 * np.abs(cam_ref).max()
    assert np.abs(softmax(z_onnx) - softmax(z_ref)).max() < 1e-5
    if task == "binary":
        # mean(cam) + (b_f - b_o) / T, averaged over members, is the logit difference.
        bias = np.mean([(m.classifier.bias[1] - m.classifier.bias[0]).item() / t
                        for m, t in zip(members, temperatures)])
        assert cam_onnx.mean(axis=(1, 2)) + bias == pytest.approx(z_onnx[:, 1] - z_onnx[:, 0],
                                                                  abs=1e-4)
    export.check(model, x, path)  # does not raise


def test_float16_storage_changes_no_output(tmp_path):
    members = tiny_members("efficientnet_lite0", 2, 1, 32)
    for net in members:
        export.round_weights_to_half(net)
    model = export.CalibratedEnsemble(members, [1.0, 1.3], [-1.0, 1.0])
    x = np.random.default_rng(1).normal(size=(3, 1, 32, 32)).astype(np.float32)
    path = str(tmp_path / "model.onnx")
    export.export(model, x, path, keep_batch_norm=True)
    before = os.path.getsize(path)
    assert export.store_initializers_as_half(path) > 10
    assert os.path.getsize(path) < 0.6 * before
    export.check(model, x, path)


def test_the_reference_prints_the_heatmap(tmp_path):
    from PIL import Image

    from medinform_train import cards
    from medinform_train.specs import manifest_for

    members = tiny_members("small_cnn", 2, 1, 24, n=1)
    spec = dataclasses.replace(SPECS["malaria"], size=24)
    model = export.CalibratedEnsemble(members, [1.5], [-1.0, 1.0])
    folder = tmp_path / "malaria"
    folder.mkdir()
    export.export(model, np.zeros((1, 1, 24, 24), np.float32), str(folder / "model.onnx"))
    (folder / "manifest.toml").write_text(cards.manifest_toml(manifest_for(spec, heatmap=True)))
    image = tmp_path / "cell.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30), dtype=np.uint8)).save(image)
    env = {**os.environ, "PYTHONPATH": TRAINING}
    done = subprocess.run([sys.executable, "-m", "medinform_train.reference", "--model-dir",
                           str(folder), str(image)], env=env, capture_output=True, text=True,
                          check=True)
    line = json.loads(done.stdout)
    heatmap = line["heatmap"]
    assert heatmap["width"] == heatmap["height"] == 6  # 24 -> 12 -> 6 (two poolings)
    assert len(heatmap["values"]) == 36
    from medinform_train.preprocess import load_manifest, preprocess_file

    x = preprocess_file(str(image), load_manifest(str(folder)))[None]
    cam_ref, _ = cam_by_hand(members, [1.5], x, [-1.0, 1.0])
    assert np.allclose(heatmap["values"], cam_ref.ravel(), atol=1e-5)


def test_a_previous_model_is_brought_to_the_new_format_without_retraining(tmp_path):
    from test_train import write_images

    from medinform_train import cards, evaluate, train
    from medinform_train.preprocess import load_manifest
    from medinform_train.specs import manifest_for

    data = tmp_path / "data"
    write_images(str(data), ["Normal", "Tuberculosis"], per_class=30)
    spec = dataclasses.replace(SPECS["tuberculosis"], version="1.0.0", size=24)
    split = train.split_samples(spec, spec.load(str(data)))
    # A version 1.0.0 folder as the previous pipeline wrote it: one output, no map.
    folder = tmp_path / "tuberculosis"
    folder.mkdir()
    (net,) = tiny_members("small_cnn", 2, 1, 24, n=1)
    torch.onnx.export(net, (torch.zeros(1, 1, 24, 24),), str(folder / "model.onnx"),
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      opset_version=17, dynamo=False)
    old = manifest_for(spec, 0.3, {"split": "test", "n": len(split["test"]), "accuracy": 0.5,
                                   "sensitivity": 0.5, "specificity": 0.5, "roc_auc": 0.5})
    del old["stage"], old["minimum"]
    (folder / "manifest.toml").write_text(cards.manifest_toml(old))
    (folder / "CARD.md").write_text("- Architecture: x, 1,234 parameters\n- Training: 3 epochs.\n")

    report = repackage.repackage("tuberculosis", str(folder), str(data), benchmark_seconds=0.2)
    manifest = load_manifest(str(folder))
    assert manifest["version"] == "1.1.0" and manifest["output"]["heatmap"] == "cam"
    assert manifest["input"]["width"] == 24
    assert report["onnx_parity"]["cam_relative"] < 1e-4
    # The new graph: the old network's logits over T, and the contract's map.
    x = train.tensors(split["test"], manifest)
    z, cam = export.run_onnx(str(folder / "model.onnx"), x)
    t = manifest["metrics"]["temperature"][0]
    cam_ref, z_ref = cam_by_hand([net], [t], x, [-1.0, 1.0])
    assert np.abs(softmax(z) - softmax(z_ref)).max() < 1e-5
    assert np.abs(cam - cam_ref).max() <= 1e-4 * np.abs(cam_ref).max()
    again = evaluate.evaluate(str(folder), str(data), "test")
    assert again["sensitivity"] == pytest.approx(report["test"]["sensitivity"])
    assert "1.0.0" in (folder / "CARD.md").read_text()
