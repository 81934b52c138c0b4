"""One row's figures for one model, and the correctness check every row goes through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A server whose probabilities differ from ONNX Runtime's on the reference tensor by more than
# this, for any image, is flagged (and the run exits non-zero).
TOLERANCE = 1e-4


def max_abs_difference(answers: Mapping[int, Sequence[float]], reference: Sequence[Sequence[float]]) -> float:
    """Largest |Δp| over every class of every answered image."""
    return max(
        (abs(a - b) for index, probs in answers.items() for a, b in zip(probs, reference[index], strict=True)),
        default=0.0,
    )


@dataclass
class Measurement:
    """A server (or baseline) on one model: `images` screened in `seconds`, from the first
    request sent to the last result received, with `cpu_seconds` of the server's CPU."""

    key: str
    label: str
    model: str
    images: int = 0
    seconds: float | None = None
    cpu_seconds: float | None = None
    max_delta: float | None = None
    # Images without a correct-looking answer: failed requests, jobs not `succeeded`.
    unanswered: int = 0
    # Why the row could not be measured (a server that did not start), if it could not.
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def check(self, answers: Mapping[int, Sequence[float]], reference: Sequence[Sequence[float]], asked: int) -> None:
        """Folds a set of answers (to `asked` images) into max_delta and unanswered."""
        delta = max_abs_difference(answers, reference)
        self.max_delta = delta if self.max_delta is None else max(self.max_delta, delta)
        self.unanswered += asked - len(answers)

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds else None

    @property
    def cpu_per_1000(self) -> float | None:
        return self.cpu_seconds / self.images * 1000 if self.cpu_seconds is not None and self.images else None

    @property
    def wrong(self) -> bool:
        return self.unanswered > 0 or (self.max_delta is not None and self.max_delta > TOLERANCE)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.key,
            "label": self.label,
            "model": self.model,
            "images": self.images,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "server_cpu_seconds": self.cpu_seconds,
            "server_cpu_seconds_per_1000_images": self.cpu_per_1000,
            "max_abs_delta_p": self.max_delta,
            "unanswered": self.unanswered,
            "flagged": self.wrong,
            "error": self.error,
            **self.details,
        }
