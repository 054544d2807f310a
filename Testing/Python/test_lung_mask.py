"""HU lung mask on real chest CT and real COVID-19 slices: plausible volumes, two lungs, airways out, lesions kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from CovidCTScreenLib.lung_mask import LEFT, RIGHT, airway_mask, lung_mask
from CovidCTScreenLib.volume_io import read_dicom_slice

from conftest import COVID_HU


@pytest.mark.parametrize("which", ["dicom", "nifti"])
def test_real_volumes_two_lungs_plausible_volume(which, request):
    ct = request.getfixturevalue(f"{which}_ct")
    mask = request.getfixturevalue(f"{which}_mask")
    vol = mask.volumes_ml(ct.spacing)
    assert 2000 < vol["total"] < 8000  # adult lungs, litres in a plausible range
    assert vol["right"] > 0.25 * vol["total"] and vol["left"] > 0.25 * vol["total"]
    # sided by the patient's axis: LPS +x is the patient's left, so the left lung has larger column indices
    cols = np.arange(ct.shape[2])
    right_x = (mask.labels == RIGHT).sum(axis=(0, 1)) @ cols / (mask.labels == RIGHT).sum()
    left_x = (mask.labels == LEFT).sum(axis=(0, 1)) @ cols / (mask.labels == LEFT).sum()
    assert right_x < ct.shape[2] / 2 < left_x
    # inside the body, and mostly aerated tissue
    assert not (mask.lungs & ~mask.body).any()
    assert np.median(ct.hu[mask.lungs]) < -700
    # each lung is one main piece
    for side in (RIGHT, LEFT):
        labels, n = ndimage.label(mask.labels == side)
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() > 0.9 * sizes.sum()


def test_trachea_not_in_lungs(nifti_ct, nifti_mask):
    """Above the apices the trachea is the only air in the body; it must not be labelled lung."""
    airways = airway_mask(nifti_ct.hu, nifti_mask.body, nifti_ct.spacing)
    top = nifti_ct.shape[0] - 3  # neck level: trachea, no lung
    assert airways[top].sum() > 50
    assert not (nifti_mask.lungs[top] & airways[top]).any()
    # follow the trachea down: at each level, the airway component nearest its position above
    cy, cx = ndimage.center_of_mass(airways[top])
    levels_with_lung = 0
    for k in range(top, 0, -1):
        labels, n = ndimage.label(airways[k])
        if n == 0:
            break
        centres = ndimage.center_of_mass(airways[k], labels, range(1, n + 1))
        d = [np.hypot((y - cy) * nifti_ct.spacing[1], (x - cx) * nifti_ct.spacing[0]) for y, x in centres]
        if min(d) > 15.0:
            break
        tube = labels == int(np.argmin(d)) + 1
        cy, cx = centres[int(np.argmin(d))]
        assert not (tube & nifti_mask.lungs[k]).any(), f"trachea labelled lung at slice {k}"
        levels_with_lung += nifti_mask.lungs[k].sum() > 1000
    assert levels_with_lung >= 3


def test_inserted_lesions_stay_in_mask(nifti_ct):
    """Synthetic GGO (-500 HU) and consolidation (+30 HU) blobs placed in real lung stay in the mask."""
    hu = nifti_ct.hu.copy()
    base = lung_mask(hu, nifti_ct.spacing)
    z, y, x = np.indices(hu.shape, sparse=True)
    sx, sy, sz = nifti_ct.spacing
    k = 30
    rows, cols = np.nonzero(base.labels[k] == RIGHT)
    cy, cx = int(np.median(rows)), int(np.median(cols))
    blob = ((x - cx) * sx) ** 2 + ((y - cy) * sy) ** 2 + ((z - k) * sz) ** 2 < 14.0 ** 2
    rows, cols = np.nonzero(base.labels[k] == LEFT)
    cy2, cx2 = int(np.median(rows)), int(np.median(cols))
    ggo = ((x - cx2) * sx) ** 2 + ((y - cy2) * sy) ** 2 + ((z - k) * sz) ** 2 < 20.0 ** 2
    hu[blob] = 30.0
    hu[ggo] = -500.0
    mask = lung_mask(hu, nifti_ct.spacing)
    assert (mask.labels[blob] == RIGHT).mean() > 0.95
    assert (mask.labels[ggo] == LEFT).mean() > 0.95
    assert abs(mask.volumes_ml(nifti_ct.spacing)["total"] - base.volumes_ml(nifti_ct.spacing)["total"]) < 150


def test_real_covid_ground_glass_kept():
    """A002304: bilateral ground glass with reticulation (right > left). The -750..-300 HU pixels inside
    the right lung's outline (convex hull of the mask) belong to the mask, and the lung is found at all."""
    hu, spacing = read_dicom_slice(COVID_HU / "A002304_19010112-135.dcm")
    mask = lung_mask(hu, spacing)
    right = mask.labels[0] == RIGHT
    assert right.sum() * spacing[0] * spacing[1] > 5000  # > 50 cm2 of right lung on this slice
    hull = convex_hull_image(right)
    ggo_band = (hu[0] > -750) & (hu[0] < -300) & hull
    assert ggo_band.sum() > 1000
    assert (right[ggo_band]).mean() > 0.9


@pytest.mark.parametrize("name", ["A048383_19010410-30.dcm", "A072894_19001203-066.dcm"])
def test_real_covid_slices_two_lungs(name):
    hu, spacing = read_dicom_slice(COVID_HU / name)
    mask = lung_mask(hu, spacing)
    areas = [(mask.labels[0] == side).sum() * spacing[0] * spacing[1] / 100 for side in (RIGHT, LEFT)]
    assert min(areas) > 10 and sum(areas) > 60  # cm2


def test_no_lung_gives_empty_mask():
    """Soft tissue only (no air inside a body): nothing is called lung."""
    hu = np.full((6, 128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    hu[:, (yy - 64) ** 2 + (xx - 64) ** 2 < 50 ** 2] = 40.0
    assert lung_mask(hu, (1.0, 1.0, 5.0)).labels.sum() == 0
