"""HU-band extent on real CT volumes: over-call on normal lungs, and per-slice lesion fraction against the
radiologists' infected-slice labels (COVID-CT-MD P002 / cap002), with bootstrap 95 % CIs.

Normal / non-COVID references: normal002 (normal), Lung_Dx-A0001 and Lung_Dx-A0002 (lung cancer, not COVID).
Run: python scripts/hu_band_check.py [--data ../shared/data]  (one volume in memory at a time)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from CovidCTScreenLib.lesions.hu_bands import hu_band_extent
from CovidCTScreenLib.lungs.lung_mask import lung_mask
from CovidCTScreenLib.evaluation.metrics import bootstrap_ci, roc_auc
from CovidCTScreenLib.input.volume_io import load_ct

VOLUMES = {"normal002 (normal)": ("covid-ct-md/Normal subjects/normal002", None),
           "Lung_Dx-A0001 (lung cancer, 5 mm)": ("chest-ct/Lung_Dx-A0001_5mm_B.nii.gz", None),
           "Lung_Dx-A0002 (lung cancer, 8 mm)": ("chest-ct/Lung_Dx-A0002_B40f", None),
           "P002 (COVID-19)": ("covid-ct-md/COVID-19 subjects/P002", 1),
           "cap002 (CAP)": ("covid-ct-md/Cap subjects/cap002", 56)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    labels = np.load(args.data / "covid-ct-md" / "Slice-level-labels-updated-1.npy")
    print("| volume | lung mL | GGO % | consolidation % | per-slice lesion % vs infected-slice labels: AUC (95 % CI) |"
          " mask s | bands s |")
    print("|---|---|---|---|---|---|---|")
    for name, (rel, row) in VOLUMES.items():
        ct = load_ct(args.data / rel)
        t = time.process_time()
        mask = lung_mask(ct.hu, ct.spacing)
        t_mask = time.process_time() - t
        t = time.process_time()
        res = hu_band_extent(ct.hu, mask, ct.spacing)
        t_bands = time.process_time() - t
        both = res.totals["both"]
        auc = ""
        if row is not None:  # label index i is file IM{i+1:04d}, descending location; the array is z ascending
            infected = labels[row][: ct.shape[0]][::-1].astype(bool)
            ks = np.array([r["slice"] for r in res.per_slice])
            y, s = infected[ks], np.array([r["both"]["lesion_pct"] for r in res.per_slice])
            lo, hi = bootstrap_ci(y, s)
            auc = f"{roc_auc(y, s):.3f} ({lo:.3f}-{hi:.3f}), {int(y.sum())}/{len(y)} slices infected"
        print(f"| {name} | {both['lung_ml']:.0f} | {both['ggo_pct']:.2f} | {both['consolidation_pct']:.2f} | {auc} | "
              f"{t_mask:.1f} | {t_bands:.1f} |", flush=True)
        del ct, mask, res


if __name__ == "__main__":
    main()
