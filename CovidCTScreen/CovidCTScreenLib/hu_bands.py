"""Training-free lesion extent from Hounsfield bands inside the lung mask (as SlicerLungCTAnalyzer does).

Bands (HU, lower edge included, upper edge excluded):
- ground-glass opacity (GGO) ``GGO_HU`` = -750 .. -300 (partly aerated lung);
- consolidation ``CONSOLIDATION_HU`` = -300 .. +50 (airless lung; above +50 is contrast-enhanced vessel,
  calcification or bone and is not counted).

Steps, each slice in-plane (so volumes and single slices take the same path):
1. noise: a 3 x 3 median filter on the HU slice;
2. partial volume: each lung is eroded by ``RIM_MM`` (disc); in a volume, lung voxels whose neighbour in the
   slice above or below is not the same lung are left out too (the domes of the diaphragm and the heart are
   nearly parallel to the slices, so their partial volume is across slices). Only the rest is measured, so the
   chest-wall / mediastinum / diaphragm border (whose mixed voxels fall in both bands) does not count as lesion.
   Lesion touching the pleura loses the same rim;
3. regional density: a grey-level opening with a disc of diameter ``VESSEL_MAX_DIAMETER_MM`` keeps the density
   of every region wider than that disc and removes what is narrower: vessels seen along their length or in
   cross-section, their partial-volume halo, fissures and noise peaks (the size rule; an opening never raises
   a value). The bands are read on this regional density: GGO and consolidation are regional by definition
   (hazy opacity that does not obscure the vessels; airless lung). Thin dense pixels removed by the opening
   are returned as ``vessels``. Consolidation foci narrower than ``VESSEL_MAX_DIAMETER_MM`` count as vessels,
   and hilar vessels wider than it count as consolidation. A Hessian ridge filter was not used here because it
   also fires along the border of every consolidation patch; it is used for the thin streaks in ``fibrosis.py``;
4. extent per slice and per lung: mL = voxels x voxel volume, % = of the measured (eroded) lung volume.

Not a diagnosis: dependent (gravity) density, expiration, motion and beam hardening also raise lung HU into
the GGO band, and the bands cannot tell infection from atelectasis, oedema, fibrosis or tumour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

GGO_HU = (-750.0, -300.0)
CONSOLIDATION_HU = (-300.0, 50.0)
RIM_MM = 2.0
VESSEL_MAX_DIAMETER_MM = 7.0
MEDIAN_PX = 3
NONE, GGO, CONSOLIDATION = 0, 1, 2
SIDES = {1: "right", 2: "left"}


@dataclass
class BandResult:
    labels: np.ndarray  # (z, y, x) uint8: 0 none, 1 GGO, 2 consolidation (input shape, 2D for a 2D input)
    vessels: np.ndarray  # bool: thin structures at or above GGO density (vessels, halo, fissures) the opening removed
    measured: np.ndarray  # bool: the eroded lung that was measured
    per_slice: list[dict]  # one row per slice with lung: {"slice": k, "right": {...}, "left": {...}, "both": {...}}
    totals: dict  # {"right": {...}, "left": {...}, "both": {...}}: lung_ml, measured_ml, ggo/consolidation mL and %
    parameters: dict = field(default_factory=dict)


def disc(radius_px: int) -> np.ndarray:
    """Boolean disc of the given radius in pixels (radius 0 = single pixel)."""
    r = max(int(radius_px), 0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return xx * xx + yy * yy <= r * r + r  # + r: the usual digital disc (no single-pixel spikes)


def _radius_px(mm: float, spacing) -> int:
    return round(mm / min(spacing[0], spacing[1]))


def _as_3d(hu: np.ndarray, lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    hu, lungs = np.asarray(hu), np.asarray(getattr(lungs, "labels", lungs))
    squeeze = hu.ndim == 2
    if squeeze:
        hu, lungs = hu[None], lungs[None]
    if hu.ndim != 3 or hu.shape != lungs.shape:
        raise ValueError(f"HU array {hu.shape} and lung labels {lungs.shape} must be the same (z, y, x) or (y, x)")
    return hu, lungs, squeeze


def extent(ggo: int, cons: int, lung: int, measured: int, voxel_ml: float) -> dict:
    """mL and % (of the measured lung) of GGO and consolidation voxel counts."""
    def pct(n):
        return 100.0 * n / measured if measured else 0.0

    return {"lung_ml": lung * voxel_ml, "measured_ml": measured * voxel_ml,
            "ggo_ml": ggo * voxel_ml, "consolidation_ml": cons * voxel_ml,
            "ggo_pct": pct(ggo), "consolidation_pct": pct(cons), "lesion_pct": pct(ggo + cons)}


def hu_band_extent(hu: np.ndarray, lungs, spacing: tuple[float, float, float]) -> BandResult:
    """GGO / consolidation extent from HU bands in each lung of a (z, y, x) volume or a (y, x) slice.

    ``lungs``: a ``lung_mask.LungMask`` or its labels (1 right, 2 left); a boolean mask is reported as
    "both" only. ``spacing``: (x, y, z) mm; for a single slice z is the slice thickness (mL need it).
    """
    if len(spacing) != 3:
        raise ValueError("spacing must be (x, y, z) mm; for a single slice give its thickness as z")
    boolean = np.asarray(getattr(lungs, "labels", lungs)).dtype == bool
    hu3, lab3, squeeze = _as_3d(hu, lungs)
    lab3 = lab3.astype(np.uint8)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rim = disc(_radius_px(RIM_MM, spacing))
    labels = np.zeros(hu3.shape, np.uint8)
    vessels = np.zeros(hu3.shape, bool)
    measured = np.zeros(hu3.shape, bool)
    sides = [] if boolean else [s for s in SIDES if (lab3 == s).any()]
    per_slice = []
    counts = {name: np.zeros(4, np.int64) for name in ["both", *(SIDES[s] for s in sides)]}
    # partial volume across slices: a lung voxel whose neighbour in the slice above or below is not the same lung
    # holds some diaphragm, chest wall or mediastinum (the domes are nearly parallel to the slices)
    z_inner = (lab3 == np.concatenate([lab3[:1], lab3[:-1]])) & (lab3 == np.concatenate([lab3[1:], lab3[-1:]]))
    opening = disc(max(1, round(VESSEL_MAX_DIAMETER_MM / 2.0 / min(spacing[0], spacing[1]))))
    for k in np.flatnonzero(lab3.reshape(len(lab3), -1).any(axis=1)):
        lung = lab3[k] > 0
        rows, cols = (np.flatnonzero(lung.any(axis=a)) for a in (1, 0))
        pad = max(rim.shape[0], 8)
        box = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
        h = ndimage.median_filter(hu3[k][box], size=MEDIAN_PX, mode="nearest")
        lab = lab3[k][box]
        meas = np.zeros(lab.shape, bool)
        for s in (np.unique(lab[lab > 0])):
            meas |= ndimage.binary_erosion(lab == s, rim)
        meas &= z_inner[k][box]
        regional = ndimage.grey_opening(h, footprint=opening)
        ves = meas & (h >= GGO_HU[0]) & (regional < GGO_HU[0])  # thin dense structures and their halo
        ggo = meas & (regional >= GGO_HU[0]) & (regional < GGO_HU[1])
        cons = meas & (regional >= CONSOLIDATION_HU[0]) & (regional < CONSOLIDATION_HU[1])
        labels[k][box][ggo] = GGO
        labels[k][box][cons] = CONSOLIDATION
        vessels[k][box], measured[k][box] = ves, meas
        row = {"slice": int(k)}
        for name, sel in [("both", lab > 0)] + [(SIDES[s], lab == s) for s in sides]:
            c = np.array([(ggo & sel).sum(), (cons & sel).sum(), sel.sum(), (meas & sel).sum()])
            counts[name] += c
            row[name] = extent(*c.tolist(), voxel_ml)
        per_slice.append(row)
    totals = {name: extent(*c.tolist(), voxel_ml) for name, c in counts.items()}
    params = {"ggo_hu": GGO_HU, "consolidation_hu": CONSOLIDATION_HU, "rim_mm": RIM_MM,
              "vessel_max_diameter_mm": VESSEL_MAX_DIAMETER_MM, "regional_density": "grey opening",
              "median_px": MEDIAN_PX, "spacing": tuple(float(s) for s in spacing)}
    if squeeze:
        labels, vessels, measured = labels[0], vessels[0], measured[0]
    return BandResult(labels, vessels, measured, per_slice, totals, params)
