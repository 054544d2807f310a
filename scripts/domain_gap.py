"""Domain-gap check: how the HU lung-window mapping compares with the 8-bit training figures, and what the
shipped model says on real HU data it never saw.

Prints, for each source, the intensity percentiles of the model inputs (224 x 224, [0, 1]; HU data
cropped to the lung box and lung-windowed exactly as the pipeline does) and the calibrated P(COVID-19). Run:
python scripts/domain_gap.py [--data ../shared/data] [--model NAME_OR_DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _hu_slices(path: Path):
    import pydicom

    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    sy, sx = (float(v) for v in ds.PixelSpacing)
    return hu[None], (sx, sy, float(ds.SliceThickness))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from PIL import Image

    from CovidCTScreenLib.calibration import softmax
    from CovidCTScreenLib.inference import lung_slices, predict_logits, select_device
    from CovidCTScreenLib.lung_mask import lung_mask
    from CovidCTScreenLib.model_package import load_package
    from CovidCTScreenLib.preprocess import prepare_image
    from CovidCTScreenLib.volume_io import load_ct
    from CovidCTTrainingLib.data import covid_ct_split, load_images

    pkg = load_package(args.model)
    dev = select_device("cpu")
    net = pkg.build(dev)
    temp = pkg.card["calibration"]["temperature"]
    thr = pkg.card["operating_point"]["slice_threshold"]

    def p_covid(images):
        return softmax(predict_logits(net, images, dev), temp)[:, pkg.positive_index]

    rows = []

    def add(name, images):
        rows.append((name, len(images), np.percentile(images, [5, 25, 50, 75, 95]), p_covid(images)))

    val = covid_ct_split(args.data / "covid-ct", "val")
    x = load_images(val)
    y = np.array([i.label for i in val])
    add("COVID-CT val, COVID (8-bit)", x[y == 1])
    add("COVID-CT val, NonCOVID (8-bit)", x[y == 0])
    cp = sorted((args.data / "ccccii-cp").rglob("*.png"))
    add("CC-CCII common pneumonia (8-bit)", np.stack([prepare_image(np.asarray(Image.open(f))) for f in cp]))
    for f in (args.data / "chest-ct").iterdir():
        if f.name.startswith("Lung_Dx"):
            ct = load_ct(f)
            m = lung_mask(ct.hu, ct.spacing)
            s = lung_slices(ct.hu, m.lungs, ct.spacing)
            add(f"{f.name[:13]} lung-cancer CT (HU)", s.images)
    for f in sorted((args.data / "covid-hu-slices").glob("*.dcm")):
        hu, spacing = _hu_slices(f)
        m = lung_mask(hu, spacing)
        try:
            s = lung_slices(hu, m.lungs, spacing)
        except ValueError as e:
            print(f"{f.name}: {e}")
            continue
        add(f"COVID HU slice {f.name[:7]}", s.images)

    print(f"model {pkg.name}; slice threshold {thr:.3f}; HU window {pkg.card['input']['hu_window']}")
    print(f"| source | slices | input p5 / p25 / p50 / p75 / p95 | mean P(COVID-19) | slices >= threshold |")
    print("|---|---|---|---|---|")
    for name, n, pct, p in rows:
        print(f"| {name} | {n} | {' / '.join(f'{v:.2f}' for v in pct)} | {p.mean():.2f} | {(p >= thr).mean():.0%} |")


if __name__ == "__main__":
    main()
