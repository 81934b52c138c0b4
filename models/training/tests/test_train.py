"""The training pipeline on small generated datasets: split, threshold, train, export, card,
evaluate; and the retinopathy path (five grades, APTOS labels) that has no real data yet."""

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
    t = choose_threshold(scores, positive)
    m = binary_metrics(scores, positive, t)
    assert m["sensitivity"] >= 0.9
    assert 0 < t < 1
    # Perfectly separated scores: a threshold between the classes.
    t = choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]))
    assert 0.2 < t <= 0.8


def test_a_binary_model_trains_exports_and_is_described(tmp_path):
    data = tmp_path / "data"
    write_images(str(data), ["Normal", "Tuberculosis"], per_class=30)
    spec = dataclasses.replace(SPECS["tuberculosis"], arch="small_cnn", pretrained=False,
                               size=32, epochs=3, batch=16, lr=3e-3, arch_args={"widths": (8, 16)})
    out = tmp_path / "tuberculosis"
    report = train.train(spec, str(data), str(out))

    manifest = load_manifest(str(out))
    assert manifest["id"] == "tuberculosis"
    assert manifest["output"]["labels"] == ["Normal", "Tuberculosis"]
    assert manifest["decision"]["threshold"] == report["threshold"]
    assert manifest["metrics"]["n"] == report["test"]["n"] > 0
    assert report["onnx_parity"] < 1e-4
    card = (out / "CARD.md").read_text()
    assert "not a diagnosis" in card and "Montgomery" in card
    assert f"{report['test']['roc_auc']:.3f}" in card

    # The ONNX graph has a dynamic batch axis and answers for any batch size.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    files = sorted((data / "images" / "Normal").glob("*.png"))[:5]
    x = np.stack([preprocess_file(f, manifest) for f in files])
    assert session.run(None, {"input": x})[0].shape == (5, 2)
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


def write_aptos(folder, per_grade=12, size=36):
    """APTOS 2019 layout: train.csv (id_code,diagnosis) and train_images/<id>.png."""
    os.makedirs(os.path.join(folder, "train_images"))
    rng = np.random.default_rng(3)
    rows = []
    for grade in range(5):
        for i in range(per_grade):
            pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
            pixels[..., 0] += np.uint8(40 * grade)
            code = f"{grade}{i:03d}abc"
            Image.fromarray(pixels).save(os.path.join(folder, "train_images", f"{code}.png"))
            rows.append({"id_code": code, "diagnosis": grade})
    with open(os.path.join(folder, "train.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id_code", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)


def test_retinopathy_trains_on_five_grades_from_aptos_labels(tmp_path):
    data = tmp_path / "aptos"
    write_aptos(str(data))
    samples = load_samples(str(data))
    assert {s.label for s in samples} == set(SPECS["diabetic_retinopathy"].labels)
    spec = dataclasses.replace(SPECS["diabetic_retinopathy"], size=32, epochs=2, batch=16,
                               freeze_blocks=4)
    out = tmp_path / "diabetic_retinopathy"
    report = train.train(spec, str(data), str(out))
    assert "quadratic_weighted_kappa" in report["test"]
    assert report["onnx_parity"] < 1e-4
    with open(out / "manifest.toml", "rb") as f:
        manifest = tomllib.load(f)
    assert manifest["task"] == "ordinal"
    assert manifest["decision"]["referable"] == ["Moderate", "Severe", "Proliferative"]
    assert "quadratic_weighted_kappa" in manifest["metrics"]


def test_an_untrained_model_ships_no_weights(tmp_path):
    out = tmp_path / "diabetic_retinopathy"
    cards.write_untrained(SPECS["diabetic_retinopathy"], str(out))
    assert sorted(os.listdir(out)) == ["CARD.md", "manifest.toml"]
    (out / "model.onnx").write_bytes(b"weights")
    with pytest.raises(SystemExit):
        cards.write_untrained(SPECS["diabetic_retinopathy"], str(out))


def test_shipped_folders_match_their_specs():
    models = os.path.join(os.path.dirname(__file__), "..", "..")
    for model_id, spec in SPECS.items():
        folder = os.path.join(models, model_id)
        manifest = load_manifest(folder)
        assert manifest["id"] == model_id
        assert manifest["output"]["labels"] == spec.labels
        assert manifest["input"]["width"] == spec.size
        has_weights = os.path.exists(os.path.join(folder, "model.onnx"))
        assert has_weights == (spec.dataset is not None), model_id
        if has_weights:
            metrics = manifest["metrics"]
            assert metrics["split"] == "test" and metrics["n"] > 0
            assert os.path.getsize(os.path.join(folder, "model.onnx")) < 20e6


def test_the_readme_table_shows_the_shipped_metrics():
    models = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(models, "README.md")) as f:
        readme = f.read()
    assert cards.TABLE_BEGIN + "\n" + cards.registry_table(models) + cards.TABLE_END in readme, (
        "models/README.md is stale: run `python -m medinform_train.cards ..` in models/training"
    )
