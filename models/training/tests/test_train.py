"""The training pipeline on small generated datasets: split, threshold, train, export, card,
evaluate; and the retinopathy path (five grades, RetinaMNIST's official split)."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
import tomllib

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from medinform_train import cards, evaluate, train
from medinform_train.data import Sample, grouped_split, load_samples
from medinform_train.metrics import binary_metrics, choose_threshold
from medinform_train.preprocess import load_manifest, preprocess_file
from medinform_train.specs import SPECS


def write_images(folder, labels, per_class, size=40, patients_per_class=12, seed=0):
    """Images whose class shows as brightness and a bright square, `labels.csv` beside them."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, label in enumerate(labels):
        os.makedirs(os.path.join(folder, "images", label), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            pixels[8:8 + 6 + 4 * k, 8:8 + 6 + 4 * k] = 120 + 30 * k
            name = f"images/{label}/{k}_{i}.png"
            Image.fromarray(pixels).save(os.path.join(folder, name))
            rows.append({"file": name, "label": label,
                         "source_id": f"{label}-p{i % patients_per_class}",
                         "site": "North" if 2 * (i % patients_per_class) < patients_per_class
                         else "South"})
    with open(os.path.join(folder, "labels.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source_id", "site"])
        writer.writeheader()
        writer.writerows(rows)


def test_grouped_split_keeps_each_source_on_one_side_and_every_class_everywhere():
    samples = [Sample(label=("Pos" if i % 3 == 0 else "Neg"), source_id=f"p{i // 4}")
               for i in range(400)]
    split = grouped_split(samples, seed=7)
    sides = {name: {s.source_id for s in part} for name, part in split.items()}
    assert not sides["train"] & sides["val"]
    assert not sides["train"] & sides["test"]
    assert not sides["val"] & sides["test"]
    assert sum(len(p) for p in split.values()) == 400
    for part in split.values():
        assert {s.label for s in part} == {"Pos", "Neg"}
    assert 0.6 < len(split["train"]) / 400 < 0.8
    assert grouped_split(samples, seed=7) == split, "the split is deterministic"


def test_grouped_split_is_the_same_in_every_process(tmp_path):
    """evaluate.py re-derives the test split in a new process: the split must not depend on the
    string-hash seed (a patient with as many images of one class as of another once made it)."""
    script = (
        "from medinform_train.data import Sample, grouped_split\n"
        "samples = [Sample(label='Pos' if i % 2 else 'Neg', source_id=f'p{i // 2}', stratum=f's{i % 3}')"
        " for i in range(300)]\n"
        "print([s.source_id for s in grouped_split(samples, seed=7)['test']])\n"
    )
    training = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = set()
    for hash_seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": training}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_threshold_keeps_sensitivity_for_screening():
    rng = np.random.default_rng(1)
    positive = rng.random(1000) < 0.4
    scores = np.clip(rng.normal(np.where(positive, 0.65, 0.35), 0.15), 0, 1)
    t, rule = choose_threshold(scores, positive)
    m = binary_metrics(scores, positive, t)
    # The lower bound of sensitivity reaches 90%, so the point estimate is above it.
    assert m["sensitivity"] > 0.9
    assert 0 < t < 1 and "lower 95% bootstrap bound" in rule
    # Perfectly separated scores: a threshold between the classes.
    t, _ = choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]),
                            rule="accuracy")
    assert 0.2 < t <= 0.8


def test_a_binary_model_trains_exports_and_is_described(tmp_path):
    data = tmp_path / "data"
    write_images(str(data), ["Normal", "Tuberculosis"], per_class=30)
    spec = dataclasses.replace(SPECS["tuberculosis"], arch="small_cnn", pretrained=False,
                               size=32, epochs=3, batch=16, lr=3e-3, arch_args={"widths": (8, 16)},
                               folds=1)
    out = tmp_path / "tuberculosis"
    report = train.train(spec, str(data), str(out), benchmark_seconds=0.2)

    manifest = load_manifest(str(out))
    assert manifest["id"] == "tuberculosis"
    assert manifest["output"]["labels"] == ["Normal", "Tuberculosis"]
    assert manifest["decision"]["threshold"] == report["threshold"]
    assert manifest["metrics"]["n"] == report["test"]["n"] > 0
    assert manifest["output"]["heatmap"] == "cam"
    assert manifest["stage"] == report["stage"]
    assert manifest["minimum"] == spec.stage_minimum
    assert [f["file"] for f in manifest["figures"]] == [
        "figures/roc.png", "figures/reliability.png", "figures/confusion.png"]
    for figure in manifest["figures"]:
        assert (out / figure["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / figure["file"]).stat().st_size < 100_000
    lo, hi = manifest["metrics"]["sensitivity_ci"]
    assert lo <= manifest["metrics"]["sensitivity"] <= hi
    assert report["onnx_parity"]["probabilities"] < 1e-4
    assert report["onnx_parity"]["cam_relative"] < 1e-4
    card = (out / "CARD.md").read_text()
    assert "not a diagnosis" in card and "Montgomery" in card
    assert f"{report['test']['roc_auc']:.3f}" in card
    assert "images/s" in card and "calibration error" in card

    # The ONNX graph has a dynamic batch axis and answers for any batch size.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    files = sorted((data / "images" / "Normal").glob("*.png"))[:5]
    x = np.stack([preprocess_file(f, manifest) for f in files])
    logits, cam = session.run(["output", "cam"], {"input": x})
    assert logits.shape == (5, 2) and cam.ndim == 3 and cam.shape[0] == 5
    assert session.run(None, {"input": x[:1]})[0].shape == (1, 2)

    # The evaluation command reproduces the card's figures from the dataset folder.
    again = evaluate.evaluate(str(out), str(data), "test")
    for key in ("n", "accuracy", "sensitivity", "specificity"):
        assert again[key] == pytest.approx(report["test"][key], abs=1e-9), key
    assert again["roc_auc"] == pytest.approx(report["test"]["roc_auc"], abs=1e-6)
    # Per site, as the card gives them (the tuberculosis spec breaks the figures down by site).
    assert set(again["by_source"]) == set(report["test_by_stratum"]) == {"North", "South"}
    for site, figures in again["by_source"].items():
        assert figures["n"] == report["test_by_stratum"][site]["n"] > 0
        assert f"| {site} | {figures['n']} |" in card


def write_retinamnist(folder, per_grade=(30, 10, 16, 14, 8), val_per_grade=(6, 2, 4, 3, 2),
                      size=28):
    """RetinaMNIST layout: labels.csv (file,label,source_id,split,referable), grades 0-4."""
    os.makedirs(os.path.join(folder, "images"))
    rng = np.random.default_rng(3)
    rows = []
    for split, counts in (("train", per_grade), ("val", val_per_grade)):
        n = 0
        for grade, count in enumerate(counts):
            for _ in range(count):
                pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                pixels[..., 0] += np.uint8(45 * grade)
                name = f"images/{split}_{n:04d}.png"
                Image.fromarray(pixels).save(os.path.join(folder, name))
                rows.append({"file": name, "label": grade,
                             "source_id": f"retinamnist_{split}_{n:04d}", "split": split,
                             "referable": int(grade >= 2)})
                n += 1
    with open(os.path.join(folder, "labels.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source_id", "split", "referable"])
        writer.writeheader()
        writer.writerows(rows)


def test_retinopathy_keeps_the_official_split_and_trains_five_grades(tmp_path):
    data = tmp_path / "retina"
    write_retinamnist(str(data))
    spec = dataclasses.replace(SPECS["diabetic_retinopathy"], epochs=2, folds=2,
                               arch_args={"widths": (8, 16)})
    samples = spec.load(str(data))
    assert {s.label for s in samples} == set(spec.labels)
    split = train.split_samples(spec, samples)
    # The official val split is the held-out set, whole; the official train split is the rest.
    assert {s.extra["split"] for s in split["test"]} == {"val"} and len(split["test"]) == 17
    assert {s.extra["split"] for s in split["train"] + split["val"]} == {"train"}
    assert len(split["train"]) + len(split["val"]) == 78

    out = tmp_path / "diabetic_retinopathy"
    report = train.train(spec, str(data), str(out), benchmark_seconds=0.2)
    with open(out / "manifest.toml", "rb") as f:
        manifest = tomllib.load(f)
    assert manifest["task"] == "ordinal"
    assert manifest["decision"]["referable"] == ["Moderate", "Severe", "Proliferative"]
    metrics = manifest["metrics"]
    assert metrics["split"] == "official_val" and metrics["n"] == 17
    for key in ("quadratic_weighted_kappa", "grade_accuracy", "grade_roc_auc", "roc_auc"):
        assert key in metrics
    assert len(metrics["grade_recall"]) == 5
    # Research whatever it measures, and the card says why.
    assert manifest["stage"] == "research" and report["stage"] == "research"
    card = (out / "CARD.md").read_text()
    assert "28x28" in card and "research" in card.lower() and "0.524" in card
    assert (out / "figures" / "confusion.png").exists()
    assert report["onnx_parity"]["cam_relative"] < 1e-4


def test_an_untrained_model_ships_no_weights(tmp_path):
    out = tmp_path / "diabetic_retinopathy"
    spec = dataclasses.replace(SPECS["diabetic_retinopathy"], dataset=None)
    cards.write_untrained(spec, str(out))
    assert sorted(os.listdir(out)) == ["CARD.md", "manifest.toml"]
    (out / "model.onnx").write_bytes(b"weights")
    with pytest.raises(SystemExit):
        cards.write_untrained(spec, str(out))


def test_shipped_folders_match_their_specs():
    models = os.path.join(os.path.dirname(__file__), "..", "..")
    for model_id, spec in SPECS.items():
        folder = os.path.join(models, model_id)
        manifest = load_manifest(folder)
        assert manifest["id"] == model_id
        assert manifest["output"]["labels"] == spec.labels
        has_weights = os.path.exists(os.path.join(folder, "model.onnx"))
        assert has_weights == (spec.dataset is not None), model_id
        if has_weights:
            # Trained by this spec, or the previous weights brought to the issue-10 format
            # (`repackage`, version 1.1.0: the input they were trained at).
            assert manifest["version"] in (spec.version, "1.1.0"), model_id
            if manifest["version"] == spec.version:
                assert manifest["input"]["width"] == spec.size, model_id
            metrics = manifest["metrics"]
            assert metrics["split"] in ("test", "official_val") and metrics["n"] > 0
            # About 20 MB at most (a 3-member EfficientNet ensemble in float16 is 21.1 MB).
            assert os.path.getsize(os.path.join(folder, "model.onnx")) < 22e6
            assert manifest["output"]["heatmap"] == "cam"
            assert manifest["stage"] in ("screening", "research")
            assert set(manifest["minimum"]) <= set(metrics)
            if manifest["stage"] == "screening":
                assert all(metrics[k] >= v for k, v in manifest["minimum"].items()), model_id
            for figure in manifest["figures"]:
                assert os.path.getsize(os.path.join(folder, figure["file"])) < 100_000


def test_the_readme_table_shows_the_shipped_metrics():
    models = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(models, "README.md")) as f:
        readme = f.read()
    assert cards.TABLE_BEGIN + "\n" + cards.registry_table(models) + cards.TABLE_END in readme, (
        "models/README.md is stale: run `python -m medinform_train.cards ..` in models/training"
    )
