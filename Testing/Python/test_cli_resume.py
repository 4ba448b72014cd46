"""The command line re-run on its own output folder: resume, redo, refusals, overwrite."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import SimpleITK as sitk
from test_cli import phantom_file, run_cli  # noqa: F401  (phantom_file is a fixture)

from LiverVolumetryLib.bundle import load_bundle
from LiverVolumetryLib.cli import main
from LiverVolumetryLib.phantom import make_phantom


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
    assert len(row["input_stamp"]) == 16
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
    for extra in ([], ["--overwrite"]):  # --overwrite replaces this run's cases only: case_a would stay
        assert main(["segment", str(other), "-o", str(out), "--model", str(tiny_bundle), "--progress", "none",
                     *extra]) == 1
        err = capsys.readouterr().err
        assert "already holds case 'case_a' segmented by model" in err
        assert err.strip().endswith("use another output folder" if extra else "or --overwrite")
        assert (out / "measurements.csv").read_text() == table
    assert row["model_sha256"] == bundled.sha256
    twin = tmp_path / "twin"  # another network under the same name and version
    shutil.copytree(tiny_bundle, twin)
    spec = json.loads((twin / "model.json").read_text())
    spec.update(name=bundled.name, version=bundled.version)
    (twin / "model.json").write_text(json.dumps(spec))
    assert main(["segment", str(other), "-o", str(out), "--model", str(twin), "--progress", "none"]) == 1
    assert (f"segmented by model {bundled.name} {bundled.version}, not {bundled.name} {bundled.version} (weights "
            f"{bundled.sha256[:12]}, not {load_bundle(twin).sha256[:12]})") in capsys.readouterr().err


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
    assert err.startswith(f"livervolumetry: error: {out / 'phantom.nii.gz'}: ") and "\n" not in err
    assert err.endswith("; use --overwrite to make the demo's phantom again")
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


def test_resume_redoes_a_metaimage_whose_detached_data_file_changed(tmp_path):
    """A .mhd header names its .raw data file: new voxels there are a new scan."""
    folder = tmp_path / "scan"
    folder.mkdir()
    image = make_phantom(3, shape=(80, 64, 26), spacing=(5.0, 5.0, 9.0)).image
    sitk.WriteImage(image, str(folder / "case.mhd"), False)
    out = tmp_path / "out"
    arguments = ["segment", str(folder / "case.mhd"), "-o", str(out), "--no-radiomics", "--progress", "none"]
    assert main(arguments) == 0
    table = (out / "measurements.csv").read_text()
    assert main(arguments) == 0 and (out / "measurements.csv").read_text() == table  # resumed
    sitk.WriteImage(sitk.Flip(image, (True, False, False)), str(tmp_path / "other.mhd"), False)
    data = (tmp_path / "other.raw").read_bytes()
    (folder / "case.raw").write_bytes(data)  # the header is untouched
    assert main(arguments) == 0 and (out / "measurements.csv").read_text() != table



def test_the_stamp_covers_a_detached_headers_data_file_and_only_the_dicom_files_of_a_folder(tmp_path):
    from LiverVolumetryLib.scan_files import input_stamp, scan_files

    image = make_phantom(3, shape=(40, 32, 13), spacing=(10.0, 10.0, 18.0)).image
    for name in ("a.nhdr", "b.mhd", "c.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
    detached = [p.name for p in scan_files(tmp_path / "a.nhdr")]
    assert detached[0] == "a.nhdr" and len(detached) == 2 and (tmp_path / detached[1]).is_file()
    assert [p.name for p in scan_files(tmp_path / "b.mhd")] == ["b.mhd", "b.raw"]
    assert [p.name for p in scan_files(tmp_path / "c.nii.gz")] == ["c.nii.gz"]
    assert scan_files(tmp_path) == []  # no DICOM files in it
    stamp = input_stamp(tmp_path / "b.mhd")
    (tmp_path / "b.raw").write_bytes((tmp_path / "b.raw").read_bytes() + b"\0")
    assert input_stamp(tmp_path / "b.mhd") != stamp and input_stamp(tmp_path / "absent.nii.gz") is None


def test_a_csv_left_behind_its_json_by_a_kill_is_mended_on_the_next_run(phantom_file, tmp_path):
    """The JSON is written first; a run killed before the CSV's rename leaves the CSV a row
    short, and a resume in which every case is skipped writes nothing else to mend it."""
    path, _ = phantom_file
    out = tmp_path / "out"
    arguments = ["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]
    assert main(arguments) == 0
    complete = (out / "measurements.csv").read_text()
    (out / "measurements.csv").write_text(complete.splitlines()[0] + "\n")  # the header only
    assert main(arguments) == 0  # skipped
    assert (out / "measurements.csv").read_text() == complete


def test_demo_checks_everything_before_it_writes_the_phantom(tmp_path, capsys):
    """A bad model, an output that is a file, a table of another model: refused with nothing
    written; another seed is refused even when the true liver is missing; JSON mode keeps
    stdout JSON only."""
    broken = tmp_path / "broken-model"
    shutil.copytree(load_bundle().path, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert main(["demo", "-o", str(tmp_path / "d1"), "--model", str(broken), "--progress", "none"]) == 1
    assert not (tmp_path / "d1").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "-o", str(tmp_path / "afile"), "--progress", "none"]) == 1
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'afile'}: is a file; the output must be a folder")
    out = tmp_path / "d2"
    code, stdout, err = run_cli("demo", "-o", str(out), "--no-radiomics", "--progress", "json")
    assert code == 0, err
    assert all(json.loads(line) for line in stdout.splitlines()) and "generating" in err and "Dice" in err
    (out / "phantom_reference_liver.nii.gz").unlink()
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none", "--seed", "5"]) == 1
    assert "is another phantom than seed 5's" in capsys.readouterr().err
    assert main(["demo", "-o", str(out), "--no-radiomics", "--progress", "none"]) == 0  # its own seed: true liver again
    assert (out / "phantom_reference_liver.nii.gz").is_file()

