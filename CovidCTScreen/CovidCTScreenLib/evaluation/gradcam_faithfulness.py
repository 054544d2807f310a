"""Does a classifier's Grad-CAM heatmap point at the evidence? Measures on real labelled 2D images.

``deletion``: blurring (or mean-filling) the hottest ``area`` of each image should lower the calibrated
P(positive) more than blurring a region of the same shape and area at a random place (the same map shifted by a
random offset, wrapped). ``pointing``: on slices with lesion masks, the hottest point of the lung field should fall
on a lesion more often than chance (pointing game), and the share of heat on lesions should exceed their share of
the lung field. Each figure is also given for the inverted map (1 - per-image normalised CAM), the map MONAI's
default normaliser made of a raw CAM. Run by ``scripts/gradcam_faithfulness.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _load(path: Path, size: int | None = None) -> np.ndarray:
    """A grey image file, as a model input of ``size`` when given, else as stored (0..255)."""
    from PIL import Image

    from ..input.preprocess import prepare_image

    image = np.asarray(Image.open(path).convert("L"))
    return prepare_image(image, size) if size else image


def _top(heat: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Mask of the ``fraction`` hottest pixels (ties broken at random)."""
    order = np.lexsort((rng.random(heat.size), -heat.ravel()))
    mask = np.zeros(heat.size, bool)
    mask[order[:int(round(fraction * heat.size))]] = True
    return mask.reshape(heat.shape)


def inverted(cam: np.ndarray) -> np.ndarray:
    """The map MONAI's default normaliser made of a raw CAM."""
    return 1.0 - (cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-12)


def deletion(package, net, images: np.ndarray, area: float = 0.10, n_random: int = 8, fill: str = "blur",
             seed: int = 0) -> dict[str, np.ndarray]:
    """Per image: P(positive) before, and its drop when the top-heat, inverted-map top or random regions go."""
    import torch
    from scipy.ndimage import gaussian_filter

    from ..models.explain import resize_map
    from ..models.inference import calibrated_probabilities, probabilities_and_gradcam

    cpu, pos, rng = torch.device("cpu"), package.positive_index, np.random.default_rng(seed)
    p0, cams = probabilities_and_gradcam(package, net, images, cpu)
    variants = []
    for image, cam in zip(images, cams):
        heat = resize_map(cam, image.shape)
        filled = gaussian_filter(image, 8.0) if fill == "blur" else np.full_like(image, image.mean())
        regions = [_top(heat, area, rng), _top(inverted(heat), area, rng)]
        for _ in range(n_random):
            shift = rng.integers(0, image.shape[0]), rng.integers(0, image.shape[1])
            regions.append(_top(np.roll(heat, shift, axis=(0, 1)), area, rng))
        variants += [np.where(r, filled, image) for r in regions]
    p = calibrated_probabilities(package, net, np.stack(variants).astype(np.float32), cpu)[:, pos]
    p = p.reshape(len(images), 2 + n_random)
    p0 = p0[:, pos]
    return {"p": p0, "top": p0 - p[:, 0], "inverted": p0 - p[:, 1], "random": p0 - p[:, 2:].mean(axis=1)}


def lung_field(image: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Dark (below Otsu) or lesion pixels, closed by 5 px: the lung field of a slice that has no lung mask."""
    from scipy.ndimage import binary_closing
    from skimage.filters import threshold_otsu

    return binary_closing((image < threshold_otsu(image)) | lesion, np.ones((11, 11)))


def pointing(package, net, images: list[np.ndarray], lesions: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per slice: pointing-game hit and heat share on lesions (map and inverted map), with the chance level
    (lesion share of the lung field)."""
    import torch

    from ..input.preprocess import prepare_image
    from ..models.explain import resize_map
    from ..models.inference import probabilities_and_gradcam

    x = np.stack([prepare_image(im) for im in images])
    _, cams = probabilities_and_gradcam(package, net, x, torch.device("cpu"))
    out = {k: [] for k in ("hit", "hit_inverted", "share", "share_inverted", "chance")}
    for image, lesion, cam in zip(images, lesions, cams):
        field = lung_field(image, lesion)
        heat = resize_map(cam, image.shape)
        out["chance"].append(lesion[field].mean())
        for name, h in (("", heat), ("_inverted", inverted(heat))):
            h = np.where(field, h, -1.0)
            out["hit" + name].append(float(lesion.flat[h.argmax()]))
            h = np.clip(h, 0, None)
            out["share" + name].append(h[lesion].sum() / max(h.sum(), 1e-12))
    return {k: np.array(v, float) for k, v in out.items()}


def covid_val_images(covid_ct: str | Path, n: int | None = None) -> np.ndarray:
    """Model inputs of the first ``n`` (default all) COVID images of COVID-CT's official val split."""
    root = Path(covid_ct)
    names = (root / "splits" / "val_COVID.txt").read_text().split()[:n]
    return np.stack([_load(root / "CT_COVID" / name, 224) for name in names])


def infnet_slices(multiclass: str | Path, n: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``n`` (default all) of Inf-Net's labelled slices (``images/*.jpg``) and their lesion masks
    (``masks/*.png``, GGO or consolidation), in numeric order."""
    root = Path(multiclass)
    names = sorted((root / "images").glob("*.jpg"), key=lambda p: int(p.stem))[:n]
    return [_load(p) for p in names], [_load(root / "masks" / f"{p.stem}.png") > 0 for p in names]
