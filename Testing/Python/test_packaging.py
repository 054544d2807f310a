"""Packaging: a wheel built from the repository carries the models and works on its own; one dependency list
(pyproject.toml) with the requirements files generated from it; ruff configured for pyflakes-class errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest
from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_requirements_files_agree_with_pyproject():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "write_requirements.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    assert "scipy" in deps  # imported by lung_mask, hu_bands, fibrosis, ...
    slicer_reqs = (REPO / "Resources" / "requirements.txt").read_text()
    assert "scipy>=" in slicer_reqs and "\ntorch" not in slicer_reqs and "SimpleITK" not in slicer_reqs


def test_ruff_checks_pyflakes_rules():
    assert "F" in PYPROJECT["tool"]["ruff"]["lint"]["select"]
    assert "ruff check" in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_wheel_holds_the_models_and_finds_them_installed(tmp_path):
    """The wheel carries every shipped model file, byte for byte; installed on its own (no source tree, no
    PYTHONPATH) MODELS_DIR lies inside the installed package and the weights pass their sha256 check."""
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("covidctscreen-*.whl")
    shipped = {p.relative_to(REPO / "Resources" / "Models").as_posix(): p
               for p in (REPO / "Resources" / "Models").rglob("*") if p.is_file()}
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for rel, path in shipped.items():
            member = f"CovidCTScreenLib/models/shipped/{rel}"
            assert member in names, member
            assert hashlib.sha256(z.read(member)).digest() == hashlib.sha256(path.read_bytes()).digest()
        assert "covidct-batch = CovidCTScreenLib.app.batch:main" in z.read(
            next(n for n in names if n.endswith("entry_points.txt"))).decode()
    target = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    code = ("import CovidCTScreenLib.models.model_package as m; p = m.load_package(); "
            "print(m.MODELS_DIR); print(p.path); print(','.join(m.available_models()))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COVIDCT_MODELS_DIR")}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    models_dir, package_path, names = run.stdout.split("\n")[:3]
    assert models_dir == str(target / "CovidCTScreenLib" / "models" / "shipped")
    assert package_path.startswith(models_dir) and names.split(",") == sorted({r.split("/")[0] for r in shipped})
