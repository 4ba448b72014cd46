"""The command-line contract: outputs, table, resume, overwrite protection, errors."""

from __future__ import annotations

import json
import os
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


def test_resume_skips_finished_cases_and_overwrite_redoes_them(phantom_file, tmp_path):
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    stamp = (out / "case_a_liver.nii.gz").stat().st_mtime_ns
    code, _, err = run_cli("segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "text")
    assert code == 0 and "skipped" in err
    assert (out / "case_a_liver.nii.gz").stat().st_mtime_ns == stamp
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--overwrite", "--progress", "none"]) == 0
    assert (out / "case_a_liver.nii.gz").stat().st_mtime_ns != stamp


def test_resume_redoes_a_case_whose_scan_changed_after_it_was_segmented(phantom_file, tmp_path):
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    mask = out / "case_a_liver.nii.gz"
    stamp = mask.stat().st_mtime_ns
    row = json.loads((out / "measurements.json").read_text())[0]
    assert row["input_modified"].startswith("20") and row["input_modified"].endswith("+00:00")
    code, _, err = run_cli("segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "text")
    assert code == 0 and "skipped" in err and mask.stat().st_mtime_ns == stamp
    earlier = path.stat().st_mtime_ns - 10**9  # the scan was re-exported since (even with an older time stamp)
    os.utime(path, ns=(earlier, earlier))
    code, _, err = run_cli("segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "text")
    assert code == 0 and "skipped" not in err and mask.stat().st_mtime_ns != stamp


def test_existing_foreign_output_is_never_overwritten(phantom_file, tmp_path):
    path, _ = phantom_file
    out = tmp_path / "out"
    out.mkdir()
    (out / "case_a_qc.png").write_bytes(b"precious")
    code, _, err = run_cli("segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none")
    assert code == 1
    assert "already exists" in err and "Traceback" not in err
    assert (out / "case_a_qc.png").read_bytes() == b"precious"
    assert not (out / "case_a_liver.nii.gz").exists()


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


def test_measure_recomputes_from_corrected_mask(phantom_file, tmp_path):
    path, truth = phantom_file
    mask_path = tmp_path / "corrected.nii.gz"
    arr = sitk.GetArrayFromImage(truth)
    arr[: arr.shape[0] // 2] = 0  # the radiologist erased the lower half
    corrected = sitk.GetImageFromArray(arr)
    corrected.CopyInformation(truth)
    sitk.WriteImage(corrected, str(mask_path))
    out = tmp_path / "m"
    code, stdout, err = run_cli("measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics")
    assert code == 0, err
    row = json.loads((out / "measurements.json").read_text())[0]
    voxel_ml = np.prod(truth.GetSpacing()) / 1000
    assert row["volume_ml"] == pytest.approx(arr.sum() * voxel_ml, rel=1e-6)
    code, _, err = run_cli("measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics")
    assert code == 1 and "--overwrite" in err


@pytest.mark.parametrize("name", ["Liver", "Tumor"])
def test_measure_warns_when_the_only_segment_is_not_named_liver(phantom_file, tmp_path, name):
    from LiverVolumetryLib.outputs import write_segmentation

    path, truth = phantom_file
    segmentation = write_segmentation(truth, tmp_path / "hand.seg.nrrd", segment_name=name)
    out = tmp_path / "m"
    code, stdout, err = run_cli("measure", str(path), str(segmentation), "-o", str(out), "--no-radiomics")
    assert code == 0, err
    row = json.loads((out / "measurements.json").read_text())[0]
    warned = "measured segment 'Tumor' as the liver (the file has no segment named 'Liver')"
    assert (warned in row["warnings"]) == (name == "Tumor")
    assert (warned in stdout) == (name == "Tumor")


def test_measure_of_a_multi_label_map_needs_the_liver_label(phantom_file, tmp_path, capsys):
    path, truth = phantom_file
    arr = sitk.GetArrayFromImage(truth).astype(np.uint8) * 6  # AMOS-like: liver 6 ...
    lesion = np.zeros_like(arr)
    lesion[tuple(np.argwhere(arr)[0])] = 1
    arr[lesion == 1] = 7  # ... a lesion inside it ...
    arr[0, 0, 0] = 3  # ... and another organ
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(truth)
    mask_path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(labels, str(mask_path))
    out = tmp_path / "m"
    assert main(["measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{mask_path}: holds several labels (3, 6, 7)" in err and not out.exists(), err
    assert main(["measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics", "--label", "6,7"]) == 0
    row = json.loads((out / "measurements.json").read_text())[0]
    voxel_ml = np.prod(truth.GetSpacing()) / 1000
    assert row["volume_ml"] == pytest.approx(np.isin(arr, (6, 7)).sum() * voxel_ml, rel=1e-6)
    segmentation = tmp_path / "labels.seg.nrrd"
    sitk.WriteImage(labels, str(segmentation))
    assert main(["measure", str(segmentation), str(path), "-o", str(tmp_path / "swapped")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"livervolumetry: error: {segmentation}: is a Slicer segmentation (.seg.nrrd), not a scan: "
                   "the image comes first (livervolumetry measure IMAGE MASK)")
    with pytest.raises(SystemExit) as stopped:
        main(["measure", str(path), str(mask_path), "--label", "liver"])
    assert stopped.value.code == 2 and "'liver' is not a label value" in capsys.readouterr().err


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


def test_resume_refuses_a_finished_case_name_from_another_input(phantom_file, tmp_path, capsys):
    path, _ = phantom_file
    other = tmp_path / "elsewhere" / path.name  # same case name, another scan
    other.parent.mkdir()
    sitk.WriteImage(make_phantom(4, shape=(80, 64, 26), spacing=(5.0, 5.0, 9.0)).image, str(other))
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    table = (out / "measurements.csv").read_bytes()
    capsys.readouterr()
    assert main(["segment", str(other), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds case 'case_a' from another input" in err, err
    assert (out / "measurements.csv").read_bytes() == table
    # the same file written another way is the same input: resumed, not refused
    relative = Path("..") / path.parent.name / path.name
    assert main(["segment", str(path.parent / relative), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0


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


def test_failed_overwrite_leaves_no_outputs_the_table_does_not_describe(phantom_file, tmp_path, monkeypatch):
    import LiverVolumetryLib.segment as segment
    from LiverVolumetryLib.errors import LiverVolumetryError

    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0

    def fails(*args, **kwargs):
        raise LiverVolumetryError(f"{path}: no liver found in this image")

    monkeypatch.setattr(segment, "segment_liver", fails)
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--overwrite", "--progress", "none"]) == 1
    rows = json.loads((out / "measurements.json").read_text())
    assert [r["status"] for r in rows] == ["failed"]
    assert sorted(p.name for p in out.iterdir()) == ["measurements.csv", "measurements.json"]


def test_measure_refuses_an_existing_row_before_any_work(phantom_file, tmp_path, monkeypatch, capsys):
    import LiverVolumetryLib.measure as measure

    path, truth = phantom_file
    mask_path = tmp_path / "liver.nii.gz"
    sitk.WriteImage(truth, str(mask_path))
    out = tmp_path / "m"
    assert main(["measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics"]) == 0
    monkeypatch.setattr(measure, "measure", lambda *a, **k: pytest.fail("measured before the table check"))
    capsys.readouterr()
    assert main(["measure", str(path), str(mask_path), "-o", str(out)]) == 1
    assert "already has a row for case 'case_a'" in capsys.readouterr().err


def test_a_row_measured_from_a_corrected_mask_survives_a_later_segment_run(phantom_file, tmp_path, monkeypatch,
                                                                           capsys):
    # Before, a segment run on the folder found the automatic files of a measured case
    # missing and segmented it again, replacing the hand-corrected measurement.
    import LiverVolumetryLib.segment as segment

    path, truth = phantom_file
    mask_path = tmp_path / "corrected.nii.gz"
    sitk.WriteImage(truth, str(mask_path))
    out = tmp_path / "out"
    assert main(["measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics"]) == 0
    assert "note:" not in capsys.readouterr().out  # no automatic files there
    before = json.loads((out / "measurements.json").read_text())
    monkeypatch.setattr(segment, "segment_liver", lambda *a, **k: pytest.fail("segmented a measured case"))
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "text"]) == 0
    assert f"kept: measured from {mask_path}" in capsys.readouterr().err
    assert json.loads((out / "measurements.json").read_text()) == before
    (out / "case_a_qc.png").write_bytes(b"automatic")  # as if segment had written it before the measure
    assert main(["measure", str(path), str(mask_path), "-o", str(out), "--no-radiomics", "--overwrite"]) == 0
    assert "note: case_a_qc.png in that folder is still the automatic segmentation" in capsys.readouterr().out


def test_a_table_written_before_the_series_uid_column_keeps_the_column_order_when_resumed(tmp_path):
    from LiverVolumetryLib.batch import ResultsTable
    from LiverVolumetryLib.outputs import write_measurements

    old = {"case": "a", "input": "a.nii.gz", "volume_ml": 1.0, "voxel_count": 3, "model_name": "m", "status": "ok",
           "error": None}  # an older release's row: no series_uid
    write_measurements([old], tmp_path / "measurements.csv", tmp_path / "measurements.json")
    table = ResultsTable(tmp_path)
    table.put({"case": "b", "input": "b", "series_uid": "1.2.3", "volume_ml": 2.0, "voxel_count": 4, "status": "ok"})
    header = (tmp_path / "measurements.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:4] == ["case", "input", "series_uid", "volume_ml"] and header[-1] == "error", header


def test_a_liver_too_small_for_radiomics_keeps_its_mask_and_volume_with_a_warning(tmp_path):
    """pyradiomics refuses a region under its minimum size (here a scan of two slices): the
    case keeps its mask and volume, and the row says why it has no features."""
    scan = tmp_path / "two_slices.nii.gz"
    sitk.WriteImage(make_phantom(3, shape=(96, 96, 2), spacing=(4.0, 4.0, 5.0), orientation="LPS",
                                 oblique_degrees=0).image, str(scan))
    out = tmp_path / "out"
    code, stdout, err = run_cli("segment", str(scan), "-o", str(out), "--progress", "none")
    assert code == 0, err
    row = json.loads((out / "measurements.json").read_text())[0]
    assert row["status"] == "ok" and row["volume_ml"] > 0 and not any(k.startswith("original_") for k in row)
    assert "no radiomics features (radiomics failed: " in row["warnings"] and "the volume is measured" in stdout
    assert (out / "two_slices_liver.nii.gz").is_file()
    code, stdout, err = run_cli("measure", str(scan), str(out / "two_slices_liver.nii.gz"), "-o", str(tmp_path / "m"))
    assert code == 0, err
    measured = json.loads((tmp_path / "m" / "measurements.json").read_text())[0]
    assert measured["volume_ml"] == row["volume_ml"] and "no radiomics features" in measured["warnings"]


def test_resume_adds_radiomics_asked_for_now_and_refuses_another_model(phantom_file, tmp_path, tiny_bundle, capsys):
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    assert main(["segment", str(path), "-o", str(out), "--progress", "none"]) == 0  # features asked for now: redone
    row = json.loads((out / "measurements.json").read_text())[0]
    assert sum(k.startswith("original_") for k in row) > 50
    table = (out / "measurements.csv").read_text()
    capsys.readouterr()
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "text"]) == 0
    assert "skipped" in capsys.readouterr().err and (out / "measurements.csv").read_text() == table  # has more
    assert main(["segment", str(path), "-o", str(out), "--model", str(tiny_bundle), "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip()
    bundled = load_bundle()
    assert err.endswith(f"{out / 'measurements.csv'}: already holds case 'case_a' segmented by model {bundled.name} "
                        f"{bundled.version}, not tiny-test 0.0.0; use another output folder or --overwrite")
    assert "\n" not in err
    assert (out / "measurements.csv").read_text() == table
    other = tmp_path / "other_scan.nii.gz"  # another case added with another model: refused as well
    shutil.copy(path, other)
    assert main(["segment", str(other), "-o", str(out), "--model", str(tiny_bundle), "--progress", "none"]) == 1
    assert "already holds case 'case_a' segmented by model" in capsys.readouterr().err
    assert (out / "measurements.csv").read_text() == table


def test_demo_resumes_only_its_own_seeds_phantom(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    first = capsys.readouterr().out
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0  # same seed: resumed
    again = capsys.readouterr().out
    assert "generating" not in again and "generating" in first and "on cpu (the earlier run's)" in again
    assert "(the earlier run's)" not in first
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none", "--seed", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{out / 'phantom.nii.gz'}: is another phantom than seed 5's (use --overwrite to "
                        "replace it, or another output folder)") and "\n" not in err
    (out / "phantom.nii.gz").write_bytes(b"damaged")
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{out / 'phantom.nii.gz'}: cannot be read as the demo's phantom (use --overwrite to make "
                        "it again)") and "\n" not in err
    # The demo's scan is named after its case: measuring it names the same row.
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none", "--overwrite"]) == 0
    assert main(["measure", str(out / "phantom.nii.gz"), str(out / "phantom_liver.seg.nrrd"), "-o", str(out),
                 "--no-radiomics"]) == 0
    assert [r["case"] for r in json.loads((out / "measurements.json").read_text())] == ["phantom"]


def test_a_table_csv_without_its_json_is_not_replaced(phantom_file, tmp_path, capsys):
    """The JSON is what a run reads to add to the table: without it the CSV's rows would be lost."""
    path, truth = phantom_file
    out = tmp_path / "out"
    out.mkdir()
    (out / "measurements.csv").write_text("case,volume_ml\nearlier,1500\n")
    mask = tmp_path / "mask.nii.gz"
    sitk.WriteImage(truth, str(mask))
    for arguments in (["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"],
                      ["measure", str(path), str(mask), "-o", str(out), "--no-radiomics", "--overwrite"]):
        assert main(arguments) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{out / 'measurements.csv'}: exists without measurements.json, which a run reads to "
                            "add to the table: restore measurements.json, remove measurements.csv, or use another "
                            "output folder")
        assert "\n" not in err
        assert sorted(p.name for p in out.iterdir()) == ["measurements.csv"]
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none", "--overwrite"]) == 0
    assert "earlier" not in (out / "measurements.csv").read_text()


def test_measure_reports_json_progress_from_start_to_done_and_no_note_about_its_own_mask(phantom_file, tmp_path):
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    code, stdout, err = run_cli("measure", str(path), str(out / "case_a_liver.nii.gz"), "-o", str(out),
                                "--no-radiomics", "--overwrite", "--progress", "json")
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "case_done" and events[-1]["status"] == "ok"
    assert [e["fraction"] for e in events if e["event"] == "progress"][-1] == 1.0
    assert "note:" not in err  # the row measures the folder's own automatic mask: nothing to tell apart


def test_measure_of_the_folders_seg_nrrd_edited_in_place_notes_the_other_automatic_files(phantom_file, tmp_path):
    path, _ = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    code, stdout, err = run_cli("measure", str(path), str(out / "case_a_liver.seg.nrrd"), "-o", str(out),
                                "--no-radiomics")
    assert code == 0, err
    assert "note: case_a_liver.nii.gz, case_a_qc.png in that folder are still the automatic segmentation" in stdout


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
