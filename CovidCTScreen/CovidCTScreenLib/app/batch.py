"""covidct-batch: screen every CT of a folder, one report folder per study plus summary.csv (research use only).

    covidct-batch --input-folder DIR --out DIR [--model M] [--device auto|cuda|cpu] [--no-heatmap] ...

In 3D Slicer, headless: ``Slicer --no-main-window --python-script scripts/batch_screen.py -- --input-folder DIR
--out DIR``. Studies are the volume files (.nrrd .nhdr .nii .nii.gz .mha .mhd) anywhere under the input folder
and every folder that directly holds DICOM files (one series per folder). A study that cannot be screened is
recorded with its error in summary.csv and the run goes on; summary.csv flags low-confidence verdicts. Exit
code 1 when any study failed, 2 when the arguments or the model are unusable, 0 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

from .. import RESEARCH_USE_NOTICE
from ..errors import InputError
from .options import ScreenOptions, add_screen_options
from ..input.volume_io import VOLUME_SUFFIXES

SUMMARY_FIELDS = ["study", "input", "status", "verdict", "positive", "low_confidence", "positive_fraction",
                  "positive_slices", "lung_slices", "max_probability", "lung_volume_ml", "report", "seconds", "error"]


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_studies(root: Path) -> list[Path]:
    """Volume files and DICOM series folders under ``root``, sorted, hidden entries skipped."""
    studies = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        volumes = [p for p in files if p.name.lower().endswith(VOLUME_SUFFIXES)]
        studies += volumes
        rest = [p for p in files if p not in volumes]
        if rest and any(_is_dicom(p) for p in rest[:20]):
            studies.append(folder)
    return studies


def study_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path != root else Path(path.name)
    name = str(rel)
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "study"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidct-batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-folder", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder: <study>/report.json ..., summary.csv")
    add_screen_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace study reports an earlier run wrote")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # Slicer passes the arguments after its own '--'
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    from ..models.model_package import SLICE_CLASSIFICATION, load_package
    from ..report.output_folder import check_destination
    from ..screening.pipeline import screen_to_folder

    options = ScreenOptions.from_args(args)
    try:
        if not args.input_folder.is_dir():
            raise InputError(f"input folder {args.input_folder} does not exist")
        if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
            raise InputError(f"output folder {args.out} is not empty; choose another folder or pass --overwrite "
                             f"(it replaces only the reports of studies screened again)")
        check_destination(args.out, inputs=[args.input_folder])
        model = load_package(options.model)  # verified once, shared by every study
        model.require(SLICE_CLASSIFICATION, "covidct-batch")
        studies = find_studies(args.input_folder)
        if not studies:
            raise InputError(f"no CT volumes or DICOM series folders under {args.input_folder}")
    except InputError as e:
        print(f"covidct-batch: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    names: dict[str, int] = {}
    rows, failed = [], 0
    print(f"{len(studies)} studies; model {model.name}. {RESEARCH_USE_NOTICE}", flush=True)
    for n, path in enumerate(studies, 1):
        name = study_name(path, args.input_folder)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}_{names[name]}"
        row = {"study": name, "input": str(path), "status": "ok"}
        t0 = time.perf_counter()
        try:
            result = screen_to_folder(path, args.out / name, overwrite=args.overwrite,
                                      **{**options.kwargs(), "model": model})
            v = result.verdict
            row.update(verdict=v.label, positive=int(v.positive), low_confidence=int(v.low_confidence),
                       positive_fraction=f"{v.positive_fraction:.4f}",
                       positive_slices=v.positive_slices, lung_slices=v.lung_slices,
                       max_probability=f"{v.max_probability:.4f}",
                       lung_volume_ml=f"{result.lung_volume_ml['total']:.1f}", report=str(args.out / name))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one bad study must not stop the batch
            failed += 1
            kind = "" if isinstance(e, InputError) else f"{type(e).__name__}: "
            row.update(status="error", error=" ".join(f"{kind}{e}".split()))
        row["seconds"] = f"{time.perf_counter() - t0:.1f}"
        rows.append(row)
        print(f"[{n}/{len(studies)}] {name}: {row.get('verdict') or 'ERROR ' + row['error']}", flush=True)
        _write_summary(args.out / "summary.csv", rows)  # rewritten after each study: usable if interrupted
    print(f"done: {len(rows) - failed} screened, {failed} failed; summary in {args.out / 'summary.csv'}")
    return 1 if failed else 0


def _write_summary(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in SUMMARY_FIELDS})
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
