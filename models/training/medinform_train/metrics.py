"""Screening metrics and the choice of the decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score

# The operating point of a screening tool: miss few. The threshold kept is the one with the best
# Youden's J (sensitivity + specificity - 1) among those whose validation sensitivity is at least
# this; when none reaches it, the one with the highest sensitivity.
MIN_SENSITIVITY = 0.90


def binary_metrics(p_finding: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Accuracy, sensitivity, specificity at `threshold`, and ROC AUC."""
    p_finding = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    predicted = p_finding >= threshold
    tp = int(np.sum(predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    n_pos, n_neg = tp + fn, tn + fp
    out = {
        "n": int(len(positive)),
        "positives": n_pos,
        "accuracy": (tp + tn) / max(1, len(positive)),
        "sensitivity": tp / n_pos if n_pos else float("nan"),
        "specificity": tn / n_neg if n_neg else float("nan"),
        "threshold": float(threshold),
    }
    out["roc_auc"] = float(roc_auc_score(positive, p_finding)) if n_pos and n_neg else float("nan")
    return out


def choose_threshold(p_finding: np.ndarray, positive: np.ndarray,
                     min_sensitivity: float = MIN_SENSITIVITY) -> float:
    """The decision threshold, chosen on the validation split (see MIN_SENSITIVITY)."""
    p_finding = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    candidates = np.unique(np.concatenate([p_finding, [0.5]]))
    best, best_key = 0.5, None
    for t in candidates:
        if not 0.0 < t < 1.0:
            continue
        m = binary_metrics(p_finding, positive, t)
        reaches = m["sensitivity"] >= min_sensitivity
        j = m["sensitivity"] + m["specificity"] - 1
        key = (reaches, j if reaches else m["sensitivity"], t)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    # Halfway to the next lower score, so that a score equal to a validation score is not on a
    # knife edge; rounded for the manifest.
    lower = p_finding[p_finding < best]
    if len(lower):
        best = (best + lower.max()) / 2
    return round(float(min(max(best, 1e-4), 1 - 1e-4)), 4)


def ordinal_metrics(probabilities: np.ndarray, grades: np.ndarray, referable_from: int,
                    threshold: float) -> dict:
    """Retinopathy: accuracy of the grade, quadratic weighted kappa, and referable screening."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    out = {
        "n": int(len(grades)),
        "grade_accuracy": float(np.mean(predicted == grades)),
        "quadratic_weighted_kappa": float(cohen_kappa_score(grades, predicted, weights="quadratic"))
        if len(set(grades.tolist())) > 1 else float("nan"),
    }
    p_ref = probabilities[:, referable_from:].sum(axis=1)
    referable = binary_metrics(p_ref, grades >= referable_from, threshold)
    out.update({k: v for k, v in referable.items() if k != "n"})
    return out
