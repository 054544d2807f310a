"""Lung-mask overlays on all real data (right lung red, left lung green), for a person to look at.

Writes docs/lung_mask_volumes.png: for every complete CT volume (chest-ct DICOM series and NIfTI,
covid-ct-md P002 / cap002 / normal002) the lowest lung slice, a basal slice (where the liver dome and
the heart rise into the lung), a middle slice and the highest lung slice; and
docs/lung_mask_covid_slices.png: the six real COVID-19 HU slices. Run:
python scripts/lung_mask_overlays.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from CovidCTScreenLib.lungs.lung_mask import LEFT, RIGHT, lung_mask  # noqa: E402
from CovidCTScreenLib.input.preprocess import window_hu  # noqa: E402
from CovidCTScreenLib.input.volume_io import load_ct, read_dicom_slice  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
VOLUMES = {"Lung_Dx-A0002 (DICOM, 8 mm)": "chest-ct/Lung_Dx-A0002_B40f",
           "Lung_Dx-A0001 (NIfTI, 5 mm)": "chest-ct/Lung_Dx-A0001_5mm_B.nii.gz",
           "P002 (COVID-19)": "covid-ct-md/COVID-19 subjects/P002",
           "cap002 (CAP)": "covid-ct-md/Cap subjects/cap002",
           "normal002 (normal)": "covid-ct-md/Normal subjects/normal002"}
LEVELS = {"lowest": 0.0, "basal": 0.2, "middle": 0.5, "highest": 1.0}  # fraction of the lungs' z extent


def _panel(ax, hu2d, labels2d, title):
    ax.imshow(window_hu(hu2d), cmap="gray")
    for side, colour in ((RIGHT, "r"), (LEFT, "lime")):
        if (labels2d == side).any():
            ax.contour(labels2d == side, [0.5], colors=colour, linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    fig, axes = plt.subplots(len(VOLUMES), len(LEVELS), figsize=(4.2 * len(LEVELS), 4.4 * len(VOLUMES)))
    for row, (name, rel) in zip(axes, VOLUMES.items()):
        ct = load_ct(args.data / rel)
        m = lung_mask(ct.hu, ct.spacing)
        vol = m.volumes_ml(ct.spacing)
        ks = np.flatnonzero(m.lungs.any(axis=(1, 2)))  # z ascending: index 0 is the most inferior slice
        for ax, (level, f) in zip(row, LEVELS.items()):
            k = int(ks[0] + round(f * (ks[-1] - ks[0])))
            _panel(ax, ct.hu[k], m.labels[k], f"{name}\n{level} k={k}  R {vol['right']:.0f} / L {vol['left']:.0f} mL")
        del ct, m
    fig.tight_layout()
    fig.savefig(DOCS / "lung_mask_volumes.png", dpi=55)

    fig, axes = plt.subplots(2, 3, figsize=(13, 9))
    for ax, f in zip(axes.ravel(), sorted((args.data / "covid-hu-slices").glob("*.dcm"))):
        hu, spacing = read_dicom_slice(f)
        m = lung_mask(hu, spacing)
        _panel(ax, hu[0], m.labels[0], f.name[:7])
    fig.tight_layout()
    fig.savefig(DOCS / "lung_mask_covid_slices.png", dpi=55)
    print(f"wrote {DOCS / 'lung_mask_volumes.png'} and {DOCS / 'lung_mask_covid_slices.png'}")


if __name__ == "__main__":
    main()
