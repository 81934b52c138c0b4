"""Datasets as the training pipeline reads them, and the grouped split.

A dataset folder holds a `labels.csv` (the format of `../shared/datasets/`): a `file` column
relative to the folder, a label column, and a `source_id` (a patient, or the original image when
the source gives no patient). Malaria cells are packed in `malaria_cells_50px_gray.npz` with an
`npz_index` column. APTOS-style retinopathy folders (`id_code,diagnosis` and `train_images/`) are
read too.

    samples = load_samples("../shared/datasets/tuberculosis", label_column="label")
    split = grouped_split(samples, seed=7)           # {"train": [...], "val": [...], "test": [...]}
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One labelled image: where its pixels are, its class, its group for splitting."""

    label: str
    source_id: str
    path: str | None = None  # an image file
    pixels: np.ndarray | None = None  # or the decoded pixels (uint8)
    stratum: str = ""  # extra stratification key (e.g. the source dataset)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path or self.extra.get("file", "")


def load_samples(folder: str, label_column: str = "label", stratify_column: str | None = None,
                 label_map: dict[str, str] | None = None) -> list[Sample]:
    """Read `folder/labels.csv` (or an APTOS `train.csv`) into samples.

    `label_map` renames labels (e.g. skin diagnoses to benign/malignant is a column already, so it
    is rarely needed). Rows whose file is missing are an error, not silently dropped.
    """
    labels_csv = os.path.join(folder, "labels.csv")
    if not os.path.exists(labels_csv) and os.path.exists(os.path.join(folder, "train.csv")):
        return load_aptos(folder)
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{labels_csv} has no rows")
    packed = None
    if "npz_index" in rows[0]:
        npz = [n for n in os.listdir(folder) if n.endswith(".npz")]
        if len(npz) != 1:
            raise ValueError(f"{folder}: expected one .npz archive beside labels.csv, found {npz}")
        packed = np.load(os.path.join(folder, npz[0]))["images"]
    samples = []
    for row in rows:
        label = row[label_column]
        if label_map:
            label = label_map.get(label, label)
        sample = Sample(label=label, source_id=row.get("source_id") or row["file"],
                        stratum=row.get(stratify_column, "") if stratify_column else "",
                        extra=dict(row))
        if packed is not None:
            sample.pixels = packed[int(row["npz_index"])]
        else:
            sample.path = os.path.join(folder, row["file"])
            if not os.path.exists(sample.path):
                raise FileNotFoundError(f"{labels_csv}: {row['file']} does not exist")
        samples.append(sample)
    return samples


def load_aptos(folder: str) -> list[Sample]:
    """APTOS 2019 layout: `train.csv` with `id_code,diagnosis` (0-4) and `train_images/<id>.png`."""
    grades = ["No DR", "Mild", "Moderate", "Severe", "Proliferative"]
    with open(os.path.join(folder, "train.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    samples = []
    for row in rows:
        path = os.path.join(folder, "train_images", f"{row['id_code']}.png")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{folder}/train.csv: {path} does not exist")
        samples.append(Sample(label=grades[int(row["diagnosis"])], source_id=row["id_code"],
                              path=path, extra=dict(row)))
    return samples


def grouped_split(samples: list[Sample], seed: int, fractions=(0.7, 0.15, 0.15)
                  ) -> dict[str, list[Sample]]:
    """Split by `source_id`, so that no patient is on two sides, stratified by label x stratum.

    Groups are shuffled with `seed` within each stratum (a group's stratum is its most common
    one) and dealt to train/val/test by cumulative image count.
    """
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.source_id, []).append(s)
    strata: dict[str, list[str]] = {}
    for gid, members in groups.items():
        keys = [f"{m.label}|{m.stratum}" for m in members]
        # sorted() first: with a tie, `max` keeps the first key, and set order would depend on
        # the process's string-hash seed, making the split differ from run to run.
        strata.setdefault(max(sorted(set(keys)), key=keys.count), []).append(gid)
    rng = random.Random(seed)
    split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for key in sorted(strata):
        gids = sorted(strata[key])
        rng.shuffle(gids)
        total = sum(len(groups[g]) for g in gids)
        bounds = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
        seen = 0
        for gid in gids:
            middle = seen + len(groups[gid]) / 2
            side = "train" if middle < bounds[0] else "val" if middle < bounds[1] else "test"
            split[side].extend(groups[gid])
            seen += len(groups[gid])
    return split


def grouped_folds(samples: list[Sample], folds: int, seed: int) -> np.ndarray:
    """The cross-validation fold (0..folds-1) of each sample: by `source_id` (a source's images
    are all in one fold), stratified by label x stratum. Within each stratum the groups are
    shuffled with `seed` and each goes to the fold with the fewest images of that stratum so far.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.source_id, []).append(i)
    strata: dict[str, list[str]] = {}
    for gid, members in groups.items():
        keys = [f"{samples[i].label}|{samples[i].stratum}" for i in members]
        strata.setdefault(max(sorted(set(keys)), key=keys.count), []).append(gid)
    rng = random.Random(seed)
    fold_of = np.full(len(samples), -1, dtype=np.int64)
    for key in sorted(strata):
        gids = sorted(strata[key])
        rng.shuffle(gids)
        load = [0] * folds
        for gid in gids:
            k = min(range(folds), key=lambda f: (load[f], f))
            fold_of[groups[gid]] = k
            load[k] += len(groups[gid])
    return fold_of
