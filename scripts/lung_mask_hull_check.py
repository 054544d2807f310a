"""Why the lung mask does not take in dense lung lying broadly on the pleura by a convex hull: what the per-slice
convex hull of each lung would add at consolidation / effusion density (-150..+100 HU, 5-pixel median) on the six
COVID-19 HU slices and on the normal (normal002) and COVID-19 (P002) volumes. On the normal volume the additions are
the liver dome, spleen / stomach and heart. Run: python scripts/lung_mask_hull_check.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from CovidCTScreenLib.lungs.lung_mask import LEFT, RIGHT, lung_mask
from CovidCTScreenLib.input.volume_io import load_ct, read_dicom_slice

DENSE_HU = (-150.0, 100.0)
VOLUMES = ["covid-ct-md/Normal subjects/normal002", "covid-ct-md/COVID-19 subjects/P002"]


def hull_additions(hu2d: np.ndarray, labels2d: np.ndarray) -> np.ndarray:
    """Pixels of consolidation / effusion density inside a lung's convex hull but in no lung."""
    smooth = ndimage.median_filter(hu2d, 5)
    dense = (smooth > DENSE_HU[0]) & (smooth < DENSE_HU[1]) & (labels2d == 0)
    out = np.zeros(labels2d.shape, bool)
    for side in (RIGHT, LEFT):
        lung = labels2d == side
        if lung.sum() >= 20:
            out |= convex_hull_image(lung) & dense
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    print("| COVID-19 HU slice | lung cm2 | hull adds cm2 at -150..+100 HU |\n|---|---|---|")
    for f in sorted((args.data / "covid-hu-slices").glob("*.dcm")):
        hu, spacing = read_dicom_slice(f)
        m = lung_mask(hu, spacing)
        cm2 = spacing[0] * spacing[1] / 100.0
        print(f"| {f.name[:7]} | {m.lungs.sum() * cm2:.0f} | {hull_additions(hu[0], m.labels[0]).sum() * cm2:.0f} |")
    print("\n| volume | lung mL | hull adds mL (% of lung) | of it in the lowest third | largest 3D pieces there mL |")
    print("|---|---|---|---|---|")
    for rel in VOLUMES:
        ct = load_ct(args.data / rel)
        m = lung_mask(ct.hu, ct.spacing)
        ks = np.flatnonzero(m.lungs.any(axis=(1, 2)))
        added = np.zeros(ct.hu.shape, bool)
        for k in ks:
            added[k] = hull_additions(ct.hu[k], m.labels[k])
        ml = float(np.prod(ct.spacing)) / 1000.0
        low = added[ks[0]:ks[0] + len(ks) // 3]
        parts, _ = ndimage.label(low)
        sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1] * ml
        print(f"| {Path(rel).name} | {m.lungs.sum() * ml:.0f} | {added.sum() * ml:.0f} "
              f"({100.0 * added.sum() / m.lungs.sum():.1f} %) | {low.sum() * ml:.0f} | "
              f"{', '.join(f'{s:.0f}' for s in sizes[:3])} |", flush=True)
        del ct, m, added


if __name__ == "__main__":
    main()
