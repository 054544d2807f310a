"""Extent methods and study verdicts on the development HU volumes, through covidct-evaluate's Python API.

- COVID-CT-MD sample (P002 COVID-19, cap002 CAP, normal002 normal): per-slice AUC (block-bootstrap 95 % CI) of
  the slice model's P(COVID-19), the HU-band lesion % and the lesion-UNet lesion % against the radiologists'
  infected-slice labels (P002, cap002, pooled); the binary study rule and the three-class category of each study;
- normal-lung extent: GGO / consolidation % of the lung by both methods on normal002 and on the two chest-ct
  volumes (lung-cancer patients, not COVID), against the normal-volume limits GGO <= 2 %, consolidation <= 0.5 %.

Writes docs/ct_md_evaluation.md and docs/ct_md_slices_<patient>.png. The covidct-evaluate folders go to
runs/ct_md/ and are reused when present (--rerun to screen again, e.g. after the lung mask, HU bands or lesion
model changed). --update-card stores the per-slice AUCs in the slice model's card (``slice_label_check``, shown in
every report's reliability section and in MODEL_CARD.md).
Usage: python scripts/evaluate_ct_md.py [--data ../shared/data] [--rerun] [--update-card]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from CovidCTScreenLib.lesions.distribution import NORMAL_LIMITS_PCT
from CovidCTScreenLib.evaluation.evaluate import evaluate_to_folder
from CovidCTScreenLib.evaluation.evaluate_studies import SLICE_SCORES

REPO = Path(__file__).resolve().parents[1]


def run(data, out: Path, rerun: bool) -> tuple[dict, list[dict]]:
    """metrics.json and predictions.csv rows of one covidct-evaluate run (reused unless ``rerun``)."""
    import csv

    if rerun or not (out / "metrics.json").is_file():
        evaluate_to_folder(data, out, overwrite=True, device="cpu")
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return json.loads((out / "metrics.json").read_text()), rows


def ci(m: dict) -> str:
    return "n/a" if m["value"] is None else f"{m['value']:.2f} ({m['ci95'][0]:.2f}-{m['ci95'][1]:.2f})"


def chance(m: dict) -> str:
    """Where an AUC's 95 % CI lies against 0.5."""
    if m["value"] is None:
        return "undefined"
    return "above chance" if m["ci95"][0] > 0.5 else "below chance" if m["ci95"][1] < 0.5 else "CI includes 0.5"


def slice_label_check(sl: dict, model: str) -> dict:
    """The model card's ``slice_label_check``: per-slice AUC of every per-slice score per labelled patient, and a
    plain summary of which score tracks the labels."""
    from CovidCTScreenLib.lesions.lesion_seg import DEFAULT_LESION_MODEL

    names = {"learned": f"lesion % of the slice's lung by the lesion UNet ({DEFAULT_LESION_MODEL})",
             "hu_bands": "lesion % by the HU bands", "slice_model": f"the slice model's P(COVID-19) ({model})"}
    parts = [f"{names[key]}: " + ", ".join(f"{p} {ci(s['auc'][key])[:-1]}, {chance(s['auc'][key])})"
                                           for p, s in sl["studies"].items()) for key in names]
    return {"command": "python scripts/evaluate_ct_md.py --rerun --update-card",
            "data": "COVID-CT-MD development HU volumes with radiologists' infected-slice labels, one patient each",
            "bootstrap": sl["bootstrap"], "lesion_model": DEFAULT_LESION_MODEL,
            "per_slice_auc": {p: s["auc"] for p, s in sl["studies"].items()},
            "summary": ("Per-slice AUC (95 % CI) against the radiologists' infected-slice labels on real HU CT "
                        "(COVID-CT-MD development volumes, one patient each): " + "; ".join(parts) + ".")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "ct_md")
    p.add_argument("--rerun", action="store_true", help="screen again instead of reusing runs/ct_md")
    p.add_argument("--update-card", action="store_true",
                   help="store the per-slice AUCs in the slice model's model.json and MODEL_CARD.md")
    args = p.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    md, md_rows = run(args.data / "covid-ct-md", args.runs / "covid-ct-md", args.rerun)
    chest = args.runs / "chest_ct_studies.csv"
    chest.write_text("study,label\n" + "".join(f"{args.data / 'chest-ct' / name},non-COVID-19\n" for name in
                                                 ("Lung_Dx-A0001_5mm_B.nii.gz", "Lung_Dx-A0002_B40f")))
    _, chest_rows = run(chest, args.runs / "chest-ct", args.rerun)

    docs = REPO / "docs"
    sl = md["slice_level"]
    lines = ["# Extent methods and study verdicts on the development HU volumes", "",
             "Written by `python scripts/evaluate_ct_md.py --rerun` (covidct-evaluate's Python API on "
             "`../shared/data/covid-ct-md` and the two `chest-ct` volumes). Provisional: rerun after the lung mask, "
             "HU bands, lesion model or slice model change. Model: " + md["model"]["name"] + f"; load average at "
             f"writing {os.getloadavg()[0]:.1f}.", "",
             "## Per-slice AUC against the radiologists' infected-slice labels", "",
             f"Lung slices the pipeline scores; 95 % CI: {sl['bootstrap']} (neighbouring slices are correlated). "
             "Development patients, one per class: no claim about other patients.", "",
             "| patient | lung slices (infected) | " + " | ".join(SLICE_SCORES.values()) + " |",
             "|---|---|" + "---|" * len(SLICE_SCORES)]
    for name, s in [*sl["studies"].items(), *([("pooled", sl["pooled"])] if "pooled" in sl else [])]:
        outside = s.get("infected_outside_lung_slices")
        lines.append(f"| {name} | {s['lung_slices']} ({s['infected']}"
                     + (f"; {outside} more outside the lung slices" if outside else "") + ") | "
                     + " | ".join(ci(s["auc"][k]) for k in SLICE_SCORES) + " |")
    lines += ["", "Which per-slice score tracks the labels (AUC and where its CI lies against 0.5): "
              + slice_label_check(sl, md["model"]["name"])["summary"].split(": ", 1)[1], "",
              "## Per lung against the lobe labels", "",
              "A slice of a lung counts as infected when the radiologists labelled a lobe of that lung on it "
              "(COVID-CT-MD lobe columns LLL, LUL, RLL, RML, RUL); per-slice lesion % of that lung's measured part "
              "(the same definition as the whole slice's, `manifestations.slice_extent`). Involved = the distribution's per-lung call "
              f"(lesion UNet, GGO > {NORMAL_LIMITS_PCT['ggo']:g} % or consolidation > "
              f"{NORMAL_LIMITS_PCT['consolidation']:g} % of that lung).", "",
              "| patient | lung | labelled infected slices | labelled involved | measured involved | per-slice AUC "
              "HU bands | per-slice AUC lesion UNet |", "|---|---|---|---|---|---|---|"]
    for name, s in sl["studies"].items():
        for side, lung in s.get("per_lung", {}).items():
            lines.append(f"| {name} | {side} | {lung['infected']} | {'yes' if lung['labelled_involved'] else 'no'} | "
                         f"{'yes' if lung['measured_involved'] else 'no'} | {ci(lung['auc']['hu_bands'])} | "
                         f"{ci(lung['auc']['learned'])} |")
    lines += ["", "## Study verdicts", "",
              "| patient | truth | slice model (binary study rule) | category | pattern | severity (0-30) | "
              "largest zone lesion % | reason |", "|---|---|---|---|---|---|---|---|"]
    for r in md_rows:
        lines.append(f"| {r['patient_id']} | {r['label']} | {r['verdict_at_operating_point']} "
                     f"({float(r['positive_fraction_at_operating_point']):.0%} of slices) | **{r['category']}** | "
                     f"{r['pattern']} | {r['severity_score']} | "
                     f"{r['largest_zone']} {float(r['largest_zone_lesion_pct']):.1f} | "
                     f"{r['reason']} |")
    tc = md["three_class"]
    lines += ["", f"Three-class category correct on {tc['correct']} of {tc['studies']} studies (rules in "
                  "`verdict.CATEGORY_RULES`; no threshold was fitted, but rule 3 was widened to CO-RADS 4 (unilateral peripheral GGO) after P002 had been screened, so P002 does not test that change).", "",
              "## Extent on volumes without COVID-19", "",
              f"Whole-lung GGO / consolidation % (the normal-volume limits are GGO <= {NORMAL_LIMITS_PCT['ggo']:g} %, "
              f"consolidation <= {NORMAL_LIMITS_PCT['consolidation']:g} %; the chest-ct patients have lung cancer, "
              "so their tumour counts as consolidation).", "",
              "| volume | truth | HU bands GGO / consolidation % | lesion UNet GGO / consolidation % | within limits "
              "(lesion UNet, the lead method) |", "|---|---|---|---|---|"]
    for r in [r for r in md_rows if r["label"] != "COVID-19"] + chest_rows:
        ggo, cons = float(r["learned_ggo_pct"]), float(r["learned_consolidation_pct"])
        ok = ggo <= NORMAL_LIMITS_PCT["ggo"] and cons <= NORMAL_LIMITS_PCT["consolidation"]
        lines.append(f"| {Path(r['item']).name} | {r['label']} | {float(r['hu_bands_ggo_pct']):.2f} / "
                     f"{float(r['hu_bands_consolidation_pct']):.2f} | {ggo:.2f} / {cons:.2f} | "
                     f"{'yes' if ok else 'no'} |")
    lines += ["", "Per-slice plots (scores against the labels, infected slices shaded): "
              + ", ".join(f"`docs/ct_md_slices_{name}.png`" for name in sl["studies"]), ""]
    for name in sl["studies"]:
        shutil.copyfile(args.runs / "covid-ct-md" / f"slices_{name}.png", docs / f"ct_md_slices_{name}.png")
    (docs / "ct_md_evaluation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.update_card:
        from model_card import render  # scripts/model_card.py

        folder = Path(md["model"]["path"])
        card = json.loads((folder / "model.json").read_text())
        card["slice_label_check"] = slice_label_check(sl, card["name"])
        (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
        (folder / "MODEL_CARD.md").write_text(render(card))
        print("updated", folder / "model.json", "and MODEL_CARD.md:", card["slice_label_check"]["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
