"""HU lung mask on real chest CT and real COVID-19 slices: plausible volumes, two lungs, airways out, lesions kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from CovidCTScreenLib.lungs.lung_mask import CLOSING_MM, LEFT, RIGHT, airway_mask, lung_mask
from CovidCTScreenLib.input.volume_io import read_dicom_slice

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


def test_dense_lungs_airways_and_trapped_air_out():
    """A046441: diffusely dense lungs of an intubated patient (no lung air below -850 HU); the narrow trachea and the
    left main bronchus only reach -850..-945 HU (5 mm slice). Found here at full resolution: central air (< -800 HU)
    of airway size ringed by soft tissue (3 mm ring above -500 HU). Neither is lung, nor is the air trapped under a
    pad in front of the chest."""
    hu, spacing = read_dicom_slice(COVID_HU / "A046441_19010101-23.dcm")
    h = hu[0]
    body, _ = ndimage.label(h > -500)
    body = ndimage.binary_fill_holes(body == np.bincount(body.ravel())[1:].argmax() + 1)
    cols = np.flatnonzero(body.any(axis=0))
    centre, width = (cols[0] + cols[-1]) / 2, cols[-1] - cols[0]
    air, n = ndimage.label((h < -800) & body)
    ring_px = round(3.0 / spacing[0])
    airways = []
    for i in range(1, n + 1):
        comp = air == i
        area = comp.sum() * spacing[0] * spacing[1]
        ring = ndimage.binary_dilation(comp, iterations=ring_px) & ~comp
        if 20 <= area <= 700 and abs(np.nonzero(comp)[1].mean() - centre) < 0.15 * width and h[ring].mean() > -500:
            airways.append(comp)
    assert len(airways) == 2  # trachea and left main bronchus
    mask = lung_mask(hu, spacing)
    for comp in airways:
        assert not mask.lungs[0][comp].any()
    # air between a pad and the front of the chest lies outside the body at full resolution (the pad is not joined
    # to the body by tissue above -500 HU); on the coarser working grid the pad closes over it: it is not lung
    outside = (h < -900) & ~body
    assert (mask.lungs[0] & outside).sum() * spacing[0] * spacing[1] < 20  # mm2


def test_no_lung_gives_empty_mask():
    """Soft tissue only (no air inside a body): nothing is called lung."""
    hu = np.full((6, 128, 128), -1000.0, np.float32)
    yy, xx = np.mgrid[:128, :128]
    hu[:, (yy - 64) ** 2 + (xx - 64) ** 2 < 50 ** 2] = 40.0
    assert lung_mask(hu, (1.0, 1.0, 5.0)).labels.sum() == 0


def _lowest_third(mask) -> slice:
    ks = np.flatnonzero(mask.lungs.any(axis=(1, 2)))
    return slice(ks[0], ks[0] + len(ks) // 3)


def _soft_tissue(hu, inside, spacing, min_hu=-100.0, opening_mm=3.0):
    """Soft tissue in ``inside`` after an in-plane opening that drops vessels, and its 3D components (mL each,
    largest first)."""
    r = round(opening_mm / spacing[0])
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    solid = ndimage.binary_opening((hu > min_hu) & inside, (xx * xx + yy * yy <= r * r)[None])
    labels, _ = ndimage.label(solid)
    return solid, np.sort(np.bincount(labels.ravel())[1:])[::-1] * np.prod(spacing) / 1000.0


def test_normal_ct_no_organs_at_the_bases(normal_ct, normal_mask):
    """normal002: in the lowest third of the lungs (liver dome, spleen / stomach, cardiac apex rise into the lung
    there) no lung-mask component of soft-tissue density is larger than 2 mL."""
    low = _lowest_third(normal_mask)
    _, parts = _soft_tissue(normal_ct.hu[low], normal_mask.lungs[low], normal_ct.spacing)
    assert parts.size == 0 or parts[0] < 2.0, f"soft-tissue blobs of {parts[:3]} mL inside the lung mask"


def test_normal_ct_liver_dome_left_out(normal_ct, normal_mask):
    """normal002: on axial slices the liver dome is an island enclosed by the right lung; the island (soft tissue
    inside the in-plane outline of the right lung) is large, and it is not lung."""
    low = _lowest_third(normal_mask)
    right = normal_mask.labels[low] == RIGHT
    outline = np.stack([ndimage.binary_fill_holes(s) for s in right])
    dome, parts = _soft_tissue(normal_ct.hu[low], outline, normal_ct.spacing)
    assert parts[0] > 10.0  # mL of liver dome enclosed in-plane by the right lung
    assert (right[dome]).mean() < 0.02


def test_normal_ct_no_gas_of_the_bowel_or_stomach(normal_ct, normal_mask):
    """Below the lung bases the mask holds nothing, and the lungs hold no pure gas (bowel / stomach)."""
    assert np.median(normal_ct.hu[normal_mask.lungs]) > -950
    gas = (normal_ct.hu < -950) & normal_mask.lungs
    labels, _ = ndimage.label(gas)
    sizes = np.bincount(labels.ravel())[1:] * np.prod(normal_ct.spacing) / 1000.0
    assert sizes.size == 0 or sizes.max() < 5.0, "a pocket of pure gas (bowel / stomach) labelled lung"


def test_normal_ct_two_lungs_sided(normal_ct, normal_mask):
    vol = normal_mask.volumes_ml(normal_ct.spacing)
    assert 3000 < vol["total"] < 7000 and vol["right"] > vol["left"] > 0.35 * vol["total"]
    cols = np.arange(normal_ct.shape[2])
    for k in np.flatnonzero(normal_mask.lungs.any(axis=(1, 2))):  # each slice: the right lung on the image left
        r, lft = normal_mask.labels[k] == RIGHT, normal_mask.labels[k] == LEFT
        if r.sum() > 500 and lft.sum() > 500:
            assert r.sum(axis=0) @ cols / r.sum() < lft.sum(axis=0) @ cols / lft.sum(), f"sides swapped at slice {k}"


def test_normal_ct_inserted_basal_disease_kept(normal_ct, normal_mask):
    """Disease placed in the real lung bases stays in the mask: a consolidation ball (+30 HU) in the right
    lower lobe (enclosed by lung in 3D, wider than the closing) and a small subpleural consolidation (a lens
    12 mm wide, 5 mm thick, narrower than the closing) on the posterior chest wall of the left base. Broad
    pleural-based consolidation is not kept: see the README (lung mask, limits)."""
    ct = normal_ct
    hu = ct.hu.copy()
    sx, sy, sz = ct.spacing
    low = _lowest_third(normal_mask)
    z, y, x = np.indices(hu.shape, sparse=True)
    depth = ndimage.distance_transform_edt(normal_mask.labels[low] == RIGHT, sampling=(sz, sy, sx))
    ck, cy, cx = np.unravel_index(depth.argmax(), depth.shape)  # deepest point of the right lung's base
    ck += low.start
    radius = 0.8 * depth.max()
    assert radius > 1.2 * CLOSING_MM  # wider than the closing: only the 3D filling can keep it
    ball = ((x - cx) * sx) ** 2 + ((y - cy) * sy) ** 2 + ((z - ck) * sz) ** 2 < radius ** 2
    k = ck
    left = normal_mask.labels[k] == LEFT
    rows, cols = np.nonzero(left)
    py, px = rows.max(), int(np.median(cols[rows > rows.max() - 5]))  # posterior edge of the left lung
    lens = (((x - px) * sx / 6.0) ** 2 + ((z - k) * sz / 6.0) ** 2 + ((y - py) * sy / 5.0) ** 2 < 1) \
        & (normal_mask.labels == LEFT)
    hu[ball | lens] = 30.0
    mask = lung_mask(hu, ct.spacing)
    assert (mask.labels[ball] == RIGHT).mean() > 0.95
    assert lens.sum() * sx * sy * sz / 1000 > 0.2 and (mask.labels[lens] == LEFT).mean() > 0.9


def test_covid_ct_basal_disease_kept(covid19_ct, covid19_mask):
    """P002: ground glass and consolidation in both lower lobes (radiologists' infected slices). On the infected
    slices of the lower half of the lungs, the disease band (-750..-100 HU) inside each lung's in-plane convex hull
    is mostly in the mask (the rest is partial volume at the diaphragm, heart and chest wall)."""
    from conftest import infected_slices

    ct, mask = covid19_ct, covid19_mask
    infected = infected_slices(ct)
    ks = np.flatnonzero(mask.lungs.any(axis=(1, 2)))
    lower = [k for k in ks[: len(ks) // 2] if infected[k]]
    assert len(lower) > 10
    band = kept = 0
    for k in lower:
        h = ndimage.median_filter(ct.hu[k], 3)
        for side in (RIGHT, LEFT):
            if (mask.labels[k] == side).any():
                sel = (h >= -750) & (h < -100) & convex_hull_image(mask.labels[k] == side)
                band += sel.sum()
                kept += (sel & mask.lungs[k]).sum()
    assert kept / band > 0.8


def _write_like(ct, array, path, **meta):
    import SimpleITK as sitk

    img = ct.like(array)
    for key, value in meta.items():
        img.SetMetaData(key, value)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def test_user_label_map_binary_and_segments(nifti_ct, nifti_mask, tmp_path):
    """A mask the user has: our label map as is, a binary mask split into the same sides, and a segmentation with
    TotalSegmentator-style lobe names (other segments ignored); the source is recorded for the report."""
    from CovidCTScreenLib.lungs.lung_mask import read_lung_mask

    labels = nifti_mask.labels
    got = read_lung_mask(_write_like(nifti_ct, labels, tmp_path / "lungs.nrrd"), nifti_ct)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.source["source"] == "user file lungs.nrrd" and "1 right, 2 left" in got.source["method"]
    binary = read_lung_mask(_write_like(nifti_ct, (labels > 0).astype(np.uint8), tmp_path / "b.nii.gz"), nifti_ct)
    assert (binary.labels == labels).mean() > 0.999 and "binary" in binary.source["method"]
    lobes = np.zeros_like(labels)
    mid = labels.shape[0] // 2
    lobes[:mid][labels[:mid] == RIGHT], lobes[mid:][labels[mid:] == RIGHT] = 14, 12  # lower / upper right lobe
    lobes[labels == LEFT] = 10
    lobes[(labels == 0) & (nifti_ct.hu > 200)] = 7  # a non-lung segment (bone)
    meta = {}
    for i, (name, value) in enumerate([("lung_lower_lobe_right", 14), ("lung_upper_lobe_right", 12),
                                       ("lung_upper_lobe_left", 10), ("vertebrae", 7)]):
        meta.update({f"Segment{i}_Name": name, f"Segment{i}_LabelValue": str(value), f"Segment{i}_Layer": "0"})
    seg = read_lung_mask(_write_like(nifti_ct, lobes, tmp_path / "t.seg.nrrd", **meta), nifti_ct, "TotalSeg")
    np.testing.assert_array_equal(seg.labels, labels)
    assert seg.source["source"] == "Slicer segmentation TotalSeg" and "lung_upper_lobe_left" in seg.source["method"]


def test_user_mask_on_another_grid_refused_or_placed(nifti_ct, nifti_mask, tmp_path):
    import SimpleITK as sitk

    from CovidCTScreenLib.errors import InputError
    from CovidCTScreenLib.lungs.lung_mask import read_lung_mask

    img = nifti_ct.like(nifti_mask.labels)
    img.SetSpacing((1.0, 1.0, 5.0))
    sitk.WriteImage(img, str(tmp_path / "other.nrrd"))
    with pytest.raises(InputError, match="not on the CT grid"):
        read_lung_mask(tmp_path / "other.nrrd", nifti_ct)
    shifted = nifti_ct.like(nifti_mask.labels)
    shifted.SetOrigin(tuple(o + 0.5 * sp for o, sp in zip(shifted.GetOrigin(), shifted.GetSpacing())))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nrrd"))
    with pytest.raises(InputError, match="not on the CT grid"):
        read_lung_mask(tmp_path / "shifted.nrrd", nifti_ct)
    # cropped to part of the CT grid (as Slicer saves segmentations): placed back where it belongs
    sitk.WriteImage(nifti_ct.like(nifti_mask.labels)[10:-10, 20:, 2:], str(tmp_path / "cropped.nrrd"))
    got = read_lung_mask(tmp_path / "cropped.nrrd", nifti_ct).labels
    np.testing.assert_array_equal(got[2:, 20:, 10:-10], nifti_mask.labels[2:, 20:, 10:-10])
    assert not got[:2].any()
    with pytest.raises(InputError, match="does not exist"):
        read_lung_mask(tmp_path / "missing.nrrd", nifti_ct)
