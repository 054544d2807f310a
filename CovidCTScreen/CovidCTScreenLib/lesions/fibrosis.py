"""Possible fibrotic streaks: a transparent, heuristic detector of thin linear high-attenuation structures.

Seed 002 (Chen et al.) names fibrotic streaks as the third COVID-19 manifestation next to GGO and
consolidation. No pixel labels for streaks exist here, so this is a rule-based candidate finder,
**heuristic and unvalidated**: it has never been compared with a reader.

Per axial slice, inside the lung eroded by ``PLEURA_MARGIN_MM`` (the chest-wall edge is itself a ridge):
1. ridge filter: ``skimage.filters.sato`` (Hessian, bright ridges) on the HU slice clipped to
   ``CLIP_HU``, at scales ``SIGMAS_MM``; a pixel is a ridge pixel when the response is >= ``RIDGE_MIN``
   (HU units) and its HU >= ``LINE_MIN_HU``;
2. connected ridge components (8-connected) are kept as candidates when all of these hold:
   length (largest Feret diameter) >= ``MIN_LENGTH_MM``; mean width (area / length) <= ``MAX_WIDTH_MM``;
   elongation (major / minor axis) >= ``MIN_ELONGATION`` (round cross-sections of vessels fail here);
   straightness (Feret length / skeleton length) >= ``MIN_STRAIGHTNESS`` (branching vessel trees fail);
   mean HU within ``MEAN_HU``; and the candidate comes within ``PLEURA_CONTACT_MM`` of the lung border
   (a parenchymal band usually reaches the pleura; vessels taper away from it);
3. where the volume allows (>= 3 slices, slice spacing <= ``MAX_Z_SPACING_MM``), candidates that are
   tubes in 3D are dropped: vessels are tubes that continue across slices, whereas a parenchymal band is
   sheet-like and shows as a line at nearly the same place in neighbouring slices. The test uses the 3D
   Hessian (sigma ``SIGMA_3D_MM``) on the candidate's pixels: with eigenvalues sorted by magnitude
   |l1| <= |l2| <= |l3|, a bright tube has l2 ~ l3 < 0, a bright sheet l2 ~ 0; the candidate is a tube
   when the median of |l2| / |l3| is >= ``TUBE_RATIO``.
On thick slices or a single slice step 3 cannot run, and an in-plane vessel segment that is straight and
thin passes as a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from ..errors import Cancelled
from .hu_bands import disc

CLIP_HU = (-1000.0, 200.0)
SIGMAS_MM = (0.7, 1.0, 1.5)
RIDGE_MIN = 60.0
LINE_MIN_HU = -700.0
PLEURA_MARGIN_MM = 3.0
MIN_LENGTH_MM = 10.0
MAX_WIDTH_MM = 3.0
MIN_ELONGATION = 4.0
MIN_STRAIGHTNESS = 0.8
MEAN_HU = (-650.0, 100.0)
PLEURA_CONTACT_MM = 5.0
MAX_Z_SPACING_MM = 3.0
SIGMA_3D_MM = 1.5
TUBE_RATIO = 0.5

LIMITS = (
    "Possible fibrotic streaks are found by a hand-written rule (Hessian ridge filter, then length, width, "
    "elongation, straightness, HU and pleural-contact limits), not by a trained model. No pixel labels for fibrotic streaks "
    "exist here: the detector is heuristic and unvalidated, and its counts are not a diagnosis. In-plane "
    "vessels, bronchial walls, fissures, septal lines and plate atelectasis also look like thin straight "
    "lines; on thick slices or single slices vessels cannot be told apart through the neighbouring slices. "
    "Research use only."
)


@dataclass
class StreakResult:
    mask: np.ndarray  # bool, input shape: pixels of the kept candidates
    per_slice: list[dict]  # {"slice", "count", "total_length_mm", "area_mm2"} for slices with candidates
    candidates: list[dict]  # every kept candidate with its measurements
    rejected: dict  # reason -> count (for transparency)
    limits: str = LIMITS
    parameters: dict = field(default_factory=dict)


def bright_ridges(image: np.ndarray, sigmas) -> np.ndarray:
    """``skimage.filters.sato(image, sigmas, black_ridges=False, mode="reflect")`` with the Gaussian kernels cut
    at 8 (scaled) sigma for every scale. skimage cuts them at 100 sigma when a sigma is <= 1 pixel, which makes
    those kernels ~10x longer for weights below 1e-13 of the peak (float32 results unchanged in practice;
    ``test_fibrosis`` compares the two on a real CT)."""
    from skimage.feature import hessian_matrix_eigvals

    image = -np.asarray(image, np.float32)
    best = np.zeros_like(image)
    for sigma in sigmas:
        s = sigma / np.sqrt(2.0)
        grad = [ndimage.gaussian_filter(image, s, order=o, mode="reflect", truncate=8) for o in ((1, 0), (0, 1))]
        h = [ndimage.gaussian_filter(grad[a], s, order=o, mode="reflect", truncate=8)
             for a, o in ((0, (1, 0)), (0, (0, 1)), (1, (0, 1)))]
        best = np.maximum(best, sigma ** 2 * np.maximum(hessian_matrix_eigvals(h)[0], 0))
    return best


def _skeleton_length(sk: np.ndarray) -> float:
    """Length in pixels of a 1-pixel-wide skeleton: orthogonal steps count 1, diagonal steps sqrt(2)."""
    ortho = (sk[:, 1:] & sk[:, :-1]).sum() + (sk[1:, :] & sk[:-1, :]).sum()
    diag = (sk[1:, 1:] & sk[:-1, :-1]).sum() + (sk[1:, :-1] & sk[:-1, 1:]).sum()
    return float(ortho + np.sqrt(2.0) * diag) + 1.0


def _erode_in_box(mask2d: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``binary_erosion`` of ``mask2d`` (outside counts as background), computed in its bounding box only."""
    out = np.zeros(mask2d.shape, bool)
    rows, cols = (np.flatnonzero(mask2d.any(axis=a)) for a in (1, 0))
    if rows.size:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        out[box] = ndimage.binary_erosion(np.pad(mask2d[box], 1), structure)[1:-1, 1:-1]
    return out


def _hessian_tube_ratio(hu: np.ndarray, k: int, pixels: np.ndarray, spacing) -> float:
    """Median |l2| / |l3| of the 3D Hessian of the smoothed HU at the candidate's pixels (slice k)."""
    ys, xs = np.nonzero(pixels)
    sig = [SIGMA_3D_MM / spacing[2], SIGMA_3D_MM / spacing[1], SIGMA_3D_MM / spacing[0]]
    pad = [int(np.ceil(3 * s)) + 1 for s in sig]
    z0, z1 = max(k - pad[0], 0), min(k + pad[0] + 1, hu.shape[0])
    y0, y1 = max(ys.min() - pad[1], 0), min(ys.max() + pad[1] + 1, hu.shape[1])
    x0, x1 = max(xs.min() - pad[2], 0), min(xs.max() + pad[2] + 1, hu.shape[2])
    crop = np.clip(hu[z0:z1, y0:y1, x0:x1], *CLIP_HU).astype(np.float64)
    h = np.empty((len(ys), 3, 3))
    step = (spacing[2], spacing[1], spacing[0])
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndimage.gaussian_filter(crop, sig, order=order, mode="nearest") / (step[i] * step[j])
            h[:, i, j] = h[:, j, i] = d[k - z0, ys - y0, xs - x0]
    ev = np.linalg.eigvalsh(h)
    ev = np.take_along_axis(ev, np.argsort(np.abs(ev), axis=1), axis=1)
    return float(np.median(np.abs(ev[:, 1]) / np.maximum(np.abs(ev[:, 2]), 1e-6)))


def detect_streaks(hu: np.ndarray, lungs, spacing: tuple[float, float, float],
                   cancel: Callable[[], bool] | None = None) -> StreakResult:
    """Possible fibrotic streaks in a (z, y, x) HU volume or a (y, x) slice inside ``lungs`` (mask or labels).
    ``cancel()`` is checked before each slice (raises ``Cancelled``). Works slice by slice: no volume copies."""
    from skimage.measure import regionprops
    from skimage.morphology import skeletonize

    hu3, lungs3 = np.asarray(hu), np.asarray(getattr(lungs, "labels", lungs))
    squeeze = hu3.ndim == 2
    if squeeze:
        hu3, lungs3 = hu3[None], lungs3[None]
    if hu3.shape != lungs3.shape:
        raise ValueError(f"HU array {hu3.shape} and lung mask {lungs3.shape} differ in shape")
    px = float(np.sqrt(spacing[0] * spacing[1]))
    use_3d = hu3.shape[0] >= 3 and spacing[2] <= MAX_Z_SPACING_MM
    margin = disc(round(PLEURA_MARGIN_MM / min(spacing[0], spacing[1])))
    sigmas = [s / px for s in SIGMAS_MM]
    mask = np.zeros(hu3.shape, bool)
    per_slice, candidates = [], []
    rejected = {"short": 0, "wide": 0, "round": 0, "curved_or_branching": 0, "hu_band": 0, "away_from_pleura": 0,
                "tube_in_3d": 0}
    for k in np.flatnonzero(lungs3.reshape(len(lungs3), -1).any(axis=1)):
        if cancel and cancel():
            raise Cancelled("cancelled while looking for fibrotic streaks")
        lung_k = lungs3[k] > 0
        region = _erode_in_box(lung_k, margin)
        if not region.any():
            continue
        rows, cols = (np.flatnonzero(region.any(axis=a)) for a in (1, 0))
        pad = int(np.ceil(4 * max(sigmas))) + 2
        box = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
        h = np.clip(hu3[k][box].astype(np.float32), *CLIP_HU)
        depth_mm = ndimage.distance_transform_edt(np.pad(lung_k[box], 1), sampling=(spacing[1], spacing[0]))
        depth_mm = depth_mm[1:-1, 1:-1]  # distance to the lung border; outside the array counts as outside
        ridge = bright_ridges(h, sigmas)
        cand = (ridge >= RIDGE_MIN) & (h >= LINE_MIN_HU) & region[box]
        comps, _ = ndimage.label(cand, np.ones((3, 3), bool))
        count, length_sum, area_sum = 0, 0.0, 0.0
        for p in regionprops(comps, intensity_image=h):
            r0, c0, r1, c1 = p.bbox  # the Feret diameter never exceeds the box diagonal: no hull for short ones
            length = p.feret_diameter_max * px if np.hypot(r1 - r0, c1 - c0) * px >= MIN_LENGTH_MM else 0.0
            if length < MIN_LENGTH_MM:
                rejected["short"] += 1
                continue
            area = float(p.area) * spacing[0] * spacing[1]
            width = area / length
            elongation = p.axis_major_length / max(p.axis_minor_length, 1e-6)
            skeleton_len = max(_skeleton_length(skeletonize(p.image)), 1.0) * px
            straightness = min(length / skeleton_len, 1.0)
            if width > MAX_WIDTH_MM:
                rejected["wide"] += 1
                continue
            if elongation < MIN_ELONGATION:
                rejected["round"] += 1
                continue
            if straightness < MIN_STRAIGHTNESS:
                rejected["curved_or_branching"] += 1
                continue
            if not MEAN_HU[0] <= p.intensity_mean <= MEAN_HU[1]:
                rejected["hu_band"] += 1
                continue
            if depth_mm[p.slice][p.image].min() > PLEURA_CONTACT_MM:
                rejected["away_from_pleura"] += 1
                continue
            full = np.zeros(hu3.shape[1:], bool)
            full[box][p.slice] = p.image
            tube = _hessian_tube_ratio(hu3, k, full, spacing) if use_3d else None
            if tube is not None and tube >= TUBE_RATIO:
                rejected["tube_in_3d"] += 1
                continue
            mask[k] |= full
            count += 1
            length_sum += length
            area_sum += area
            candidates.append({"slice": int(k), "length_mm": round(length, 1), "width_mm": round(float(width), 2),
                               "elongation": round(elongation, 1), "straightness": round(straightness, 2),
                               "mean_hu": round(float(p.intensity_mean), 0),
                               "tube_ratio_3d": None if tube is None else round(tube, 2)})
        if count:
            per_slice.append({"slice": int(k), "count": count, "total_length_mm": round(length_sum, 1),
                              "area_mm2": round(area_sum, 1)})
    params = {"sigmas_mm": SIGMAS_MM, "ridge_min": RIDGE_MIN, "line_min_hu": LINE_MIN_HU,
              "pleura_margin_mm": PLEURA_MARGIN_MM, "min_length_mm": MIN_LENGTH_MM, "max_width_mm": MAX_WIDTH_MM,
              "min_elongation": MIN_ELONGATION, "min_straightness": MIN_STRAIGHTNESS, "mean_hu": MEAN_HU,
              "pleura_contact_mm": PLEURA_CONTACT_MM,
              "tube_test_3d": use_3d, "tube_ratio": TUBE_RATIO}
    return StreakResult(mask[0] if squeeze else mask, per_slice, candidates, rejected, LIMITS, params)
