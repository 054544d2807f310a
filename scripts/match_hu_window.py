"""Choose the HU window and crop that make real CT look like the 8-bit training figures, without labels.

For each candidate (window, crop), the model-input intensity percentiles (p5..p95) of the lung slices of
the real HU chest CT volumes are compared with those of the COVID-CT training images; the candidate with
the smallest mean absolute difference wins. Only intensities are used (no labels, no model), so this is
not model selection on test data. Run: python scripts/match_hu_window.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PCTS = [5, 10, 25, 50, 75, 90, 95]
WINDOWS = [(-1350.0, 150.0), (-1250.0, 50.0), (-1200.0, 0.0), (-1150.0, 50.0), (-1100.0, 0.0), (-1100.0, 100.0),
           (-1050.0, 50.0), (-1000.0, 0.0)]
CROPS = {"lung box + 8%": "lung", "body box": "body"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()

    from CovidCTScreenLib.models.inference import lung_slices
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import load_ct
    from CovidCTScreenLib.input.datasets import load_images
    from CovidCTTrainingLib.data import covid_ct_split

    train = load_images(covid_ct_split(args.data / "covid-ct", "train"))
    target = np.percentile(train, PCTS)
    volumes = []
    for f in sorted((args.data / "chest-ct").iterdir()):
        if f.name.startswith("Lung_Dx"):
            ct = load_ct(f)
            volumes.append((ct, lung_mask(ct.hu, ct.spacing)))
    print("training figures p" + "/".join(map(str, PCTS)) + ": " + " ".join(f"{v:.2f}" for v in target))
    best = None
    for crop_name, crop in CROPS.items():
        for window in WINDOWS:
            x = np.concatenate([lung_slices(ct.hu, m.lungs, ct.spacing, window=window, crop=crop,
                                            body=m.body).images for ct, m in volumes])
            pct = np.percentile(x, PCTS)
            err = float(np.abs(pct - target).mean())
            print(f"{crop_name:<14} window {window[0]:>7.0f}..{window[1]:<5.0f}  " +
                  " ".join(f"{v:.2f}" for v in pct) + f"   mean |diff| {err:.3f}")
            if best is None or err < best[0]:
                best = (err, crop_name, window)
    print(f"closest: {best[1]}, window {best[2]} (mean |diff| {best[0]:.3f})")


if __name__ == "__main__":
    main()
