"""Lung-mask overlays on the real data (right lung red, left lung green), for a person to look at.

Writes docs/lung_mask_volumes.png (both real chest CT volumes, several levels) and
docs/lung_mask_covid_slices.png (the six real COVID-19 HU slices). Run:
python scripts/lung_mask_overlays.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from CovidCTScreenLib.lung_mask import LEFT, RIGHT, lung_mask  # noqa: E402
from CovidCTScreenLib.preprocess import window_hu  # noqa: E402
from CovidCTScreenLib.volume_io import load_ct, read_dicom_slice  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _panel(ax, hu2d, labels2d, title):
    ax.imshow(window_hu(hu2d), cmap="gray")
    ax.contour(labels2d == RIGHT, [0.5], colors="r", linewidths=0.8)
    ax.contour(labels2d == LEFT, [0.5], colors="lime", linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    fig, axes = plt.subplots(2, 5, figsize=(15, 6.4))
    for row, path in zip(axes, [args.data / "chest-ct" / "Lung_Dx-A0002_B40f",
                                args.data / "chest-ct" / "Lung_Dx-A0001_5mm_B.nii.gz"]):
        ct = load_ct(path)
        m = lung_mask(ct.hu, ct.spacing)
        vol = m.volumes_ml(ct.spacing)
        ks = np.flatnonzero(m.lungs.any(axis=(1, 2)))
        for ax, k in zip(row, np.linspace(ks[0], ks[-1] + 1, 7).astype(int)[1:-1].tolist() + [ks[-1] + 1]):
            k = min(k, ct.shape[0] - 1)
            _panel(ax, ct.hu[k], m.labels[k], f"{path.name[:13]} k={k}  R {vol['right']:.0f} / L {vol['left']:.0f} mL")
    fig.tight_layout()
    fig.savefig(DOCS / "lung_mask_volumes.png", dpi=60)

    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
    for ax, f in zip(axes, sorted((args.data / "covid-hu-slices").glob("*.dcm"))):
        hu, spacing = read_dicom_slice(f)
        m = lung_mask(hu, spacing)
        _panel(ax, hu[0], m.labels[0], f.name[:7])
    fig.tight_layout()
    fig.savefig(DOCS / "lung_mask_covid_slices.png", dpi=60)
    print(f"wrote {DOCS / 'lung_mask_volumes.png'} and {DOCS / 'lung_mask_covid_slices.png'}")


if __name__ == "__main__":
    main()
