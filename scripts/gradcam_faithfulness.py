"""Does the Grad-CAM heatmap point at the evidence? Two checks of the shipped model on real labelled images
(the measures: CovidCTScreenLib.evaluation.gradcam_faithfulness).

(a) Deletion, COVID-CT val COVID images: blurring away the hottest 10 % of each image's pixels must lower the
    calibrated P(COVID-19) more than blurring a region of the same shape and area at a random place (the same map
    shifted by a random offset, wrapped). (b) Inf-Net's 50 labelled slices: the hottest point of the lung field
    should fall on a labelled lesion more often than a random point of it does (pointing game), and the share of
    heat on lesions should exceed their share of the area. Lung field: dark (below Otsu) or lesion pixels, closed
    by 5 px (the slices carry no lung masks). Each figure is also given for the inverted map the product showed
    before (1 - per-image normalised CAM). 95 % intervals: bootstrap over images.
Run: python scripts/gradcam_faithfulness.py [--data ../shared/data] [--images N] [--fill blur|mean]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from CovidCTScreenLib.evaluation.gradcam_faithfulness import covid_val_images, deletion, infnet_slices, pointing


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (n, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _line(name: str, values: np.ndarray) -> str:
    lo, hi = bootstrap_ci(values)
    return f"| {name} | {values.mean():.3f} [{lo:.3f}, {hi:.3f}] |"


def main() -> None:
    import torch

    from CovidCTScreenLib.models.model_package import load_package

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--images", type=int, default=None, help="first N images of each set (default: all)")
    ap.add_argument("--fill", choices=("blur", "mean"), default="blur", help="what replaces a deleted region")
    args = ap.parse_args()
    torch.set_num_threads(1)
    package = load_package()
    net = package.build("cpu")
    d = deletion(package, net, covid_val_images(args.data / "covid-ct", args.images), fill=args.fill)
    print(f"(a) deletion of 10 % of the image ({args.fill}), {len(d['p'])} COVID-CT val COVID images, "
          f"model {package.name}, mean P(COVID-19) {d['p'].mean():.3f}")
    print("| drop in P(COVID-19) when deleting | mean [95 % CI] |\n|---|---|")
    print(_line("top-heat region", d["top"]))
    print(_line("random region, same shape and area (8 per image)", d["random"]))
    print(_line("top-heat minus random", d["top"] - d["random"]))
    print(_line("top of the former inverted map minus random", d["inverted"] - d["random"]))
    images, lesions = infnet_slices(args.data / "infnet-semiseg" / "multiclass", args.images)
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
