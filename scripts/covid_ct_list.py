"""Write a COVID-CT split as a covidct-evaluate CSV (path,label,patient_id), patient ids from its meta files.

    python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/covid-ct-val.csv
    covidct-evaluate runs/covid-ct-val.csv --out runs/eval-val
"""

from __future__ import annotations

import argparse
from pathlib import Path

from CovidCTTrainingLib.data import write_covid_ct_split_csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/)")
    p.add_argument("split", choices=["train", "val"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    print(f"{write_covid_ct_split_csv(args.root, args.split, args.out)} rows -> {args.out}")


if __name__ == "__main__":
    main()
