"""Runs stopped from outside: Ctrl-C while a case's files are being renamed into place,
SIGTERM (timeout, SLURM, docker stop) during the work, and temporary files left by a
process killed outright. A case's files and its table row appear together or not at all,
and a re-run resumes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import write_ellipsoid_scan

from LiverVolumetryLib.cli import main


@pytest.fixture()
def scan(tmp_path) -> Path:
    return write_ellipsoid_scan(tmp_path / "scans" / "case.nii.gz")


def _segment(scan: Path, out: Path) -> int:
    return main(["segment", str(scan), "-o", str(out), "--no-radiomics", "--progress", "none"])


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_ctrl_c_between_the_renames_of_a_case_still_lands_all_its_files_and_row(scan, tmp_path, monkeypatch):
    # Before, Ctrl-C after the first rename left only case_qc.png, and the re-run refused
    # it ("already exists, use --overwrite").
    import LiverVolumetryLib.atomic as atomic

    replace, calls = os.replace, []

    def replace_then_ctrl_c(source, destination):
        calls.append(destination)
        replace(source, destination)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "replace", replace_then_ctrl_c)
    out = tmp_path / "out"
    assert _segment(scan, out) == 130
    assert _files(out) == ["case_liver.nii.gz", "case_liver.seg.nrrd", "case_qc.png", "measurements.csv",
                           "measurements.json"]
    assert json.loads((out / "measurements.json").read_text())[0]["status"] == "ok"
    monkeypatch.setattr(atomic.os, "replace", replace)
    assert _segment(scan, out) == 0  # resumes: the case is done


def test_sigterm_during_the_work_stops_cleanly_like_ctrl_c(scan, tmp_path, monkeypatch, capsys):
    import LiverVolumetryLib.segment as segment

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(segment, "segment_liver", terminated)
    out = tmp_path / "out"
    assert _segment(scan, out) == 130
    assert "interrupted; finished cases are kept" in capsys.readouterr().err
    assert _files(out) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone again


def test_temporary_files_of_a_killed_run_are_removed_when_the_case_is_written(scan, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".case_liver.nii.gz.k3j2.part.nii.gz", out / ".case_qc.png.x9.part.png",
             out / "..case_qc.png.x9.part.png.y7.part.png"]  # a writer's own temporary name for its temporary file
    for path in stale:
        path.write_bytes(b"half")
    other = out / ".other_qc.png.x9.part.png"  # another case's: not this run's business
    other.write_bytes(b"half")
    assert _segment(scan, out) == 0
    assert not any(path.exists() for path in stale) and other.exists()
