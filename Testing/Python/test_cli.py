"""The command-line contract: outputs, progress, the model command, errors (resume and measure:
test_cli_resume.py, test_cli_measure.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import dice, same_grid

from LiverVolumetryLib.bundle import load_bundle
from LiverVolumetryLib.cli import main
from LiverVolumetryLib.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory) -> tuple[Path, sitk.Image]:
    """A small, coarse, oblique phantom (fast) and its true liver mask."""
    folder = tmp_path_factory.mktemp("inputs")
    phantom = make_phantom(3, shape=(80, 64, 26), spacing=(5.0, 5.0, 9.0), orientation="LAS", oblique_degrees=8)
    path = folder / "case_a.nii.gz"
    sitk.WriteImage(phantom.image, str(path))
    return path, phantom.liver


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the installed CLI in a child process, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "LiverVolumetryLib.cli", *args], capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_segment_writes_the_output_contract(phantom_file, tmp_path):
    path, truth = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--progress", "none"]) == 0
    mask = sitk.ReadImage(str(out / "case_a_liver.nii.gz"))
    image = sitk.ReadImage(str(path))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert same_grid(mask, image), "mask must be on the input grid"
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}
    assert dice(mask, truth) > 0.8
    assert (out / "case_a_liver.seg.nrrd").is_file() and (out / "case_a_qc.png").is_file()
    rows = json.loads((out / "measurements.json").read_text())
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["case"] == "case_a"
    features = [k for k in rows[0] if k.startswith("original_")]
    assert len(features) >= 100
    header = (out / "measurements.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["case", "input", "series_uid", "volume_ml"]  # series_uid: empty for image files
    assert rows[0]["series_uid"] is None
    for column in ("model_name", "model_version", "device", "seconds", "status", "error"):
        assert column in header
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_seg_nrrd_reads_back_aligned_with_slicerio(phantom_file, tmp_path):
    import slicerio

    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    seg = slicerio.read_segmentation(str(out / "case_a_liver.seg.nrrd"))
    assert [s["name"] for s in seg["segments"]] == ["Liver"]
    mask = sitk.ReadImage(str(out / "case_a_liver.nii.gz"))
    # Every liver voxel of the seg.nrrd maps to a liver voxel of the mask in physical space.
    voxels = np.argwhere(np.asarray(seg["voxels"]) > 0)
    lps = (seg["ijkToLPS"] @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3]
    idx = [mask.TransformPhysicalPointToIndex(tuple(map(float, p))) for p in lps[:: max(1, len(lps) // 200)]]
    assert all(mask[i] == 1 for i in idx)
    assert len(voxels) == int(sitk.GetArrayViewFromImage(mask).sum())


def test_failing_case_is_recorded_and_run_goes_on(phantom_file, tmp_path):
    path, _ = phantom_file
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, _, err = run_cli("segment", str(bad), str(path), "-o", str(out), "--no-radiomics", "--progress", "text")
    assert code == 1 and "Traceback" not in err
    rows = {r["case"]: r for r in json.loads((out / "measurements.json").read_text())}
    assert rows["case_a"]["status"] == "ok"
    assert rows["broken"]["status"] == "failed" and "broken.nii.gz" in rows["broken"]["error"]
    assert not (out / "broken_liver.nii.gz").exists()


def test_interrupted_case_leaves_no_files(phantom_file, tmp_path, monkeypatch):
    import LiverVolumetryLib.qc as qc

    path, _ = phantom_file
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qc, "write_qc_png", interrupted)
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 130
    assert not out.exists() or not any(out.iterdir())


def test_json_progress_events(phantom_file, tmp_path):
    path, _ = phantom_file
    code, stdout, _ = run_cli("segment", str(path), "-o", str(tmp_path / "o"), "--no-radiomics", "--progress", "json")
    assert code == 0
    events = [json.loads(line) for line in stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert {"network", "measure", "write"} <= {e["stage"] for e in progress}
    assert all(0 <= e["fraction"] <= 1 for e in progress)
    assert events[-1] == {"event": "case_done", "case": "case_a", "status": "ok", "error": None,
                          "seconds": events[-1]["seconds"]}


def test_corrupt_bundle_is_refused(phantom_file, tmp_path):
    from LiverVolumetryLib.bundle import default_bundle_dir

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    weights = next(bundle.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    path, _ = phantom_file
    code, _, err = run_cli("segment", str(path), "-o", str(tmp_path / "o"), "--model", str(bundle))
    assert code == 1
    assert "SHA-256" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_model_command_shows_the_card():
    code, stdout, _ = run_cli("model")
    bundle = load_bundle()
    assert code == 0 and f"weights: SHA-256 {bundle.sha256} (verified)" in stdout
    assert f"trained on {len(bundle.metadata['training']['cases'])} case(s)" in stdout
    assert f"model card (figures, limitations, licence): {bundle.path / 'MODEL.md'}" in stdout
    assert "cross-validation: out-of-fold Dice" in stdout or "held-out validation: Dice" in stdout
    assert "case_fingerprints" not in stdout  # a summary, not the record


def test_write_error_names_the_output_not_its_temporary_file(phantom_file, tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"livervolumetry: error: {out / 'case_a_qc.png'}: cannot write the QC picture " \
                  "([Errno 28] No space left on device)", err
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("case", ["../escaped", "sub/dir", ".hidden"])
def test_manifest_case_names_cannot_leave_the_output_folder(phantom_file, tmp_path, capsys, case):
    path, _ = phantom_file
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"image,case\n{path},{case}\n")
    out = tmp_path / "out"
    assert main(["segment", str(manifest), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert "cohort.csv: line 2: case name" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv"]


def test_output_folder_that_is_an_input_folder_is_refused(phantom_file, tmp_path, capsys):
    path, _ = phantom_file
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    assert main(["segment", str(folder), "-o", str(folder), "--no-radiomics", "--progress", "none"]) == 1
    assert "is also an input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [path.name]


def test_output_path_that_is_a_file_is_refused_before_any_work(phantom_file, tmp_path, capsys, monkeypatch):
    import LiverVolumetryLib.segment as segment

    monkeypatch.setattr(segment, "segment_liver", lambda *a, **k: pytest.fail("segmented before the output check"))
    path, _ = phantom_file
    target = tmp_path / "results.nii.gz"
    target.write_bytes(b"keep")
    assert main(["segment", str(path), "-o", str(target), "--progress", "none"]) == 1
    assert "results.nii.gz: is a file; the output must be a folder" in capsys.readouterr().err
    assert target.read_bytes() == b"keep"


def test_when_every_case_fails_the_causes_are_printed(tmp_path, capsys):
    bad = [tmp_path / "one.nii.gz", tmp_path / "two.nrrd"]
    for path in bad:
        path.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["segment", *map(str, bad), "-o", str(out), "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "livervolumetry: all 2 cases failed:"
    assert err[1].startswith("  one: ") and "one.nii.gz" in err[1] and err[2].startswith("  two: "), err
    assert not out.exists() or not any(out.iterdir())


def test_json_progress_into_a_reader_that_stops_ends_quietly_without_a_failed_row(phantom_file, tmp_path):
    """`segment ... --progress json | head -1`: the broken pipe stops the run, as SIGPIPE would,
    with no traceback and no case recorded as failed because of it."""
    path, _ = phantom_file
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "LiverVolumetryLib.cli", "segment", str(path), "-o", str(out),
                             "--no-radiomics", "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["event"] == "start"
    proc.stdout.close()  # the reader went away
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and b"Traceback" not in err, err
    table = out / "measurements.json"
    assert not table.exists() or all(r["status"] == "ok" for r in json.loads(table.read_text()))
