"""Write a COVID-CT split as a covidct-evaluate CSV (path,label,patient_id), patient ids from its meta files.

    python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/covid-ct-val.csv
    covidct-evaluate runs/covid-ct-val.csv --out runs/eval-val
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from CovidCTTrainingLib.data import COVID_CT_LABELS, covid_ct_split


def write_split_csv(root: Path, split: str, out: Path) -> int:
    """Write the CSV (paths relative to its folder); return the number of rows."""
    items = covid_ct_split(root, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient_id"])
        for i in items:
            writer.writerow([os.path.relpath(i.path.resolve(), out.parent.resolve()), COVID_CT_LABELS[i.label],
                             i.patient])
    return len(items)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/)")
    p.add_argument("split", choices=["train", "val"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    print(f"{write_split_csv(args.root, args.split, args.out)} rows -> {args.out}")


if __name__ == "__main__":
    main()
