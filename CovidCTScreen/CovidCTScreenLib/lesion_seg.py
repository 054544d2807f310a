"""Learned GGO / consolidation segmentation: a small 2D MONAI UNet applied slice by slice.

The model package (``Resources/Models/covidct-lesion-unet-v1``: ``model.json`` + ``weights.safetensors``,
sha256-checked by ``model_package.load_package``) was trained by ``scripts/train_lesion_model.py`` on the
50 labelled Inf-Net slices (8-bit display images). Inputs follow the classifier's path: a slice is cropped to
its lung box (``preprocess.lung_box``) and mapped from HU through the lung window with
``preprocess.prepare_hu_slice``; 8-bit images go through ``preprocess.prepare_image``. The label map is
resized back to the crop and placed on the CT grid, inside the lung mask only.

Labels: 0 background, 1 ground-glass opacity (GGO), 2 consolidation. torch and MONAI are imported inside
the functions that run the network. Research use only: trained on 40 display slices, see the model card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model_package import ModelPackage, load_package
from .preprocess import LUNG_WINDOW, lung_box, prepare_hu_slice, prepare_image

DEFAULT_LESION_MODEL = "covidct-lesion-unet-v1"
LESION_LABELS = ["background", "ggo", "consolidation"]
BACKGROUND, GGO, CONSOLIDATION = 0, 1, 2
ARCHITECTURE = "monai-unet-2d"


def build_lesion_network(network: dict, num_classes: int = len(LESION_LABELS)):
    """The MONAI 2D UNet named by a card's ``network`` block: (B, 1, H, W) in [0, 1] -> (B, C, H, W) logits."""
    from monai.networks.nets import UNet

    if network.get("architecture") != ARCHITECTURE:
        raise ValueError(f"unknown lesion architecture {network.get('architecture')!r}; known: {ARCHITECTURE}")
    return UNet(spatial_dims=2, in_channels=1, out_channels=num_classes, channels=tuple(network["channels"]),
                strides=tuple(network["strides"]), num_res_units=int(network["num_res_units"]),
                dropout=float(network.get("dropout", 0.0)))


@dataclass
class LesionModel:
    package: ModelPackage
    net: object  # torch.nn.Module in eval mode
    device: str

    @property
    def size(self) -> int:
        return int(self.package.card["input"]["size"])

    @property
    def window(self) -> tuple[float, float]:
        return tuple(self.package.card["input"].get("hu_window", LUNG_WINDOW))


def load_lesion_model(name_or_path=None, device: str = "cpu") -> LesionModel:
    """Load and verify (sha256) a lesion package, by folder path or shipped name."""
    from safetensors.torch import load_file

    from .model_package import WEIGHTS_NAME

    package = load_package(name_or_path or DEFAULT_LESION_MODEL)
    if package.card.get("task") != "lesion-segmentation":
        raise ValueError(f"{package.path} is not a lesion segmentation package (task {package.card.get('task')!r})")
    net = build_lesion_network(package.card["network"], len(package.card["labels"]))
    state = load_file(str(package.path / WEIGHTS_NAME))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return LesionModel(package=package, net=net.to(device).eval(), device=device)


def predict_probabilities(model: LesionModel, images01: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, S, S) prepared inputs in [0, 1] -> (N, C, S, S) float32 softmax probabilities."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images01), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images01[i:i + batch_size], dtype=np.float32))[:, None]
            out.append(torch.softmax(model.net(x.to(model.device)).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LESION_LABELS), model.size, model.size), np.float32)


def labels_at(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, S, S) probabilities resized (bilinear) to ``shape`` -> uint8 argmax labels."""
    import torch
    import torch.nn.functional as F

    p = F.interpolate(torch.from_numpy(prob)[None], size=tuple(shape), mode="bilinear", align_corners=False)
    return p[0].argmax(0).numpy().astype(np.uint8)


def predict_image(model: LesionModel, image: np.ndarray) -> np.ndarray:
    """Label map (same size as ``image``) for an 8-bit display slice (Inf-Net / COVID-CT style)."""
    x = prepare_image(image, model.size)
    return labels_at(predict_probabilities(model, x[None])[0], np.asarray(image).shape[:2])


def predict_hu(model: LesionModel, hu: np.ndarray, lungs, batch_size: int = 8) -> np.ndarray:
    """GGO / consolidation labels on the CT grid for a (z, y, x) (or (y, x)) HU array and its lung mask
    (a ``lung_mask.LungMask``, its labels or a boolean mask).

    Each slice with lung is cropped to its lung box, windowed and resized as the classifier's inputs,
    segmented, resized back and kept inside ``lungs``. Slices without lung are 0.
    """
    hu3, lungs3 = np.asarray(hu), np.asarray(getattr(lungs, "labels", lungs)) > 0
    squeeze = hu3.ndim == 2
    if squeeze:
        hu3, lungs3 = hu3[None], lungs3[None]
    if hu3.shape != lungs3.shape:
        raise ValueError(f"HU array {hu3.shape} and lung mask {lungs3.shape} differ in shape")
    labels = np.zeros(hu3.shape, np.uint8)
    boxes = {k: lung_box(lungs3[k]) for k in range(hu3.shape[0])}
    ks = [k for k, b in boxes.items() if b is not None]
    for i in range(0, len(ks), batch_size):
        chunk = ks[i:i + batch_size]
        x = np.stack([prepare_hu_slice(hu3[k], boxes[k], model.size, model.window) for k in chunk])
        for k, prob in zip(chunk, predict_probabilities(model, x, batch_size)):
            rows, cols = boxes[k]
            crop = labels_at(prob, (rows.stop - rows.start, cols.stop - cols.start))
            labels[k, rows, cols] = np.where(lungs3[k, rows, cols], crop, 0)
    return labels[0] if squeeze else labels
