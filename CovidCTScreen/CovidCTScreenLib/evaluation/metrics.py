"""Classification and overlap metrics (numpy only): the one implementation used by training, evaluation,
model cards and tests."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # mid-ranks over ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score used as threshold (``score >= t``),
    from (0, 0) to (1, 1), and the thresholds (the first one is +inf)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    pred = s[None, :] >= thresholds[:, None]
    tpr = (pred & y).sum(1) / max(y.sum(), 1)
    fpr = (pred & ~y).sum(1) / max((~y).sum(), 1)
    return fpr, tpr, thresholds


def confusion_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Counts, accuracy, sensitivity, specificity, PPV, NPV and F1 of binary predictions (NaN where undefined)."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(predicted).astype(bool)
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "n": int(y.size), "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": ratio(tp + tn, y.size),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """``confusion_metrics`` of ``score >= threshold``, plus the ROC AUC and the threshold."""
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    return {**confusion_metrics(labels, pred), "auc": roc_auc(labels, scores), "threshold": float(threshold)}


def calibration_bins(labels: np.ndarray, probability: np.ndarray, bins: int = 10) -> dict:
    """Reliability table over ``bins`` equal-width probability bins and the expected calibration error
    (ECE: the item-weighted mean gap between mean predicted probability and observed frequency)."""
    y = np.asarray(labels).astype(np.float64)
    p = np.asarray(probability, dtype=np.float64)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, p, bins) / count
        frequency = np.bincount(which, y, bins) / count
    gaps = np.where(count > 0, np.abs(confidence - frequency), 0.0)
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "count": count.tolist(),
            "mean_probability": confidence.tolist(), "observed_frequency": frequency.tolist(),
            "ece": float((count * gaps).sum() / max(p.size, 1))}


def between_scores(scores: np.ndarray, threshold: float) -> float:
    """The midpoint between the lowest score at or above ``threshold`` and the highest score below it.

    ``score >= result`` decides every given score as ``score >= threshold`` does, but no score lies on
    the result, so float noise in a re-computed score cannot flip a decision (the operating point of a
    card is placed this way). Scores are probabilities: 0 and 1 bound the ends.
    """
    s = np.asarray(scores, dtype=np.float64)
    above, below = s[s >= threshold], s[s < threshold]
    return float(((above.min() if above.size else 1.0) + (below.max() if below.size else 0.0)) / 2)


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the highest such cut), placed between
    neighbouring scores (``between_scores``)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    best, best_t = -1.0, 0.5
    for t in np.unique(s)[::-1]:
        pred = s >= t
        j = (pred & y).sum() / max(y.sum(), 1) + (~pred & ~y).sum() / max((~y).sum(), 1) - 1
        if j > best:
            best, best_t = j, float(t)
    return between_scores(s, best_t)


def bootstrap_cis(statistic, n_items: int, groups: np.ndarray | None = None, n: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every value of ``statistic(indices) -> {name: value}``.

    Whole groups (patients) are resampled with replacement when ``groups`` is given, else single
    items. Resamples where a value is NaN (e.g. one class missing) are dropped for that value.
    """
    keys = np.asarray(groups) if groups is not None else np.arange(n_items)
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for name, v in statistic(idx).items():
            values.setdefault(name, [])
            if not np.isnan(v):
                values[name].append(v)
    out = {}
    for name, vs in values.items():
        lo, hi = np.percentile(vs, [50 * (1 - level), 50 * (1 + level)]) if vs else (np.nan, np.nan)
        out[name] = (float(lo), float(hi))
    return out


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray, metric=roc_auc, groups: np.ndarray | None = None,
                 n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """``bootstrap_cis`` of one ``metric(labels, scores)``."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return bootstrap_cis(lambda idx: {"m": metric(labels[idx], scores[idx])}, len(labels), groups, n, seed,
                         level)["m"]


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap 2|A & B| / (|A| + |B|) of two binary masks of the same shape; NaN when both are empty."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else float("nan")


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two binary masks of the same shape; NaN when both are empty."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else float("nan")


def overlap_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Dice, IoU, areas (pixels) and relative area error of two binary masks (Dice and IoU NaN when both are
    empty; the relative area error NaN when the truth is empty)."""
    t_area, p_area = int(np.count_nonzero(truth)), int(np.count_nonzero(predicted))
    return {"dice": dice(predicted, truth), "iou": iou(predicted, truth), "true_area": t_area,
            "predicted_area": p_area, "area_error": (p_area - t_area) / t_area if t_area else float("nan")}
