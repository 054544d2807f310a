"""The heatmap pictures in the README and docs/: the top key slice of the report of the sample CT
(docs/sample_key_slice.png) and of the COVID-CT-MD COVID-19 volume P002 (docs/gradcam_P002_key_slice.png),
each exactly as ``covidct-screen`` writes it. Run: python scripts/heatmap_pictures.py [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PICTURES = {"sample_key_slice.png": REPO / "Resources" / "SampleData" / "Lung_Dx-A0002_chestCT.nrrd",
            "gradcam_P002_key_slice.png": DATA / "covid-ct-md" / "COVID-19 subjects" / "P002"}


def main() -> None:
    from CovidCTScreenLib.screening.pipeline import screen_to_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for name, source in PICTURES.items():  # one CT at a time (memory)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report"
            screen_to_folder(source, out, device=args.device, lesions=False)
            top = json.loads((out / "report.json").read_text())["key_slices"][0]
            shutil.copyfile(out / top["png"], REPO / "docs" / name)
            print(f"docs/{name}: {source.name} slice {top['slice']}")


if __name__ == "__main__":
    main()
