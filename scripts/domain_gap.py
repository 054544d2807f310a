"""Domain-gap check: how the HU lung-window mapping compares with the 8-bit training figures, and what the
shipped model says on real HU data it never saw.

Prints, for each source, the intensity percentiles of the model inputs (224 x 224, [0, 1]; HU data
cropped to the lung box and lung-windowed exactly as the pipeline does) and the calibrated P(COVID-19). Run:
python scripts/domain_gap.py [--data ../shared/data] [--model NAME_OR_DIR] [--update-card]

With --update-card the HU results are stored in the package's model.json as ``hu_ct_check``, which
every report copies, so a reader sees how the model behaved on real HU CT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default=None)
    ap.add_argument("--update-card", action="store_true", help="store the HU results in the model card")
    args = ap.parse_args()

    from PIL import Image

    from CovidCTScreenLib.input.datasets import load_images
    from CovidCTScreenLib.models.inference import calibrated_probabilities, lung_slices, select_device
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.models.model_package import load_package
    from CovidCTScreenLib.input.preprocess import prepare_image
    from CovidCTScreenLib.input.volume_io import load_ct, read_dicom_slice
    from CovidCTTrainingLib.data import covid_ct_split

    pkg = load_package(args.model)
    dev = select_device("cpu")
    net = pkg.build(dev)
    thr = pkg.card["operating_point"]["slice_threshold"]

    def p_covid(images):
        return calibrated_probabilities(pkg, net, images, dev)[:, pkg.positive_index]

    window = tuple(pkg.card["input"]["hu_window"])
    rows, volumes, covid_slices = [], [], []

    def add(name, images):
        p = p_covid(images)
        rows.append((name, len(images), np.percentile(images, [5, 25, 50, 75, 95]), p))
        return p

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
            s = lung_slices(ct.hu, m.lungs, ct.spacing, window=window)
            p = add(f"{f.name[:13]} lung-cancer CT (HU)", s.images)
            volumes.append({"volume": f.name, "truth": "non-COVID (lung cancer)", "lung_slices": len(p),
                            "positive_fraction": round(float((p >= thr).mean()), 3),
                            "study_verdict_covid": bool((p >= thr).mean() > pkg.card["study_rule"]["min_fraction"])})
    for f in sorted((args.data / "covid-hu-slices").glob("*.dcm")):
        hu, spacing = read_dicom_slice(f)
        m = lung_mask(hu, spacing)
        try:
            s = lung_slices(hu, m.lungs, spacing, window=window)
        except ValueError as e:
            print(f"{f.name}: {e}")
            covid_slices.append({"slice": f.name, "result": f"not scored: {e}"})
            continue
        p = add(f"COVID HU slice {f.name[:7]}", s.images)
        covid_slices.append({"slice": f.name, "p_covid": round(float(p[0]), 3), "positive": bool(p[0] >= thr)})

    print(f"model {pkg.name}; slice threshold {thr:.3f}; HU window {pkg.card['input']['hu_window']}")
    print("| source | slices | input p5 / p25 / p50 / p75 / p95 | mean P(COVID-19) | slices >= threshold |")
    print("|---|---|---|---|---|")
    for name, n, pct, p in rows:
        print(f"| {name} | {n} | {' / '.join(f'{v:.2f}' for v in pct)} | {p.mean():.2f} | {(p >= thr).mean():.0%} |")
    if args.update_card:
        import json

        scored = [c for c in covid_slices if "positive" in c]
        pkg.card["hu_ct_check"] = {
            "command": "python scripts/domain_gap.py --update-card",
            "non_covid_volumes": volumes,
            "covid_hu_slices": covid_slices,
            "summary": (f"On real HU CT this model is NOT validated. Non-COVID CT volumes called COVID-19 by the "
                        f"study rule: {sum(v['study_verdict_covid'] for v in volumes)} of {len(volumes)}; real "
                        f"COVID-19 HU slices (not all show findings) reaching the slice threshold: "
                        f"{sum(c['positive'] for c in scored)} of {len(scored)}."),
        }
        (pkg.path / "model.json").write_text(json.dumps(pkg.card, indent=2) + "\n")
        print("updated", pkg.path / "model.json")


if __name__ == "__main__":
    main()
