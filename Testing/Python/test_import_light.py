"""Importing the Lib packages stays light: no torch, no slicer (except mrml.py), no SimpleITK where not needed."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import CovidCTScreenLib
import CovidCTTrainingLib

# Modules whose job is to run torch at import (training internals) are listed, not hidden.
TORCH_AT_IMPORT = {"CovidCTTrainingLib.trainer", "CovidCTTrainingLib.augment", "CovidCTTrainingLib.calibrate",
                   "CovidCTTrainingLib.export", "CovidCTTrainingLib.losses", "CovidCTTrainingLib.moco",
                   "CovidCTTrainingLib.distributed", "CovidCTScreenLib.models.small_nets"}
NEEDS_SLICER = {"CovidCTScreenLib.slicer_glue.mrml"}


def _modules():
    """Every package, sub-package and module of both Libs (walk_packages imports only the packages, which
    are light themselves)."""
    for pkg in (CovidCTScreenLib, CovidCTTrainingLib):
        yield pkg.__name__
        for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            yield m.name


def test_no_torch_at_import():
    light = [m for m in _modules() if m not in TORCH_AT_IMPORT | NEEDS_SLICER]
    code = ("import importlib, sys\n"
            f"for m in {light!r}:\n"
            "    importlib.import_module(m)\n"
            "    assert 'torch' not in sys.modules, m + ' imported torch'\n"
            "    assert 'slicer' not in sys.modules, m + ' imported slicer'\n"
            "print(len(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(light) >= 45
    assert {f"CovidCTScreenLib.{p}" for p in ("input", "lungs", "models", "lesions", "screening", "report",
                                              "evaluation", "app", "slicer_glue")} <= set(light)


def test_training_data_path_is_free_of_simpleitk():
    """The 2D training path must run on the GPU machine, which has no SimpleITK, MONAI or pydicom."""
    code = ("import sys\n"
            "import CovidCTTrainingLib.data, CovidCTTrainingLib.trainer, CovidCTTrainingLib.export\n"
            "import CovidCTTrainingLib.cli, CovidCTTrainingLib.losses, CovidCTTrainingLib.moco\n"
            "bad = [m for m in ('SimpleITK', 'monai', 'pydicom') if m in sys.modules]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
