"""Outputs that cannot be written where asked (a folder in a file's place, a file in a
folder's place, the folder of an input scan), and masks that would be misread (NaN in
NIfTI, label 0): refused before any work, in one line, with nothing written."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.cli import main as engine
from LiverVolumetryLib.errors import InputError, OutputError
from LiverVolumetryLib.masks import read_mask
from LiverVolumetryTraining.cli import main as trainer

from conftest import ellipsoid_image, write_ellipsoid_scan


def _one_line(capsys, prog: str, *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error:") and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.fixture()
def scan(tmp_path) -> Path:
    return write_ellipsoid_scan(tmp_path / "scans" / "good.nii.gz")


@pytest.mark.parametrize("obstacle, says", [
    ("measurements.csv", "is a folder where this run writes a file"),
    ("measurements.json", "cannot read the measurements"),  # the table is read first, to resume
    ("good_qc.png", "is a folder where this run writes a file"),
    ("good_liver.seg.nrrd", "is a folder where this run writes a file"),
])
def test_segment_refuses_a_folder_where_it_writes_a_file_before_any_work(tiny_bundle, scan, tmp_path, capsys,
                                                                         obstacle, says):
    out = tmp_path / "out"
    (out / obstacle).mkdir(parents=True)
    code = engine(["segment", str(scan), "-o", str(out), "--model", str(tiny_bundle), "--no-radiomics",
                   "--overwrite"])
    assert code == 1
    _one_line(capsys, "livervolumetry", f"{out / obstacle}: {says}")
    assert sorted(p.name for p in out.iterdir()) == [obstacle]


def test_segment_refuses_to_write_into_the_folder_of_its_input_scan(tiny_bundle, scan, capsys):
    code = engine(["segment", str(scan), "-o", str(scan.parent), "--model", str(tiny_bundle)])
    assert code == 1
    _one_line(capsys, "livervolumetry", "is the folder of the input good.nii.gz")
    assert [p.name for p in scan.parent.iterdir()] == ["good.nii.gz"]


def test_an_atomic_write_over_a_folder_is_an_output_error(tmp_path):
    from LiverVolumetryLib.atomic import write_text_atomic

    (tmp_path / "table.csv").mkdir()
    with pytest.raises(OutputError, match="table.csv: is a folder; a file cannot be written in its place"):
        write_text_atomic(tmp_path / "table.csv", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def _mask_file(tmp_path: Path, name: str, nan_voxels: int) -> tuple[sitk.Image, Path]:
    image, mask = ellipsoid_image(size=(40, 40, 24), spacing=(2.0, 2.0, 2.0), radii=(18.0, 14.0, 12.0))
    values = sitk.GetArrayFromImage(mask).astype(np.float32)
    liver = np.argwhere(values > 0)[:nan_voxels]
    values[tuple(liver.T)] = np.nan
    written = sitk.GetImageFromArray(values)
    written.CopyInformation(mask)
    sitk.WriteImage(written, str(tmp_path / name))
    return image, tmp_path / name


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii", "mask.nrrd"])
def test_nan_in_a_mask_is_refused_whatever_the_format(tmp_path, name):
    image, path = _mask_file(tmp_path, name, nan_voxels=1)
    with pytest.raises(InputError, match=r"NaN or infinite") as caught:
        read_mask(path, image)
    assert str(path) in str(caught.value)


def test_label_0_is_refused_as_the_liver_label_of_a_mask(tmp_path, capsys):
    image, path = _mask_file(tmp_path, "mask.nii.gz", nan_voxels=0)
    with pytest.raises(InputError, match="label 0 is the background value"):
        read_mask(path, image, label=0)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    with pytest.raises(SystemExit) as stopped:
        engine(["measure", str(tmp_path / "image.nii.gz"), str(path), "--label", "0", "-o", str(tmp_path / "o")])
    assert stopped.value.code == 2 and "0 is the background value" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------- evaluate


@pytest.fixture()
def predictions(tiny_cases, tmp_path) -> Path:
    """The reference labels as predictions, named as the engine names its masks."""
    folder = tmp_path / "pred"
    folder.mkdir()
    for label in tiny_cases.glob("label_*.nii.gz"):
        shutil.copy(label, folder / label.name.replace("label_", "image_").replace(".nii.gz", "_liver.nii.gz"))
    return folder


def _evaluate(tiny_cases, predictions, out, *more) -> int:
    return trainer(["evaluate", "--data", str(tiny_cases), "--predictions", str(predictions), "--no-radiomics",
                    "-o", str(out), *more])


def test_evaluate_reads_masks_named_as_the_engine_names_them(tiny_cases, predictions, tmp_path, capsys):
    from LiverVolumetryTraining.evaluate_report import REPORT_FILES

    assert _evaluate(tiny_cases, predictions, tmp_path / "eval") == 0
    assert "Dice 1.0000" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "eval").iterdir()} <= set(REPORT_FILES)


@pytest.mark.parametrize("obstacle", ["summary.json", "dice.png", "cases.csv"])
def test_evaluate_refuses_a_folder_where_the_report_writes_a_file_before_any_work(tiny_cases, predictions, tmp_path,
                                                                                  capsys, obstacle):
    out = tmp_path / "eval"
    (out / obstacle).mkdir(parents=True)
    assert _evaluate(tiny_cases, predictions, out, "--overwrite") == 1
    _one_line(capsys, "livervolumetry-train", f"{out / obstacle}: is a folder where the report writes a file")
    assert [p.name for p in out.iterdir()] == [obstacle]


def test_evaluate_refuses_an_output_below_a_file_before_any_work(tiny_cases, predictions, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert _evaluate(tiny_cases, predictions, tmp_path / "afile" / "sub") == 1
    err = capsys.readouterr()
    assert "cannot be created:" in err.err and "afile is a file" in err.err and "Traceback" not in err.err
    assert "Dice" not in err.out  # no case was evaluated first


def test_evaluate_says_when_groups_are_too_small_for_the_group_test(tmp_path):
    from LiverVolumetryTraining.evaluate import CaseResult, EvaluationResult, summarize

    def case(name: str, group: str, dice: float) -> CaseResult:
        return CaseResult(case=name, group=group, dice=dice, hd95_mm=1.0, assd_mm=0.5, volume_auto_ml=1000.0,
                          volume_ref_ml=1010.0, source="file", seconds=0.0)

    small = EvaluationResult(cases=[case("a", "x", 0.9), case("b", "y", 0.8), case("c", "y", 0.85)], automated="",
                             radiomics=False)
    summarize(small)
    assert any("cannot reach p < 0.05 (its smallest possible p is 0.667)" in n for n in small.notes)
    enough = EvaluationResult(cases=[case(str(k), "xy"[k % 2], 0.8 + k / 100) for k in range(8)], automated="",
                              radiomics=False)
    summarize(enough)
    assert enough.mann_whitney is not None and not any("cannot reach" in n for n in enough.notes)
    assert math.isfinite(enough.mann_whitney.p_value)


def test_evaluate_refuses_an_unknown_device(tiny_cases, predictions, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        _evaluate(tiny_cases, predictions, tmp_path / "eval", "--device", "tpu")
    assert stopped.value.code == 2 and "argument --device: must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
