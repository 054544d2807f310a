"""Unlabelled training slices from CT volumes in Hounsfield units (DICOM series, NIfTI, NRRD, ...).

The slices are those the screening pipeline scores: inside the 3D lung mask, cropped to the lung box and
mapped through the lung window (``CovidCTScreenLib.inference.lung_slices``). Reading volumes needs SimpleITK;
it is imported only here and only when volumes are given, so the 2D image path runs without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from CovidCTScreenLib.preprocess import INPUT_SIZE


def volume_lung_slices(paths: list[str | Path], size: int = INPUT_SIZE) -> tuple[np.ndarray, list[str]]:
    """(N, size, size) lung slices of all volumes, and one line per volume saying how many it gave."""
    from CovidCTScreenLib.inference import lung_slices
    from CovidCTScreenLib.lung_mask import lung_mask
    from CovidCTScreenLib.volume_io import load_ct

    images, notes = [], []
    for path in paths:
        volume = load_ct(Path(path))
        slices = lung_slices(volume.hu, lung_mask(volume.hu, volume.spacing).lungs, volume.spacing, size)
        images.append(slices.images)
        notes.append(f"{Path(path).name}: {len(slices.images)} lung slices of {volume.hu.shape[0]} (HU, lung window)")
    return np.concatenate(images), notes
