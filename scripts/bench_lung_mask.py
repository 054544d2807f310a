"""CPU time of the lung mask and the HU bands: this checkout against a baseline git revision, in one run.

Both versions run alternately on the same volumes (single thread, process CPU time, best of ``--repeats``), so
the ratio holds on a busy machine. Run: python scripts/bench_lung_mask.py [--baseline 43e2ff8] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from CovidCTScreenLib.lesions import hu_bands
from CovidCTScreenLib.lungs import lung_mask
from CovidCTScreenLib.input.volume_io import load_ct

REPO = Path(__file__).resolve().parents[1]
LIB = "CovidCTScreen/CovidCTScreenLib"
VOLUMES = ["covid-ct-md/Normal subjects/normal002", "covid-ct-md/COVID-19 subjects/P002",
           "covid-ct-md/Cap subjects/cap002", "chest-ct/Lung_Dx-A0001_5mm_B.nii.gz", "chest-ct/Lung_Dx-A0002_B40f"]


SUBPACKAGE = {"lung_mask": "lungs", "hu_bands": "lesions"}  # where the modules live since the sub-package layout


def _baseline(rev: str, name: str, folder: Path):
    """Module ``name`` of ``LIB`` at git revision ``rev`` (in its sub-package, or at the top of the package before
    the sub-package layout), loaded in the same package so that its relative imports (``..errors`` / ``.errors``)
    resolve to this checkout's modules."""
    for package in (f"CovidCTScreenLib.{SUBPACKAGE[name]}", "CovidCTScreenLib"):
        rel = package.replace("CovidCTScreenLib", LIB, 1).replace(".", "/")
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{rel}/{name}.py"], capture_output=True,
                               text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"{name}.py is not in revision {rev}")
    path = folder / f"{name}.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location(f"{package}.baseline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cpu(repeats: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="43e2ff8", help="git revision to compare with (default: before issue 12)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_mask, old_bands = (_baseline(args.baseline, n, Path(tmp)) for n in ("lung_mask", "hu_bands"))
    print(f"load average {os.getloadavg()[0]:.1f}; CPU seconds, best of {args.repeats}")
    print("| volume | mask before | mask now | ratio | HU bands before | HU bands now | ratio |")
    print("|---|---|---|---|---|---|---|")
    for rel in VOLUMES:
        ct = load_ct(args.data / rel)
        masks = {"before": old_mask.lung_mask(ct.hu, ct.spacing), "now": lung_mask.lung_mask(ct.hu, ct.spacing)}
        m0 = _cpu(args.repeats, old_mask.lung_mask, ct.hu, ct.spacing)
        m1 = _cpu(args.repeats, lung_mask.lung_mask, ct.hu, ct.spacing)
        b0 = _cpu(args.repeats, old_bands.hu_band_extent, ct.hu, masks["before"].labels, ct.spacing)
        b1 = _cpu(args.repeats, hu_bands.hu_band_extent, ct.hu, masks["now"].labels, ct.spacing)
        print(f"| {Path(rel).name} {ct.shape} | {m0:.2f} | {m1:.2f} | {m1 / m0:.2f} | {b0:.2f} | {b1:.2f} | "
              f"{b1 / b0:.2f} |", flush=True)
        del ct, masks


if __name__ == "__main__":
    main()
