"""One way to run a long job in a child process (screening, evaluation, training) and one progress protocol.

The child writes one event per stdout line (``format_progress`` / ``format_status`` / ``DONE`` / ``ERROR``):

    PROGRESS <fraction 0..1> <stage>
    STATUS <json object>          e.g. {"epoch": 3, "epochs": 30, "loss": 0.41, "val_auc": 0.83}
    DONE <result>                 the output folder or package
    ERROR <one-line message>

Anything else is log text. ``ProcessRun`` starts the child in its own process group, reads its output on
threads into a queue, and hands events to callbacks when ``poll()`` is called (from a ``qt.QTimer`` in Slicer,
from ``wait()`` in a console or a test), so no GUI toolkit is needed here. ``cancel()`` creates the cancel
file (the child stops at its next check and cleans up) and, if the child is still running ``kill_after_s``
later, kills its whole process tree. Tests replace the runner with any object offering ``poll``, ``cancel``
and ``result`` (see ``start``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_MESSAGES = {EXIT_OK: "done", EXIT_FAILED: "failed", EXIT_INPUT: "input refused", EXIT_CANCELLED: "cancelled"}


def format_progress(stage: str, fraction: float) -> str:
    return f"PROGRESS {max(0.0, min(1.0, fraction)):.4f} {stage}"


def format_status(status: dict) -> str:
    return "STATUS " + json.dumps(status, separators=(",", ":"))


def parse_line(line: str) -> tuple[str, object] | None:
    """('progress', (stage, fraction)), ('status', dict), ('done', text), ('error', message), or None."""
    line = line.strip()
    kind, _, rest = line.partition(" ")
    if kind == "PROGRESS":
        fraction, _, stage = rest.partition(" ")
        try:
            return "progress", (stage, float(fraction))
        except ValueError:
            return None
    if kind == "STATUS":
        try:
            status = json.loads(rest)
        except ValueError:
            return None
        return ("status", status) if isinstance(status, dict) else None
    if kind in ("DONE", "ERROR") and rest:
        return kind.lower(), rest
    return None


@dataclass
class Callbacks:
    progress: Callable[[str, float], None] | None = None
    status: Callable[[dict], None] | None = None
    log: Callable[[str], None] | None = None  # every line that is not an event (stdout and stderr)


class ProcessRun:
    """A started child process speaking the protocol above."""

    def __init__(self, cmd: list[str], env: dict | None = None, cancel_file: str | os.PathLike | None = None,
                 callbacks: Callbacks | None = None, kill_after_s: float = 10.0):
        self.cancel_file = Path(cancel_file) if cancel_file else None
        self.callbacks = callbacks or Callbacks()
        self.kill_after_s = kill_after_s
        self.message, self.result, self.status = "", None, {}
        self._stderr_tail: list[str] = []
        self._cancel_at: float | None = None
        self._lines: queue.Queue = queue.Queue()
        posix = os.name == "posix"
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env,
            start_new_session=posix,  # its own process group: cancel reaches every process it started
            creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP)
        self._readers = [threading.Thread(target=self._read, args=(stream, name), daemon=True)
                         for stream, name in ((self.process.stdout, "out"), (self.process.stderr, "err"))]
        for t in self._readers:
            t.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))

    @property
    def running(self) -> bool:
        return self.result is None

    def poll(self) -> bool:
        """Hand queued events to the callbacks; True once the child has ended and all its output is read."""
        if self.result is not None:
            return True
        ended = self.process.poll() is not None and not any(t.is_alive() for t in self._readers)
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._dispatch(name, line)
        if self._cancel_at is not None and time.monotonic() > self._cancel_at and self.process.poll() is None:
            self.kill()
        if ended:
            code = self.process.returncode
            if code < 0 and self._cancel_at is None:
                self.message = self.message or f"the process ended on signal {-code} (out of memory?)"
                code = EXIT_FAILED
            elif self._cancel_at is not None and code != EXIT_OK:
                code = EXIT_CANCELLED  # stopped on request, or killed after it
            if code != EXIT_OK and not self.message:
                self.message = self._stderr_tail[-1] if self._stderr_tail else EXIT_MESSAGES.get(code, f"exit {code}")
            self.result = code
        return ended

    def _dispatch(self, name: str, line: str) -> None:
        event = parse_line(line) if name == "out" else None
        if event is None:
            if name == "err" and line.strip():
                self._stderr_tail = (self._stderr_tail + [line.strip()])[-40:]
            if self.callbacks.log and line.strip():
                self.callbacks.log(line)
            return
        kind, value = event
        if kind == "progress" and self.callbacks.progress:
            self.callbacks.progress(*value)
        elif kind == "status":
            self.status.update(value)
            if self.callbacks.status:
                self.callbacks.status(dict(self.status))
        elif kind in ("done", "error"):
            self.message = value

    def cancel(self) -> None:
        """Ask the child to stop (cancel file, else SIGTERM / CTRL_BREAK); kill its tree if it has not
        stopped ``kill_after_s`` later (checked by ``poll``)."""
        if self._cancel_at is not None or self.result is not None:
            return
        self._cancel_at = time.monotonic() + self.kill_after_s
        if self.cancel_file is not None:
            self.cancel_file.touch()
        elif os.name == "posix":
            self._signal_group(signal.SIGTERM)
        else:
            self.process.send_signal(signal.CTRL_BREAK_EVENT)

    def kill(self) -> None:
        """End the child and everything it started, now."""
        if os.name == "posix":
            self._signal_group(signal.SIGKILL)
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
        self.process.kill()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, cancel: Callable[[], bool] | None = None, poll_s: float = 0.1) -> tuple[int, str]:
        """Block until the child ends (console, batch, tests); ``cancel()`` is polled. (exit code, message)."""
        try:
            while not self.poll():
                if cancel and cancel():
                    self.cancel()
                time.sleep(poll_s)
        finally:
            if self.result is None:  # interrupted (Ctrl-C in the console): take the child down with us
                self.kill()
                self.process.wait()
        return self.result, self.message


def start(cmd: list[str], env: dict | None = None, cancel_file=None, callbacks: Callbacks | None = None,
          kill_after_s: float = 10.0) -> ProcessRun:
    """The runner the Slicer logic and ``worker.run`` use; tests swap in a fake with the same signature."""
    return ProcessRun(cmd, env=env, cancel_file=cancel_file, callbacks=callbacks, kill_after_s=kill_after_s)


def python_environment(extra_paths: list[str] | None = None) -> dict:
    """Environment for a child Python: the folder holding CovidCTScreenLib first on PYTHONPATH, unbuffered."""
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parents[2])] + list(extra_paths or [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_executable() -> str:
    """PythonSlicer inside Slicer, else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


def poll_with_qt_timer(job, on_finished, interval_ms: int = 200):
    """Drive ``job`` (a ``ProcessRun`` or a test's fake) from a qt.QTimer, so a Slicer GUI stays responsive;
    ``on_finished()`` once it has ended. Qt is imported here only: the module stays plain Python."""
    import qt

    timer = qt.QTimer()
    timer.setInterval(interval_ms)

    def poll():
        if job.poll():
            timer.stop()
            on_finished()

    timer.connect("timeout()", poll)
    timer.start()
    return timer
