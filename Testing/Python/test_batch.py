"""covidct-batch (CovidCTScreenLib.app.batch; scripts/batch_screen.py is its headless-Slicer launcher): every study
of a folder, one report each, summary.csv with a low-confidence column, bad studies recorded."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DICOM_SERIES, REPO, SAMPLE_CT

from CovidCTScreenLib.app import batch

SCRIPT = REPO / "scripts" / "batch_screen.py"


def test_finds_files_and_dicom_series(tmp_path):
    (tmp_path / "a.nii.gz").symlink_to(SAMPLE_CT)
    (tmp_path / "notes.txt").write_text("not a study")
    (tmp_path / "site1").mkdir()
    (tmp_path / "site1" / "series").symlink_to(DICOM_SERIES, target_is_directory=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.nrrd").write_text("skip")
    studies = batch.find_studies(tmp_path)
    assert studies == [tmp_path / "a.nii.gz", tmp_path / "site1" / "series"]
    assert [batch.study_name(s, tmp_path) for s in studies] == ["a", "site1_series"]


def test_usage_errors_exit_2(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--input-folder", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "does not exist" in run.stderr


@pytest.mark.slow
def test_batch_one_report_one_error(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "sample.nrrd").symlink_to(SAMPLE_CT)
    (data / "corrupt.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 64 64 9\nencoding: raw\n\n")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(SCRIPT), "--", "--input-folder", str(data), "--out", str(out),
                          "--device", "cpu", "--no-heatmap"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    with open(out / "summary.csv", newline="") as f:
        rows = {r["study"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"sample", "corrupt"}
    assert rows["sample"]["status"] == "ok" and rows["sample"]["verdict"]
    report = json.loads(Path(rows["sample"]["report"], "report.json").read_text())
    assert rows["sample"]["low_confidence"] == str(int(report["verdict"]["low_confidence"]))
    assert int(rows["sample"]["lung_slices"]) > 0 and Path(rows["sample"]["report"], "report.json").is_file()
    assert rows["corrupt"]["status"] == "error" and "corrupt.nrrd" in rows["corrupt"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["sample", "summary.csv"]  # no folder for the bad study


def test_entry_point_declared():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["covidct-batch"] == "CovidCTScreenLib.app.batch:main"
