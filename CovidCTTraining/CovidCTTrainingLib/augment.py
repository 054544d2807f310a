"""Augmentations on [0, 1] tensors of shape (B, 1, H, W): seed 000's (``augment``, every method's training
phase and its consistency term) and seed 003's contrastive views (``moco_augment``, Self-Trans pre-training).

Seed 000 (Han, Kim, Kwak, PLOS ONE):
Geometry: scaling in [0.8, 1.2], translation within 1 % of width/height, shear in [-5, 5] degrees,
horizontal flip with p = 0.5. Intensity: one of Gaussian blur (sigma in [0, 3]), median blur
(kernel 3 or 5; the paper's 4 has no centre), additive Gaussian noise (sigma in [0, 12.75] on the
0-255 scale); then a brightness shift in [-20, 20] (0-255 scale). The paper resizes to 256 and
centre-crops 224; here the shared preprocessing is kept and the affine works at the input size.

``intensity_augment`` (issue 11) varies the look of an image so a model cannot lean on how paper figures or one
scanner's HU rendering look: a random window / level on the [0, 1] grey scale (width x0.7-1.4, level +-0.08,
i.e. about +-100 HU on the 1200 HU lung window), gamma 0.7-1.4, and each with p = 0.3 a Gaussian blur
(sigma 0.3-1.5 px), Gaussian noise (sigma up to 0.04) and JPEG re-encoding (quality 30-90).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF


def _median_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    pad = k // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k)
    return patches.median(dim=1).values.view_as(x)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator).item()


def augment(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A randomly perturbed copy of ``batch`` (the input is not modified)."""
    g = generator
    uniform = partial(_uniform, generator=g)
    out = []
    for img in batch:
        h, w = img.shape[-2:]
        img = TF.affine(img, angle=0.0, translate=[uniform(-0.01, 0.01) * w, uniform(-0.01, 0.01) * h],
                        scale=uniform(0.8, 1.2), shear=[uniform(-5, 5), 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR)
        if torch.rand((), generator=g) < 0.5:
            img = TF.horizontal_flip(img)
        choice = int(torch.randint(3, (), generator=g))
        if choice == 0:
            sigma = uniform(0.01, 3.0)
            img = TF.gaussian_blur(img, kernel_size=2 * int(3 * sigma) + 1, sigma=sigma)
        elif choice == 1:
            img = _median_blur(img[None], 3 if torch.rand((), generator=g) < 0.5 else 5)[0]
        else:
            img = img + torch.randn(img.shape, generator=g) * uniform(0.0, 12.75 / 255.0)
        img = img + uniform(-20.0, 20.0) / 255.0
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)


def intensity_augment(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch`` (B, 1, H, W) in [0, 1] under a random window / level, gamma, blur, noise and JPEG (a copy)."""
    g = generator
    uniform = partial(_uniform, generator=g)
    out = []
    for img in batch:
        width, level = math.exp(uniform(math.log(0.7), math.log(1.4))), 0.5 + uniform(-0.08, 0.08)
        img = ((img - level) / width + 0.5).clamp(0.0, 1.0)
        img = img ** math.exp(uniform(math.log(0.7), math.log(1.4)))
        if torch.rand((), generator=g) < 0.3:
            sigma = uniform(0.3, 1.5)
            img = TF.gaussian_blur(img, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
        if torch.rand((), generator=g) < 0.3:
            img = (img + torch.randn(img.shape, generator=g) * uniform(0.0, 0.04)).clamp(0.0, 1.0)
        if torch.rand((), generator=g) < 0.3:
            quality = int(torch.randint(30, 91, (), generator=g))
            img = decode_jpeg(encode_jpeg((img * 255).round().to(torch.uint8), quality=quality)).float() / 255
        out.append(img)
    return torch.stack(out)


def moco_augment(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Seed 003's contrastive views (MoCo v2 family) of [0, 1] grey images (B, 1, H, W): a random crop of
    20-100 % of the area (aspect 3/4-4/3) resized back, horizontal flip (p 0.5), brightness and contrast
    factors in [0.6, 1.4], Gaussian blur (p 0.5, sigma 0.1-2 at 224 px, scaled with the size). The seed's
    saturation, hue and grey-scale jitter do nothing on grey CT and are left out."""
    g = generator
    uniform = partial(_uniform, generator=g)
    out = []
    for img in batch:
        h, w = img.shape[-2:]
        area = uniform(0.2, 1.0) * h * w
        aspect = math.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
        ch, cw = min(h, round(math.sqrt(area / aspect))), min(w, round(math.sqrt(area * aspect)))
        top, left = int(torch.randint(h - ch + 1, (), generator=g)), int(torch.randint(w - cw + 1, (), generator=g))
        img = TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
        if torch.rand((), generator=g) < 0.5:
            img = TF.horizontal_flip(img)
        img = img * uniform(0.6, 1.4)
        mean = img.mean()
        img = (img - mean) * uniform(0.6, 1.4) + mean
        if torch.rand((), generator=g) < 0.5:
            sigma = uniform(0.1, 2.0) * h / 224
            img = TF.gaussian_blur(img, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)
