"""Write a COVID-CT split as a covidct-evaluate CSV (path,label,patient_id), patient ids from its meta files.

    python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/covid-ct-val.csv
    covidct-evaluate runs/covid-ct-val.csv --out runs/eval-val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from CovidCTScreenLib.errors import InputError
from CovidCTTrainingLib.data import write_covid_ct_split_csv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/)")
    p.add_argument("split", choices=["train", "val"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        print(f"{write_covid_ct_split_csv(args.root, args.split, args.out)} rows -> {args.out}")
    except InputError as e:
        print(f"covid_ct_list.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
