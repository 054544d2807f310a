"""COVID-19 manifestations of a screened CT: GGO and consolidation extent by two methods side by side
(training-free HU bands, ``hu_bands``; the learned lesion UNet, ``lesion_seg``) and possible fibrotic streaks
(``fibrosis``). Both extents are given per lung in mL and in % of the same measured lung (the lung mask less
its 2 mm rim), so they can be compared directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import Cancelled
from .hu_bands import SIDES, extent, hu_band_extent

GGO, CONSOLIDATION = 1, 2
MEASURABLE_PCT = 1.0  # below this lesion % of the lung, no manifestation is called dominant
NAMES = {GGO: "ground-glass opacity", CONSOLIDATION: "consolidation"}
METHOD_NAMES = {"learned": "lesion UNet", "hu_bands": "HU bands"}  # the two lesion methods, as outputs name them
# The lesion map the distribution and the three-class category use. The lesion UNet: it was trained on labelled
# lesions, whereas the HU bands count every voxel in a density range (dependent density, partial-volume vessels:
# 5-7 % "GGO" on normal lungs, issue 12). Re-decide with scripts/evaluate_ct_md.py when either method changes.
LEAD = "learned"
CAUTION = ("Extent figures are research measurements, not validated on CT volumes: the HU bands also count "
           "dependent density, atelectasis and partial-volume vessels; the lesion UNet was trained on 40 8-bit "
           "Inf-Net slices and on real HU slices it agrees poorly with the HU bands (docs/lesions_agreement.md).")
SLAB = 16  # slices per step where a whole-volume step would hold temporaries or a cancel for long


@dataclass
class Manifestations:
    hu_bands: np.ndarray  # (z, y, x) uint8 0/1 GGO/2 consolidation
    learned: np.ndarray | None  # (z, y, x) uint8 0/1 GGO/2 consolidation; None when the UNet was not run
    streaks: np.ndarray  # (z, y, x) bool, possible fibrotic streak pixels
    summary: dict  # the report's "manifestations" section
    distribution: dict  # the report's "distribution" section (of the LEAD lesion map)
    timings: dict = field(default_factory=dict)  # seconds per step
    # per-slice voxel counts of the measured lung (``slice_counts``) of each method run: {"slices", "hu_bands",
    # "learned"}; read them with ``slice_extent``
    per_slice: dict = field(default_factory=dict)

    def slice_extent(self, method: str, slices, side: str | None = None) -> dict[str, np.ndarray] | None:
        """``slice_extent`` of ``method`` ("hu_bands" / "learned") at ``slices`` (0 % where a slice has no
        measured lung); None when that method was not run."""
        if method not in self.per_slice:
            return None
        row = {int(k): i for i, k in enumerate(self.per_slice["slices"])}
        counts = np.zeros((len(slices), *self.per_slice[method].shape[1:]), np.int64)
        for i, k in enumerate(slices):
            if int(k) in row:
                counts[i] = self.per_slice[method][row[int(k)]]
        return slice_extent(counts, side)


def by_lung(labels: np.ndarray, lung_labels: np.ndarray, measured: np.ndarray, spacing) -> dict:
    """{"right", "left", "both"} extent of a GGO/consolidation label map inside the measured lung.
    Counted slab by slab with ``count_nonzero`` (no volume-sized copies)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = {name: np.zeros(4, np.int64) for name in ("both", *SIDES.values())}
    for z in range(0, len(labels), SLAB):
        lab, lung, meas = labels[z:z + SLAB], lung_labels[z:z + SLAB], measured[z:z + SLAB]
        ggo, cons = lab == GGO, lab == CONSOLIDATION
        for name, sel in [("both", lung > 0)] + [(SIDES[s], lung == s) for s in SIDES]:
            m = meas & sel
            counts[name] += (np.count_nonzero(ggo & m), np.count_nonzero(cons & m), np.count_nonzero(sel),
                             np.count_nonzero(m))
    return {name: extent(*c.tolist(), voxel_ml) for name, c in counts.items()}


def slice_counts(labels: np.ndarray, measured: np.ndarray, lung_labels: np.ndarray, slices) -> np.ndarray:
    """(len(slices), 2, 3) voxel counts of each slice's measured lung: [right, left] x [none, GGO, consolidation]
    of a GGO/consolidation label map (one ``bincount`` per slice over the masks already computed)."""
    out = np.zeros((len(slices), 2, 3), np.int64)
    for i, k in enumerate(slices):
        m = measured[k] & (lung_labels[k] > 0)
        code = 3 * (lung_labels[k][m].astype(np.intp) - 1) + labels[k][m]
        out[i] = np.bincount(code, minlength=6)[:6].reshape(2, 3)
    return out


def slice_extent(counts: np.ndarray, side: str | None = None) -> dict[str, np.ndarray]:
    """THE per-slice lesion fraction (report, slice_scores.csv, covidct-evaluate's per-slice AUC): GGO and
    consolidation in % of each slice's measured lung (the lung mask less its 2 mm rim, ``hu_bands`` step 2; one
    lung with ``side`` "right" / "left"), from ``slice_counts``, to 0.01 % as the report shows them, and their sum
    ("lesion"); 0 where a slice has no measured lung."""
    c = counts.sum(axis=1) if side is None else counts[:, {v: s - 1 for s, v in SIDES.items()}[side]]
    pct = np.round(100.0 * c / np.maximum(c.sum(axis=1), 1)[:, None], 2)
    return {"ggo_pct": pct[:, GGO], "consolidation_pct": pct[:, CONSOLIDATION],
            "lesion_pct": pct[:, GGO] + pct[:, CONSOLIDATION]}


def dominant(totals: dict) -> str:
    both = totals["both"]
    if both["lesion_pct"] < MEASURABLE_PCT:
        return "none measurable"
    return NAMES[GGO] if both["ggo_ml"] >= both["consolidation_ml"] else NAMES[CONSOLIDATION]


def measure(volume, mask, lesion_model: str | None = None, device: str = "cpu",
            progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
            learned: bool = True) -> Manifestations:
    """HU-band and learned extent, possible fibrotic streaks, and their report summary for one CT.
    ``learned=False`` skips the lesion UNet (``learned`` is then None). ``cancel()`` raises ``Cancelled``
    between steps and slabs."""
    from .fibrosis import detect_streaks

    def check_cancel():
        if cancel and cancel():
            raise Cancelled("cancelled while measuring lesions")

    timings = {}
    t = time.perf_counter()
    bands = hu_band_extent(volume.hu, mask.labels, volume.spacing)
    timings["hu_bands_s"] = time.perf_counter() - t
    if progress:
        progress(0.2)
    check_cancel()
    labels, card = None, None
    if learned:
        from .lesion_seg import load_lesion_model, predict_hu

        t = time.perf_counter()
        model = load_lesion_model(lesion_model, device)
        card = model.package.card
        labels = np.zeros(volume.shape, np.uint8)
        for z in range(0, volume.shape[0], SLAB):  # slab by slab: a cancel is seen within one slab
            check_cancel()
            labels[z:z + SLAB] = predict_hu(model, volume.hu[z:z + SLAB], mask.labels[z:z + SLAB])
        timings["unet_s"] = time.perf_counter() - t
    if progress:
        progress(0.7)
    t = time.perf_counter()
    streaks = detect_streaks(volume.hu, mask.labels, volume.spacing, cancel)
    timings["streaks_s"] = time.perf_counter() - t
    if progress:
        progress(1.0)
    t = time.perf_counter()
    band_totals = by_lung(bands.labels, mask.labels, bands.measured, volume.spacing)
    ks = np.array([row["slice"] for row in bands.per_slice], int)
    counts = {"slices": ks, "hu_bands": slice_counts(bands.labels, bands.measured, mask.labels, ks)}
    if learned:
        counts["learned"] = slice_counts(labels, bands.measured, mask.labels, ks)
    pct = {key: slice_extent(c) for key, c in counts.items() if key != "slices"}
    per_slice = [{"slice": int(k), **{key: {name: float(e[name][i]) for name in ("ggo_pct", "consolidation_pct")}
                                      for key, e in pct.items()}} for i, k in enumerate(ks)]
    if learned:
        learned_totals = by_lung(labels, mask.labels, bands.measured, volume.spacing)
        learned_summary = {"method": f"lesion UNet {card['name']} (lesion_seg.py)",
                           "trained_on": {k: card["training"][k] for k in ("dataset", "split")},
                           "held_out_dice": {k: round(v["dice_pooled"], 3)
                                             for k, v in card["validation"]["scores"].items()},
                           "per_lung": _rounded(learned_totals), "dominant": dominant(learned_totals)}
    else:
        learned_summary = {"not_assessed": "the lesion UNet was not run"}
    summary = {
        "hu_bands": {"method": "HU bands inside the lung (hu_bands.py): GGO -750..-300 HU, consolidation "
                               "-300..+50 HU, thin vessels and a 2 mm rim left out; training-free",
                     "per_lung": _rounded(band_totals), "dominant": dominant(band_totals)},
        "learned": learned_summary,
        "per_slice_pct": per_slice,
        "possible_fibrotic_streaks": {"candidates": len(streaks.candidates), "slices": streaks.per_slice,
                                      "limits": streaks.limits},
        "caution": CAUTION,
    }
    spread = lead_distribution(summary, bands, labels, mask, volume.spacing)
    timings["summary_s"] = time.perf_counter() - t
    return Manifestations(bands.labels, labels, streaks.mask, summary, spread, timings, counts)


def lead_distribution(summary: dict, bands, learned: np.ndarray | None, mask, spacing) -> dict:
    """The ``distribution`` of the lead lesion map (``LEAD``; the HU bands when the UNet did not run), over the
    measured lung; records the lead in ``summary["lead_method"]``."""
    from .distribution import distribution

    lead = LEAD if learned is not None else "hu_bands"
    summary["lead_method"] = lead
    spread = distribution(learned if lead == "learned" else bands.labels, mask.labels, spacing, bands.measured)
    spread["method"] = METHOD_NAMES[lead]
    return spread


def _rounded(totals: dict) -> dict:
    return {side: {k: round(v, 2) for k, v in e.items()} for side, e in totals.items()}
