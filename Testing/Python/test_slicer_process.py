"""The module's background-process runner and job plumbing, run without Slicer.

``slicer``, ``qt`` and ``vtk`` are replaced by small stand-ins for these tests only; the
stand-in ``launchConsoleProcess`` starts the process exactly as Slicer's does (stdout
pipe, stderr merged, text mode). This checks the reader thread, the polling, the final
report, that Cancel really kills the work, and that job folders are always removed.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "LiverVolumetry"


class FakeTimer:
    """qt.QTimer stand-in: the tests drive polling through EngineProcess.wait()."""

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def _launch_console_process(args, useStartupEnvironment=True, cwd=None):
    # Same Popen arguments as slicer.util.launchConsoleProcess (Base/Python/slicer/util.py).
    return subprocess.Popen(args, env=None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, cwd=cwd)


@pytest.fixture
def glue(monkeypatch, tmp_path):
    """LiverVolumetrySlicerLib.process and .jobs imported against stand-in Slicer modules."""
    temp_dirs = []

    def temp_directory(key):
        folder = tmp_path / f"{key}-{len(temp_dirs)}"
        folder.mkdir()
        temp_dirs.append(folder)
        return str(folder)

    util = types.SimpleNamespace(launchConsoleProcess=_launch_console_process, tempDirectory=temp_directory)
    slicer = types.ModuleType("slicer")
    slicer.util = util
    slicer.app = types.SimpleNamespace(processEvents=lambda: None)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=FakeTimer))
    monkeypatch.setitem(sys.modules, "vtk", types.ModuleType("vtk"))
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in ("process", "jobs", "segmentation_io", "table"):
        monkeypatch.delitem(sys.modules, f"LiverVolumetrySlicerLib.{name}", raising=False)
    process = importlib.import_module("LiverVolumetrySlicerLib.process")
    jobs = importlib.import_module("LiverVolumetrySlicerLib.jobs")
    yield types.SimpleNamespace(process=process, jobs=jobs, temp_dirs=temp_dirs)
    for name in ("process", "jobs", "segmentation_io", "table"):
        sys.modules.pop(f"LiverVolumetrySlicerLib.{name}", None)


def _script_process(glue, monkeypatch, code: str):
    """Make EngineProcess run ``python -c code`` instead of the engine."""
    monkeypatch.setattr(glue.process.EngineProcess, "command", lambda self: [sys.executable, "-u", "-c", code])


def _events_script(*events, exit_code=0, stderr="") -> str:
    lines = "".join(f"print({json.dumps(json.dumps(e))}, flush=True)\n" for e in events)
    return f"import sys\n{lines}sys.stderr.write({stderr!r})\nsys.exit({exit_code})\n"


def test_events_arrive_in_order_and_the_end_is_reported_once(glue, monkeypatch):
    _script_process(glue, monkeypatch, _events_script(
        {"event": "progress", "case": "c", "fraction": 0.5, "stage": "network"},
        {"event": "case_done", "case": "c", "status": "ok", "error": None, "seconds": 1.0},
        stderr="a human message\n"))
    events, finished = [], []
    proc = glue.process.EngineProcess(["segment"], events.append, lambda rc, cancelled: finished.append((rc, cancelled)))
    proc.start()
    proc.wait(60)
    assert [e.kind for e in events] == ["progress", "case_done", "text"]
    assert events[2].message == "a human message"
    assert finished == [(0, False)] and not proc.running


def test_reader_thread_ends_when_its_stream_is_closed(glue):
    """A closed pipe raises ValueError on readline: the reader must stop, not spin."""

    class ClosedStream:
        calls = 0

        def readline(self):
            ClosedStream.calls += 1
            if ClosedStream.calls > 1000:
                raise AssertionError("reader keeps calling readline on a closed stream")
            raise ValueError("I/O operation on closed file.")

    proc = glue.process.EngineProcess(["segment"], lambda e: None, lambda rc, cancelled: None)
    proc._proc = types.SimpleNamespace(stdout=ClosedStream())
    proc._read_output()
    assert ClosedStream.calls == 1


def test_cancel_kills_the_process_quickly(glue, monkeypatch):
    _script_process(glue, monkeypatch, "import time\nprint('{\"event\": \"log\", \"message\": \"busy\"}', flush=True)\n"
                                       "time.sleep(120)\n")
    finished = []
    proc = glue.process.EngineProcess(["segment"], lambda e: None, lambda rc, cancelled: finished.append(cancelled))
    proc.start()
    time.sleep(0.5)
    began = time.monotonic()
    proc.cancel()
    proc.wait(30)
    assert finished == [True]
    assert time.monotonic() - began < 10
    assert proc._proc.poll() is not None


def test_a_cancel_right_after_the_start_can_be_ignored(glue, monkeypatch):
    _script_process(glue, monkeypatch, "import time\ntime.sleep(120)\n")
    finished = []
    proc = glue.process.EngineProcess(["segment"], lambda e: None, lambda rc, cancelled: finished.append(cancelled))
    proc.start()
    proc.cancel(unless_younger_than=30.0)
    time.sleep(0.3)
    assert proc.running and proc._proc.poll() is None
    proc.cancel()
    proc.wait(30)
    assert finished == [True]


def test_wait_timeout_cancels(glue, monkeypatch):
    _script_process(glue, monkeypatch, "import time\ntime.sleep(120)\n")
    finished = []
    proc = glue.process.EngineProcess(["segment"], lambda e: None, lambda rc, cancelled: finished.append(cancelled))
    proc.start()
    proc.wait(1.0)
    assert finished == [True]


def _job(glue, monkeypatch, code: str, import_results):
    _script_process(glue, monkeypatch, code)
    work_dir = Path(glue.process.slicer.util.tempDirectory("LiverVolumetry"))
    (work_dir / "input.nrrd").write_text("x")
    done, progress, log = [], [], []
    proc = glue.jobs.run_engine(["segment"], work_dir, import_results, lambda t, p: progress.append((t, p)),
                                log.append, lambda *result: done.append(result))
    proc.wait(60)
    return work_dir, done, progress, log


def test_successful_job_imports_results_and_removes_its_folder(glue, monkeypatch):
    code = _events_script({"event": "progress", "case": "c", "fraction": 0.25, "stage": "preprocess"},
                          {"event": "case_done", "case": "c", "status": "ok", "error": None, "seconds": 2.0})
    work_dir, done, progress, log = _job(glue, monkeypatch, code, lambda: "Liver volume: 1.0 mL")
    assert done == [(True, "Liver volume: 1.0 mL", False)]
    assert progress == [("Preprocessing: 25%", 25)]
    assert log == ["c: ok (2.0 s)"]
    assert not work_dir.exists()


def test_failed_case_reports_the_engine_error(glue, monkeypatch):
    code = _events_script({"event": "case_done", "case": "c", "status": "failed",
                           "error": "c.nrrd: image has 2 dimensions, need 3", "seconds": 0.1}, exit_code=1)
    work_dir, done, _, _ = _job(glue, monkeypatch, code, lambda: pytest.fail("must not import after a failure"))
    assert done == [(False, "The liver could not be processed: c.nrrd: image has 2 dimensions, need 3", False)]
    assert not work_dir.exists()


def test_import_failure_becomes_a_message(glue, monkeypatch):
    def broken_import():
        raise ValueError("the results table has no row for case 'c'")

    work_dir, done, _, _ = _job(glue, monkeypatch, _events_script(), broken_import)
    assert done == [(False, "The results could not be loaded: the results table has no row for case 'c'", False)]
    assert not work_dir.exists()


class FakeNode:
    def __init__(self, name):
        self.name = name

    def GetName(self):
        return self.name


@pytest.fixture
def segmentation_job(glue, monkeypatch):
    """start_segmentation with the scene and the file plumbing replaced by recorders."""
    present, made, imported, done = set(), [], [], []
    monkeypatch.setattr(glue.jobs.slicer, "mrmlScene", types.SimpleNamespace(IsNodePresent=lambda n: n in present),
                        raising=False)
    io = glue.jobs.segmentation_io
    monkeypatch.setattr(io, "save_volume", lambda volume, path: Path(path).write_text("x"))
    monkeypatch.setattr(io, "import_liver_mask", lambda mask, segmentation, volume: imported.append(segmentation))
    monkeypatch.setattr(io, "set_provenance", lambda *a: None)
    monkeypatch.setattr(io, "place_under_study", lambda *a: None)
    checksums = {}  # segmentation -> checksum of its liver now
    monkeypatch.setattr(io, "segment_checksum", lambda segmentation, volume: checksums.get(segmentation, ""))
    monkeypatch.setattr(io, "check_one_liver_segment", lambda segmentation: None)
    monkeypatch.setattr(glue.jobs, "show_measurements", lambda *a: "Liver volume: 1.0 mL")
    monkeypatch.setattr(glue.jobs.engine_cli, "read_case_row", lambda out_dir, case: {})

    def new_segmentation():
        made.append(FakeNode("new liver"))
        present.add(made[-1])
        return made[-1]

    def run(code, segmentation=None, cancel=False, remove=(), edit=False, on_done=None):
        volume = FakeNode("scan")
        present.update({volume, segmentation} - {None})
        _script_process(glue, monkeypatch, code)
        proc = glue.jobs.start_segmentation(volume, segmentation, "cpu", on_done=on_done or (lambda *r: done.append(r)),
                                            new_segmentation=new_segmentation)
        if cancel:
            time.sleep(0.5)
            proc.cancel()
        present.difference_update({volume if r == "volume" else segmentation for r in remove})
        if edit:
            checksums[segmentation] = "edited by hand during the run"
        proc.wait(60)
        return volume

    return types.SimpleNamespace(run=run, made=made, imported=imported, done=done)


def test_a_new_output_segmentation_is_made_only_when_the_results_arrive(segmentation_job):
    segmentation_job.run("import time\ntime.sleep(120)\n", cancel=True)
    assert segmentation_job.done == [(False, "Cancelled.", True)] and segmentation_job.made == []
    segmentation_job.run(_events_script())
    assert segmentation_job.done[-1] == (True, "Liver volume: 1.0 mL", False)
    assert segmentation_job.imported == segmentation_job.made and len(segmentation_job.made) == 1


def test_a_failure_in_the_callers_handler_is_not_reported_as_a_failed_import(segmentation_job):
    calls = []

    def on_done(*result):  # e.g. the widget's own update raises after a good import
        calls.append(result)
        raise RuntimeError("widget gone")

    with pytest.raises(RuntimeError, match="widget gone"):
        segmentation_job.run(_events_script(), on_done=on_done)
    assert calls == [(True, "Liver volume: 1.0 mL", False)]  # once, not followed by "could not be loaded"


@pytest.mark.parametrize("removed", ["volume", "segmentation"])
def test_results_are_not_brought_into_nodes_removed_during_the_run(segmentation_job, removed):
    output = FakeNode("scan liver")
    segmentation_job.run("import time\ntime.sleep(1)\n", segmentation=output, remove=[removed])
    success, message, cancelled = segmentation_job.done[-1]
    assert not success and not cancelled and "was removed from the scene during the run" in message
    assert segmentation_job.imported == [] and segmentation_job.made == []


def test_an_output_written_for_another_volume_is_not_this_volumes_output(glue):
    io = glue.jobs.segmentation_io

    class Node:
        def __init__(self, node_id, made_for=None, older_scene=False):
            self.node_id, self.attributes, self.references = node_id, {}, {}
            if made_for and older_scene:  # recorded as an attribute by earlier versions
                self.attributes[io.INPUT_ATTRIBUTE] = made_for
            elif made_for:
                self.references[io.INPUT_REFERENCE_ROLE] = made_for

        def GetID(self):
            return self.node_id

        def GetAttribute(self, name):
            return self.attributes.get(name)

        def GetNodeReferenceID(self, role):
            return self.references.get(role)

    volume_a, volume_b = Node("vtkMRMLScalarVolumeNode1"), Node("vtkMRMLScalarVolumeNode2")
    for older_scene in (False, True):
        liver_a = Node("vtkMRMLSegmentationNode1", made_for=volume_a.GetID(), older_scene=older_scene)
        assert io.made_for_another_volume(liver_a, volume_b)
        assert not io.made_for_another_volume(liver_a, volume_a)
        assert not io.made_for_another_volume(Node("vtkMRMLSegmentationNode2"), volume_b)  # the user's own
        assert not io.made_for_another_volume(None, volume_b) and not io.made_for_another_volume(liver_a, None)
    # Volume A deleted: Slicer drops the reference, but the module's checksum says it wrote this liver.
    orphan = Node("vtkMRMLSegmentationNode3")
    orphan.attributes[io.CHECKSUM_ATTRIBUTE] = "abc"
    assert io.made_for_another_volume(orphan, volume_b)


def test_a_liver_edited_during_the_run_is_kept(segmentation_job):
    output = FakeNode("scan liver")
    segmentation_job.run("import time\ntime.sleep(1)\n", segmentation=output, edit=True)
    assert segmentation_job.done[-1][0] is True
    assert segmentation_job.imported == segmentation_job.made and len(segmentation_job.made) == 1
    segmentation_job.run("import time\ntime.sleep(1)\n", segmentation=output)  # not edited: replaced
    assert segmentation_job.imported[-1] is output


@pytest.mark.parametrize("given", [False, True], ids=["new output", "chosen output"])
def test_a_mask_that_cannot_be_imported_leaves_no_new_segmentation(segmentation_job, glue, monkeypatch, given):
    """A failed import (say an unreadable mask) must not leave the new, empty output segmentation
    in the scene; a segmentation the user chose stays."""
    removed = []
    scene = glue.jobs.slicer.mrmlScene
    monkeypatch.setattr(glue.jobs.slicer, "mrmlScene", types.SimpleNamespace(
        IsNodePresent=scene.IsNodePresent, RemoveNode=removed.append), raising=False)

    def unreadable(mask, segmentation, volume):
        raise RuntimeError("Slicer could not read the mask")

    monkeypatch.setattr(glue.jobs.segmentation_io, "import_liver_mask", unreadable)
    chosen = FakeNode("scan liver") if given else None
    segmentation_job.run("import time\ntime.sleep(1)\n", segmentation=chosen)
    success, message = segmentation_job.done[-1][:2]
    assert success is False and "could not read the mask" in message
    assert removed == ([] if given else segmentation_job.made) and len(segmentation_job.made) == (0 if given else 1)


_LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; from LiverVolumetryLib.parent_watch import exit_with_parent; "
    "assert exit_with_parent(0.05); time.sleep(120)"])
print(child.pid, flush=True)
child.wait()
"""


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (not yet reaped by its new parent) has stopped computing too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process ids")
def test_cancel_stops_the_engine_behind_a_launcher_without_psutil(glue, monkeypatch):
    """Only the launcher (PythonSlicer) is killed where psutil is missing: the interpreter
    it started must stop by itself (--exit-with-parent), not compute on orphaned."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` fails, as in a bare Slicer
    monkeypatch.setattr(glue.process.EngineProcess, "command", lambda self: [sys.executable, "-c", _LAUNCHER])
    proc = glue.process.EngineProcess(["segment"], lambda e: None, lambda rc, cancelled: None)
    proc.start()
    deadline = time.monotonic() + 30
    while not proc.lines and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.05)
    child = int(proc.lines[0])
    time.sleep(0.3)
    assert not _gone(child)
    proc.cancel()  # not wait(): the engine holds the output pipe, which ends only when it stops
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "the engine behind the killed launcher is still running"
    proc.wait(30)


def test_the_engine_is_started_watching_its_parent(glue):
    command = glue.process.EngineProcess(["segment", "a.nii.gz"], lambda e: None, lambda rc, c: None).command()
    assert command[1:5] == ["-m", "LiverVolumetryLib.cli", "--exit-with-parent", "segment"]
    from LiverVolumetryLib.cli import build_parser

    assert build_parser().parse_args(command[3:] + ["-o", "out"]).exit_with_parent
