"""covidct-screen: screen a chest CT for COVID-19 and write a report folder (research use only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .options import ScreenOptions, add_screen_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidct-screen", description=__doc__)
    p.add_argument("input", type=Path, help="DICOM series folder, or .nrrd / .nii / .nii.gz / .mha file")
    p.add_argument("--out", type=Path, required=True, help="report folder to create")
    p.add_argument("--series", default=None, metavar="UID",
                   help="SeriesInstanceUID to screen when the DICOM folder holds several series (default: the "
                        "axial CT series best suited to lung reading; the report says which and why)")
    add_screen_options(p)
    p.add_argument("--lung-mask", type=Path, default=None, metavar="FILE",
                   help="use this lung mask instead of computing one: a label map (1 right, 2 left), a binary mask "
                        "or a Slicer .seg.nrrd (segments named like 'right lung' or 'lung_upper_lobe_left') on the "
                        "CT grid, NRRD / NIfTI / MHA")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def stage_progress_bar(quiet: bool):
    """(tqdm bar or None, ``progress(stage, fraction)`` callback drawing on it) for the command lines."""
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=100, bar_format="{desc:<12} {percentage:3.0f}%|{bar}| {elapsed}", file=sys.stderr)

    def progress(stage: str, fraction: float) -> None:
        if bar is not None:
            bar.set_description_str(stage)
            bar.update(round(100 * fraction) - bar.n)

    return bar, progress


def run_interruptibly(job, out_dir):
    """``job(cancel)`` on a worker thread, so Ctrl-C acts at once even inside a long torch operation (the main
    thread only waits, in Python). On Ctrl-C the job is told to stop, its partial output is removed and
    KeyboardInterrupt propagates; the report folder only ever appears whole (atomic rename)."""
    import threading

    from .worker import remove_partial

    box: dict = {}
    stop = threading.Event()

    def target():
        try:
            box["result"] = job(stop.is_set)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread as it is
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        stop.set()
        remove_partial(out_dir)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def run_command(prog: str, job, out_dir, quiet: bool):
    """``job(cancel, progress)`` as the command ``prog`` runs it: a stage progress bar unless ``quiet``; Ctrl-C exits
    130 at once with nothing written; bad input prints one line ``prog: error: ...`` and gives None (exit 2)."""
    from ..errors import Cancelled, InputError

    bar, progress = stage_progress_bar(quiet)
    try:
        return run_interruptibly(lambda cancel: job(cancel, progress), out_dir)
    except KeyboardInterrupt:
        print(("\n" if bar is not None else "") + f"{prog}: cancelled; nothing was written", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # the job thread may still be inside a torch operation: do not wait for it
    except (InputError, Cancelled) as e:
        print(("\n" if bar is not None else "") + f"{prog}: error: {e}", file=sys.stderr)
        return None
    finally:
        if bar is not None:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..screening.pipeline import screen_to_folder

    result = run_command("covidct-screen", lambda cancel, progress: screen_to_folder(
        args.input, args.out, overwrite=args.overwrite, progress=progress, cancel=cancel, lung_mask=args.lung_mask,
        series=args.series, **ScreenOptions.from_args(args).kwargs()), args.out, args.quiet)
    if result is None:
        return 2
    v = result.verdict
    if v.category is not None:
        print(f"Category: {v.category} ({v.pattern} pattern; no calibrated probability). {v.reason}")
        for e in v.evidence:
            print(f"  - {e['finding']}: {e['value']} -> {e['points_to']}")
    print(f"Slice model (binary) {v.label}: {v.positive_slices}/{v.lung_slices} lung slices positive "
          f"({v.positive_fraction:.0%}; rule > {v.min_fraction:.0%}), max slice P(COVID-19) {v.max_probability:.2f}")
    if v.low_confidence:
        print(v.confidence_note)
    choice = result.volume.meta.get("series_choice")
    if choice:
        print(f"{len(choice['series'])} series in the folder; screened {choice['chosen']} ({choice['how']}):")
        for s in choice["series"]:
            print(f"  {'*' if s['series_instance_uid'] == choice['chosen'] else ' '} {s['series_instance_uid']}: "
                  f"'{s['description']}', {s['images']} images, {s['slice_thickness_mm']:g} mm, kernel {s['kernel']}")
    print(f"lung volume {result.lung_volume_ml['total'] / 1000:.2f} L ({result.mask.source['source']}); "
          f"report in {args.out}")
    if result.manifestations is not None:
        m = result.manifestations.summary
        for key, name in (("hu_bands", "HU bands"), ("learned", "lesion UNet")):
            both = m[key]["per_lung"]["both"]
            print(f"{name}: GGO {both['ggo_pct']:.1f} %, consolidation {both['consolidation_pct']:.1f} % of the lung "
                  f"({m[key]['dominant']})")
        print(f"possible fibrotic streaks: {m['possible_fibrotic_streaks']['candidates']} candidates (heuristic, "
              f"unvalidated)")
    for key, prefix in (("hu_ct_check", "Caution"), ("slice_label_check", "Per-slice evidence")):
        check = result.model.card.get(key, {}).get("summary")
        if check:
            print(f"{prefix}: {check}")
    print("Research use only - not for clinical diagnosis.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
