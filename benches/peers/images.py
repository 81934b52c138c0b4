"""The benchmark's images: real files, the same bytes for every server.

- pneumonia: the first files (sorted by path) of ../shared/datasets/pneumonia/images/**.jpg,
  512 x 512 grayscale chest X-ray JPEGs (NIH ChestX-ray8, re-encoded at quality 95);
- malaria: the first cells of ../shared/datasets/malaria/malaria_cells_50px_gray.npz, 50 x 50
  grayscale, encoded to PNG with Pillow once and cached under target/peers-cache/malaria/.

See ../shared/datasets/PROVENANCE.md for where they come from.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO

DATASETS = REPO.parent / "shared" / "datasets"
CACHE = REPO / "target" / "peers-cache"
DEFAULT_COUNTS = {"pneumonia": 600, "malaria": 3000}
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class ImageFile:
    name: str
    data: bytes

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[Path(self.name).suffix]


def load(model: str, count: int) -> list[ImageFile]:
    if model == "pneumonia":
        return pneumonia(count)
    if model == "malaria":
        return malaria(count)
    raise ValueError(f"no images for model {model!r}")


def pneumonia(count: int) -> list[ImageFile]:
    root = DATASETS / "pneumonia" / "images"
    files = sorted(root.glob("**/*.jpg"))
    if len(files) < count:
        raise SystemExit(f"{root} has {len(files)} JPEG files, fewer than the {count} asked for")
    return [ImageFile(f"{path.parent.name}-{path.name}", path.read_bytes()) for path in files[:count]]


def malaria(count: int) -> list[ImageFile]:
    cache = CACHE / "malaria"
    paths = [cache / f"cell-{index:05d}.png" for index in range(count)]
    missing = [index for index, path in enumerate(paths) if not path.exists()]
    if missing:
        archive = DATASETS / "malaria" / "malaria_cells_50px_gray.npz"
        with np.load(archive) as npz:
            cells = npz["images"]
            if len(cells) < count:
                raise SystemExit(f"{archive} has {len(cells)} cells, fewer than the {count} asked for")
            cache.mkdir(parents=True, exist_ok=True)
            for index in missing:
                buffer = io.BytesIO()
                Image.fromarray(np.asarray(cells[index], dtype=np.uint8)).save(buffer, format="PNG")
                partial = paths[index].with_suffix(".part")
                partial.write_bytes(buffer.getvalue())
                partial.replace(paths[index])
    return [ImageFile(path.name, path.read_bytes()) for path in paths]
