"""The Slicer module's pure-Python engine glue (LiverVolumetrySlicerLib.engine_cli), without Slicer.

Unit tests of argument building, JSON-line parsing and result rows, then the same calls the
module makes, run against the real engine command line on a tiny synthetic image with a
tiny random-weight bundle (stdout and stderr merged, as slicer.util.launchConsoleProcess does).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ellipsoid_image

MODULE_DIR = Path(__file__).resolve().parents[2] / "LiverVolumetry"
sys.path.insert(0, str(MODULE_DIR))
from LiverVolumetrySlicerLib import engine_cli  # noqa: E402


# --------------------------------------------------------------------------- parsing


def test_parse_progress_event_clamps_fraction():
    event = engine_cli.parse_line('{"event": "progress", "case": "a", "fraction": 1.7, "stage": "network"}\n')
    assert (event.kind, event.case, event.fraction, event.stage) == ("progress", "a", 1.0, "network")


def test_parse_case_done_failed():
    event = engine_cli.parse_line(json.dumps({"event": "case_done", "case": "a", "status": "failed",
                                              "error": "a.nrrd: not a 3D image", "seconds": 0.5}))
    assert (event.kind, event.status, event.error, event.seconds) == ("case_done", "failed", "a.nrrd: not a 3D image", 0.5)


@pytest.mark.parametrize("line", ["livervolumetry: error: x", "{not json", '{"no_event": 1}', "[1, 2]"])
def test_non_event_lines_are_text(line):
    event = engine_cli.parse_line(line)
    assert event.kind == "text" and event.message == line


def test_blank_line_is_no_event():
    assert engine_cli.parse_line("  \n") is None


def test_progress_text():
    assert engine_cli.progress_text("network", 0.424) == "Running network: 42%"
    assert engine_cli.progress_text("unknownstage", None) == "Unknownstage: 0%"


def test_failure_message_prefers_case_error_then_engine_error():
    failed = engine_cli.EngineEvent(kind="case_done", status="failed", error="x.nrrd: empty image")
    assert "x.nrrd: empty image" in engine_cli.failure_message(1, failed, [])
    lines = ["some warning", "livervolumetry: error: model bundle m: does not exist"]
    assert engine_cli.failure_message(1, None, lines).endswith("model bundle m: does not exist")
    assert "usage" in engine_cli.failure_message(2, None, ["usage: livervolumetry ..."])
    assert "lack of memory" in engine_cli.failure_message(-9, None, ['{"event": "progress", "fraction": 0.4}'])
    crashed = engine_cli.failure_message(1, None, ["Traceback", "MemoryError", '{"event": "progress", "fraction": 0.4}'])
    assert "exit status 1" in crashed and crashed.endswith("Last message: MemoryError")


@pytest.mark.parametrize("name, expected", [("MR Head (1)", "MR_Head_1"), ("", "volume"), ("...", "volume"),
                                            ("T2_SPIR.v2", "T2_SPIR.v2"), ("liver.seg", "liver_seg")])
def test_safe_case_name(name, expected):
    from LiverVolumetryLib.imageio import case_id

    assert engine_cli.safe_case_name(name) == expected
    assert case_id(f"{expected}.nrrd") == expected  # the engine names the case as the module does


# --------------------------------------------------------------------------- arguments


def test_segment_arguments_default_and_options():
    default = engine_cli.segment_arguments("in/c.nrrd", "out")
    assert default == ["segment", "in/c.nrrd", "-o", "out", "--overwrite", "--progress", "json", "--device", "auto"]
    custom = engine_cli.segment_arguments("c.nrrd", "out", "cuda", "/models/m", radiomics=False)
    assert custom[-4:] == ["cuda", "--model", "/models/m", "--no-radiomics"]
    with pytest.raises(ValueError):
        engine_cli.segment_arguments("c.nrrd", "out", "tpu")


def test_measure_arguments():
    args = engine_cli.measure_arguments("c.nrrd", "m.nrrd", "out", "c", radiomics=False)
    assert args == ["measure", "c.nrrd", "m.nrrd", "-o", "out", "--overwrite", "--case", "c", "--progress", "json",
                    "--no-radiomics"]


# --------------------------------------------------------------------------- results


def test_table_columns_order_provenance_and_skipped_columns():
    row = {"case": "c", "input": "/tmp/c.nrrd", "volume_ml": 1500.0, "voxel_count": 1000,
           "original_shape_MeshVolume": 1490.0, "original_firstorder_Mean": 3.0, "model_name": "m",
           "model_version": "1", "device": "cpu", "seconds": 2.5, "warnings": "w", "status": "ok", "error": None}
    columns = engine_cli.table_columns(row, (0.78125, 0.78125, 6.0), "automatic")
    assert list(columns) == ["case", "volume_ml", "voxel_count", "original_shape_MeshVolume", "original_firstorder_Mean",
                             "model_name", "model_version", "device", "seconds", "input_spacing_mm", "source",
                             "warnings"]
    assert columns["input_spacing_mm"] == "0.7812 x 0.7812 x 6" and columns["warnings"] == "w"
    assert engine_cli.table_columns({**row, "warnings": None}, (1, 1, 1), "automatic")["warnings"] == ""


def test_measure_row_keeps_model_provenance():
    row = {"case": "c", "volume_ml": 700.0, "voxel_count": 10, "model_name": None, "status": "ok"}
    columns = engine_cli.table_columns(row, (1, 1, 1), "edited", keep={"model_name": "m", "model_version": "2"})
    assert (columns["model_name"], columns["model_version"], columns["source"]) == ("m", "2", "edited")
    assert "device" not in columns and "status" not in columns


def test_column_metadata():
    assert engine_cli.column_metadata("seconds") == ("s", engine_cli.PROVENANCE_COLUMNS["seconds"][1])
    assert engine_cli.column_metadata("volume_ml", lambda name: ("mL", "Liver volume")) == ("mL", "Liver volume")

    def broken(name):
        raise ImportError("no pyradiomics")

    assert engine_cli.column_metadata("original_glcm_Contrast", broken) == ("", "")


def test_labelmap_checksum_detects_any_voxel_change():
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    reference = engine_cli.labelmap_checksum(mask)
    assert engine_cli.labelmap_checksum(mask * 255) == reference  # only inside/outside matters
    edited = mask.copy()
    edited[1, 1, 2] = 0
    assert engine_cli.labelmap_checksum(edited) != reference
    assert engine_cli.labelmap_checksum(mask.reshape(5, 4, 6)) != reference


def test_read_case_row(tmp_path):
    (tmp_path / "measurements.json").write_text(json.dumps([{"case": "a", "volume_ml": 1.0}, {"case": "b"}]))
    assert engine_cli.read_case_row(tmp_path, "a")["volume_ml"] == 1.0
    with pytest.raises(ValueError, match="no row for case 'c'"):
        engine_cli.read_case_row(tmp_path, "c")
    with pytest.raises(ValueError, match="no readable results table"):
        engine_cli.read_case_row(tmp_path / "missing", "a")


# --------------------------------------------------------------------------- the real engine CLI

needs_cli = pytest.mark.skipif(importlib.util.find_spec("LiverVolumetryLib.cli") is None,
                               reason="engine CLI not available")


def _run_cli(arguments: list[str]) -> tuple[int, list[str]]:
    """Run the CLI like the module does: ``python -m``, in the module folder, stderr merged."""
    proc = subprocess.run([sys.executable, "-m", engine_cli.CLI_MODULE, *arguments], cwd=MODULE_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return proc.returncode, proc.stdout.splitlines()


@needs_cli
@pytest.mark.parametrize("command, flags", [
    ("segment", ["-o", "--overwrite", "--progress", "--device", "--model", "--no-radiomics"]),
    ("measure", ["-o", "--overwrite", "--case", "--no-radiomics"]),
])
def test_cli_accepts_the_options_the_module_passes(command, flags):
    returncode, lines = _run_cli([command, "--help"])
    text = "\n".join(lines)
    assert returncode == 0
    for flag in flags:
        assert flag in text, flag


@needs_cli
def test_segment_then_measure_through_the_module_glue(tmp_path, tiny_bundle):
    image, _ = ellipsoid_image()
    case = engine_cli.safe_case_name("Ellipsoid case")
    image_path = tmp_path / f"{case}.nrrd"
    sitk.WriteImage(image, str(image_path))
    out = tmp_path / "out"

    returncode, lines = _run_cli(engine_cli.segment_arguments(image_path, out, "cpu", tiny_bundle, radiomics=False))
    events = [e for e in map(engine_cli.parse_line, lines) if e is not None]
    done = [e for e in events if e.kind == "case_done"]
    assert returncode == 0, lines
    assert [(e.case, e.status) for e in done] == [(case, "ok")]
    stages = {e.stage for e in events if e.kind == "progress"}
    assert stages and stages <= set(engine_cli.STAGE_LABELS), stages - set(engine_cli.STAGE_LABELS)

    row = engine_cli.read_case_row(out, case)
    assert row["model_name"] == "tiny-test"
    mask_file = engine_cli.mask_path(out, case)
    assert mask_file.is_file()

    mask = sitk.ReadImage(str(mask_file))
    full = np.ones(sitk.GetArrayViewFromImage(mask).shape, np.uint8)
    full[:, :, : full.shape[2] // 2] = 0  # a "hand-corrected" mask: half of the image
    corrected = sitk.GetImageFromArray(full)
    corrected.CopyInformation(mask)
    corrected_path = tmp_path / f"{case}_liver.nrrd"
    sitk.WriteImage(corrected, str(corrected_path))
    remeasured = tmp_path / "remeasured"
    returncode, lines = _run_cli(engine_cli.measure_arguments(image_path, corrected_path, remeasured, case, False))
    assert returncode == 0, lines
    new_row = engine_cli.read_case_row(remeasured, case)
    expected_ml = full.sum() * np.prod(mask.GetSpacing()) / 1000.0
    assert new_row["volume_ml"] == pytest.approx(expected_ml, rel=1e-6)
    columns = engine_cli.table_columns(new_row, image.GetSpacing(), "edited", keep={"model_name": row["model_name"]})
    assert columns["model_name"] == "tiny-test" and columns["volume_ml"] == new_row["volume_ml"]


@needs_cli
def test_failed_case_is_reported_in_plain_words(tmp_path, tiny_bundle):
    bad = tmp_path / "broken.nrrd"
    bad.write_text("this is not an image")
    returncode, lines = _run_cli(engine_cli.segment_arguments(bad, tmp_path / "out", "cpu", tiny_bundle, False))
    events = [e for e in map(engine_cli.parse_line, lines) if e is not None]
    failed = next((e for e in events if e.kind == "case_done" and e.status == "failed"), None)
    assert returncode == 1
    message = engine_cli.failure_message(returncode, failed, lines)
    assert "broken.nrrd" in message and "Traceback" not in message


@needs_cli
@pytest.mark.parametrize("node_name", ["LiverPhantom", "MR Head (1)", "T2_SPIR.v2", "scan.nii.gz", "ÄÖ liver"])
def test_engine_case_id_of_the_written_file_is_the_module_case_name(node_name):
    """The module finds its results by case name: the engine must derive the same from the file."""
    from LiverVolumetryLib.imageio import case_id

    case = engine_cli.safe_case_name(node_name)
    assert case_id(f"{case}.nrrd") == case


def test_result_summary_puts_plausibility_warnings_on_a_line_of_their_own():
    row = {"volume_ml": 405.04, "warnings": "liver volume 405 mL is below 500 mL: is the whole liver segmented?"}
    assert engine_cli.result_summary(row, "automatic").splitlines() == [
        "Liver volume: 405.0 mL (automatic segmentation)", f"Check: {row['warnings']}"]
    assert engine_cli.result_summary({**row, "warnings": ""}, "edited") == "Liver volume: 405.0 mL (edited segmentation)"
    assert engine_cli.result_summary({"volume_ml": 1.0}, "edited") == "Liver volume: 1.0 mL (edited segmentation)"
