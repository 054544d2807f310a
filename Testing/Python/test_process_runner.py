"""process_runner: the one way screening, evaluation and training run in a child process: the line protocol,
cancel that reaches the whole process tree, and the Slicer logic driven by a fake runner (no process at all)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, load_slicer_module

from CovidCTScreenLib.app import process_runner
from CovidCTScreenLib.app.process_runner import Callbacks, format_progress, format_status, parse_line


def test_protocol_round_trip():
    assert parse_line(format_progress("grad-cam", 0.25)) == ("progress", ("grad-cam", 0.25))
    assert parse_line(format_progress("x", 7)) == ("progress", ("x", 1.0))
    assert parse_line(format_status({"epoch": 2, "epochs": 5, "val_auc": 0.8})) == \
        ("status", {"epoch": 2, "epochs": 5, "val_auc": 0.8})
    assert parse_line("DONE /tmp/out") == ("done", "/tmp/out")
    assert parse_line("ERROR bad input") == ("error", "bad input")
    for other in ("training:  40%|####  | 2/5", "PROGRESS abc stage", "STATUS [1]", "", "DONE"):
        assert parse_line(other) is None


def _child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_events_reach_the_callbacks_and_exit_code_kept(tmp_path):
    cmd = _child(tmp_path, """
        import sys
        print("PROGRESS 0.5000 load", flush=True)
        print('STATUS {"epoch": 1, "epochs": 2}', flush=True)
        print('STATUS {"loss": 0.3}', flush=True)
        print("plain log line", flush=True)
        print("ERROR the input is not a CT", flush=True)
        print("traceback tail", file=sys.stderr)
        sys.exit(2)
    """)
    events = {"progress": [], "status": [], "log": []}
    job = process_runner.start(cmd, callbacks=Callbacks(progress=lambda s, f: events["progress"].append((s, f)),
                                                        status=events["status"].append, log=events["log"].append))
    assert job.wait() == (2, "the input is not a CT")
    assert events["progress"] == [("load", 0.5)]
    assert events["status"][-1] == {"epoch": 1, "epochs": 2, "loss": 0.3} == job.status
    assert sorted(events["log"]) == ["plain log line", "traceback tail"]  # two streams: no order between them


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX; Windows uses taskkill /T")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """A child that ignores the cancel request and has started a grandchild: both are gone after cancel."""
    pid_file = tmp_path / "grandchild.pid"
    cmd = _child(tmp_path, f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        g = subprocess.Popen([sys.executable, "-c", ignore_term])
        open({str(pid_file)!r}, "w").write(str(g.pid))
        print("PROGRESS 0.1000 working", flush=True)
        time.sleep(600)
    """)
    seen = []
    job = process_runner.start(cmd, callbacks=Callbacks(progress=lambda s, f: seen.append(s)), kill_after_s=0.5)
    while not seen:
        job.poll()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    t0 = time.monotonic()
    code, _ = job.wait(cancel=lambda: True)
    assert code == process_runner.EXIT_CANCELLED and time.monotonic() - t0 < 5
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{grandchild}/stat").exists() and Path(f"/proc/{grandchild}/stat").read_text().split()[2] == "Z":
            break  # a zombie waiting for its (dead) parent's reaper: not running
        time.sleep(0.1)
    else:
        pytest.fail("the grandchild survived the cancel")


def test_cancel_file_is_the_polite_way(tmp_path):
    cancel_file = tmp_path / "cancel"
    cmd = _child(tmp_path, f"""
        import os, sys, time
        print("PROGRESS 0.1000 working", flush=True)
        while not os.path.exists({str(cancel_file)!r}):
            time.sleep(0.05)
        print("ERROR cancelled by the user", flush=True)
        sys.exit(3)
    """)
    job = process_runner.start(cmd, cancel_file=cancel_file, kill_after_s=30)
    calls = iter([False, False, True])
    assert job.wait(cancel=lambda: next(calls, True)) == (process_runner.EXIT_CANCELLED, "cancelled by the user")


class FakeRun(process_runner.ProcessRun):
    """A stand-in for process_runner.ProcessRun that never starts a process: it replays protocol lines through the
    real line handling (``ProcessRun._dispatch``)."""

    def __init__(self, cmd, env, cancel_file, callbacks, kill_after_s=10.0, lines=(), code=0, message=""):
        self.cmd, self.cancel_file, self.callbacks = cmd, cancel_file, callbacks
        self.lines, self.code, self.message, self.result, self.status = list(lines), code, message, None, {}
        self._stderr_tail, self.cancelled = [], False

    def poll(self):
        for line in self.lines:
            self._dispatch("out", line)
        self.lines = []
        self.result = process_runner.EXIT_CANCELLED if self.cancelled else self.code
        return True

    def wait(self, cancel=None, poll_s=0.1):
        self.poll()
        return self.result, self.message

    def cancel(self):
        self.cancelled = True


def test_training_logic_with_a_fake_runner(monkeypatch, tmp_path):
    """The training GUI's logic on the shared runner: --progress-lines and --cancel-file on the command line,
    STATUS lines become progress, Stop goes through the runner's cancel."""
    import types

    from conftest import COVID_CT

    qt = types.ModuleType("qt")
    qt.QSettings = lambda: types.SimpleNamespace(value=lambda k: [], setValue=lambda k, v: None)
    module = load_slicer_module(monkeypatch, REPO / "CovidCTTraining" / "CovidCTTraining.py", qt=qt)
    runs = []

    def runner(cmd, env, cancel_file, callbacks, kill_after_s=10.0):
        runs.append(FakeRun(cmd, env, cancel_file, callbacks, kill_after_s, code=130, message="stopped",
                            lines=[process_runner.format_status({"epoch": 1, "epochs": 3, "loss": 0.5}),
                                   process_runner.format_status({"epoch": 2, "val_auc": 0.8})]))
        return runs[-1]

    logic = module.CovidCTTrainingLogic(runner=runner)
    states = []
    with pytest.raises(RuntimeError, match="Stopped"):
        logic.train(COVID_CT, tmp_path / "pkg", epochs=3, device="cpu", progressCallback=states.append)
    cmd = runs[0].cmd
    assert "--progress-lines" in cmd and cmd[cmd.index("--cancel-file") + 1] == str(runs[0].cancel_file)
    assert states[-1] == {"epoch": 2, "epochs": 3, "loss": 0.5, "val_auc": 0.8} and not logic.isRunning
