"""Learned GGO / consolidation segmentation: a 2D network applied slice by slice.

Two packages ship (``model.json`` + ``weights.safetensors``, sha256-checked by ``model_package.load_package``):
``covidct-lesion-unet-v1`` (MONAI UNet, 40 Inf-Net slices) is the default because it tracks the radiologists'
infected-slice labels of the real HU volumes better (``scripts/evaluate_ct_md.py``, ``scripts/lesion_hu_check.py``)
and is faster; ``covidct-lesion-effunet-v2`` (EfficientNet-Lite0 UNet trained by ``scripts/train_lesion_model.py``
on the 50 labelled Inf-Net slices; its card holds the cross-validated Dice of the supervised and pseudo-label
variants) is better on the Inf-Net slices and is chosen with ``--lesion-model covidct-lesion-effunet-v2``.

Framing: Inf-Net slices show the thorax, the lungs nearly filling the frame. HU slices are rendered into that
framing (card ``input.framing == "thorax"``): every slice of a volume is cropped to the same box, the in-plane box
of the whole lung mask grown by ``THORAX_MARGIN`` (``thorax_box``), windowed and resized with
``preprocess.prepare_hu_slice``. v1 packages (no ``framing``) crop each slice to its own lung box, as before.
8-bit images go through ``preprocess.prepare_image``. The label map is resized back to the crop and placed on the
CT grid, inside the lung mask only.

Labels: 0 background, 1 ground-glass opacity (GGO), 2 consolidation. torch and MONAI are imported inside
the functions that run the network. Research use only: trained on 50 display slices, see the model card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.model_package import ModelPackage, load_package
from ..input.preprocess import CROP_MARGIN, LUNG_WINDOW, lung_box, prepare_hu_slice, prepare_image

DEFAULT_LESION_MODEL = "covidct-lesion-unet-v1"  # v2 is better on Inf-Net slices, v1 on real HU volumes
LESION_LABELS = ["background", "ggo", "consolidation"]
BACKGROUND, GGO, CONSOLIDATION = 0, 1, 2
ARCHITECTURE = "monai-unet-2d"  # v1
EFFNET_UNET = "efficientnet-lite0-unet"
EFFNET_UNETS = {EFFNET_UNET: "efficientnet-lite0", "efficientnet-lite2-unet": "efficientnet-lite2"}  # -> encoder
# Inf-Net's framing: lung box + 3 % a side (median measured margin 0.5-1.6 %, upper quartile 2.6-5.6 %, rows /
# columns; scripts/lesion_hu_check.py --framing prints it)
THORAX_MARGIN = 0.03


def build_lesion_network(network: dict, num_classes: int = len(LESION_LABELS)):
    """The network named by a card's ``network`` block: (B, 1, H, W) in [0, 1] -> (B, C, H, W) logits
    (weights random; packages load theirs over them)."""
    arch = network.get("architecture")
    if arch in EFFNET_UNETS:
        return _efficientnet_unet(EFFNET_UNETS[arch], network, num_classes)
    if arch != ARCHITECTURE:
        raise ValueError(f"unknown lesion architecture {arch!r}; known: {', '.join(EFFNET_UNETS)}, {ARCHITECTURE}")
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=num_classes, channels=tuple(network["channels"]),
                strides=tuple(network["strides"]), num_res_units=int(network["num_res_units"]),
                dropout=float(network.get("dropout", 0.0)))


def _efficientnet_unet(encoder: str, network: dict, num_classes: int):
    """EfficientNet-Lite encoder (the blocks of ``efficientnet_lite_pytorch``, head dropped) with a light UNet
    decoder: at each of the 5 scales, 2x upsampling, concatenation of the encoder feature, two 3x3 conv-BN-ReLU.
    The skips are the last block of each scale (1/2 ... 1/32 of the input)."""
    import torch
    import torch.nn.functional as F
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn

    def conv_block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class EfficientNetUNet(nn.Module):
        def __init__(self):
            super().__init__()
            # TF-style momentum 0.9 (= PyTorch 0.1), as networks.py: BN statistics follow CT quickly
            self.encoder = EfficientNet.from_name(encoder, num_classes=1, batch_norm_momentum=0.9)
            del self.encoder._conv_head, self.encoder._bn1, self.encoder._fc
            blocks = self.encoder._blocks
            self.skips = [i - 1 for i in range(1, len(blocks)) if max(blocks[i]._depthwise_conv.stride) > 1]
            self.skips.append(len(blocks) - 1)
            skip_ch = [blocks[i]._bn2.num_features for i in self.skips]
            dec = list(network["decoder_channels"])
            cins = [skip_ch[-1] + skip_ch[-2]] + [dec[i] + c for i, c in enumerate(skip_ch[-3::-1])] + [dec[-2]]
            self.decoder = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip(cins, dec))
            self.dropout = nn.Dropout2d(float(network.get("dropout", 0.0)))
            self.head = nn.Conv2d(dec[-1], num_classes, 1)

        def features(self, x):
            enc = self.encoder
            x = (x.expand(-1, 3, -1, -1) * 255.0 - 127.0) / 128.0  # TF-Lite convention of the ImageNet weights
            x = enc._swish(enc._bn0(enc._conv_stem(x)))
            rate, n, skips = enc._global_params.drop_connect_rate or 0.0, len(enc._blocks), []
            for i, block in enumerate(enc._blocks):
                x = block(x, drop_connect_rate=rate * i / n if self.training else 0.0)
                if i in self.skips:
                    skips.append(x)
            return skips

        def forward(self, x):
            size = x.shape[-2:]
            skips = self.features(x)
            y = skips[-1]
            for k, block in enumerate(self.decoder):
                skip = skips[-2 - k] if k < len(skips) - 1 else None
                y = F.interpolate(y, size=skip.shape[-2:] if skip is not None else size, mode="bilinear",
                                  align_corners=False)
                y = block(torch.cat([y, skip], 1) if skip is not None else y)
            return self.head(self.dropout(y))

    return EfficientNetUNet()


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

    from ..models.model_package import WEIGHTS_NAME

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
    return np.argmax(p[0].numpy(), axis=0).astype(np.uint8)  # numpy: 7x faster than torch's argmax over dim 0


def predict_image(model: LesionModel, image: np.ndarray) -> np.ndarray:
    """Label map (same size as ``image``) for an 8-bit display slice (Inf-Net / COVID-CT style)."""
    x = prepare_image(image, model.size)
    return labels_at(predict_probabilities(model, x[None])[0], np.asarray(image).shape[:2])


def thorax_box(lungs3: np.ndarray) -> tuple[slice, slice] | None:
    """The training framing for a (z, y, x) lung mask: the in-plane box of all its slices together, grown by
    ``THORAX_MARGIN``; one box for the whole volume, so the scale does not jump between slices."""
    return lung_box(np.asarray(lungs3).any(axis=0), THORAX_MARGIN)


def slice_boxes(model: LesionModel, lungs3: np.ndarray) -> dict[int, tuple[slice, slice]]:
    """The crop of every slice that has lung, in the framing the model's card names."""
    if model.package.card["input"].get("framing") == "thorax":
        box = thorax_box(lungs3)
        return {k: box for k in range(len(lungs3)) if lungs3[k].any()}
    boxes = {k: lung_box(lungs3[k], CROP_MARGIN) for k in range(len(lungs3))}  # v1: each slice's own lung box
    return {k: b for k, b in boxes.items() if b is not None}


def predict_hu(model: LesionModel, hu: np.ndarray, lungs, batch_size: int = 8) -> np.ndarray:
    """GGO / consolidation labels on the CT grid for a (z, y, x) (or (y, x)) HU array and its lung mask
    (a ``lung_mask.LungMask``, its labels or a boolean mask).

    Each slice with lung is cropped in the model's framing (``slice_boxes``), windowed and resized, segmented,
    resized back and kept inside ``lungs``. Slices without lung are 0.
    """
    hu3, lungs3 = np.asarray(hu), np.asarray(getattr(lungs, "labels", lungs)) > 0
    squeeze = hu3.ndim == 2
    if squeeze:
        hu3, lungs3 = hu3[None], lungs3[None]
    if hu3.shape != lungs3.shape:
        raise ValueError(f"HU array {hu3.shape} and lung mask {lungs3.shape} differ in shape")
    labels = np.zeros(hu3.shape, np.uint8)
    boxes = slice_boxes(model, lungs3)
    ks = sorted(boxes)
    for i in range(0, len(ks), batch_size):
        chunk = ks[i:i + batch_size]
        x = np.stack([prepare_hu_slice(hu3[k], boxes[k], model.size, model.window) for k in chunk])
        for k, prob in zip(chunk, predict_probabilities(model, x, batch_size)):
            rows, cols = boxes[k]
            crop = labels_at(prob, (rows.stop - rows.start, cols.stop - cols.start))
            labels[k, rows, cols] = np.where(lungs3[k, rows, cols], crop, 0)
    return labels[0] if squeeze else labels
