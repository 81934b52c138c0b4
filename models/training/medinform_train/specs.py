"""What each of the six screening models is: data, input, network, training settings.

The manifest a model ships with is derived from its spec (`manifest_for`), and training
preprocesses its images from that same manifest, so the worker feeds the network exactly what it
was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import Sample, load_samples

SCALE = 1 / 255


@dataclass(frozen=True)
class ModelSpec:
    id: str
    version: str
    name: str
    modality: str
    description: str
    labels: list[str]
    finding: str
    color: str  # gray | rgb
    size: int
    arch: str
    dataset: str | None  # folder under the data root; None: no data exists
    label_column: str = "label"
    label_map: dict[str, str] = field(default_factory=dict)
    stratify_column: str | None = None
    task: str = "binary"
    referable_from: int = 1  # ordinal: first referable grade
    mean: float = 0.5
    std: float = 0.5
    pretrained: bool = True
    arch_args: dict = field(default_factory=dict)
    freeze_blocks: int = 0
    epochs: int = 10
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    flips: str = "h"  # "" | "h" | "both"
    shift: float = 0.05
    rotate: float = 0.0  # degrees, either way
    zoom: float = 0.0  # relative, either way
    intensity: float = 0.1
    # The labels.csv column whose values the card breaks the test figures down by (default: the
    # stratification column, i.e. the site or source dataset), and what to call it.
    breakdown_column: str | None = None
    breakdown_title: str = "source"

    def load(self, folder: str) -> list[Sample]:
        return load_samples(folder, self.label_column, self.stratify_column, self.label_map)

    def breakdown(self, sample: Sample) -> str:
        """The group of `sample` in the card's per-group figures ("" = none)."""
        if self.breakdown_column:
            return sample.extra.get(self.breakdown_column, "")
        return sample.stratum

    def with_epochs(self, epochs: int) -> "ModelSpec":
        return dataclasses.replace(self, epochs=epochs)


SPECS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec(
            id="malaria", version="1.0.0", name="Malaria (blood-smear cell)",
            modality="blood_smear_cell",
            description="A single red-cell crop from a Giemsa-stained thin blood smear: "
                        "parasitized or uninfected. Trained on 50x50 grayscale cells.",
            labels=["Uninfected", "Parasitized"], finding="Parasitized", color="gray", size=50,
            arch="small_cnn", pretrained=False, dataset="malaria", epochs=8, batch=64, lr=3e-3,
            flips="both", shift=0.06, intensity=0.1,
        ),
        ModelSpec(
            id="tuberculosis", version="1.0.0", name="Tuberculosis (chest X-ray)",
            modality="chest_xray",
            description="A frontal chest X-ray: signs of pulmonary tuberculosis or normal.",
            labels=["Normal", "Tuberculosis"], finding="Tuberculosis", color="gray", size=128,
            arch="efficientnet_lite0", dataset="tuberculosis", stratify_column="site",
            epochs=14, flips="", shift=0.05,
        ),
        ModelSpec(
            id="pneumonia", version="1.0.0", name="Pneumonia (chest X-ray)",
            modality="chest_xray",
            description="A frontal adult chest X-ray: report-mined pneumonia or no finding.",
            labels=["No_findings", "Pneumonia"], finding="Pneumonia", color="gray", size=160,
            arch="efficientnet_lite0", dataset="pneumonia", epochs=8, flips="", shift=0.05,
        ),
        ModelSpec(
            id="covid19", version="1.0.0", name="Covid-19 (chest X-ray)",
            modality="chest_xray",
            description="A frontal chest X-ray: Covid-19 pneumonia or no finding.",
            labels=["No Finding", "COVID-19"], finding="COVID-19", color="gray", size=160,
            arch="efficientnet_lite0", dataset="covid19", stratify_column="dataset",
            epochs=8, flips="", shift=0.05,
        ),
        ModelSpec(
            id="skin_cancer", version="1.0.0", name="Skin cancer (dermoscopy)",
            modality="dermoscopy",
            description="A dermoscopic image of a skin lesion: benign or malignant "
                        "(melanoma, basal cell carcinoma, squamous cell carcinoma, actinic keratosis).",
            labels=["Benign", "Malignant"], finding="Malignant", color="rgb", size=160,
            arch="efficientnet_lite0", dataset="skin_cancer", label_column="benign_malignant",
            label_map={"benign": "Benign", "malignant": "Malignant"}, breakdown_column="label",
            breakdown_title="diagnosis", epochs=12, flips="both",
            shift=0.05, intensity=0.1,
        ),
        ModelSpec(
            id="diabetic_retinopathy", version="0.0.0", name="Diabetic retinopathy (fundus)",
            modality="fundus",
            description="A colour retinal fundus photograph: diabetic retinopathy grade 0-4 "
                        "(ICDR); referable from moderate.",
            labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative"], finding="Moderate",
            task="ordinal", referable_from=2, color="rgb", size=224, arch="efficientnet_lite0",
            dataset=None, epochs=12, flips="both",
        ),
    ]
}


def manifest_for(spec: ModelSpec, threshold: float = 0.5, metrics: dict | None = None) -> dict:
    """The manifest (as the dict that `preprocess.load_manifest` returns)."""
    channels = 1 if spec.color == "gray" else 3
    manifest = {
        "id": spec.id,
        "version": spec.version,
        "name": spec.name,
        "modality": spec.modality,
        "task": spec.task,
        "description": spec.description,
        "weights": "model.onnx",
        "card": "CARD.md",
        "input": {
            "name": "input",
            "layout": "nchw",
            "color": spec.color,
            "width": spec.size,
            "height": spec.size,
            "preprocess": [{"op": "resize", "filter": "triangle"}],
            "normalize": {"scale": SCALE, "mean": [spec.mean] * channels,
                          "std": [spec.std] * channels},
        },
        "output": {"name": "output", "activation": "softmax", "labels": list(spec.labels)},
        "decision": {"finding": spec.finding, "threshold": threshold},
    }
    if spec.task == "ordinal":
        manifest["decision"]["referable"] = list(spec.labels[spec.referable_from:])
    if metrics:
        manifest["metrics"] = metrics
    return manifest
