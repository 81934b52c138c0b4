"""The figures a model folder ships (issue 10), drawn from held-out predictions with matplotlib
(Agg, small PNGs): `figures/roc.png`, `figures/reliability.png`, `figures/confusion.png`."""

from __future__ import annotations

import os

import numpy as np

from .metrics import reliability_curve

DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9})
    return plt


def _save(fig, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def roc(path: str, p_finding: np.ndarray, positive: np.ndarray, test: dict, finding: str) -> None:
    """ROC curve with the operating point and its 95% intervals (sensitivity, 1 - specificity)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(positive, p_finding)
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.plot(fpr, tpr, color="#1f5fa8", lw=1.5, label=f"ROC (AUC {test['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="#aaaaaa", lw=0.8, ls="--")
    x, y = 1 - test["specificity"], test["sensitivity"]
    sens_ci = test.get("sensitivity_ci") or [y, y]
    spec_ci = test.get("specificity_ci") or [1 - x, 1 - x]
    ax.errorbar([x], [y], yerr=[[y - sens_ci[0]], [sens_ci[1] - y]],
                xerr=[[x - (1 - spec_ci[1])], [(1 - spec_ci[0]) - x]], fmt="o", color="#c0392b",
                capsize=3, label=f"threshold {test['threshold']:.4g}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel(f"sensitivity ({finding})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"held-out, n = {test['n']}")
    _save(fig, path)


def reliability(path: str, p_before: np.ndarray, p_after: np.ndarray, positive: np.ndarray,
                ece_before: float, ece_after: float, temperature: str, finding: str) -> None:
    """Reliability diagram of p(finding): before and after temperature scaling."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.plot([0, 1], [0, 1], color="#aaaaaa", lw=0.8, ls="--")
    for p, label, colour in ((p_before, f"before (ECE {ece_before:.3f})", "#999999"),
                             (p_after, f"after, T = {temperature} (ECE {ece_after:.3f})",
                              "#1f5fa8")):
        mean_p, observed, counts = reliability_curve(p, positive)
        ax.plot(mean_p, observed, marker="o", ms=3, lw=1.2, color=colour, label=label)
    ax.set_xlabel(f"predicted p({finding})")
    ax.set_ylabel("observed fraction")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title("reliability, held-out, 10 bins")
    _save(fig, path)


def confusion(path: str, matrix: list[list[int]], labels: list[str], title: str) -> None:
    """Confusion matrix (rows: truth, columns: prediction), counts in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix)
    size = 2.6 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)
