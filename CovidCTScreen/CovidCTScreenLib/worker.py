"""Out-of-process runner the Slicer widget starts, so the GUI never freezes and Cancel always works.

    python -m CovidCTScreenLib.worker INPUT OUT_DIR [--model M] [--device auto|cuda|cpu]
                                      [--batch-size N] [--no-heatmap] [--cancel-file PATH] [--series UID]
                                      [--evaluate [--threshold T ...]]

screens one CT (``pipeline.screen_to_folder``), or with ``--evaluate`` measures the model on the
labelled data set INPUT (``evaluate.evaluate_to_folder``).

stdout carries one machine-readable line per event (``parse_line`` reads them):

    PROGRESS <fraction 0..1> <stage>
    DONE <out_dir>
    ERROR <one-line message>

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
import subprocess
import sys
from pathlib import Path
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_MESSAGES = {EXIT_OK: "done", EXIT_FAILED: "failed", EXIT_INPUT: "input refused", EXIT_CANCELLED: "cancelled"}


def format_progress(stage: str, fraction: float) -> str:
    return f"PROGRESS {max(0.0, min(1.0, fraction)):.4f} {stage}"


def parse_line(line: str) -> tuple[str, object] | None:
    """('progress', (stage, fraction)), ('done', out_dir), ('error', message), or None for other output."""
    line = line.strip()
    if line.startswith("PROGRESS "):
        parts = line.split(" ", 2)
        try:
            return "progress", (parts[2] if len(parts) > 2 else "", float(parts[1]))
        except ValueError:
            return None
    if line.startswith("DONE "):
        return "done", line[5:]
    if line.startswith("ERROR "):
        return "error", line[6:]
    return None


def command(input_path, out_dir, model=None, device="auto", batch_size=None, heatmap=True, cancel_file=None,
            python: str | None = None, evaluate: bool = False, thresholds=(), series: str | None = None) -> list[str]:
    """The worker's command line (``python`` defaults to this interpreter)."""
    cmd = [python or sys.executable, "-m", "CovidCTScreenLib.worker", str(input_path), str(out_dir),
           "--device", device]
    if model:
        cmd += ["--model", str(model)]
    if batch_size:
        cmd += ["--batch-size", str(int(batch_size))]
    if not heatmap:
        cmd.append("--no-heatmap")
    if series:
        cmd += ["--series", str(series)]
    if cancel_file:
        cmd += ["--cancel-file", str(cancel_file)]
    if evaluate:
        cmd.append("--evaluate")
        for t in thresholds:
            cmd += ["--threshold", repr(float(t))]
    return cmd


def environment(extra_paths: list[str] | None = None) -> dict:
    """Environment for the worker: the folder holding CovidCTScreenLib first on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parents[1])] + list(extra_paths or [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(input_path, out_dir, progress: Callable[[str, float], None] | None = None,
        cancel: Callable[[], bool] | None = None, python: str | None = None, poll_s: float = 0.2,
        **kwargs) -> tuple[int, str]:
    """Run the worker as a child process and wait (console, batch, tests). Returns (exit code, message).

    ``cancel()`` is polled; when it turns true the worker is asked to stop (cancel file) and is
    killed if it has not stopped 10 s later.
    """
    import tempfile
    import threading
    import time

    cancel_dir = tempfile.mkdtemp(prefix="covidct-cancel-")
    cancel_file = Path(cancel_dir) / "cancel"
    proc = subprocess.Popen(command(input_path, out_dir, cancel_file=cancel_file, python=python, **kwargs),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    message, stderr_tail = "", []

    def read_stderr():
        for line in proc.stderr:
            stderr_tail.append(line)
            del stderr_tail[:-40]

    threading.Thread(target=read_stderr, daemon=True).start()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    seen, cancel_sent = 0, None
    try:
        while True:
            done = proc.poll() is not None
            while seen < len(lines):
                event = parse_line(lines[seen])
                seen += 1
                if event and event[0] == "progress" and progress:
                    progress(*event[1])
                elif event and event[0] in ("error", "done"):
                    message = event[1]
            if done and not reader.is_alive():
                break
            if cancel_sent is None and cancel and cancel():
                cancel_file.touch()
                cancel_sent = time.monotonic()
            if cancel_sent is not None and time.monotonic() - cancel_sent > 10 and proc.poll() is None:
                proc.kill()
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(cancel_dir, ignore_errors=True)
    code = proc.returncode
    if code < 0 or code == 137:  # killed by a signal: treat as cancelled, and make sure nothing is left
        code = EXIT_CANCELLED
    if code != EXIT_OK:
        _remove_partial(out_dir)
        if not message:
            message = "".join(stderr_tail).strip().splitlines()[-1] if "".join(stderr_tail).strip() \
                else EXIT_MESSAGES.get(code, f"exit code {code}")
    return code, message


def _remove_partial(out_dir) -> None:
    """Delete the hidden ``.<name>.partial-*`` folders a killed writer may leave beside ``out_dir``."""
    out = Path(out_dir)
    if out.parent.is_dir():
        for p in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(p, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m CovidCTScreenLib.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="CT volume file or DICOM series folder (with --evaluate: labelled data)")
    p.add_argument("out_dir", type=Path, help="report or results folder to create (must not exist or be empty)")
    p.add_argument("--model", default=None, help="model package folder or shipped model name")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-heatmap", action="store_true")
    p.add_argument("--cancel-file", type=Path, default=None, help="stop when this file appears")
    p.add_argument("--series", default=None, help="series UID of a DICOM folder holding several series")
    p.add_argument("--evaluate", action="store_true", help="evaluate the model on labelled data (covidct-evaluate)")
    p.add_argument("--threshold", type=float, action="append", default=[], help="with --evaluate: extra threshold")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = {"requested": False}

    def on_signal(signum, frame):
        if stop["requested"]:  # second request: stop now; the report folder is only ever renamed into place
            _remove_partial(args.out_dir)
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
        _remove_partial(args.out_dir)
        return code

    from .errors import Cancelled, InputError

    existed = args.out_dir.exists()
    try:
        progress("start", 0.0)
        if args.evaluate:
            from .evaluate import evaluate_to_folder

            evaluate_to_folder(args.input, args.out_dir, progress=progress, cancel=cancelled, model=args.model,
                               device=args.device, batch_size=args.batch_size, thresholds=tuple(args.threshold))
        else:
            from .pipeline import screen_to_folder

            screen_to_folder(args.input, args.out_dir, progress=progress, cancel=cancelled, model=args.model,
                             device=args.device, batch_size=args.batch_size, heatmap=not args.no_heatmap,
                             series=args.series)
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
