"""Out-of-process runner the Slicer widget starts, so the GUI never freezes and Cancel always works.

    python -m CovidCTScreenLib.app.worker INPUT OUT_DIR [--model M] [--device auto|cuda|cpu]
                                      [--batch-size N] [--no-heatmap] [--no-lesions] [--cancel-file PATH]
                                      [--lung-mask FILE [--lung-mask-name NAME]] [--series UID]
                                      [--evaluate [--threshold T ...]]

screens one CT (``pipeline.screen_to_folder``), or with ``--evaluate`` measures the model on the
labelled data set INPUT (``evaluate.evaluate_to_folder``).

stdout carries one line per event in the protocol of ``process_runner`` (PROGRESS, DONE, ERROR), which
also starts, watches and cancels this worker for the Slicer modules and ``run``.

Exit codes: 0 done, 2 unusable input or model (``InputError``), 3 cancelled (SIGTERM, SIGINT or the
cancel file), 1 unexpected failure (traceback on stderr). The report folder appears all at once
(``output_folder.atomic_folder``) or not at all: a cancelled or failed run leaves no ``OUT_DIR``.

Cancel: create the cancel file (works on every OS) or send SIGTERM; the run stops at the next
batch. A second SIGTERM ends the process at once. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable

from .options import ScreenOptions, add_screen_options
from .process_runner import (EXIT_CANCELLED, EXIT_FAILED, EXIT_INPUT, EXIT_MESSAGES, EXIT_OK,  # noqa: F401
                             Callbacks, format_progress, parse_line, python_environment, start)


def command(input_path, out_dir, model=None, device="auto", batch_size=None, heatmap=True, lesions=True,
            cancel_file=None, python: str | None = None, evaluate: bool = False, thresholds=(), lung_mask=None,
            lung_mask_name: str | None = None, series: str | None = None, lesion_model=None) -> list[str]:
    """The worker's command line (``python`` defaults to this interpreter)."""
    options = ScreenOptions(model=model, device=device, batch_size=batch_size, heatmap=heatmap, lesions=lesions,
                            lesion_model=lesion_model)
    cmd = [python or sys.executable, "-m", "CovidCTScreenLib.app.worker", str(input_path), str(out_dir), *options.argv()]
    if series:
        cmd += ["--series", str(series)]
    if cancel_file:
        cmd += ["--cancel-file", str(cancel_file)]
    if lung_mask:
        cmd += ["--lung-mask", str(lung_mask)]
    if lung_mask_name:
        cmd += ["--lung-mask-name", lung_mask_name]
    if evaluate:
        cmd.append("--evaluate")
        for t in thresholds:
            cmd += ["--threshold", repr(float(t))]
    return cmd


def environment(extra_paths: list[str] | None = None) -> dict:
    """Environment for the worker process (``process_runner.python_environment``)."""
    return python_environment(extra_paths)


def run(input_path, out_dir, progress: Callable[[str, float], None] | None = None,
        cancel: Callable[[], bool] | None = None, python: str | None = None, poll_s: float = 0.2,
        **kwargs) -> tuple[int, str]:
    """Run the worker as a child process and wait (console, batch, tests). Returns (exit code, message).

    ``cancel()`` is polled; when it turns true the worker is asked to stop (cancel file) and its process tree
    is killed if it has not stopped 10 s later.
    """
    import tempfile

    cancel_dir = tempfile.mkdtemp(prefix="covidct-cancel-")
    cancel_file = Path(cancel_dir) / "cancel"
    try:
        job = start(command(input_path, out_dir, cancel_file=cancel_file, python=python, **kwargs),
                    env=environment(), cancel_file=cancel_file, callbacks=Callbacks(progress=progress))
        code, message = job.wait(cancel, poll_s)
    finally:
        shutil.rmtree(cancel_dir, ignore_errors=True)
    if code != EXIT_OK:
        remove_partial(out_dir)
    return code, message


def remove_partial(out_dir) -> None:
    """Delete the hidden ``.<name>.partial-*`` folders a killed writer may leave beside ``out_dir``."""
    out = Path(out_dir)
    if out.parent.is_dir():
        for p in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(p, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m CovidCTScreenLib.app.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="CT volume file or DICOM series folder (with --evaluate: labelled data)")
    p.add_argument("out_dir", type=Path, help="report or results folder to create (must not exist or be empty)")
    add_screen_options(p)
    p.add_argument("--cancel-file", type=Path, default=None, help="stop when this file appears")
    p.add_argument("--lung-mask", type=Path, default=None,
                   help="lung mask file on the CT grid (as covidct-screen --lung-mask)")
    p.add_argument("--lung-mask-name", default=None,
                   help="name of the Slicer segmentation the lung mask file was exported from (for the report)")
    p.add_argument("--series", default=None, help="series UID of a DICOM folder holding several series")
    p.add_argument("--evaluate", action="store_true", help="evaluate the model on labelled data (covidct-evaluate)")
    p.add_argument("--threshold", type=float, action="append", default=[], help="with --evaluate: extra threshold")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = {"requested": False}

    def on_signal(signum, frame):
        if stop["requested"]:  # second request: stop now; the report folder is only ever renamed into place
            remove_partial(args.out_dir)
            os._exit(EXIT_CANCELLED)
        stop["requested"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def cancelled() -> bool:
        if not stop["requested"] and args.cancel_file is not None and args.cancel_file.exists():
            stop["requested"] = True
        return stop["requested"]

    def progress(stage: str, fraction: float) -> None:
        print(format_progress(stage, fraction), flush=True)

    def fail(code: int, message: str) -> int:
        message = " ".join(str(message).split())
        print(f"ERROR {message}", flush=True)
        print(f"covidct-worker: {EXIT_MESSAGES[code]}: {message}", file=sys.stderr, flush=True)
        remove_partial(args.out_dir)
        return code

    from ..errors import Cancelled, InputError

    existed = args.out_dir.exists()
    try:
        progress("start", 0.0)
        if args.evaluate:
            from ..evaluation.evaluate import evaluate_to_folder

            evaluate_to_folder(args.input, args.out_dir, progress=progress, cancel=cancelled, model=args.model,
                               device=args.device, batch_size=args.batch_size, thresholds=tuple(args.threshold))
        else:
            from ..screening.pipeline import screen_to_folder

            screen_to_folder(args.input, args.out_dir, progress=progress, cancel=cancelled,
                             lung_mask=args.lung_mask, lung_mask_name=args.lung_mask_name, series=args.series,
                             **ScreenOptions.from_args(args).kwargs())
        if cancelled():  # cancel arrived while the report was being written: take it back
            if not existed:
                shutil.rmtree(args.out_dir, ignore_errors=True)
            raise Cancelled("cancelled by the user")
    except Cancelled as e:
        return fail(EXIT_CANCELLED, e)
    except InputError as e:
        return fail(EXIT_INPUT, e)
    except Exception as e:  # noqa: BLE001 - report any failure as one line, with the traceback on stderr
        import traceback

        traceback.print_exc()
        return fail(EXIT_FAILED, f"{type(e).__name__}: {e}")
    print(f"DONE {args.out_dir}", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
