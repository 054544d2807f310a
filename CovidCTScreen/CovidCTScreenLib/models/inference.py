"""Per-slice model inputs from a CT and batched, device-aware inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import Cancelled, InputError
from ..input.preprocess import INPUT_SIZE, LUNG_WINDOW, lung_box, prepare_hu_slice

MIN_SLICE_LUNG_MM2 = 1000.0  # 10 cm2 of lung in a slice
MIN_SLICE_LUNG_FRACTION = 0.05  # ... and at least 5 % of the largest lung cross-section


@dataclass
class SliceInputs:
    indices: np.ndarray  # axial slice index k of each input
    images: np.ndarray  # (N, size, size) float32 in [0, 1]
    box: tuple[slice, slice]  # in-plane crop shared by all slices (rows, cols)


def lung_slices(hu: np.ndarray, lungs: np.ndarray, spacing, size: int = INPUT_SIZE,
                window: tuple[float, float] = LUNG_WINDOW, crop: str = "lung",
                body: np.ndarray | None = None) -> SliceInputs:
    """Model inputs for the slices that hold enough lung, cropped to the in-plane box of the lungs
    (``crop="lung"``, with margin) or of the body (``crop="body"``) over the whole volume."""
    area_mm2 = lungs.sum(axis=(1, 2)) * spacing[0] * spacing[1]
    if area_mm2.max(initial=0) < MIN_SLICE_LUNG_MM2:
        raise InputError("No lungs found: no axial slice holds 10 cm2 of aerated lung. Is this a chest CT?")
    keep = np.flatnonzero((area_mm2 >= MIN_SLICE_LUNG_MM2) & (area_mm2 >= MIN_SLICE_LUNG_FRACTION * area_mm2.max()))
    box = lung_box(lungs.any(axis=0)) if crop == "lung" else lung_box(body.any(axis=0), margin=0.0)
    images = np.stack([prepare_hu_slice(hu[k], box, size, window) for k in keep])
    return SliceInputs(indices=keep, images=images, box=box)


def select_device(device: str = "auto"):
    """torch.device for 'auto' (CUDA when present), 'cuda' or 'cpu'."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cuda or cpu")
    return torch.device(device)


def default_batch_size(device) -> int:
    """64 on a GPU; 4 on CPU (as fast as 16 there, and a cancel request is answered after one small batch)."""
    return 64 if device.type == "cuda" else 4


def predict_logits(net, images: np.ndarray, device, batch_size: int | None = None,
                   progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None, hflip_tta: bool = False) -> np.ndarray:
    """(N, C) float32 logits for (N, H, W) [0, 1] images; fp16 autocast on CUDA, fp32 on CPU.

    With ``hflip_tta`` the logits are the mean over the image and its left-right mirror.
    """
    return _classify(net, images, device, batch_size, progress, cancel, hflip_tta)[0]


def _classify(net, images, device, batch_size, progress, cancel, hflip_tta, cam_layer=None, cam_class=0):
    """``predict_logits``; with ``cam_layer`` also the raw Grad-CAM of ``cam_class`` (N, h, w), taken from
    the un-mirrored pass, so the classifier runs once per slice (twice with the mirror), not once more."""
    import contextlib

    import torch

    from .explain import GradCam

    batch_size = batch_size or default_batch_size(device)
    out, cams = [], []
    with GradCam(net, cam_layer) if cam_layer else contextlib.nullcontext() as gradcam:
        for start in range(0, len(images), batch_size):
            if cancel and cancel():
                raise Cancelled("cancelled during inference")
            x = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                if gradcam:
                    logits, maps = gradcam(x, cam_class)
                    cams.append(maps.cpu())
                with torch.inference_mode():
                    logits = (logits if gradcam else net(x)).float()
                    if hflip_tta:
                        logits = (logits + net(torch.flip(x, dims=[-1])).float()) / 2
            out.append(logits.cpu())
            if progress:
                progress(min(start + batch_size, len(images)) / len(images))
    return torch.cat(out).numpy(), torch.cat(cams).numpy() if cams else None


def calibrated_probabilities(package, net, images: np.ndarray, device, batch_size: int | None = None,
                             progress: Callable[[float], None] | None = None,
                             cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """(N, C) class probabilities as the model card prescribes: its mirror TTA, then its temperature."""
    return probabilities_and_gradcam(package, net, images, device, batch_size, progress, cancel, gradcam=False)[0]


def probabilities_and_gradcam(package, net, images: np.ndarray, device, batch_size: int | None = None,
                              progress: Callable[[float], None] | None = None,
                              cancel: Callable[[], bool] | None = None,
                              gradcam: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``calibrated_probabilities`` and, from the same passes, the raw Grad-CAM (N, h, w) of the positive
    class at the architecture's last convolution (None without ``gradcam``)."""
    from .calibration import softmax
    from .networks import gradcam_layer

    layer = gradcam_layer(package.card["architecture"]) if gradcam else None
    logits, cams = _classify(net, images, device, batch_size, progress, cancel,
                             package.card["input"].get("hflip_tta", False), layer, package.positive_index)
    return softmax(logits, package.card["calibration"]["temperature"]), cams
