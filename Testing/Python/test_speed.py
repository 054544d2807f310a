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
    from CovidCTScreenLib.volume_io import load_ct

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

    from CovidCTScreenLib.fibrosis import CLIP_HU, RIDGE_MIN, SIGMAS_MM, bright_ridges

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
    from CovidCTScreenLib.hu_bands import SIDES, extent, hu_band_extent
    from CovidCTScreenLib.lung_mask import lung_mask
    from CovidCTScreenLib.manifestations import CONSOLIDATION, GGO, by_lung

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
    from CovidCTScreenLib.fibrosis import detect_streaks
    from CovidCTScreenLib.lung_mask import lung_mask

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
    from CovidCTScreenLib.pipeline import screen

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

    from CovidCTScreenLib.pipeline import screen

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

    from CovidCTScreenLib.volume_io import write_nrrd

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
