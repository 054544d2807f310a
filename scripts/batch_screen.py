"""Headless 3D Slicer entry to covidct-batch (``CovidCTScreenLib.app.batch``; research use only):

    Slicer --no-main-window --python-script scripts/batch_screen.py -- --input-folder DIR --out DIR

Outside Slicer use the ``covidct-batch`` command (same arguments). Exit codes as covidct-batch's.
"""

from __future__ import annotations

import sys

from CovidCTScreenLib.app.batch import main

if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as e:  # argparse errors and --help
        status = e.code if isinstance(e.code, int) else 2
    slicer = sys.modules.get("slicer")
    if slicer is not None and hasattr(slicer, "app"):
        slicer.util.exit(status)  # ends the headless Slicer with this exit code
    raise SystemExit(status)
