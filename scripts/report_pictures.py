"""The report pictures of the README, from a real screening of the chest-ct DICOM series (TCIA, CC BY 4.0).

Screens ../shared/data/chest-ct/Lung_Dx-A0002_B40f into runs/report_pictures/ and copies into docs/:
report_key_slice.png (the key slice with the most evidence, named by DICOM instance number), report_lesions.png
(the lesion picture) and report_html.png (report.html rendered by headless Chromium). Rerun after any change to the pictures,
the heatmap or the models. Run:
python scripts/report_pictures.py [--data ../shared/data] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from CovidCTScreenLib.screening.pipeline import screen_to_folder

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def screenshot(html: Path, png: Path, size: str = "1200,1800") -> None:
    """Render ``html`` in headless Chromium (apt package ``chromium``) into ``png``."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("headless Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={profile}", f"--window-size={size}", f"--screenshot={png}", html.as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out = REPO / "runs" / "report_pictures"
    screen_to_folder(args.data / "chest-ct" / "Lung_Dx-A0002_B40f", out, overwrite=True, device=args.device)
    report = json.loads((out / "report.json").read_text())
    shutil.copy(out / report["key_slices"][0]["png"], DOCS / "report_key_slice.png")
    shutil.copy(out / report["files"]["lesions_plot"], DOCS / "report_lesions.png")
    screenshot(out / "report.html", DOCS / "report_html.png")
    print(f"{report['verdict']['label']}; key slices {[k['name'] for k in report['key_slices']]}; "
          f"pictures in {DOCS}")


if __name__ == "__main__":
    main()
