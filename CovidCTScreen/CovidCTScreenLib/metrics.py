"""Classification and overlap metrics (numpy only): the one implementation used by training, model cards and tests."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # mid-ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, PPV, NPV, F1 at ``threshold`` and the ROC AUC."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sens, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "n": int(y.size), "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": ratio(tp + tn, y.size),
        "sensitivity": sens,
        "specificity": ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(y, scores),
        "threshold": float(threshold),
    }


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Score threshold maximising sensitivity + specificity - 1 (ties: the highest such threshold)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    best, best_t = -1.0, 0.5
    for t in np.unique(s)[::-1]:
        pred = s >= t
        j = (pred & y).sum() / max(y.sum(), 1) + (~pred & ~y).sum() / max((~y).sum(), 1) - 1
        if j > best:
            best, best_t = j, float(t)
    return best_t


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray, metric=roc_auc, groups: np.ndarray | None = None,
                 n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(labels, scores)``, resampling whole groups (patients)
    with replacement when ``groups`` is given, else single items. Resamples where the metric is NaN
    (one class missing) are dropped."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    keys = np.asarray(groups) if groups is not None else np.arange(len(labels))
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        v = metric(labels[idx], scores[idx])
        if not np.isnan(v):
            values.append(v)
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


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
