"""Defects a new user met (issue 13): each test here failed before its fix. Output folders checked before any
work, 16-bit images read by value, models used for the wrong task, broken DICOM files named, bad options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COVID_CT, DICOM_SERIES, SAMPLE_CT, mini_class_folder, mini_covid_ct, tree_digest

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.report.output_folder import atomic_folder, check_output_folder
from CovidCTScreenLib.screening.pipeline import screen_to_folder

UNWRITABLE = Path("/sys/covidct-out")  # not writable even for root


def _cli(module: str, *args, cwd=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _one_line_exit_2(run, message: str) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize("out, message", [(".", "current, home or root folder"),
                                          (UNWRITABLE, "cannot be written")])
def test_screen_out_refused_before_any_work(tmp_path, out, message):
    """--out . and an unwritable --out were tracebacks after a full run: now one line, before any stage."""
    stages = []
    with pytest.raises(InputError, match=message):
        os.chdir(tmp_path)
        screen_to_folder(SAMPLE_CT, out, progress=lambda s, f: stages.append(s))
    assert stages == [] and list(tmp_path.iterdir()) == []
    _one_line_exit_2(_cli("CovidCTScreenLib.app.cli", SAMPLE_CT, "--out", out, "--quiet", cwd=tmp_path), message)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_out_refused_before_any_work(tmp_path):
    data = mini_class_folder(tmp_path / "set", 2)
    _one_line_exit_2(_cli("CovidCTScreenLib.app.evaluate_cli", data, "--out", UNWRITABLE, "--quiet"), "cannot be written")
    _one_line_exit_2(_cli("CovidCTScreenLib.app.evaluate_cli", data, "--out", data / "CT_COVID" / "res", "--quiet"),
                     "overlaps the input")


def test_out_inside_the_input_refused(tmp_path):
    with pytest.raises(InputError, match="overlaps the input"):
        check_output_folder(DICOM_SERIES / "report", False, inputs=[DICOM_SERIES])
    with pytest.raises(InputError, match="overlaps the input"):
        check_output_folder(DICOM_SERIES.parent, True, inputs=[DICOM_SERIES])


def test_overwrite_replaces_only_our_own_results(tmp_path):
    """--overwrite deleted a user's unrelated files: now it refuses them and replaces only what we wrote."""
    from CovidCTScreenLib.report.output_folder import MANIFEST_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("a user's file")
    with pytest.raises(InputError, match="did not write.*thesis.docx"):
        check_output_folder(out, overwrite=True)
    _one_line_exit_2(_cli("CovidCTScreenLib.app.cli", SAMPLE_CT, "--out", out, "--overwrite", "--quiet"),
                     "did not write")
    assert [p.name for p in out.iterdir()] == ["thesis.docx"]

    ours = tmp_path / "ours"
    with atomic_folder(ours) as tmp:
        (tmp / "report.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.png").write_bytes(b"x")
    assert json.loads((ours / MANIFEST_NAME).read_text())["files"] == ["report.json", "sub/a.png"]
    check_output_folder(ours, overwrite=True)  # a folder we wrote: allowed
    with atomic_folder(ours, overwrite=True) as tmp:
        (tmp / "report.json").write_text("{\"v\": 2}")
    assert sorted(p.name for p in ours.iterdir()) == [MANIFEST_NAME, "report.json"]
    (ours / "notes.txt").write_text("added by the user")  # a user's file added later is protected too
    with pytest.raises(InputError, match="notes.txt"):
        check_output_folder(ours, overwrite=True)
    assert not list(tmp_path.glob(".*"))


def _to_16bit(src: Path, dst: Path) -> None:
    from PIL import Image

    grey = np.asarray(Image.open(src).convert("L")).astype(np.uint16) * 257  # 8-bit value v -> 16-bit v * 257
    Image.fromarray(grey).save(dst)
    assert Image.open(dst).mode == "I;16"


def test_16bit_png_scored_like_its_8bit_original(tmp_path):
    """A 16-bit PNG was read as a blank white RGB image (P(COVID) 0.87 instead of 0.19): now by value."""
    from PIL import Image

    from CovidCTScreenLib.input.datasets import read_image
    from CovidCTScreenLib.evaluation.evaluate import evaluate

    eight = mini_class_folder(tmp_path / "eight", 2)
    sixteen = tmp_path / "sixteen"
    for cls in ("CT_COVID", "CT_NonCOVID"):
        (sixteen / cls).mkdir(parents=True)
        for p in sorted((eight / cls).iterdir()):
            _to_16bit(p, sixteen / cls / (p.stem + ".png"))
    first = sorted((eight / "CT_COVID").iterdir())[0]
    grey8 = np.asarray(Image.open(first).convert("L")).astype(np.float32)
    np.testing.assert_allclose(read_image(sixteen / "CT_COVID" / (first.stem + ".png")), grey8, atol=1e-3)
    p8 = [r["p_COVID"] for r in evaluate(eight, device="cpu", resamples=20).rows]
    p16 = [r["p_COVID"] for r in evaluate(sixteen, device="cpu", resamples=20).rows]
    assert np.allclose(p8, p16, atol=1e-4), (p8, p16)


def test_lesion_model_refused_by_screen_and_batch(tmp_path):
    """--model covidct-lesion-unet-v1 crashed with KeyError 'spatial_shape': now a one-line refusal."""
    run = _cli("CovidCTScreenLib.app.cli", SAMPLE_CT, "--out", tmp_path / "o", "--model", "covidct-lesion-unet-v1",
               "--quiet")
    _one_line_exit_2(run, "is a lesion-segmentation model; screening a CT needs a slice-classification model")
    run = _cli("CovidCTScreenLib.app.batch", "--input-folder", SAMPLE_CT.parent, "--out", tmp_path / "b",
               "--model", "covidct-lesion-unet-v1")
    _one_line_exit_2(run, "lesion-segmentation model")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["CovidCTScreenLib.app.cli", "CovidCTScreenLib.app.worker"])
def test_batch_size_zero_refused(tmp_path, module):
    args = [SAMPLE_CT, *(["--out"] if module.endswith("cli") else []), tmp_path / "o", "--batch-size", "0"]
    run = _cli(module, *args)
    assert run.returncode == 2 and "--batch-size: 0 is not a positive number" in run.stderr
    assert not (tmp_path / "o").exists()


def test_train_on_a_folder_that_is_not_covid_ct(tmp_path):
    """covidct-train --covid-ct <not a COVID-CT folder> crashed with FileNotFoundError."""
    (tmp_path / "mine").mkdir()
    run = _cli("CovidCTTrainingLib.cli", "--covid-ct", tmp_path / "mine", "--work", tmp_path / "w",
               "--package", tmp_path / "p", "--device", "cpu")
    assert run.returncode == 2 and "is not a COVID-CT folder" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    from CovidCTTrainingLib.data import covid_ct_split

    assert len(covid_ct_split(mini_covid_ct(tmp_path / "cc"), "val")) == 6  # a real COVID-CT layout still reads
    assert COVID_CT.is_dir()


def _series_copy(tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "series"
    shutil.copytree(DICOM_SERIES, target)
    return target


@pytest.mark.parametrize("damage, message", [
    ("truncate_middle", "DICOM file 1-13.dcm is truncated or corrupt"),
    ("truncate_last", "DICOM file 1-30.dcm is truncated or corrupt"),  # was screened silently without it
    ("empty_middle", "empty file 1-13.dcm"),
])
def test_broken_dicom_file_named(tmp_path, damage, message):
    """A truncated slice was 'slices missing or duplicated' (or, as the last slice, dropped silently) and an
    empty one 'corrupt': the file is named now."""
    from CovidCTScreenLib.input.volume_io import load_ct

    series = _series_copy(tmp_path)
    victim = series / ("1-30.dcm" if damage == "truncate_last" else "1-13.dcm")
    data = victim.read_bytes()
    victim.write_bytes(b"" if damage.startswith("empty") else data[: int(len(data) * 0.9)])
    before = tree_digest(series)
    with pytest.raises(InputError, match=message):
        load_ct(series)
    assert tree_digest(series) == before


def test_itk_and_pydicom_warnings_do_not_reach_the_terminal(tmp_path):
    """Uneven slice gaps made ITK print a multi-line WARNING: now silent, the gaps are in the metadata."""
    import pydicom

    series = _series_copy(tmp_path)
    ds = pydicom.dcmread(series / "1-15.dcm")
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1], position[2] + 2.0]  # gaps 6 and 10 mm instead of 8
    ds.save_as(series / "1-15.dcm")
    code = ("import json; from CovidCTScreenLib.input.volume_io import load_ct; "
            f"print(json.dumps(load_ct({str(series)!r}).meta['slice_gaps_mm']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert json.loads(run.stdout) == [6.0, 10.0]


@pytest.mark.slow
def test_ctrl_c_acts_at_once_during_grad_cam(tmp_path):
    """Ctrl-C took up to 15 s during Grad-CAM (a torch operation does not return to Python): the CLI now waits
    on a job thread, so it exits 130 at once, leaving nothing behind."""
    import signal
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "CovidCTScreenLib.app.cli", str(SAMPLE_CT), "--out",
                             str(tmp_path / "out"), "--device", "cpu", "--no-lesions"], stderr=subprocess.PIPE, env=env)
    seen = b""
    while b"grad-cam" not in seen:
        chunk = os.read(proc.stderr.fileno(), 256)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - t0 < 3.0, (proc.returncode, time.monotonic() - t0)
    assert list(tmp_path.iterdir()) == []
