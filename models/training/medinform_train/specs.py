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
    finding_name: str | None = None  # what results call the finding, when not its label
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
    contrast: float = 0.0  # relative contrast change about the image mean, either way
    gamma: float = 0.0  # log-uniform gamma in [1 / (1 + gamma), 1 + gamma] on the [0, 1] pixels
    # Issue 10: what stage "screening" requires of the held-out [metrics] (written as the
    # manifest's [minimum]); a model whose test figures miss any of them ships as "research".
    stage_minimum: dict[str, float] = field(default_factory=dict)
    # A reason that keeps the model at stage "research" whatever it measures (None: none).
    research_only: str | None = None
    # The operating point: "sensitivity" keeps the highest threshold whose lower 95% bootstrap
    # bound of sensitivity (out-of-fold or validation) reaches `target_sensitivity`; "accuracy"
    # keeps the threshold of the best accuracy there.
    operating_rule: str = "sensitivity"
    target_sensitivity: float = 0.90
    # Grouped (by source_id) cross-validation folds over train+validation; their models are
    # exported as one ONNX graph averaging the calibrated logits. 1: a single fit, the
    # validation split chooses the epoch, the temperature and the threshold.
    folds: int = 1
    # "random": the 70/15/15 grouped split; "official": the dataset's `split` column
    # (train -> train/val, val -> the held-out test; RetinaMNIST's official split).
    split_scheme: str = "random"
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

    @property
    def finding_index(self) -> int:
        return self.labels.index(self.finding)


# Augmentation that fits each modality (issue 10): small affine, contrast and gamma for X-rays;
# any rotation and flips for cells, dermoscopy and fundus photographs.
XRAY_AUGMENTATION = dict(flips="", shift=0.05, rotate=7.0, zoom=0.08, intensity=0.05,
                         contrast=0.15, gamma=0.25)
ROTATION_AUGMENTATION = dict(flips="both", shift=0.05, rotate=180.0, zoom=0.05, intensity=0.1)
RETINA_LABELS = ["No DR", "Mild", "Moderate", "Severe", "Proliferative"]


SPECS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec(
            id="diabetic_retinopathy", version="1.0.0", name="Diabetic retinopathy (fundus)",
            modality="fundus",
            description="A colour retinal fundus photograph, seen at 28x28: diabetic retinopathy "
                        "grade 0-4 (ICDR); referable from moderate. Research use only.",
            labels=RETINA_LABELS, finding="Moderate", task="ordinal", referable_from=2,
            finding_name="Referable DR (Moderate or worse)",
            color="rgb", size=28, arch="small_cnn", pretrained=False,
            arch_args={"widths": (16, 32, 64)}, dataset="diabetic_retinopathy",
            label_map={str(i): name for i, name in enumerate(RETINA_LABELS)},
            split_scheme="official", folds=3, epochs=24, batch=64, lr=3e-3, weight_decay=5e-4,
            **ROTATION_AUGMENTATION,
            target_sensitivity=0.85,
            stage_minimum={"roc_auc": 0.80, "grade_accuracy": 0.524, "grade_roc_auc": 0.717},
            research_only="28x28 fundus images cannot show the lesions (microaneurysms, "
                          "haemorrhages, exudates) that grade retinopathy: the model is for "
                          "research, never for screening, whatever it measures.",
        ),
        ModelSpec(
            id="tuberculosis", version="2.0.0", name="Tuberculosis (chest X-ray)",
            modality="chest_xray",
            description="A frontal chest X-ray: signs of pulmonary tuberculosis or normal.",
            labels=["Normal", "Tuberculosis"], finding="Tuberculosis", color="gray", size=96,
            arch="efficientnet_lite0", dataset="tuberculosis", stratify_column="site",
            folds=3, epochs=10, **XRAY_AUGMENTATION, target_sensitivity=0.90,
            stage_minimum={"sensitivity": 0.90, "specificity": 0.70, "roc_auc": 0.93},
        ),
        ModelSpec(
            id="pneumonia", version="2.0.0", name="Pneumonia (chest X-ray)",
            modality="chest_xray",
            description="A frontal adult chest X-ray: report-mined pneumonia or no finding.",
            labels=["No_findings", "Pneumonia"], finding="Pneumonia", color="gray", size=160,
            arch="efficientnet_lite0", dataset="pneumonia", epochs=8, **XRAY_AUGMENTATION,
            target_sensitivity=0.85,
            stage_minimum={"roc_auc": 0.92, "sensitivity": 0.85, "specificity": 0.70},
        ),
        ModelSpec(
            id="malaria", version="2.0.0", name="Malaria (blood-smear cell)",
            modality="blood_smear_cell",
            description="A single red-cell crop from a Giemsa-stained thin blood smear: "
                        "parasitized or uninfected. Trained on 50x50 grayscale cells.",
            labels=["Uninfected", "Parasitized"], finding="Parasitized", color="gray", size=50,
            arch="small_cnn", pretrained=False, dataset="malaria", epochs=8, batch=64, lr=3e-3,
            **ROTATION_AUGMENTATION, operating_rule="accuracy",
            stage_minimum={"accuracy": 0.965, "roc_auc": 0.995},
        ),
        ModelSpec(
            id="covid19", version="2.0.0", name="Covid-19 (chest X-ray)",
            modality="chest_xray",
            description="A frontal chest X-ray: Covid-19 pneumonia or no finding.",
            labels=["No Finding", "COVID-19"], finding="COVID-19", color="gray", size=160,
            arch="efficientnet_lite0", dataset="covid19", stratify_column="dataset",
            epochs=8, **XRAY_AUGMENTATION, target_sensitivity=0.90,
            stage_minimum={"roc_auc": 0.95},
        ),
        ModelSpec(
            id="skin_cancer", version="2.0.0", name="Skin cancer (dermoscopy)",
            modality="dermoscopy",
            description="A dermoscopic image of a skin lesion: benign or malignant "
                        "(melanoma, basal cell carcinoma, squamous cell carcinoma, actinic keratosis).",
            labels=["Benign", "Malignant"], finding="Malignant", color="rgb", size=128,
            arch="efficientnet_lite0", dataset="skin_cancer", label_column="benign_malignant",
            label_map={"benign": "Benign", "malignant": "Malignant"}, breakdown_column="label",
            breakdown_title="diagnosis", epochs=10, **ROTATION_AUGMENTATION,
            target_sensitivity=0.85, stage_minimum={"roc_auc": 0.95, "sensitivity": 0.85},
        ),
    ]
}

# The order `train all` trains them: cheapest first, so that a run cut short leaves the dear
# ones with their previous folder.
TRAINING_ORDER = ["diabetic_retinopathy", "tuberculosis", "pneumonia", "covid19", "malaria",
                  "skin_cancer"]


def stage_for(spec: ModelSpec, metrics: dict) -> tuple[str, list[str]]:
    """("screening" | "research", the reasons it is research)."""
    missing = []
    for key, minimum in spec.stage_minimum.items():
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or value != value or value < minimum:
            missing.append(f"{key} {value if value is None else round(value, 4)} < {minimum}")
    if spec.research_only:
        missing.insert(0, spec.research_only)
    if not spec.stage_minimum:
        missing.append("no minimum declared")
    return ("research" if missing else "screening"), missing


def manifest_for(spec: ModelSpec, threshold: float = 0.5, metrics: dict | None = None,
                 stage: str = "research", heatmap: bool = False,
                 figures: list[dict] | None = None) -> dict:
    """The manifest (as the dict that `preprocess.load_manifest` returns)."""
    channels = 1 if spec.color == "gray" else 3
    manifest = {
        "id": spec.id,
        "version": spec.version,
        "name": spec.name,
        "modality": spec.modality,
        "task": spec.task,
        "stage": stage,
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
    if heatmap:
        manifest["output"]["heatmap"] = "cam"
    if spec.task == "ordinal":
        manifest["decision"]["referable"] = list(spec.labels[spec.referable_from:])
        if spec.finding_name:
            manifest["decision"]["finding_name"] = spec.finding_name
    if spec.stage_minimum:
        manifest["minimum"] = dict(spec.stage_minimum)
    if metrics:
        manifest["metrics"] = metrics
    if figures:
        manifest["figures"] = figures
    return manifest
