"""The model glue every peer and baseline shares, so that they differ only in how they serve.

A `Screener` holds one shipped model (`models/<id>/model.onnx` and its manifest) in an ONNX
Runtime session configured as the service configures its own (CPU, `intra_op_num_threads`), and
turns images into probabilities with the training pipeline's reference functions:
`medinform_train.preprocess.preprocess_image` (decode + the manifest's preprocessing, the numpy
twin of the worker's) and `medinform_train.reference.probabilities` (the manifest's activation).
Like the service, it asks the graph for both outputs, the class scores and the class activation
map, though only the scores become probabilities here.

The servers read the model and the thread count from the environment (`from_env`), since each
framework starts its workers in its own way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from medinform_train.preprocess import load_manifest, preprocess_image
from medinform_train.reference import probabilities
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
MODEL_ENV = "PEERS_MODEL"
THREADS_ENV = "PEERS_ORT_THREADS"

# What a peer is handed: the uploaded bytes, or an image its framework has already opened.
ImageInput = bytes | Image.Image


@dataclass
class Screener:
    manifest: dict[str, Any]
    session: ort.InferenceSession
    input_name: str
    output_names: list[str]

    @classmethod
    def load(cls, model: str, threads: int) -> Screener:
        folder = MODELS_DIR / model
        manifest = load_manifest(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(folder / manifest.get("weights", "model.onnx")), options, providers=["CPUExecutionProvider"]
        )
        output = manifest["output"]
        names = [output["name"]] + ([output["heatmap"]] if output.get("heatmap") else [])
        return cls(manifest, session, manifest["input"]["name"], names)

    @classmethod
    def from_env(cls) -> Screener:
        return cls.load(os.environ[MODEL_ENV], int(os.environ[THREADS_ENV]))

    def tensor(self, image: ImageInput) -> np.ndarray:
        """One image's input tensor (no batch axis), by the reference preprocessing."""
        return preprocess_image(image, self.manifest)

    def run(self, batch: np.ndarray) -> list[list[float]]:
        """Probabilities (class order) for each tensor of a batch."""
        scores = self.session.run(self.output_names, {self.input_name: batch})[0]
        return [probabilities(row, self.manifest) for row in scores]

    def screen(self, images: Sequence[ImageInput]) -> list[list[float]]:
        """Decode, preprocess and run a batch of images in one model run."""
        return self.run(np.stack([self.tensor(image) for image in images]))
