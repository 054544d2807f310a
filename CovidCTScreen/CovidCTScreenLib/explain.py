"""Grad-CAM heatmaps (``monai.visualize.GradCAM``) mapped back into the CT's voxel grid."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import Cancelled


def gradcam_maps(net, layer: str, images: np.ndarray, class_index: int, device, batch_size: int = 16,
                 progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """(N, H, W) Grad-CAM maps for ``class_index``, each scaled to [0, 1] by MONAI."""
    import torch
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=net, target_layers=layer)
    maps = []
    for start in range(0, len(images), batch_size):
        if cancel and cancel():
            raise Cancelled("cancelled during Grad-CAM")
        x = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
        maps.append(cam(x, class_idx=class_index).detach().float().cpu().numpy()[:, 0])
        if progress:
            progress(min(start + batch_size, len(images)) / len(images))
    return np.concatenate(maps).astype(np.float32)


def to_volume(maps: np.ndarray, weights: np.ndarray, indices: np.ndarray, box: tuple[slice, slice],
              shape: tuple[int, int, int], lungs: np.ndarray) -> np.ndarray:
    """Place each slice's map, times its weight, back into the CT grid (zero outside the lungs).

    MONAI scales every map to [0, 1], so a slice the model finds normal would still glow; weighting
    by the slice's calibrated COVID-19 probability keeps the heatmap's brightness honest.
    """
    from skimage.transform import resize

    heat = np.zeros(shape, np.float32)
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    for m, weight, k in zip(maps, weights, indices):
        heat[k, box[0], box[1]] = resize(m, (h, w), order=1, preserve_range=True) * weight
    heat *= lungs
    return heat
