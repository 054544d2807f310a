"""Training slices from CT volumes in Hounsfield units (DICOM series, NIfTI, NRRD, ...).

The slices are those the screening pipeline scores, rendered exactly as it renders them: inside the 3D lung mask,
cropped to the lung box and mapped through the lung window (``CovidCTScreenLib.models.inference.lung_slices``).
Rendering needs SimpleITK; labelled studies are rendered once into a cache folder of ``.npz`` files
(``render_studies``) that the 2D training path reads with numpy only (``data.rendered_slices``).

Slice target of the COVID-19 vs non-COVID-19 slice model (``slice_targets``): a slice of a COVID-19 study is
positive when its radiologists' slice label says infected (and negative when it says not infected); without slice
labels every lung slice of a COVID-19 study takes the study label (positive). Every slice of a study of any other
label (other pneumonia / CAP, normal, non-COVID-19) is negative, infected or not: it shows no COVID-19.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from CovidCTScreenLib.input.preprocess import CROP_MARGIN, INPUT_SIZE, LUNG_WINDOW

RENDER_VERSION = 1  # bump when the rendering changes, so stale caches are not used


def slice_targets(study_label: str, slice_labels: np.ndarray) -> np.ndarray:
    """0/1 targets of the slices of a study; ``slice_labels`` holds -1 where a slice has no label."""
    if study_label != "COVID-19":
        return np.zeros(len(slice_labels), np.int64)
    return np.where(slice_labels >= 0, slice_labels, 1).astype(np.int64)


def cache_file(cache: Path, study, size: int) -> Path:
    """Cache file of ``study`` rendered at ``size`` px (keyed by its path, label, slice labels and the rendering)."""
    key = json.dumps([str(Path(study.path).resolve()), study.label, study.patient, size, LUNG_WINDOW, CROP_MARGIN,
                      RENDER_VERSION, None if study.slice_labels is None else
                      [study.slice_z.tolist(), study.slice_labels.tolist()]])
    return Path(cache) / f"{Path(study.patient).name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def render_study(study, size: int = INPUT_SIZE) -> dict:
    """The lung slices of one labelled study as model inputs, with their slice index, label and target."""
    from CovidCTScreenLib.models.inference import lung_slices
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import load_ct

    volume = load_ct(study.path)
    slices = lung_slices(volume.hu, lung_mask(volume.hu, volume.spacing).lungs, volume.spacing, size)
    labels = study.labels_for(volume)[slices.indices]
    return {"images": slices.images.astype(np.float16), "slice_index": slices.indices, "slice_label": labels,
            "target": slice_targets(study.label, labels), "study_label": study.label, "patient": study.patient,
            "source": str(study.path), "slices_in_volume": volume.hu.shape[0]}


def render_studies(studies, cache: str | Path, size: int = INPUT_SIZE, log=print) -> list[Path]:
    """Render each study into ``cache`` unless it is there already; returns the cache files in study order."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    files = []
    for study in studies:
        path = cache_file(cache, study, size)
        if not path.is_file():
            data = render_study(study, size)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **data)
            tmp.replace(path)
            log(f"rendered {study.patient} ({study.label}): {len(data['images'])} lung slices of "
                f"{data['slices_in_volume']}, {int(data['target'].sum())} positive")
        files.append(path)
    return files


def volume_lung_slices(paths: list[str | Path], size: int = INPUT_SIZE) -> tuple[np.ndarray, list[str]]:
    """(N, size, size) lung slices of unlabelled volumes, and one line per volume saying how many it gave."""
    from CovidCTScreenLib.models.inference import lung_slices
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import load_ct

    images, notes = [], []
    for path in paths:
        volume = load_ct(Path(path))
        slices = lung_slices(volume.hu, lung_mask(volume.hu, volume.spacing).lungs, volume.spacing, size)
        images.append(slices.images)
        notes.append(f"{Path(path).name}: {len(slices.images)} lung slices of {volume.hu.shape[0]} (HU, lung window)")
    return np.concatenate(images), notes
