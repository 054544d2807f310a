"""Reading real CT in HU, and one clear refusal for each kind of unusable input."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.input.volume_io import load_ct

from conftest import COVID_HU, DICOM_SERIES, NIFTI_CT, SAMPLE_CT, tree_digest


def test_dicom_series_in_hu(dicom_ct):
    assert dicom_ct.shape == (30, 512, 512)
    assert dicom_ct.spacing == pytest.approx((0.6465, 0.6465, 8.0), abs=1e-3)
    assert dicom_ct.origin == pytest.approx((-173.18, -294.18, 80.0), abs=0.01)
    assert dicom_ct.meta["modality"] == "CT" and dicom_ct.meta["manufacturer"] == "SIEMENS"
    # README of the data: min -1024, 1st pct -1014, 99th pct 362 HU
    assert dicom_ct.hu.min() == -1024
    assert np.percentile(dicom_ct.hu, 1) == pytest.approx(-1014, abs=3)
    assert np.percentile(dicom_ct.hu, 99) == pytest.approx(362, abs=5)


def test_nifti_and_sample_nrrd(nifti_ct):
    assert nifti_ct.shape == (64, 512, 512)
    assert nifti_ct.spacing == pytest.approx((0.8418, 0.8418, 5.0), abs=1e-3)
    sample = load_ct(SAMPLE_CT)
    dicom = load_ct(DICOM_SERIES)
    assert sample.shape == dicom.shape and np.array_equal(sample.hu, dicom.hu)
    assert sample.origin == pytest.approx(dicom.origin)


def test_mha_roundtrip_and_reorientation(tmp_path, nifti_ct):
    """A volume stored flipped in k reads back in the same LPS index order."""
    img = nifti_ct.like(nifti_ct.hu.astype(np.int16))
    flipped = sitk.Flip(img, [False, False, True])
    sitk.WriteImage(flipped, str(tmp_path / "flipped.mha"))
    back = load_ct(tmp_path / "flipped.mha")
    assert np.array_equal(back.hu, nifti_ct.hu)
    assert back.origin == pytest.approx(nifti_ct.origin, abs=1e-3)


def _write(tmp_path, array, name="v.nrrd", spacing=(0.8, 0.8, 5.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return path


def _hu_block(nifti_ct, n=8):
    return nifti_ct.hu[20:20 + n].copy()


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty_folder", "is empty"),
    ("not_dicom_folder", "No DICOM series"),
    ("single_dcm_file", "single DICOM file"),
    ("one_slice_series", "slice(s)"),
    ("mr_modality", "holds a MR series"),
    ("missing_slices", "missing or duplicated"),
    ("corrupt_file", "corrupt"),
    ("unsupported_suffix", "unsupported file type"),
])
def test_refusals_dicom_and_files(tmp_path, case, message):
    src = DICOM_SERIES
    files = sorted(src.glob("*.dcm"))
    target = tmp_path / "in"
    if case == "empty_folder":
        target.mkdir()
    elif case == "not_dicom_folder":
        target.mkdir()
        (target / "notes.txt").write_text("not an image")
    elif case == "single_dcm_file":
        target = sorted(COVID_HU.glob("*.dcm"))[0]
    elif case == "one_slice_series":
        target.mkdir()
        shutil.copy(files[10], target)
    elif case == "mr_modality":
        shutil.copytree(src, target)
        for f in target.glob("*.dcm"):
            ds = pydicom.dcmread(f)
            ds.Modality = "MR"
            ds.save_as(f)
    elif case == "missing_slices":
        shutil.copytree(src, target)
        for f in sorted(target.glob("*.dcm"))[12:15]:
            f.unlink()
    elif case == "corrupt_file":
        target = tmp_path / "broken.nii.gz"
        target.write_bytes(NIFTI_CT.read_bytes()[:5000])
    elif case == "unsupported_suffix":
        target = tmp_path / "scan.png"
        target.write_bytes(b"\x89PNG")
    before = tree_digest(target) if target.exists() else None
    with pytest.raises(InputError, match=pytest.importorskip("re").escape(message)):
        load_ct(target)
    if before is not None:
        assert tree_digest(target) == before


def test_refusals_values(tmp_path, nifti_ct):
    block = _hu_block(nifti_ct)
    cases = {
        "unsigned raw values": (block + 1024).astype(np.uint16),
        "NaN": np.where(np.arange(block.size).reshape(block.shape) == 7, np.nan, block).astype(np.float32),
        "constant": np.full(block.shape, -1000, np.int16),
        "no air": np.clip(block, -300, None).astype(np.int16),
        "two slices": block[:2].astype(np.int16),
    }
    expected = {"unsigned raw values": "not in Hounsfield units", "NaN": "NaN", "constant": "constant",
                "no air": "no air near -1000 HU", "two slices": "slice(s)"}
    for name, array in cases.items():
        path = _write(tmp_path, array, name.replace(" ", "_") + ".nrrd")
        with pytest.raises(InputError, match=expected[name]):
            load_ct(path)
    with pytest.raises(InputError, match="spacing"):
        load_ct(_write(tmp_path, block.astype(np.int16), "spacing.nrrd", spacing=(0.8, 0.8, 80.0)))
    colour = sitk.GetImageFromArray(np.zeros((8, 64, 64, 3), np.uint8), isVector=True)
    sitk.WriteImage(colour, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="components per voxel"):
        load_ct(tmp_path / "rgb.nrrd")
    flat = sitk.GetImageFromArray(block[0].astype(np.int16))
    sitk.WriteImage(flat, str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="2D"):
        load_ct(tmp_path / "flat.nrrd")
