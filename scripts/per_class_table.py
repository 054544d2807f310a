"""Per-class slice metrics of a classifier on every labelled source here, honest about the data behind each
class: COVID-19 and non-COVID-19 on the COVID-CT val split, other (common) pneumonia on CC-CCII's one patient.
"Normal" has no labelled slices here (COVID-CT's NonCOVID mixes normal and other findings).

    python scripts/per_class_table.py [--data ../shared/data] [--model NAME|DIR] --out docs/per_class_metrics.md

All figures come from covidct-evaluate (CovidCTScreenLib.evaluation.evaluate) at the model card's operating point.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from CovidCTScreenLib.evaluation.evaluate import evaluate
from CovidCTTrainingLib.data import write_covid_ct_split_csv


def _ci(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} ({lo:.3f}-{hi:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        val = Path(tmp) / "val.csv"
        write_covid_ct_split_csv(args.data / "covid-ct", "val", val)
        cp = Path(tmp) / "cp.csv"
        with open(cp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "patient_id"])
            for p in sorted((args.data / "ccccii-cp" / "CP").rglob("*.png")):
                w.writerow([p, "NonCOVID", p.relative_to(args.data / "ccccii-cp" / "CP").parts[0]])
        ev_val = evaluate(val, args.model, args.device)
        ev_cp = evaluate(cp, args.model, args.device)
    op, cp_op = ev_val.document["results"]["operating_point"], ev_cp.document["results"]["operating_point"]
    name, t = ev_val.document["model"]["name"], ev_val.document["thresholds"]["operating_point"]
    lines = [f"Model {name}, slice operating point {t:.3f} (model card). 95 % CIs: percentile bootstrap over "
             "patients.", "",
             "| class | data (evaluation only; never trained or selected on here) | slices | patients | "
             "correct at the operating point (95 % CI) |", "|---|---|---|---|---|",
             f"| COVID-19 | COVID-CT val, 8-bit figures from papers | {op['tp'] + op['fn']} | "
             f"{ev_val.document['data']['patients']} (both classes) | sensitivity {_ci(op['sensitivity'])} |",
             f"| non-COVID-19 (normal and other findings, mixed) | COVID-CT val | {op['tn'] + op['fp']} | "
             f"(see above) | specificity {_ci(op['specificity'])} |",
             f"| other (common) pneumonia | CC-CCII, 8-bit lung-window slices | {cp_op['tn'] + cp_op['fp']} | 1 | "
             f"not called COVID-19: {cp_op['specificity']['value']:.3f} (one patient: no interval) |",
             "| normal | none labelled here | 0 | 0 | not assessed |", "",
             "What this supports: a COVID-19 vs non-COVID-19 slice score. It does not support a probability of "
             "'other pneumonia' or 'normal': no labelled training data exist for them here (COVID-CT's NonCOVID "
             "class has no diagnosis column; CC-CCII holds one common-pneumonia patient, used only to check "
             "that such slices are not called COVID-19). The report therefore lists both under `not_assessed` "
             "and prints no probability for them."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text("# Per-class slice metrics\n\nCommand: `python scripts/per_class_table.py --out "
                            f"{args.out}`\n\n" + text)


if __name__ == "__main__":
    main()
