"""covidct-evaluate: measure a model on your own labelled data (slices, studies or lesion masks).

Writes metrics.json, predictions.csv and PNG plots (ROC, reliability, confusion matrix; cases sheet
for segmentation) into --out, all at once or not at all. Research use only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_screen_options, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidct-evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path,
                   help="class-per-folder images, a CSV 'path,label[,patient_id]' or "
                        "'study,label[,patient_id][,slice_labels]', a folder with one study CSV, a COVID-CT-MD "
                        "folder (Index.csv, slice labels), or a folder with images/ and masks/")
    p.add_argument("--out", type=Path, required=True, help="folder to create for the results")
    add_screen_options(p, steps=False)
    p.add_argument("--threshold", type=float, action="append", default=[],
                   help="also report the metrics at this slice probability threshold (repeatable); the model "
                        "card's operating point is always reported")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def summary_lines(document: dict) -> list[str]:
    """The headline figures of a metrics.json document, one line each."""
    def fmt(m: dict) -> str:
        v, (lo, hi) = m["value"], m["ci95"]
        return "n/a" if v is None or v != v else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    data = document["data"]
    lines = [f"{document['model']['name']} on {data['source']} ({data['kind']}, {data['items']} items"
             + (f", {data['patients']} patients" if data.get("patients") else "") + ")"]
    if data["kind"] == "segmentation":
        for name, m in document["results"].items():
            lines.append(f"  {name:<14} " + (f"Dice {fmt(m['dice'])}  IoU {fmt(m['iou'])}" if "dice" in m
                                             else m["not_assessed"]))
        return lines
    for name, m in document["results"].items():
        lines.append(f"  at {name} {document['thresholds'][name]:.3f}: AUC {fmt(m['auc'])}  "
                     f"sens {fmt(m['sensitivity'])}  spec {fmt(m['specificity'])}  F1 {fmt(m['f1'])}  "
                     f"acc {fmt(m['accuracy'])}")
    if "three_class" in document:
        tc = document["three_class"]
        lines.append(f"  three-class category (rules, no probability): {tc['correct']} of {tc['studies']} studies "
                     f"labelled COVID-19 / other pneumonia / normal correct")
    slice_level = document.get("slice_level", {})
    for name, s in [*((f"slices of {k}", v) for k, v in slice_level.get("studies", {}).items()),
                    *([("slices pooled", slice_level["pooled"])] if "pooled" in slice_level else [])]:
        lines.append(f"  {name} ({s['lung_slices']} lung slices, {s['infected']} infected): AUC "
                     + "  ".join(f"{key} {fmt(m)}" for key, m in s["auc"].items()))
    if "ece" in document.get("calibration", {}):
        lines.append(f"  calibration: ECE {document['calibration']['ece']:.3f}")
    for f in data.get("failed", []):
        lines.append(f"  not scored: {f['study']}: {f['error']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..evaluation.evaluate import evaluate_to_folder
    from .cli import run_command

    result = run_command("covidct-evaluate", lambda cancel, progress: evaluate_to_folder(
        args.data, args.out, overwrite=args.overwrite, progress=progress, cancel=cancel, model=args.model,
        device=args.device, thresholds=tuple(args.threshold), batch_size=args.batch_size, resamples=args.bootstrap),
        args.out, args.quiet)
    if result is None:
        return 2
    print("\n".join(summary_lines(result.document)))
    print(f"results in {args.out} ({result.document['seconds']:.1f} s). Research use only.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
