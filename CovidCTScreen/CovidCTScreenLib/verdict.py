"""Study verdict from calibrated slice probabilities (seed 002's proportion rule)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TOP_K = 5
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
    )
