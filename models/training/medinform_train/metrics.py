"""Screening metrics and the choice of the decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score

BOOTSTRAP = 1000  # resamples for every 95% interval
CONFIDENCE = 0.95


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


def sensitivity_lower_bounds(p_finding: np.ndarray, positive: np.ndarray, thresholds: np.ndarray,
                             seed: int = 7, resamples: int = BOOTSTRAP) -> np.ndarray:
    """For each threshold, the lower 95% percentile-bootstrap bound of sensitivity (the
    positives resampled with replacement; sensitivity depends on nothing else)."""
    scores = np.asarray(p_finding, dtype=np.float64)[np.asarray(positive, dtype=bool)]
    if not len(scores):
        return np.full(len(thresholds), np.nan)
    rng = np.random.default_rng(seed)
    # counts[b, i]: how often positive i is drawn in resample b.
    counts = rng.multinomial(len(scores), np.full(len(scores), 1 / len(scores)), size=resamples)
    hits = (scores[:, None] >= np.asarray(thresholds)[None, :]).astype(np.float64)
    sensitivity = counts @ hits / len(scores)
    return np.quantile(sensitivity, (1 - CONFIDENCE) / 2, axis=0)


def choose_threshold(p_finding: np.ndarray, positive: np.ndarray, rule: str = "sensitivity",
                     target_sensitivity: float = 0.90) -> tuple[float, str]:
    """The decision threshold from held-out (out-of-fold or validation) scores, and the rule
    that chose it, in words.

    "sensitivity": the highest threshold whose lower 95% bootstrap bound of sensitivity reaches
    `target_sensitivity` (the highest keeps the most specificity). A threshold at or below every
    positive score always qualifies (sensitivity 1 in every resample), so one always exists.
    "accuracy": the threshold of the best accuracy.
    The threshold is set halfway to the next lower score, so that a score equal to a held-out
    score is not on a knife edge, and rounded for the manifest.
    """
    p_finding = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    candidates = np.unique(p_finding)
    candidates = candidates[(candidates > 0) & (candidates < 1)]
    if not len(candidates):
        return 0.5, "no usable score: 0.5"
    if rule == "accuracy":
        predicted = p_finding[:, None] >= candidates[None, :]
        accuracy = (predicted == positive[:, None]).mean(axis=0)
        best = float(candidates[int(np.argmax(accuracy))])
        how = f"the best held-out accuracy ({accuracy.max():.4f})"
    elif rule == "sensitivity":
        lower = sensitivity_lower_bounds(p_finding, positive, candidates)
        ok = np.flatnonzero(lower >= target_sensitivity)
        best = float(candidates[ok[-1]]) if len(ok) else float(candidates[0])
        bound = float(lower[ok[-1]]) if len(ok) else float("nan")
        how = (f"the highest threshold whose lower 95% bootstrap bound of held-out sensitivity "
               f"reaches {target_sensitivity:.0%} (bound {bound:.3f})")
    else:
        raise ValueError(f"unknown operating rule {rule!r}")
    below = p_finding[p_finding < best]
    if len(below):
        best = (best + below.max()) / 2
    return round(float(min(max(best, 1e-4), 1 - 1e-4)), 4), how


def bootstrap_intervals(p_finding: np.ndarray, positive: np.ndarray, threshold: float,
                        seed: int = 7, resamples: int = BOOTSTRAP) -> dict:
    """95% percentile-bootstrap intervals of sensitivity, specificity, accuracy and ROC AUC at
    `threshold` (positives and negatives resampled separately, keeping their counts)."""
    p_finding = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    pos, neg = p_finding[positive], p_finding[~positive]
    if not len(pos) or not len(neg):
        return {}
    rng = np.random.default_rng(seed)
    stats = {"sensitivity": [], "specificity": [], "accuracy": [], "roc_auc": []}
    for _ in range(resamples):
        bp = pos[rng.integers(0, len(pos), len(pos))]
        bn = neg[rng.integers(0, len(neg), len(neg))]
        tp, tn = np.sum(bp >= threshold), np.sum(bn < threshold)
        stats["sensitivity"].append(tp / len(bp))
        stats["specificity"].append(tn / len(bn))
        stats["accuracy"].append((tp + tn) / (len(bp) + len(bn)))
        stats["roc_auc"].append(fast_auc(bp, bn))
    alpha = (1 - CONFIDENCE) / 2
    return {f"{k}_ci": [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
            for k, v in stats.items()}


def fast_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC (ties count half) by ranks: the Mann-Whitney U over n_pos * n_neg."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2
    ranks[order] = np.repeat(average, counts)
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling: the T > 0 minimising the negative log-likelihood of softmax(logits/T)
    (Guo et al. 2017), searched on log T in [1/20, 20]."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y)), y].mean())

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                            options={"xatol": 1e-5})
    return float(np.exp(found.x))


def expected_calibration_error(p_finding: np.ndarray, positive: np.ndarray,
                               bins: int = 10) -> float:
    """ECE of the finding's probability: over 10 equal-width bins of p, the image-weighted mean
    of |mean p - fraction with the finding|."""
    p = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        keep = which == b
        if keep.any():
            total += keep.sum() * abs(p[keep].mean() - positive[keep].mean())
    return float(total / max(1, len(p)))


def reliability_curve(p_finding: np.ndarray, positive: np.ndarray, bins: int = 10):
    """(mean p, observed fraction, count) per non-empty bin, for the reliability diagram."""
    p = np.asarray(p_finding, dtype=np.float64)
    positive = np.asarray(positive, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = [(p[which == b].mean(), positive[which == b].mean(), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]
    return [np.array(c) for c in zip(*rows)] if rows else [np.array([])] * 3


def ordinal_metrics(probabilities: np.ndarray, grades: np.ndarray, referable_from: int,
                    threshold: float) -> dict:
    """Retinopathy: accuracy of the grade, quadratic weighted kappa, and referable screening."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    classes = probabilities.shape[1]
    out = {
        "n": int(len(grades)),
        "grade_accuracy": float(np.mean(predicted == grades)),
        "grade_recall": [float(np.mean(predicted[grades == g] == g)) if np.any(grades == g)
                         else float("nan") for g in range(classes)],
        # One-vs-rest macro AUC over the five grades, as MedMNIST reports it.
        "grade_roc_auc": float(roc_auc_score(grades, probabilities, multi_class="ovr",
                                             average="macro", labels=list(range(classes))))
        if len(set(grades.tolist())) == classes else float("nan"),
        "confusion": [[int(np.sum((grades == a) & (predicted == b))) for b in range(classes)]
                      for a in range(classes)],
        "quadratic_weighted_kappa": float(cohen_kappa_score(grades, predicted, weights="quadratic"))
        if len(set(grades.tolist())) > 1 else float("nan"),
    }
    p_ref = probabilities[:, referable_from:].sum(axis=1)
    referable = binary_metrics(p_ref, grades >= referable_from, threshold)
    out.update({k: v for k, v in referable.items() if k != "n"})
    return out
