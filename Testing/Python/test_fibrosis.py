"""Possible fibrotic streaks: a synthetic thin band is found; a round blob and a vessel-like tube are not."""

from __future__ import annotations

import numpy as np
from conftest import COVID_HU
from CovidCTScreenLib.lesions.fibrosis import detect_streaks

SPACING = (0.7, 0.7, 1.0)


def _segment_distance(y, x, a, b):
    v = np.subtract(b, a, dtype=float)
    t = np.clip(((y - a[0]) * v[0] + (x - a[1]) * v[1]) / (v @ v), 0, 1)
    return np.hypot(y - (a[0] + t * v[0]), x - (a[1] + t * v[1]))


def _phantom():
    """Aerated lung with: a thin band (1.6 mm wide, about 50 mm long, -100 HU) reaching the pleura, lying in
    slices 9-15 as a sheet; the same band away from the pleura in slices 18-20; a round blob (r 4 mm, +30 HU);
    a vessel-like tube (r 1.5 mm, +40 HU) that climbs through the slices at a shallow angle to the pleura,
    so each slice shows a thin straight segment of it."""
    z, y, x = np.mgrid[0:24, 0:160, 0:160]
    hu = (-860 + np.random.default_rng(0).normal(0, 20, z.shape)).astype(np.float32)
    lungs = np.zeros(z.shape, bool)
    lungs[:, 10:150, 10:150] = True
    line = _segment_distance(y, x, (40, 12), (60, 82)) * 0.7 < 0.8
    band = line & (z >= 9) & (z <= 15)
    inner = (_segment_distance(y, x, (40, 45), (60, 115)) * 0.7 < 0.8) & (z >= 18) & (z <= 20)
    blob = (np.hypot(y - 110, x - 50) * 0.7 < 4) & (abs(z - 12) < 4)
    tube = (np.hypot(z - (4 + 0.084 * (x - 30)), (y - 125) * 0.7) < 1.5) & (x > 30)
    hu[band | inner], hu[blob], hu[tube] = -100.0, 30.0, 40.0
    return hu, lungs, band, blob, tube, inner


def test_band_found_blob_and_tube_rejected_in_3d():
    hu, lungs, band, blob, tube, inner = _phantom()
    res = detect_streaks(hu, lungs, SPACING)
    assert res.mask.shape == hu.shape
    assert {row["slice"] for row in res.per_slice} == set(range(9, 16))
    assert all(row["count"] == 1 for row in res.per_slice)
    assert all(45 <= row["total_length_mm"] <= 60 for row in res.per_slice)
    assert (res.mask & band).sum() > 0.8 * band.sum()
    assert not (res.mask & blob).any()
    assert not (res.mask & tube).any()
    assert not (res.mask & inner).any()
    assert res.rejected["tube_in_3d"] > 0 and res.rejected["round"] > 0 and res.rejected["away_from_pleura"] > 0
    assert "heuristic and unvalidated" in res.limits


def test_single_slice_finds_line_not_blob():
    hu, lungs, band, blob, _, _ = _phantom()
    res = detect_streaks(hu[12], lungs[12], SPACING)  # one slice: no 3D tube test
    assert res.mask.shape == hu[12].shape and res.parameters["tube_test_3d"] is False
    assert (res.mask & band[12]).sum() > 0.8 * band[12].sum()
    assert not (res.mask & blob[12]).any()
    assert res.per_slice and res.per_slice[0]["slice"] == 0


def test_real_slice_runs_and_reports():
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import read_dicom_slice

    hu, spacing = read_dicom_slice(COVID_HU / "A098752_19010127-128.dcm")
    mask = lung_mask(hu, spacing)
    res = detect_streaks(hu, mask, spacing)
    assert res.mask.shape == hu.shape and not (res.mask & ~mask.lungs).any()
    for row in res.per_slice:
        assert row["count"] >= 1 and row["total_length_mm"] >= 10.0
