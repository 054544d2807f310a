"""The one image path shared by training and inference.

Every model input is a single-channel float32 image in [0, 1], ``INPUT_SIZE`` square.
Training images (COVID-CT, Inf-Net) are 8-bit figures already shown in a lung window,
so they map to [0, 1] by /255. Real CT arrives in Hounsfield units; it maps to the same
range through the lung window ``LUNG_WINDOW`` (W 1200 / L -500: -1100 HU -> 0, +100 HU -> 1).
That window was chosen without labels by ``scripts/match_hu_window.py``: among common lung
windows it makes the intensity percentiles of real HU chest CT (lung slices, cropped as below)
closest to those of the COVID-CT training figures. Air is near black, lung parenchyma dark grey,
soft tissue and vessels near white, as in the figures.
Network-specific normalisation lives inside the network (``networks.py``), not here.
"""

from __future__ import annotations

import numpy as np

LUNG_WINDOW = (-1100.0, 100.0)
INPUT_SIZE = 224
CROP_MARGIN = 0.08  # fraction of the lung box added on each side, so the chest wall shows as in the figures


def window_hu(hu: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """Map HU to [0, 1] through a (low, high) window, clipping outside it."""
    low, high = window
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def image_to_unit(image: np.ndarray) -> np.ndarray:
    """8-bit grey or RGB display image -> float32 grey in [0, 1] (ITU-R 601 luma for RGB)."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(a.astype(np.float32) / 255.0, 0.0, 1.0)


def lung_box(mask2d: np.ndarray, margin: float = CROP_MARGIN) -> tuple[slice, slice] | None:
    """Bounding box (rows, cols) of a 2D mask grown by ``margin`` of its size; None if empty."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask2d.shape
    dr = int(round((rows[-1] - rows[0] + 1) * margin))
    dc = int(round((cols[-1] - cols[0] + 1) * margin))
    return (slice(max(rows[0] - dr, 0), min(rows[-1] + dr + 1, h)),
            slice(max(cols[0] - dc, 0), min(cols[-1] + dc + 1, w)))


def resize_square(image01: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize a [0, 1] image to ``size`` x ``size`` (anti-aliased, as skimage does it)."""
    from skimage.transform import resize

    out = resize(image01, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32)


def prepare_image(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """8-bit training/evaluation image -> model input (size x size, [0, 1])."""
    return resize_square(image_to_unit(image), size)


def prepare_hu_slice(hu2d: np.ndarray, box: tuple[slice, slice], size: int = INPUT_SIZE,
                     window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """HU slice cropped to ``box`` -> model input (size x size, [0, 1])."""
    return resize_square(window_hu(hu2d[box], window), size)
