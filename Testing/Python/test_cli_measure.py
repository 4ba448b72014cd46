"""`livervolumetry measure`: a (hand-corrected) mask measured, alone or into a results table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from test_cli import phantom_file, run_cli  # noqa: F401  (phantom_file is a fixture)

from LiverVolumetryLib.cli import main
from LiverVolumetryLib.phantom import make_phantom


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


def test_measure_does_not_replace_a_row_of_another_scan_and_checks_its_case_name(phantom_file, tmp_path, capsys):
    import shutil

    path, truth = phantom_file
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(path, elsewhere / path.name)  # another file that yields the same case name
    mask = tmp_path / "corrected.nii.gz"
    sitk.WriteImage(truth, str(mask))
    table = (out / "measurements.csv").read_text()
    assert main(["measure", str(elsewhere / path.name), str(mask), "-o", str(out), "--no-radiomics"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"already holds case 'case_a' from another input ({path}); name this one with --case, or "
                        "use another output folder or --overwrite") and "\n" not in err
    assert (out / "measurements.csv").read_text() == table
    for bad in ("", " ", "../up", ".hidden"):
        assert main(["measure", str(path), str(mask), "--case", bad, "--no-radiomics"]) == 1
        assert "a case name must be a plain file name" in capsys.readouterr().err
    assert main(["measure", str(path), str(mask), "-o", str(out), "--no-radiomics"]) == 0  # its own scan: replaced
    row = json.loads((out / "measurements.json").read_text())[0]
    assert row["mask"] == str(mask) and len(row["input_stamp"]) == 16
