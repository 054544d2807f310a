"""Distribution of disease in the lungs: per lung and zone, central vs peripheral, and a CT severity score.

From a lesion label map (1 GGO, 2 consolidation) and the lung labels (1 right, 2 left) of the same (z, y, x) grid,
slice index k running inferior -> superior (``volume_io`` loads every CT that way):

- **zones**: each lung's cranio-caudal extent (its lowest to its highest slice) is cut into equal thirds: lower,
  middle, upper. Zones are not lobes (no fissures are found here): the lower zone holds most of the lower lobe,
  but also the lingula / middle lobe tips on some slices, and the upper zone the apices.
- **peripheral / central**: on each axial slice, a lung voxel is peripheral when its distance to that lung's border
  is at most one third of the lung's greatest depth on that slice (the outer third, as in Bernheim et al.,
  Radiology 2020;295:200463, who called lesions peripheral in the outer third of the lung, central in the inner
  two thirds); the rest is central. The border includes the mediastinal surface and the hilum, so lesions along
  the mediastinal pleura count as peripheral.
- **lesion %** is of the measured lung (``measured``, e.g. the lung less its 2 mm partial-volume rim, as the
  extents are), so the figures add up with ``manifestations``.
- **severity score** per zone (0-5), six zones, total 0-30, adapted from the lobe-based 0-5 score of Francone et
  al. (Eur Radiol 2020;30:6808; 1 < 5 %, 2 5-25 %, 3 26-50 %, 4 51-75 %, 5 > 75 % of the lobe, total 0-25),
  the finer form of the 0-4 lobe scores of Chung et al. (Radiology 2020;295:202) and Pan et al. (Radiology
  2020;295:715). Here zone thirds replace the five lobes; a zone scores 0 below ``MIN_ZONE_PCT`` (see there).
- **bilateral**: both lungs above a normal lung's limits (``NORMAL_LIMITS_PCT``); **peripheral predominant**: the
  lesion % of the peripheral lung exceeds that of the central lung (both lungs pooled; a uniform spread gives
  equal figures, so no margin is added); **lower-zone predominant**: the lower zones' lesion % (both lungs) exceeds
  that of the middle and of the upper zones.
"""

from __future__ import annotations

import numpy as np

SIDES = {1: "right", 2: "left"}  # lung labels (lung_mask.py)
GGO, CONSOLIDATION = 1, 2
ZONES = ("upper", "middle", "lower")
# A normal lung's measured extent may reach these (issue 12's acceptance limits for normal CT volumes): a lung or a
# study above them is "involved".
NORMAL_LIMITS_PCT = {"ggo": 2.0, "consolidation": 0.5}
# Zone score 0 below this lesion %: the normal-lung consolidation limit, so that measurement noise in a normal zone
# (single voxels of vessel or dependent density) does not score 1 as a visible opacity would.
MIN_ZONE_PCT = NORMAL_LIMITS_PCT["consolidation"]
SCORE_EDGES_PCT = (5.0, 25.0, 50.0, 75.0)  # score 1 below 5 %, 2 from 5 to 25 %, 3 to 50 %, 4 to 75 %, 5 above
PERIPHERAL_FRACTION = 1.0 / 3.0
SEVERITY_DEFINITION = (
    f"CT severity score: 6 zones (upper / middle / lower third of each lung's cranio-caudal extent; zones are not "
    f"lobes), each 0 (lesion < {MIN_ZONE_PCT:g} % of the zone), 1 (< 5 %), 2 (5-25 %), 3 (26-50 %), 4 (51-75 %), "
    f"5 (> 75 %); total 0-30. Adapted from the 0-5 lobe score of Francone et al. (Eur Radiol 2020), the finer form "
    f"of the 0-4 lobe scores of Chung et al. and Pan et al. (Radiology 2020).")


def zone_score(lesion_pct: float) -> int:
    """0-5 severity score of one zone from its lesion % (``SEVERITY_DEFINITION``)."""
    if lesion_pct < MIN_ZONE_PCT:
        return 0
    first, *upper = SCORE_EDGES_PCT
    return 1 + int(lesion_pct >= first) + sum(int(lesion_pct > e) for e in upper)


def involved(ggo_pct: float, consolidation_pct: float) -> bool:
    """More GGO or consolidation than a normal lung may show (``NORMAL_LIMITS_PCT``)."""
    return bool(ggo_pct > NORMAL_LIMITS_PCT["ggo"] or consolidation_pct > NORMAL_LIMITS_PCT["consolidation"])


def _pct(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def zone_of_slices(present: np.ndarray) -> np.ndarray:
    """Zone index per slice (0 upper, 1 middle, 2 lower; -1 where the lung is absent) from a per-slice presence
    vector of one lung (index inferior -> superior)."""
    out = np.full(present.shape, -1, np.int8)
    ks = np.flatnonzero(present)
    if ks.size == 0:
        return out
    t = (ks - ks[0] + 0.5) / (ks[-1] - ks[0] + 1)  # slice centre as a fraction of the extent, 0 = lowest
    out[ks] = np.where(t < 1 / 3, 2, np.where(t < 2 / 3, 1, 0))
    return out


def peripheral_region(lung2d: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Boolean: the outer third (by distance to the border) of one lung on one axial slice."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(lung2d, 1), sampling=pixel_mm)[1:-1, 1:-1]
    return lung2d & (depth <= PERIPHERAL_FRACTION * depth.max())


def distribution(lesions: np.ndarray, lung_labels: np.ndarray, spacing, measured: np.ndarray | None = None) -> dict:
    """The report's ``distribution`` section (see the module docstring) of a (z, y, x) lesion label map.

    ``spacing`` is (x, y, z) mm; ``measured`` (bool, optional) is the part of the lung the percentages are of."""
    if lesions.shape != lung_labels.shape or (measured is not None and measured.shape != lesions.shape):
        raise ValueError(f"lesion map {lesions.shape}, lung labels {lung_labels.shape} and measured lung must match")
    pixel_mm = (float(spacing[1]), float(spacing[0]))
    # counts[side, zone, region, kind]: region 0 peripheral / 1 central; kind 0 measured, 1 GGO, 2 consolidation
    counts = np.zeros((3, 3, 2, 3), np.int64)
    for s in SIDES:
        zones = zone_of_slices(np.asarray((lung_labels == s).reshape(len(lung_labels), -1).any(axis=1)))
        for k in np.flatnonzero(zones >= 0):
            lung = lung_labels[k] == s
            rows, cols = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            lung = lung[box]
            meas = lung if measured is None else lung & measured[k][box]
            rim = peripheral_region(lung, pixel_mm)
            les = lesions[k][box]
            for region, sel in enumerate((meas & rim, meas & ~rim)):
                counts[s, zones[k], region] += np.bincount(les[sel], minlength=3)[:3] * [0, 1, 1] + [sel.sum(), 0, 0]
    return _summarise(counts)


def _summarise(counts: np.ndarray) -> dict:
    def pcts(c: np.ndarray) -> tuple[float, float, float]:
        """(lesion, GGO, consolidation) % of the measured voxels, ``c`` summed to [measured, ggo, cons]."""
        return _pct(c[1] + c[2], c[0]), _pct(c[1], c[0]), _pct(c[2], c[0])

    zones = {}
    for s, side in SIDES.items():
        zones[side] = {}
        for z, zone in enumerate(ZONES):
            lesion, ggo, cons = pcts(counts[s, z].sum(axis=0))
            zones[side][zone] = {"lesion_pct": round(lesion, 2), "ggo_pct": round(ggo, 2),
                                 "consolidation_pct": round(cons, 2),
                                 "peripheral_pct": round(pcts(counts[s, z, 0])[0], 2),
                                 "central_pct": round(pcts(counts[s, z, 1])[0], 2), "score": zone_score(lesion)}
    per_lung = {side: pcts(counts[s].sum(axis=(0, 1))) for s, side in SIDES.items()}
    peripheral, central = pcts(counts[:, :, 0].sum(axis=(0, 1)))[0], pcts(counts[:, :, 1].sum(axis=(0, 1)))[0]
    by_zone = [pcts(counts[:, z].sum(axis=(0, 1)))[0] for z in range(3)]
    total = sum(zones[side][zone]["score"] for side in zones for zone in ZONES)
    return {
        "zones": zones,
        "per_lung": {side: {"lesion_pct": round(v[0], 2), "ggo_pct": round(v[1], 2),
                            "consolidation_pct": round(v[2], 2), "involved": involved(v[1], v[2])}
                     for side, v in per_lung.items()},
        "bilateral": all(involved(v[1], v[2]) for v in per_lung.values()),
        "peripheral_predominant": bool(peripheral > central),
        "lower_zone_predominant": bool(by_zone[2] > max(by_zone[0], by_zone[1])),
        "peripheral_vs_central_pct": [round(peripheral, 2), round(central, 2)],
        "zone_lesion_pct": {zone: round(v, 2) for zone, v in zip(ZONES, by_zone)},
        "severity_score": {"total": int(total), "max": 6 * 5, "definition": SEVERITY_DEFINITION},
        "definitions": {
            "zones": "upper / middle / lower third of each lung's cranio-caudal extent (not lobes)",
            "peripheral": "outer third of the in-plane distance from the lung border to the lung's deepest point on "
                          "each axial slice (Bernheim et al. 2020); central: the inner two thirds",
            "involved": f"a lung with GGO > {NORMAL_LIMITS_PCT['ggo']:g} % or consolidation > "
                        f"{NORMAL_LIMITS_PCT['consolidation']:g} % of it (normal-lung limits, issue 12)",
            "bilateral": "both lungs involved",
            "peripheral_predominant": "lesion % of the peripheral lung > lesion % of the central lung",
            "lower_zone_predominant": "lesion % of the lower zones > that of the middle and of the upper zones",
        },
    }
