"""BentoML: one worker, an adaptive-batching API (at most 16 images per batch), no access log.

    PEERS_MODEL=malaria PEERS_ORT_THREADS=2 bentoml serve bentoml_service:Screening --port 8000

POST /screen with a multipart form whose `images` field holds the file (a batchable API takes
a list per request; the client sends one image each time); the answer is the list of results,
[{"probabilities": [...]}]. BentoML's dispatcher merges the lists of concurrent requests into
one call of at most 16 images; it has no fixed batch wait: it learns how long to wait for a
batch to fill from the model's measured run times (`max_latency_ms` keeps its default, 60 s, so
no request is shed).
"""

from __future__ import annotations

import bentoml
from PIL import Image

from common import Screener


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Screening:
    def __init__(self) -> None:
        self.screener = Screener.from_env()

    @bentoml.api(batchable=True, max_batch_size=16)
    def screen(self, images: list[Image.Image]) -> list[dict[str, list[float]]]:
        return [{"probabilities": p} for p in self.screener.screen(images)]
