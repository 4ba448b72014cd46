"""Unusable training inputs are refused in one line naming the case and the file, in
check, evaluate, train and the converters alike: truncated, vector, 2D/4D and NaN
labels, manifest liver labels that are not whole numbers, recipe values of the wrong
kind, and a LiverHccSeg label without the liver value. Also the evaluation report's
handling of cases without a group, undefined distances and an earlier run's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.errors import InputError
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.dataset import CaseEntry, load_entry
from LiverVolumetryTraining.evaluate import CaseResult, EvaluationResult, FeatureICC, summarize
from LiverVolumetryTraining.evaluate_report import report_markdown, write_report
from LiverVolumetryTraining.liverhccseg import convert_liverhccseg
from LiverVolumetryTraining.manifest import check_entries, read_manifest
from LiverVolumetryTraining.recipes import load_recipe

SPACING = (1.5, 1.5, 3.0)


def write(array: np.ndarray, path: Path, vector: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(SPACING[: image.GetDimension()] + (1.0,) * (image.GetDimension() - 3))
    sitk.WriteImage(image, str(path))
    return path


def liver_box(shape=(12, 16, 16), value: int = 1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[3:9, 4:12, 4:12] = value
    return label


def write_image(path: Path, shape=(12, 16, 16)) -> Path:
    image = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32) + 80 * liver_box(shape)
    return write(image, path)


def bad_label(kind: str, folder: Path) -> Path:
    """A label for a (12, 16, 16) image that no reader should accept as it is."""
    label = liver_box()
    if kind == "truncated .nii":
        path = write(label, folder / "label.nii")
        path.write_bytes(path.read_bytes()[:-1000])
    elif kind == "truncated .nii.gz":  # cut inside the header
        noisy = (np.random.default_rng(1).random(label.shape) < 0.5).astype(np.uint8)
        path = write(noisy, folder / "label.nii.gz")
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "vector":
        path = write(np.stack([label] * 3, axis=-1), folder / "label.nii.gz", vector=True)
    elif kind == "2D":
        path = write(label[5], folder / "label.nii.gz")
    elif kind == "4D":
        path = write(np.stack([label] * 2), folder / "label.nii.gz")
    elif kind.startswith("fraction"):
        values = label.astype(np.float32)
        values[label == 1] = 1.5  # cast to integers, it would count as liver 1
        path = write(values, folder / f"label{kind[8:]}")
    else:
        values = label.astype(np.float32)
        values[0, 0, 0] = np.nan
        path = write(values, folder / f"label{kind[3:]}")
    return path


@pytest.mark.parametrize("kind, says", [
    ("truncated .nii", "label is truncated: "), ("truncated .nii.gz", "label is truncated: "),
    ("vector", "label has 3 components per voxel; a scalar label map is needed"),
    ("2D", "label is 2D (size 16x16); a 3D volume is needed"),
    ("4D", "label is 4D (size 16x16x12x2); a single 3D volume is needed"),
    ("NaN.nrrd", "label has 1 voxel(s) with NaN or infinite values"),
    ("NaN.nii.gz", "label has 1 voxel(s) with NaN or infinite values"),
    ("fraction.nrrd", "label has 384 voxel(s) with values that are not whole numbers (e.g. 1.5); a label map"),
])
def test_an_unusable_label_is_refused_in_one_line_everywhere(tmp_path, capsys, kind, says):
    data = tmp_path / "data"
    image = write_image(data / "image_1.nii.gz")
    label = bad_label(kind, tmp_path / "bad")
    label = label.rename(data / label.name.replace("label", "label_1"))
    entry = CaseEntry("1", image, label)
    expected = f"{label}: case 1: {says}"
    assert check_entries([entry])[0].startswith(expected)
    assert check_entries([entry], full=False)[0].startswith(expected)
    with pytest.raises(InputError) as error:  # what train, evaluate and export read a case with
        load_entry(entry)
    assert str(error.value).startswith(expected)
    assert main(["check", "--data", str(data)]) == 1
    assert capsys.readouterr().out.startswith(expected)
    assert main(["convert", "pairs", str(data), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert f"skipped {expected}" in captured.out and "no usable image/label cases found" in captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity", '"inf"', "1.5", '"2.5"', "true"])
def test_a_liver_label_that_is_not_a_whole_number_is_refused(tmp_path, value):
    path = tmp_path / "m.json"
    path.write_text(f'[{{"image": "a.nii.gz", "label": "b.nii.gz", "liver_label": {value}}}]')
    with pytest.raises(InputError, match=r"m\.json: case 1: liver_label .* is not a whole number"):
        read_manifest(path)
    (tmp_path / "m.csv").write_text(f"image,label,liver_label\na.nii.gz,b.nii.gz,{value.strip(chr(34))}\n")
    with pytest.raises(InputError, match=r"m\.csv: line 2: liver_label .* is not a whole number"):
        read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("override, says", [
    ({"base": "volumetry-net", "optimizer": {"lr": "x"}}, "recipe key 'optimizer.lr' must be a number, not \"x\""),
    ({"base": "liver-mri", "stages": [{"iterations": 2.5}]},
     "recipe key 'stages[1].iterations' must be a whole number, not 2.5"),
    ({"base": "volumetry-net", "patch_size": [16, "16", 16]},
     "recipe key 'patch_size[1]' must be a whole number, not \"16\""),
    ({"base": "liver-mri", "organ_targets": 1}, "recipe key 'organ_targets' must be true or false, not 1"),
])
def test_a_recipe_value_of_the_wrong_kind_is_refused_naming_the_file_and_key(tmp_path, override, says):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(override))
    with pytest.raises(InputError) as error:
        load_recipe(str(path))
    assert str(error.value) == f"{path}: {says}"
    fine = {"base": "liver-mri", "augmentation": {"gamma": 0.5}, "optimizer": {"lr": 1}, "stages": [{"iterations": 3}]}
    path.write_text(json.dumps(fine))
    assert load_recipe(str(path))["optimizer"]["lr"] == 1


@pytest.mark.parametrize("label_value, stored, says", [
    (2, 1, "no voxel has the liver label 2; it holds label(s) 1 (give the liver's with --label-value, "
           "or the manifest's liver_label)"),  # wrong --label-value
    (None, 0, "no voxel has the liver label 1; the label is empty"),  # a label without liver
])
def test_liverhccseg_refuses_a_label_without_the_liver_value(tmp_path, label_value, stored, says):
    patient = tmp_path / "src" / "HCC_001"
    write_image(patient / "art_pv.nii.gz")
    label = write(liver_box(value=stored), patient / "rater1_liver.nii.gz")
    with pytest.raises(InputError) as error:
        convert_liverhccseg(tmp_path / "src", tmp_path / "out", label_value)
    assert str(error.value) == f"{label}: case HCC_001: {says}"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- evaluation report


def case(name: str, group: str, dice: float, hd95: float = 1.0) -> CaseResult:
    return CaseResult(case=name, group=group, dice=dice, hd95_mm=hd95, assd_mm=hd95 / 2, volume_auto_ml=1000 * dice,
                      volume_ref_ml=1000.0, source="test", seconds=0.0)


def test_cases_without_a_group_are_left_out_of_the_group_comparison():
    result = EvaluationResult(cases=[case("1", "A", 0.9), case("2", "A", 0.8), case("3", "", 0.1),
                                     case("4", "B", 0.7), case("5", "B", 0.6)], automated="test", radiomics=False)
    summarize(result)
    assert (result.mann_whitney.group_a, result.mann_whitney.group_b) == ("A", "B")
    assert (result.mann_whitney.n_a, result.mann_whitney.n_b) == (2, 2)
    assert "1 case(s) without a group are left out of the group comparison" in result.notes
    one_group = EvaluationResult(cases=[case("1", "A", 0.9), case("2", "", 0.1), case("3", "A", 0.8)],
                                 automated="test", radiomics=False)
    summarize(one_group)
    assert one_group.mann_whitney is None  # "A" against "no group" is no comparison


def test_mean_distances_say_how_many_cases_they_cover_and_an_earlier_runs_radiomics_file_goes(tmp_path):
    cases = [case(str(k), "", 0.9, hd95=2.0) for k in range(4)] + [case("4", "", 0.0, hd95=math.nan)]
    result = EvaluationResult(cases=cases, automated="test", radiomics=True)
    summarize(result)
    report = report_markdown(result)
    assert "- HD95: 2.00 ± 0.00 (n = 4 of 5; 1 left out: empty automated mask) mm" in report
    assert "- ASSD: 1.00 ± 0.00 (n = 4 of 5; 1 left out: empty automated mask) mm" in report
    assert "- Dice: 0.7200 ± 0.4025\n" in report  # Dice is defined for every case
    result.feature_iccs = [FeatureICC("original_shape_VoxelVolume", 0.99, 0.95, 1.0, 5)]
    write_report(result, tmp_path)
    assert (tmp_path / "radiomics_icc.csv").is_file()
    result.radiomics, result.feature_iccs = False, []
    names = {p.name for p in write_report(result, tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert not (tmp_path / "radiomics_icc.csv").exists()


def test_too_few_cases_for_a_radiomics_icc_write_no_header_only_file(tmp_path):
    # Before, one or two cases gave a radiomics_icc.csv with a header and no rows.
    result = EvaluationResult(cases=[case("1", "", 0.9)], automated="test", radiomics=True)
    summarize(result)
    names = {p.name for p in write_report(result, tmp_path)}
    assert "radiomics_icc.csv" not in names and not (tmp_path / "radiomics_icc.csv").exists()
    assert "radiomics ICCs not computed: need at least 3 cases" in (tmp_path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_a_corrupt_image_is_named_in_the_engines_words_by_convert_and_check(tmp_path, capsys, suffix):
    data = tmp_path / "data"
    write_image(data / "image_1.nii.gz")
    write(liver_box(), data / "label_1.nii.gz")
    (data / f"image_2{suffix}").write_bytes(np.random.default_rng(2).bytes(300))
    write(liver_box(), data / "label_2.nii.gz")
    says = (f"{data / f'image_2{suffix}'}: case 2: image cannot be read: not a valid {suffix} file, "
            "or the file is corrupt")
    assert main(["convert", "pairs", str(data), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"skipped {says}" in out and "wrote 1 case to" in out and "ImageIO" not in out
    assert main(["check", "--data", str(data)]) == 1
    assert says in capsys.readouterr().out


def test_odd_case_and_group_names_keep_the_report_table_and_plots_intact(tmp_path):
    # A '|' split the table row into more cells than the header, '<b>' went through as
    # HTML, and a '$' in a name made matplotlib's mathtext fail after half the files.
    cases = [case("a|b", "int|ext", 0.9), case("$a^$", "<b>x", 0.8), case("c", "int|ext", 0.7)]
    result = EvaluationResult(cases=cases, automated="test", radiomics=False)
    summarize(result)
    names = {p.name for p in write_report(result, tmp_path)}
    assert {"bland_altman.png", "dice.png", "report.md"} <= names
    rows = [line for line in (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and "Dice" not in line]
    assert len(rows) == 3 and "<b>" not in "\n".join(rows)
    for row in rows:
        assert len(row.replace("\\|", "").split("|")) == 10, row  # 8 cells between 9 bars
    assert rows[0].startswith("| a\\|b | int\\|ext | 0.9000 |")


def test_a_plot_that_fails_leaves_no_report_files(tmp_path, monkeypatch):
    import LiverVolumetryTraining.evaluate_report as report

    def fails(result):
        raise ValueError("cannot draw")

    monkeypatch.setattr(report, "render_plots", fails)
    result = EvaluationResult(cases=[case("1", "", 0.9), case("2", "", 0.8)], automated="test", radiomics=False)
    summarize(result)
    with pytest.raises(ValueError):
        write_report(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()
