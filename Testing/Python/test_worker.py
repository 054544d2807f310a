"""The out-of-process worker the Slicer widget starts: progress lines, exit codes, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from CovidCTScreenLib.app import worker
from CovidCTScreenLib.models.model_package import DEFAULT_MODEL, load_package

from conftest import SAMPLE_CT, tree_digest


@pytest.fixture(scope="module")
def model_path():
    """The shipped default model (tests run on it; it must be present)."""
    return str(load_package(DEFAULT_MODEL).path)


def _start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "CovidCTScreenLib.app.worker", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker.environment(), **kw)


def test_parse_line_roundtrip():
    assert worker.parse_line(worker.format_progress("lung mask", 0.25)) == ("progress", ("lung mask", 0.25))
    assert worker.parse_line(worker.format_progress("load", 1.7)) == ("progress", ("load", 1.0))
    assert worker.parse_line("DONE /x/y z\n") == ("done", "/x/y z")
    assert worker.parse_line("ERROR bad input: no lungs") == ("error", "bad input: no lungs")
    assert worker.parse_line("some log output") is None
    assert worker.parse_line("PROGRESS x stage") is None
    cmd = worker.command("in.nrrd", "out", model="m", device="cpu", batch_size=8, heatmap=False, cancel_file="c")
    assert cmd[1:5] == ["-m", "CovidCTScreenLib.app.worker", "in.nrrd", "out"]
    assert {"--no-heatmap", "--model", "--batch-size", "--cancel-file"} <= set(cmd)


def test_bad_input_exit_2_one_message_no_output(tmp_path, model_path):
    bad = tmp_path / "corrupt.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 30\nencoding: raw\n\n" + b"\0" * 100)
    out = tmp_path / "report"
    proc = _start([bad, out, "--model", model_path, "--device", "cpu"])
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == worker.EXIT_INPUT == 2
    errors = [line for line in stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "Traceback" not in stderr and stderr.count("input refused") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.nrrd"]


def test_missing_model_is_input_error(tmp_path):
    out = tmp_path / "report"
    proc = _start([SAMPLE_CT, out, "--model", tmp_path / "no-such-model"])
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "No model package" in stdout and not out.exists()


def test_kill_mid_run_leaves_no_output(tmp_path, model_path):
    """SIGKILL (the widget's last resort) while the model runs: no report folder, input untouched."""
    digest = tree_digest(SAMPLE_CT)
    out = tmp_path / "report"
    proc = _start([SAMPLE_CT, out, "--model", model_path, "--device", "cpu"])
    stages = []
    for line in proc.stdout:
        event = worker.parse_line(line)
        if event and event[0] == "progress":
            stages.append(event[1][0])
            if event[1][0] == "lung mask":
                proc.kill()
                break
    proc.wait(timeout=60)
    assert "lung mask" in stages and proc.returncode == -signal.SIGKILL
    worker.remove_partial(out)  # what the widget does after a kill
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert tree_digest(SAMPLE_CT) == digest


def test_cancel_file_and_sigterm_exit_3_no_output(tmp_path, model_path):
    # cooperative cancel through run(): the cancel file, polled by the pipeline between stages and batches
    out = tmp_path / "a"
    seen = []

    def progress(stage, fraction):
        seen.append((stage, fraction))

    code, message = worker.run(SAMPLE_CT, out, progress=progress, cancel=lambda: bool(seen), model=model_path,
                               device="cpu", poll_s=0.05)
    assert code == worker.EXIT_CANCELLED == 3, message
    assert "cancel" in message and seen and not out.exists()
    # SIGTERM
    out = tmp_path / "b"
    proc = _start([SAMPLE_CT, out, "--model", model_path, "--device", "cpu"])
    for line in proc.stdout:
        if line.startswith("PROGRESS"):
            time.sleep(0.5)
            os.kill(proc.pid, signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "ERROR cancelled" in rest and not out.exists()
    assert [p for p in tmp_path.iterdir()] == []


def test_occupied_output_refused_and_kept(tmp_path, model_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, message = worker.run(SAMPLE_CT, out, model=model_path, device="cpu")
    assert code == 2 and "not empty" in message
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_full_run_writes_report(tmp_path, model_path):
    out = tmp_path / "report"
    fractions = []
    code, message = worker.run(SAMPLE_CT, out, progress=lambda s, f: fractions.append(f), model=model_path,
                               device="cpu")
    assert code == 0 and message == str(out)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"report.json", "slice_scores.csv", "lung_mask.nrrd", "heatmap.nrrd"} <= {p.name for p in out.iterdir()}
