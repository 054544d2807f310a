"""Does the Grad-CAM heatmap point at the evidence? Two checks of the shipped model on real labelled images.

(a) Deletion, COVID-CT val COVID images: blurring away the hottest ``area`` of each image (top 10 % of pixels)
    must lower the calibrated P(COVID-19) more than blurring a region of the same shape and area at a random
    place (the same map shifted by a random offset, wrapped). (b) Inf-Net's 50 labelled slices: the hottest
    point of the lung field should fall on a labelled lesion more often than a random point of it does
    (pointing game), and the share of heat on lesions should exceed their share of the area. Lung field:
    dark (below Otsu) or lesion pixels, closed by 5 px (the slices carry no lung masks). Each figure is also
    given for the inverted map the product showed before (1 - per-image normalised CAM). 95 % intervals:
    bootstrap over images. Run: python scripts/gradcam_faithfulness.py [--images N] [--fill blur|mean]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _load(path: Path, size: int | None = None) -> np.ndarray:
    from PIL import Image

    from CovidCTScreenLib.input.preprocess import prepare_image

    image = np.asarray(Image.open(path).convert("L"))
    return prepare_image(image, size) if size else image


def _top(heat: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Mask of the ``fraction`` hottest pixels (ties broken at random)."""
    order = np.lexsort((rng.random(heat.size), -heat.ravel()))
    mask = np.zeros(heat.size, bool)
    mask[order[:int(round(fraction * heat.size))]] = True
    return mask.reshape(heat.shape)


def _inverted(cam: np.ndarray) -> np.ndarray:
    """The map MONAI's default normaliser made of a raw CAM."""
    return 1.0 - (cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-12)


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (n, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def deletion(package, net, images: np.ndarray, area: float = 0.10, n_random: int = 8, fill: str = "blur",
             seed: int = 0) -> dict[str, np.ndarray]:
    """Per image: P(COVID-19) before, and its drop when the top-heat, inverted-map top or random regions go."""
    import torch
    from scipy.ndimage import gaussian_filter

    from CovidCTScreenLib.models.explain import resize_map
    from CovidCTScreenLib.models.inference import calibrated_probabilities, probabilities_and_gradcam

    cpu, pos, rng = torch.device("cpu"), package.positive_index, np.random.default_rng(seed)
    p0, cams = probabilities_and_gradcam(package, net, images, cpu)
    variants = []
    for image, cam in zip(images, cams):
        heat = resize_map(cam, image.shape)
        filled = gaussian_filter(image, 8.0) if fill == "blur" else np.full_like(image, image.mean())
        regions = [_top(heat, area, rng), _top(_inverted(heat), area, rng)]
        for _ in range(n_random):
            shift = rng.integers(0, image.shape[0]), rng.integers(0, image.shape[1])
            regions.append(_top(np.roll(heat, shift, axis=(0, 1)), area, rng))
        variants += [np.where(r, filled, image) for r in regions]
    p = calibrated_probabilities(package, net, np.stack(variants).astype(np.float32), cpu)[:, pos]
    p = p.reshape(len(images), 2 + n_random)
    p0 = p0[:, pos]
    return {"p": p0, "top": p0 - p[:, 0], "inverted": p0 - p[:, 1], "random": p0 - p[:, 2:].mean(axis=1)}


def lung_field(image: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_closing
    from skimage.filters import threshold_otsu

    return binary_closing((image < threshold_otsu(image)) | lesion, np.ones((11, 11)))


def pointing(package, net, images: list[np.ndarray], lesions: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per slice: pointing-game hit and heat share on lesions (map and inverted map), with the chance level
    (lesion share of the lung field)."""
    import torch

    from CovidCTScreenLib.models.explain import resize_map
    from CovidCTScreenLib.models.inference import probabilities_and_gradcam
    from CovidCTScreenLib.input.preprocess import prepare_image

    x = np.stack([prepare_image(im) for im in images])
    _, cams = probabilities_and_gradcam(package, net, x, torch.device("cpu"))
    out = {k: [] for k in ("hit", "hit_inverted", "share", "share_inverted", "chance")}
    for image, lesion, cam in zip(images, lesions, cams):
        field = lung_field(image, lesion)
        heat = resize_map(cam, image.shape)
        out["chance"].append(lesion[field].mean())
        for name, h in (("", heat), ("_inverted", _inverted(heat))):
            h = np.where(field, h, -1.0)
            out["hit" + name].append(float(lesion.flat[h.argmax()]))
            h = np.clip(h, 0, None)
            out["share" + name].append(h[lesion].sum() / max(h.sum(), 1e-12))
    return {k: np.array(v, float) for k, v in out.items()}


def covid_val_images(n: int | None = None) -> np.ndarray:
    root = DATA / "covid-ct"
    names = (root / "splits" / "val_COVID.txt").read_text().split()[:n]
    return np.stack([_load(root / "CT_COVID" / name, 224) for name in names])


def infnet_slices(n: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    root = DATA / "infnet-semiseg" / "multiclass"
    names = sorted((root / "images").glob("*.jpg"), key=lambda p: int(p.stem))[:n]
    return [_load(p) for p in names], [_load(root / "masks" / f"{p.stem}.png") > 0 for p in names]


def _line(name: str, values: np.ndarray) -> str:
    lo, hi = bootstrap_ci(values)
    return f"| {name} | {values.mean():.3f} [{lo:.3f}, {hi:.3f}] |"


def main() -> None:
    import torch

    from CovidCTScreenLib.models.model_package import load_package

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=None, help="first N images of each set (default: all)")
    ap.add_argument("--fill", choices=("blur", "mean"), default="blur", help="what replaces a deleted region")
    args = ap.parse_args()
    torch.set_num_threads(1)
    package = load_package()
    net = package.build("cpu")
    d = deletion(package, net, covid_val_images(args.images), fill=args.fill)
    print(f"(a) deletion of 10 % of the image ({args.fill}), {len(d['p'])} COVID-CT val COVID images, "
          f"model {package.name}, mean P(COVID-19) {d['p'].mean():.3f}")
    print("| drop in P(COVID-19) when deleting | mean [95 % CI] |\n|---|---|")
    print(_line("top-heat region", d["top"]))
    print(_line("random region, same shape and area (8 per image)", d["random"]))
    print(_line("top-heat minus random", d["top"] - d["random"]))
    print(_line("top of the former inverted map minus random", d["inverted"] - d["random"]))
    images, lesions = infnet_slices(args.images)
    pg = pointing(package, net, images, lesions)
    print(f"\n(b) {len(images)} Inf-Net labelled slices (lesion = GGO or consolidation), within the lung field")
    print("| measure | mean [95 % CI] |\n|---|---|")
    print(_line("hottest point on a lesion (pointing game)", pg["hit"]))
    print(_line("same, former inverted map", pg["hit_inverted"]))
    print(_line("chance: lesion share of the lung field", pg["chance"]))
    print(_line("share of heat on lesions", pg["share"]))
    print(_line("same, former inverted map", pg["share_inverted"]))
    print(_line("share of heat on lesions minus chance", pg["share"] - pg["chance"]))


if __name__ == "__main__":
    main()
