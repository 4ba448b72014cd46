"""Run the engine command line in a background Python process, polled by a Qt timer.

The GUI never blocks: a reader thread moves the process output into a queue and a
``qt.QTimer`` on the main thread turns each line into an :class:`EngineEvent` for the
caller. ``cancel()`` kills the process (and its children), so the work really stops.
"""

from __future__ import annotations

import locale
import logging
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import qt
import slicer

from .engine_cli import CLI_MODULE, EngineEvent, parse_line

POLL_INTERVAL_MS = 100


def module_dir() -> Path:
    """The folder holding ``LiverVolumetry.py`` and the ``LiverVolumetryLib`` package."""
    return Path(__file__).resolve().parent.parent


def python_executable() -> str:
    """Slicer's Python interpreter for the background process.

    ``PythonSlicer`` is a launcher that starts ``python-real``; the real interpreter is
    used when found next to it, so that killing the process stops the computation itself.
    Slicer's own environment is inherited, which is what the launcher would set.
    """
    launcher = shutil.which("PythonSlicer")
    if launcher:
        folder = Path(launcher).parent
        for name in ("python-real.exe", "python-real"):
            if (folder / name).is_file():
                return str(folder / name)
        return launcher
    return sys.executable


def _kill_tree(proc) -> None:
    """Kill the process and, when psutil is available, every process it started (without
    psutil, an engine behind a launcher stops itself: ``--exit-with-parent``)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()


def _decode(line) -> str:
    """A line of process output as text: UTF-8, else the system's code page (the engine's
    stderr on Windows), with undecodable bytes replaced rather than the line lost."""
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode(locale.getpreferredencoding(False), errors="replace")


class EngineProcess:
    """One engine command running out of process; events arrive through callbacks.

    ``on_event(EngineEvent)`` is called on the main thread for every output line and
    ``on_finished(returncode, cancelled)`` once, after the process has ended.
    """

    def __init__(self, arguments: list[str], on_event: Callable[[EngineEvent], None],
                 on_finished: Callable[[int, bool], None]):
        self.arguments = list(arguments)
        self._on_event = on_event
        self._on_finished = on_finished
        self._queue: queue.Queue[str] = queue.Queue()
        self._proc = None
        self._reader: threading.Thread | None = None
        self._timer: qt.QTimer | None = None
        self._cancelled = False
        self._finished = False
        self._started_at = 0.0
        self.lines: list[str] = []

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._finished

    def command(self) -> list[str]:
        # --exit-with-parent: where only the launcher could be found (and psutil is missing),
        # killing it on Cancel must still stop the interpreter it started.
        return [python_executable(), "-m", CLI_MODULE, "--exit-with-parent", *self.arguments]

    def start(self) -> None:
        """Launch the process and start polling its output."""
        command = self.command()
        logging.info("LiverVolumetry: running %s", " ".join(command))
        # The engine flushes every JSON event line itself, so no unbuffered mode is needed.
        self._started_at = time.monotonic()
        self._proc = slicer.util.launchConsoleProcess(command, useStartupEnvironment=False, cwd=str(module_dir()))
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.poll)
        self._timer.start()

    def _read_output(self) -> None:
        """Reader thread: process output lines into the queue until end of file. The bytes
        under the text stream are read: a text-mode readline() that meets bytes of another
        encoding raises and drops everything it had buffered (the engine's error line)."""
        stream = getattr(self._proc.stdout, "buffer", self._proc.stdout)
        while True:
            try:
                line = stream.readline()
            except ValueError:  # the stream was closed: nothing more will come
                break
            if not line:
                break
            self._queue.put(_decode(line).rstrip("\r\n"))

    def poll(self) -> None:
        """Main thread: deliver queued lines; report the end once the process is gone."""
        if self._finished:
            return
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            self.lines.append(line)
            event = parse_line(line)
            if event is not None:
                self._on_event(event)
        reader_done = self._reader is not None and not self._reader.is_alive()
        if reader_done and self._queue.empty() and self._proc.poll() is not None:
            self._finish(self._proc.returncode)

    def _finish(self, returncode: int) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.stop()
        self._on_finished(returncode, self._cancelled)

    def cancel(self, unless_younger_than: float = 0.0, wait_s: float = 0.0) -> bool:
        """Stop the work now: kill the process tree; ``on_finished`` follows. A process
        started less than ``unless_younger_than`` seconds ago is left running (the second
        click of a double click on Segment is not a Cancel). With ``wait_s`` the end is
        reported before returning, without the event loop (Slicer is closing: no timer
        would fire again). True if it was stopped."""
        if not self.running or time.monotonic() - self._started_at < unless_younger_than:
            return False
        self._cancelled = True
        _kill_tree(self._proc)
        if wait_s > 0:
            self._finish_now(wait_s)
        return True

    def _finish_now(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:  # still alive: the timer reports the end, if it runs again
            return
        if self._reader is not None:
            self._reader.join(max(0.0, deadline - time.monotonic()))
        self.poll()

    def wait(self, timeout_s: float | None = None) -> None:
        """Block (keeping the GUI alive) until the process ended and was reported."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._finished:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            self.poll()
            slicer.app.processEvents()
            time.sleep(0.05)
