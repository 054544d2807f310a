"""HU-band GGO / consolidation extent: synthetic lungs of known lesion volume, and a real COVID-19 HU slice."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import COVID_HU
from CovidCTScreenLib.lesions.hu_bands import CONSOLIDATION, GGO, hu_band_extent

SPACING = (0.8, 0.8, 2.0)


def _synthetic_lungs(seed: int = 0):
    """Two box lungs of aerated lung (-860 HU, noise 15 HU) in soft tissue, with a GGO ball (r 10 mm, -550 HU)
    in the right lung, a consolidation ball (r 8 mm, -20 HU) in the left, and two vessels (r 2 / 2.5 mm, +40 HU):
    one through the slices (left), one lying in the slices (right)."""
    z, y, x = np.mgrid[0:40, 0:160, 0:200]
    hu = np.full(z.shape, 40.0, np.float32)
    labels = np.zeros(z.shape, np.uint8)
    labels[:, 20:140, 10:95], labels[:, 20:140, 105:190] = 1, 2
    hu[labels > 0] = -860 + np.random.default_rng(seed).normal(0, 15, int((labels > 0).sum()))
    ball = {}
    for name, (zc, yc, xc, r, value) in {"ggo": (20, 80, 52, 10.0, -550.0), "cons": (20, 80, 150, 8.0, -20.0)}.items():
        ball[name] = np.sqrt(((z - zc) * SPACING[2]) ** 2 + ((y - yc) * SPACING[1]) ** 2
                             + ((x - xc) * SPACING[0]) ** 2) < r
        hu[ball[name]] = value
    tube_z = (np.hypot((y - 50) * 0.8, (x - 130) * 0.8) < 2.0) & (labels == 2)
    tube_x = (np.hypot((z - 10) * 2.0, (y - 120) * 0.8) < 2.5) & (labels == 1) & (x > 20) & (x < 85)
    hu[tube_z | tube_x] = 40.0
    return hu, labels, ball, tube_z | tube_x


def test_known_volumes_and_vessels_excluded():
    hu, labels, ball, tubes = _synthetic_lungs()
    voxel_ml = np.prod(SPACING) / 1000.0
    res = hu_band_extent(hu, labels, SPACING, vessels=True)
    assert hu_band_extent(hu, labels, SPACING).vessels is None  # only on request: the screening does not use it
    true_ggo, true_cons = ball["ggo"].sum() * voxel_ml, ball["cons"].sum() * voxel_ml  # voxelised balls
    assert res.totals["right"]["ggo_ml"] == pytest.approx(true_ggo, rel=0.05)
    assert res.totals["left"]["consolidation_ml"] == pytest.approx(true_cons, rel=0.10)
    assert res.totals["left"]["ggo_ml"] < 0.05 * true_ggo  # the consolidation ball's edge is not GGO
    assert res.totals["right"]["consolidation_ml"] == 0.0
    assert not (res.labels[tubes] > 0).any(), "vessel voxels counted as lesion"
    assert res.vessels[tubes].mean() > 0.95
    # the vessels' partial-volume halo is not GGO: lesion is only where the balls are
    assert not ((res.labels > 0) & ~ball["ggo"] & ~ball["cons"]).any()
    right = res.totals["right"]
    assert right["ggo_pct"] == pytest.approx(100 * right["ggo_ml"] / right["measured_ml"])
    assert right["measured_ml"] < right["lung_ml"]  # the border rim is not measured
    assert res.labels.shape == hu.shape and res.labels.dtype == np.uint8
    per_slice = sum(row["right"]["ggo_ml"] for row in res.per_slice)
    assert per_slice == pytest.approx(right["ggo_ml"])


def test_single_slice_matches_volume_slice():
    hu, labels, _, _ = _synthetic_lungs()
    vol = hu_band_extent(hu, labels, SPACING)
    one = hu_band_extent(hu[20], labels[20], SPACING)
    assert one.labels.shape == hu[20].shape
    np.testing.assert_array_equal(one.labels, vol.labels[20])
    assert one.totals["both"]["ggo_ml"] == pytest.approx(vol.per_slice[20]["both"]["ggo_ml"])
    with pytest.raises(ValueError):
        hu_band_extent(hu[20], labels[20], SPACING[:2])


def test_real_covid_slice_has_ggo():
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import read_dicom_slice

    hu, spacing = read_dicom_slice(COVID_HU / "A002304_19010112-135.dcm")  # bilateral GGO (data README)
    mask = lung_mask(hu, spacing)
    res = hu_band_extent(hu, mask, spacing)
    both = res.totals["both"]
    assert both["ggo_pct"] > 5.0
    assert both["measured_ml"] > 5.0
    assert {GGO, CONSOLIDATION} >= set(np.unique(res.labels[res.labels > 0]).tolist())
    assert not (res.labels > 0)[~mask.lungs].any()


def test_normal_ct_no_over_call(normal_ct, normal_mask):
    """normal002 (a normal CT volume): dependent density, vessels and their halo, fissures and the partial volume
    of the diaphragm are not lesion: GGO <= 2 % and consolidation <= 0.5 % of the lung."""
    both = hu_band_extent(normal_ct.hu, normal_mask, normal_ct.spacing).totals["both"]
    assert both["ggo_pct"] <= 2.0 and both["consolidation_pct"] <= 0.5, both


def test_covid_ct_extent_tracks_slice_labels(covid19_ct, covid19_mask):
    """P002 (COVID-19): ground glass is clearly measured, and the per-slice lesion fraction ranks the radiologists'
    infected slices above the others."""
    from conftest import infected_slices

    from CovidCTScreenLib.evaluation.metrics import roc_auc

    res = hu_band_extent(covid19_ct.hu, covid19_mask, covid19_ct.spacing)
    assert res.totals["both"]["ggo_pct"] > 3.0
    ks = [row["slice"] for row in res.per_slice]
    lesion = [row["both"]["lesion_pct"] for row in res.per_slice]
    assert roc_auc(infected_slices(covid19_ct)[ks], np.array(lesion)) > 0.65
