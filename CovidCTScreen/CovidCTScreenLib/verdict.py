"""Study verdict from calibrated slice probabilities (seed 002's proportion rule)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TOP_K = 5
MIN_CONFIDENT_SLICES = 10
POSITIVE = "COVID-19"
NEGATIVE = "no COVID-19 pattern"


@dataclass
class Verdict:
    label: str
    positive: bool
    positive_fraction: float
    positive_slices: int
    lung_slices: int
    slice_threshold: float
    min_fraction: float
    max_probability: float
    top_slices: list  # [{"slice": k, "probability": p}], most suspicious first
    rule: str
    fraction_95ci: list  # bootstrap over lung slices of the positive fraction
    low_confidence: bool  # the decision could flip: read this study with particular care
    confidence_note: str

    def to_dict(self) -> dict:
        return asdict(self)


def study_verdict(slice_indices: np.ndarray, probability: np.ndarray, slice_threshold: float,
                  min_fraction: float, top_k: int = TOP_K) -> Verdict:
    """Positive when more than ``min_fraction`` of the lung slices reach ``slice_threshold``."""
    probability = np.asarray(probability, dtype=np.float64)
    positive = probability >= slice_threshold
    fraction = float(positive.mean()) if probability.size else 0.0
    order = np.argsort(-probability, kind="stable")[:top_k]
    is_positive = fraction > min_fraction
    lo, hi = _fraction_interval(positive)
    reasons = []
    if lo <= min_fraction < hi:
        reasons.append(f"the 95 % interval of the positive-slice fraction ({lo:.0%}-{hi:.0%}, bootstrap over "
                       f"slices) contains the rule's {min_fraction:.0%}")
    if probability.size < MIN_CONFIDENT_SLICES:
        reasons.append(f"only {probability.size} lung slices were scored")
    return Verdict(
        label=POSITIVE if is_positive else NEGATIVE,
        positive=bool(is_positive),
        positive_fraction=fraction,
        positive_slices=int(positive.sum()),
        lung_slices=int(probability.size),
        slice_threshold=float(slice_threshold),
        min_fraction=float(min_fraction),
        max_probability=float(probability.max(initial=0.0)),
        top_slices=[{"slice": int(slice_indices[i]), "probability": float(probability[i])} for i in order],
        rule=(f"COVID-19 when more than {min_fraction:.0%} of lung slices have a calibrated COVID-19 "
              f"probability >= {slice_threshold:.3f} (seed 002 proportion rule)"),
        fraction_95ci=[lo, hi],
        low_confidence=bool(reasons),
        confidence_note=("Low confidence: " + "; ".join(reasons) + ". Read with particular care." if reasons else
                         "The decision holds across slice resamples (bootstrap); this says nothing about the "
                         "model's validity on this scanner."),
    )


def _fraction_interval(positive: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the positive fraction, resampling lung slices (neighbouring slices
    are correlated, so the interval is if anything too narrow)."""
    if positive.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = positive[rng.integers(0, positive.size, (n, positive.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)
