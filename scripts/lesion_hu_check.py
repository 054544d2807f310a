"""The lesion models on real HU CT: per-slice lesion fraction against the radiologists' slice labels (AUC),
extent on the normal volume and on the six COVID-19 HU slices, and inference time per slice, old vs new model.
Where false positives sit: uninfected lung slices (all of normal002's) with lesion > 1 % of the slice's lung, counted
in the lower, middle and upper third of the lung's slice range (distribution.zone_of_slices, the report's zones).

covid-ct-md (P002 COVID-19, cap002 CAP, normal002 normal): lung mask (lung_mask.py), learned labels
(lesion_seg.predict_hu), per-slice lesion % of the measured lung as the report gives it (manifestations.by_lung
inside hu_bands' measured lung). Label index i = file IM{i+1:04d}.dcm (descending slice location): each volume
slice is matched to its file by the DICOM z position. AUC 95 % CI: percentile bootstrap over slices (slices of
one volume are correlated: the interval is optimistic). Times are per lung slice of P002, both models in the same
run (contended CPU: compare the ratio; the load is printed).
--framing prints Inf-Net's framing (margin of the dark-lung box inside each labelled slice), the basis of
lesion_seg.THORAX_MARGIN.

Run: python scripts/lesion_hu_check.py [--data ../shared/data] [--new covidct-lesion-effunet-v2]
        [--old covidct-lesion-unet-v1] [--update-card] [--framing]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOLUMES = {"P002": "COVID-19 subjects/P002", "cap002": "Cap subjects/cap002", "normal002": "Normal subjects/normal002"}


def slice_labels(root: Path, subject: str, folder: Path, n: int) -> np.ndarray | None:
    """Radiologists' 0/1 labels in volume order (inferior -> superior, as volume_io), or None (normal)."""
    import pydicom

    rows = {r["Folder/ID"]: int(r["Label Index"]) for r in csv.DictReader(open(root / "Index.csv"))}
    if subject not in rows or subject.startswith("normal"):
        return None
    labels = np.load(root / "Slice-level-labels-updated-1.npy")[rows[subject]]
    z = [float(pydicom.dcmread(folder / f"IM{i + 1:04d}.dcm", stop_before_pixels=True).ImagePositionPatient[2])
         for i in range(n)]
    return labels[np.argsort(z)]  # label index i <-> file IM{i+1}; volume slice k = k-th lowest z


def infnet_margins(root: Path) -> np.ndarray:
    """(rows, cols) margin of the dark (lung) box in each labelled Inf-Net slice, as a fraction of the box."""
    from PIL import Image
    from scipy import ndimage as ndi

    out = []
    for f in sorted((root / "infnet-semiseg" / "multiclass" / "images").glob("*.jpg")):
        a = ndi.uniform_filter(np.asarray(Image.open(f).convert("L"), float) / 255, 5)
        lab, n = ndi.label(a < 0.3)
        h, w = a.shape
        keep = np.zeros(a.shape, bool)
        for i in range(1, n + 1):
            comp = lab == i
            edge = comp[[0, -1], :].sum() + comp[:, [0, -1]].sum()
            if comp.sum() >= 0.02 * h * w and edge <= 0.5 * (h + w):  # large, not the air around the body
                keep |= comp
        r, c = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
        if len(r):
            bh, bw = r[-1] - r[0] + 1, c[-1] - c[0] + 1
            out.append(((h - bh) / 2 / bh, (w - bw) / 2 / bw))
    return np.array(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--new", default="covidct-lesion-effunet-v2")
    ap.add_argument("--old", default="covidct-lesion-unet-v1")
    ap.add_argument("--update-card", action="store_true", help="write the results into the new package's card")
    ap.add_argument("--framing", action="store_true", help="print Inf-Net's framing and stop")
    args = ap.parse_args(argv)

    if args.framing:
        m = infnet_margins(args.data)
        print(f"Inf-Net labelled slices ({len(m)} with a dark-lung box): margin rows / cols median "
              f"{np.median(m[:, 0]):.3f} / {np.median(m[:, 1]):.3f}, upper quartile "
              f"{np.percentile(m[:, 0], 75):.3f} / {np.percentile(m[:, 1], 75):.3f}")
        return 0

    import torch

    from CovidCTScreenLib.lesions.distribution import zone_of_slices
    from CovidCTScreenLib.lesions.hu_bands import hu_band_extent
    from CovidCTScreenLib.lesions.lesion_seg import load_lesion_model, predict_hu
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.lesions.manifestations import by_lung
    from CovidCTScreenLib.evaluation.metrics import bootstrap_ci, roc_auc
    from CovidCTScreenLib.input.volume_io import load_ct, read_dicom_slice

    torch.set_num_threads(1)
    models = {"old": load_lesion_model(args.old), "new": load_lesion_model(args.new)}
    names = {k: m.package.card["name"] for k, m in models.items()}
    result = {"models": names, "volumes": {}, "hu_slices": []}
    root = args.data / "covid-ct-md"
    for subject, rel in VOLUMES.items():
        volume = load_ct(root / rel)
        mask = lung_mask(volume.hu, volume.spacing)
        measured = hu_band_extent(volume.hu, mask.labels, volume.spacing).measured
        labels = slice_labels(root, subject, root / rel, volume.shape[0])
        present = mask.labels.reshape(len(mask.labels), -1).any(1)
        lung_slices, zones = np.flatnonzero(present), zone_of_slices(present)  # zones: 0 upper ... 2 lower third
        entry = {"slices": int(volume.shape[0]), "lung_slices": int(len(lung_slices))}
        for key, model in models.items():
            t0 = time.perf_counter()
            learned = predict_hu(model, volume.hu, mask)
            seconds = time.perf_counter() - t0
            pct = np.array([by_lung(learned[k], mask.labels[k], measured[k], volume.spacing)["both"]["lesion_pct"]
                            for k in range(volume.shape[0])])
            total = by_lung(learned, mask.labels, measured, volume.spacing)["both"]
            clear = lung_slices if labels is None else lung_slices[labels[lung_slices] == 0]
            e = {"ms_per_lung_slice": round(1000 * seconds / max(len(lung_slices), 1), 1),
                 "load": round(os.getloadavg()[0], 1), "ggo_pct": round(total["ggo_pct"], 2),
                 "consolidation_pct": round(total["consolidation_pct"], 2),
                 "slices_over_1pct": int((pct > 1).sum()),
                 "uninfected_over_1pct_by_third": np.bincount(2 - zones[clear[pct[clear] > 1]],
                                                              minlength=3).tolist()}  # lower, middle, upper
            if labels is not None:
                auc = roc_auc(labels == 1, pct)
                e.update({"auc": round(auc, 3), "auc_ci95": [round(x, 3) for x in bootstrap_ci(labels == 1, pct)],
                          "infected_slices": int(labels.sum())})
            entry[key] = e
            print(f"{subject} {key} ({names[key]}): {json.dumps(e)}", flush=True)
        result["volumes"][subject] = entry
        del volume, mask, measured
    for path in sorted((args.data / "covid-hu-slices").glob("*.dcm")):
        hu, spacing = read_dicom_slice(path)
        mask = lung_mask(hu, spacing)
        measured = hu_band_extent(hu, mask.labels, spacing).measured
        row = {"slice": path.stem}
        for key, model in models.items():
            e = by_lung(predict_hu(model, hu, mask), mask.labels, measured, spacing)["both"]
            row[key] = {"ggo_pct": round(e["ggo_pct"], 1), "consolidation_pct": round(e["consolidation_pct"], 1)}
        result["hu_slices"].append(row)
        print(json.dumps(row), flush=True)

    v = result["volumes"]

    def auc_text(s, k):
        return f"{v[s][k]['auc']:.3f} ({v[s][k]['auc_ci95'][0]:.2f}-{v[s][k]['auc_ci95'][1]:.2f})"

    summary = (f"Per-slice lesion % against the radiologists' infected-slice labels (COVID-CT-MD, AUC with 95 % "
               f"bootstrap CI over slices): P002 (COVID-19) {auc_text('P002', 'new')} vs {auc_text('P002', 'old')} "
               f"for {names['old']}; cap002 (CAP) {auc_text('cap002', 'new')} vs {auc_text('cap002', 'old')}. "
               f"normal002 (normal): GGO {v['normal002']['new']['ggo_pct']} %, consolidation "
               f"{v['normal002']['new']['consolidation_pct']} % of the lung (old: {v['normal002']['old']['ggo_pct']} / "
               f"{v['normal002']['old']['consolidation_pct']} %). Inference {v['P002']['new']['ms_per_lung_slice']} ms "
               f"per lung slice vs {v['P002']['old']['ms_per_lung_slice']} ms (old), same run, 1 thread, shared CPU. "
               f"Command: `python scripts/lesion_hu_check.py --update-card`.")
    result["summary"] = summary
    print(summary)
    if args.update_card:
        from CovidCTScreenLib.models.model_package import CARD_NAME
        from CovidCTTrainingLib.lesion_training import render_model_card

        path = models["new"].package.path
        card = json.loads((path / CARD_NAME).read_text())
        card["hu_check"] = result
        (path / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        (path / "MODEL_CARD.md").write_text(render_model_card(card))
        print(f"updated {path / CARD_NAME} and MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
