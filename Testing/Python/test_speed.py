"""The fast paths give the previous results on real CT, and a cancel stops a stage from inside it."""

from __future__ import annotations

import time
import traceback

import numpy as np
import pytest
from conftest import DATA

from CovidCTScreenLib.errors import Cancelled

P002 = DATA / "covid-ct-md" / "COVID-19 subjects" / "P002"


@pytest.fixture(scope="module")
def p002():
    from CovidCTScreenLib.input.volume_io import load_ct

    return load_ct(P002)


def test_scanner_ct_loads_as_int16_with_the_same_values(p002):
    import SimpleITK as sitk

    assert p002.hu.dtype == np.int16  # half the memory of float32; whole HU are exact
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(P002))
    reference = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(names), "LPS")).astype(np.float32)
    assert np.array_equal(p002.hu.astype(np.float32), reference)


def test_ridge_filter_matches_skimage_sato_on_real_slices(p002):
    """``fibrosis.bright_ridges`` (kernels cut at 8 sigma) against skimage's sato (cut at 100 sigma for
    sigma <= 1 pixel): the same ridge pixels at the detector's threshold."""
    from skimage.filters import sato

    from CovidCTScreenLib.lesions.fibrosis import CLIP_HU, RIDGE_MIN, SIGMAS_MM, bright_ridges

    sigmas = [s / p002.spacing[0] for s in SIGMAS_MM]
    assert min(sigmas) > 1  # P002 (0.6 mm pixels): test the long-kernel case too, with 0.75 mm-pixel sigmas
    for sig in (sigmas, [s / 0.75 for s in SIGMAS_MM]):
        for k in (40, 70, 100):
            h = np.clip(p002.hu[k, 100:400, 60:460].astype(np.float32), *CLIP_HU)
            fast, ref = bright_ridges(h, sig), sato(h, sigmas=sig, black_ridges=False, mode="reflect")
            assert np.abs(fast - ref).max() < 1e-2
            assert np.array_equal(fast >= RIDGE_MIN, ref >= RIDGE_MIN)


def test_per_lung_counts_match_boolean_indexing(p002):
    """``by_lung`` (slabs, count_nonzero) against the previous boolean-indexing formula on real HU bands."""
    from CovidCTScreenLib.lesions.hu_bands import SIDES, extent, hu_band_extent
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.lesions.manifestations import CONSOLIDATION, GGO, by_lung

    part = slice(50, 90)  # 40 slices keep the test short; the slabs still split them
    hu = p002.hu[part]
    labels = lung_mask(p002.hu, p002.spacing).labels[part]
    bands = hu_band_extent(hu, labels, p002.spacing)
    voxel_ml = float(np.prod(p002.spacing)) / 1000.0
    previous = {}
    for name, sel in [("both", labels > 0)] + [(SIDES[s], labels == s) for s in SIDES]:
        m = bands.measured & sel
        previous[name] = extent(int((bands.labels[m] == GGO).sum()), int((bands.labels[m] == CONSOLIDATION).sum()),
                                int(sel.sum()), int(m.sum()), voxel_ml)
    assert by_lung(bands.labels, labels, bands.measured, p002.spacing) == previous
    assert previous["both"]["ggo_ml"] > 0  # a COVID-19 CT: the comparison counts real lesion voxels


def test_streak_search_stops_on_cancel(p002):
    from CovidCTScreenLib.lesions.fibrosis import detect_streaks
    from CovidCTScreenLib.lungs.lung_mask import lung_mask

    labels = lung_mask(p002.hu, p002.spacing).labels
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        detect_streaks(p002.hu, labels, p002.spacing, cancel)
    assert len(calls) == 4  # raised before the fourth lung slice, not at the end


def test_cancel_raises_inside_a_stage_without_its_own_hook(p002):
    """The cancel watcher interrupts the lung mask (no cancel hook of its own) from inside it."""
    from CovidCTScreenLib.screening.pipeline import screen

    state = {"stages": [], "asked": None}

    def progress(stage, fraction):
        state["stages"].append(stage)
        if stage == "load":
            state["asked"] = time.monotonic() + 0.5  # the user presses Cancel 0.5 s into the lung mask

    def cancel():
        return state["asked"] is not None and time.monotonic() > state["asked"]

    with pytest.raises(Cancelled) as info:
        screen(p002, device="cpu", heatmap=False, lesions=False, progress=progress, cancel=cancel)
    assert state["stages"] == ["load"]  # the lung mask stage never reported its end
    frames = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert any(f.endswith("lung_mask.py") for f in frames)  # raised while lung_mask was running


@pytest.mark.slow
def test_fast_path_gives_the_float32_results(p002):
    """The whole job on the int16 volume against the same CT as float32 (the previous load path)."""
    from dataclasses import replace

    from CovidCTScreenLib.screening.pipeline import screen

    fast = screen(p002, device="cpu", heatmap=False)
    slow = screen(replace(p002, hu=p002.hu.astype(np.float32)), device="cpu", heatmap=False)
    assert fast.verdict.label == slow.verdict.label
    assert np.array_equal(fast.slice_indices, slow.slice_indices)
    assert np.abs(fast.probabilities - slow.probabilities).max() < 1e-3
    a, b = fast.manifestations.summary, slow.manifestations.summary
    for method in ("hu_bands", "learned"):
        for side, e in a[method]["per_lung"].items():
            for key in ("ggo_pct", "consolidation_pct", "lesion_pct"):
                assert abs(e[key] - b[method]["per_lung"][side][key]) <= 0.1
    assert a["possible_fibrotic_streaks"] == b["possible_fibrotic_streaks"]
    assert np.array_equal(fast.manifestations.streaks, slow.manifestations.streaks)


def test_slab_nrrd_writer_reads_back_like_simpleitk(p002, tmp_path):
    """``volume_io.write_nrrd`` (slab by slab, no ITK copy) gives the voxels and geometry ``sitk.WriteImage`` gives,
    also for a rotated, mirrored direction."""
    from dataclasses import replace

    import SimpleITK as sitk

    from CovidCTScreenLib.input.volume_io import write_nrrd

    c, s = np.cos(0.3), np.sin(0.3)
    rotated = replace(p002, hu=p002.hu[:40], direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    arrays = {"labels": (rotated.hu > -500).astype(np.uint8), "mask": rotated.hu > 0, "hu": rotated.hu,
              "heat": np.clip((rotated.hu.astype(np.float32) + 1000) / 2000, 0, 1)}
    for name, array in arrays.items():
        write_nrrd(rotated, array, tmp_path / f"{name}.nrrd")
        ours = sitk.ReadImage(str(tmp_path / f"{name}.nrrd"))
        sitk.WriteImage(rotated.like(array.view(np.uint8) if array.dtype == bool else array),
                        str(tmp_path / f"{name}_itk.nrrd"), useCompression=True)
        theirs = sitk.ReadImage(str(tmp_path / f"{name}_itk.nrrd"))
        assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
        assert ours.GetPixelID() == theirs.GetPixelID()
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(ours, get)(), getattr(theirs, get)(), atol=1e-9)


def test_band_filters_match_scipy_on_real_slices(p002):
    """``hu_bands.median3`` and ``hu_bands.grey_opening`` give scipy's median filter and grey opening exactly."""
    from scipy import ndimage

    from CovidCTScreenLib.lesions.hu_bands import disc, grey_opening, median3

    rng = np.random.default_rng(0)
    images = [p002.hu[k, 90:400, 50:470] for k in (30, 70, 110)] + [rng.normal(size=(17, 23)).astype(np.float32)]
    for image in images:
        assert np.array_equal(median3(image), ndimage.median_filter(image, size=3, mode="nearest"))
        for r in (1, 3, 6):
            assert np.array_equal(grey_opening(image, disc(r)), ndimage.grey_opening(image, footprint=disc(r)))


def _previous_side_labels(components, hu):
    """``lung_mask._side_labels`` before the memory work (float64 weights, one full pass per component)."""
    from CovidCTScreenLib.lungs.lung_mask import GAS_HU, LEFT, RIGHT

    sizes = np.bincount(components.ravel())
    gas = np.bincount(components.ravel(), weights=(hu < GAS_HU).ravel(), minlength=len(sizes)) > 0.5 * sizes
    sizes[0] = 0
    keep = [i for rank, i in enumerate(np.argsort(sizes)[::-1])
            if sizes[i] > 0 and (rank < 2 or (sizes[i] >= 0.01 * sizes.sum() and not gas[i]))]
    xs = {i: np.nonzero(components == i)[2].mean() for i in keep}
    a, b = keep[0], keep[1]
    right, left = (a, b) if xs[a] < xs[b] else (b, a)
    out = np.zeros(components.shape, np.uint8)
    for i in keep:
        out[components == i] = RIGHT if (i == right or (i != left and xs[i] < (xs[a] + xs[b]) / 2.0)) else LEFT
    return out


def test_lung_mask_matches_the_previous_formulas(p002):
    """The lung mask (float32 block means by slab, slab-wise counts, table lookups, in-place upsampling) against
    the previous formulas on a real CT: float64 block means, ``np.bincount``, ``np.isin``, ``np.repeat``."""
    from scipy import ndimage

    from CovidCTScreenLib.lungs import lung_mask as lm

    hu, spacing = p002.hu, p002.spacing
    f = max(1, int(round(lm.WORK_PIXEL_MM / min(spacing[0], spacing[1]))))
    z, h, w = hu.shape
    assert f > 1
    padded = np.pad(hu, ((0, 0), (0, -h % f), (0, -w % f)), mode="edge")
    small = padded.reshape(z, padded.shape[1] // f, f, padded.shape[2] // f, f).mean(axis=(2, 4))  # float64
    coarse = lm._lung_mask(small, (spacing[0] * f, spacing[1] * f, spacing[2]))
    previous = np.repeat(np.repeat(coarse.labels, f, axis=1), f, axis=2)[:, :h, :w]
    assert np.array_equal(lm.lung_mask(hu, spacing).labels, previous)
    # the helpers on the real working grid
    body = lm.body_mask(small)
    labels, sizes = lm._components((small < lm.CORE_HU[0]) & body)
    gas = small < lm.GAS_HU
    assert np.array_equal(sizes, np.bincount(labels.ravel()))
    assert np.array_equal(lm._slab_bincount(labels, gas), np.bincount(labels.ravel(), weights=gas.ravel()))
    some = np.flatnonzero(sizes > 100)
    assert np.array_equal(lm._lookup(labels, some), np.isin(labels, some))
    lungs = lm._split_two((small < lm.LUNG_HU) & body & lm._lookup(labels, some))
    assert np.array_equal(lm._side_labels(lungs, small), _previous_side_labels(lungs, small))
    # the closing's dilations / erosions by 1D filters against scipy's binary morphology, on the real right lung
    steps = lm._cylinder_steps(lm.CLOSING_MM, (spacing[0] * f, spacing[1] * f, spacing[2]))
    n_z = sum(step is lm._Z_LINE for step in steps)
    right = np.pad(lm._side_labels(lungs, small) == lm.RIGHT, ((n_z + 1,) * 2, (len(steps),) * 2, (len(steps),) * 2))
    previous = right
    for step in steps:
        previous = ndimage.binary_dilation(previous, step)
    assert np.array_equal(lm._chain(right, steps, dilate=True), previous)
    closed = previous
    for step in steps:
        closed = ndimage.binary_erosion(closed, step, border_value=1)
    assert np.array_equal(lm._chain(previous, steps, dilate=False), closed) and (closed != right).any()


def test_labels_at_equals_the_torch_argmax_it_replaces():
    """labels_at takes numpy's argmax (first maximum, as torch's) after the same bilinear resize."""
    import torch
    import torch.nn.functional as F

    from CovidCTScreenLib.lesions.lesion_seg import labels_at

    rng = np.random.default_rng(0)
    prob = rng.random((3, 64, 64)).astype(np.float32)
    prob[:, :8] = 0.5  # ties: the first class wins in both
    expected = F.interpolate(torch.from_numpy(prob)[None], size=(101, 87), mode="bilinear",
                             align_corners=False)[0].argmax(0).numpy()
    assert np.array_equal(labels_at(prob, (101, 87)), expected.astype(np.uint8))
