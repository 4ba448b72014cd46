"""``livervolumetry-train evaluate``: surface metrics, agreement statistics, the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import OBLIQUE, rotation_direction
from scipy.spatial.distance import cdist

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.outputs import write_segmentation
from LiverVolumetryTraining.agreement import bland_altman, icc_agreement, mann_whitney
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.surface_metrics import surface, surface_distances, surface_metrics

SPACING = (0.7, 1.3, 3.0)
ROTATED = rotation_direction((20.0, -35.0, 50.0), flips=(1, -1, 1))


def grid_mask(array_zyx: np.ndarray, spacing=SPACING, direction=ROTATED, origin=(12.0, -40.0, 7.5)) -> sitk.Image:
    """A uint8 mask image from a numpy (z, y, x) array on the given grid."""
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def physical_surface_points(mask: sitk.Image) -> np.ndarray:
    """Physical points of the surface voxels, through SimpleITK's own index->point mapping."""
    voxels = np.argwhere(surface(sitk.GetArrayFromImage(mask) > 0))[:, ::-1]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in v]) for v in voxels])


# --------------------------------------------------------------------------- surface metrics

@pytest.mark.parametrize("axis_xyz", [0, 1, 2])
@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), ROTATED], ids=["axial", "rotated"])
def test_plates_shifted_along_each_axis_are_shift_times_spacing_apart(axis_xyz, direction):
    # Two one-voxel-thick plates, the second shifted by 3 voxels along one axis: every
    # surface voxel is exactly 3 x spacing[axis] mm from the other plate.
    shape = (8, 9, 10)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    axis = 2 - axis_xyz  # numpy order
    index_a, index_b = [slice(1, -1)] * 3, [slice(1, -1)] * 3
    index_a[axis], index_b[axis] = 2, 5
    a[tuple(index_a)], b[tuple(index_b)] = True, True
    metrics = surface_metrics(grid_mask(a, direction=direction), grid_mask(b, direction=direction))
    expected = 3 * SPACING[axis_xyz]
    assert metrics.dice == 0.0
    assert metrics.hd95_mm == pytest.approx(expected, abs=1e-9)
    assert metrics.assd_mm == pytest.approx(expected, abs=1e-9)


def test_concentric_spheres_are_radius_difference_apart():
    # Balls of radius 12 and 18 mm (physical) on an anisotropic oblique grid: surface
    # distances are 6 mm up to the voxelisation (< one voxel diagonal of error).
    spacing, size = (1.0, 1.5, 2.0), (50, 36, 28)  # x, y, z
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    points = (index * spacing) @ np.asarray(OBLIQUE).reshape(3, 3).T
    radius = np.linalg.norm(points - points.mean(0), axis=1).reshape(size).transpose(2, 1, 0)  # numpy z, y, x
    small, large = (grid_mask(radius <= r, spacing, OBLIQUE, (0.0, 0.0, 0.0)) for r in (12.0, 18.0))
    metrics = surface_metrics(small, large)
    assert metrics.hd95_mm == pytest.approx(6.0, abs=1.5)
    assert metrics.assd_mm == pytest.approx(6.0, abs=1.0)
    assert metrics.dice == pytest.approx(2 * 12**3 / (12**3 + 18**3), abs=0.03)


@pytest.mark.parametrize("direction", [ROTATED, (1.0, 0.4, 0.0, 0.0, 1.0, 0.2, 0.0, 0.0, 1.0)],
                         ids=["rotated", "sheared"])
def test_distances_match_brute_force_in_physical_space(direction):
    rng = np.random.default_rng(3)
    a = np.zeros((9, 14, 16), bool)
    b = np.zeros_like(a)
    a[2:7, 3:11, 2:12] = True
    b[1:6, 5:13, 4:15] = True
    a &= rng.random(a.shape) > 0.15  # ragged surfaces, holes included
    first, second = grid_mask(a, direction=direction), grid_mask(b, direction=direction)
    forward, backward = surface_distances(first, second)
    pa, pb = physical_surface_points(first), physical_surface_points(second)
    expected_forward, expected_backward = cdist(pa, pb).min(1), cdist(pb, pa).min(1)
    np.testing.assert_allclose(np.sort(forward), np.sort(expected_forward), atol=1e-6)
    np.testing.assert_allclose(np.sort(backward), np.sort(expected_backward), atol=1e-6)
    metrics = surface_metrics(first, second)
    assert metrics.hd95_mm == pytest.approx(max(np.percentile(expected_forward, 95),
                                                np.percentile(expected_backward, 95)))
    pooled = np.concatenate([expected_forward, expected_backward])
    assert metrics.assd_mm == pytest.approx(pooled.mean())


def test_identical_empty_and_mismatched_masks():
    a = np.zeros((6, 7, 8), bool)
    a[1:5, 2:6, 1:7] = True
    mask, empty = grid_mask(a), grid_mask(np.zeros_like(a))
    same = surface_metrics(mask, grid_mask(a))
    assert (same.dice, same.hd95_mm, same.assd_mm) == (1.0, 0.0, 0.0)
    one_empty = surface_metrics(empty, mask)
    assert one_empty.dice == 0.0 and math.isnan(one_empty.hd95_mm) and math.isnan(one_empty.assd_mm)
    assert surface_metrics(empty, empty).dice == 1.0
    moved = grid_mask(a, origin=(13.0, -40.0, 7.5))
    with pytest.raises(InputError, match="origin"):
        surface_metrics(mask, moved)
    # A mask touching the image edge has its surface there (outside counts as background).
    full = np.ones((3, 4, 5), bool)
    assert surface(full).sum() == full.size - 1 * 2 * 3


# --------------------------------------------------------------------------- agreement

def test_icc_and_bland_altman_on_identical_ratings():
    values = [1210.0, 1480.0, 1650.0, 1890.0, 2020.0]
    icc = icc_agreement(values, values)
    assert icc.icc == pytest.approx(1.0) and icc.n == 5
    agreement = bland_altman(values, values)
    assert (agreement.bias, agreement.sd, agreement.loa_low, agreement.loa_high) == (0.0, 0.0, 0.0, 0.0)


def test_constant_offset_gives_bias_and_lowers_absolute_agreement_icc():
    reference = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    automated = reference + 1.0
    agreement = bland_altman(automated, reference)
    assert agreement.bias == pytest.approx(1.0) and agreement.sd == pytest.approx(0.0, abs=1e-12)
    assert agreement.loa_low == pytest.approx(1.0) and agreement.loa_high == pytest.approx(1.0)
    # ICC(A,1) with a pure offset c: var / (var + c^2 / 2) = 2.5 / 3 (consistency ICC would be 1).
    assert icc_agreement(automated, reference).icc == pytest.approx(2.5 / 3.0)


def test_bland_altman_limits_and_too_few_cases():
    agreement = bland_altman([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    assert agreement.bias == pytest.approx(2.0) and agreement.sd == pytest.approx(1.0)
    assert agreement.loa_low == pytest.approx(2.0 - 1.96) and agreement.loa_high == pytest.approx(2.0 + 1.96)
    assert icc_agreement([1.0, 2.0], [1.0, 2.1]) is None
    assert bland_altman([1.0], [2.0]) is None


def test_mann_whitney_on_separable_groups():
    dice = [0.95, 0.96, 0.97, 0.98, 0.70, 0.75, 0.80, 0.85]
    groups = ["b", "b", "b", "b", "a", "a", "a", "a"]
    result = mann_whitney(dice, groups)
    assert (result.group_a, result.group_b, result.n_a, result.n_b) == ("a", "b", 4, 4)
    assert result.u == 0.0  # every 'a' value is below every 'b' value
    assert result.p_value == pytest.approx(2 / 70)  # exact two-sided p: 2 of C(8, 4) orderings
    assert mann_whitney(dice, ["a"] * 8) is None
    assert mann_whitney(dice, ["a", "b", "c", "a", "b", "c", "a", "b"]) is None


# --------------------------------------------------------------------------- end to end

E2E_SPACING = (2.0, 2.5, 4.0)
BOX = (slice(3, 11), slice(4, 16), slice(5, 20))  # numpy (z, y, x): 8 x 12 x 15 voxels = 1440
VOXEL_ML = float(np.prod(E2E_SPACING)) / 1000.0


def _write(image_zyx: np.ndarray, path: Path, direction, dtype=np.uint8) -> None:
    image = sitk.GetImageFromArray(image_zyx.astype(dtype))
    image.SetSpacing(E2E_SPACING)
    image.SetDirection(direction)
    image.SetOrigin((-30.0, 20.0, 10.0))
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Four 24x20x14 cases (one on an oblique grid), a box liver, and predictions:
    0 exact, 1 shifted by one voxel along x, 2 one voxel larger on every side, 3 empty."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "data").mkdir()
    (root / "pred").mkdir()
    rng = np.random.default_rng(0)
    reference = np.zeros((14, 20, 24), bool)
    reference[BOX] = True
    shifted = np.roll(reference, 1, axis=2)
    grown = np.zeros_like(reference)
    grown[2:12, 3:17, 4:21] = True
    predictions = [reference, shifted, grown, np.zeros_like(reference)]
    for k, prediction in enumerate(predictions):
        direction = OBLIQUE if k == 1 else (1, 0, 0, 0, 1, 0, 0, 0, 1)
        image = np.where(reference, 300.0, 80.0) + rng.normal(0, 20, reference.shape) + 5 * k
        _write(image, root / "data" / f"image_{k}.nii.gz", direction, np.float32)
        _write(reference, root / "data" / f"label_{k}.nii.gz", direction)
        name = f"{k}_liver.nii.gz" if k == 2 else f"{k}.nii.gz"
        _write(prediction, root / "pred" / name, direction)
    rows = ["image,label,case,group"] + [f"data/image_{k}.nii.gz,data/label_{k}.nii.gz,{k},{'AB'[k // 2]}"
                                         for k in range(4)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def test_cli_evaluate_with_predictions_writes_correct_numbers(cases, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", "--manifest", str(cases / "manifest.csv"), "--predictions", str(cases / "pred"),
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ("cases.csv", "radiomics_icc.csv", "summary.json", "report.md", "bland_altman.png", "dice.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = _rows(out / "cases.csv")
    box = 8 * 12 * 15
    grown = 10 * 14 * 17
    assert float(rows["0"]["dice"]) == 1.0 and float(rows["0"]["hd95_mm"]) == 0.0
    assert float(rows["1"]["dice"]) == pytest.approx(14 / 15, abs=1e-6)  # shift by 1 of 15 voxels along x
    assert float(rows["1"]["hd95_mm"]) == pytest.approx(E2E_SPACING[0])  # ends of the box: 1 x-step apart
    assert float(rows["2"]["dice"]) == pytest.approx(2 * box / (box + grown), abs=1e-6)
    # Grown by one voxel on every side: the grown box's x-running edges (> 5 % of its surface)
    # are one z and one y step from the reference's edges; the faces are one step apart.
    assert float(rows["2"]["hd95_mm"]) == pytest.approx(math.hypot(E2E_SPACING[2], E2E_SPACING[1]), abs=1e-4)
    assert E2E_SPACING[0] < float(rows["2"]["assd_mm"]) < E2E_SPACING[2]
    assert float(rows["3"]["dice"]) == 0.0 and rows["3"]["hd95_mm"] == "nan"
    for case, count in (("0", box), ("1", box), ("2", grown), ("3", 0)):
        assert float(rows[case]["volume_auto_ml"]) == pytest.approx(count * VOXEL_ML, abs=1e-3)
        assert float(rows[case]["volume_ref_ml"]) == pytest.approx(box * VOXEL_ML, abs=1e-3)
    assert [rows[c]["group"] for c in "0123"] == ["A", "A", "B", "B"]
    # These toy livers hold a few mL: the engine's plausibility check names every one.
    assert rows["3"]["warnings"] == "the mask is empty"
    assert all("is below 500 mL" in rows[c]["warnings"] for c in "012")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 4 and summary["dice"]["mean"] == pytest.approx(
        np.mean([float(rows[c]["dice"]) for c in "0123"]), abs=1e-4)
    volumes = [[float(rows[c][k]) for c in "0123"] for k in ("volume_auto_ml", "volume_ref_ml")]
    assert summary["volume"]["icc"] == pytest.approx(icc_agreement(*volumes).icc, abs=1e-4)
    bias = np.mean([(count - box) * VOXEL_ML for count in (box, box, grown, 0)])
    assert summary["volume"]["bland_altman"]["bias"] == pytest.approx(bias, abs=0.01)
    assert summary["mann_whitney_dice"]["groups"] == ["A", "B"] and summary["mann_whitney_dice"]["n"] == [2, 2]
    assert summary["radiomics"]["n_features"] > 50
    assert any("no radiomics for the automated mask" in note for note in summary["notes"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Mann-Whitney" in report
    assert f"{summary['volume']['icc']:.2f}" in report and f"{summary['volume']['bland_altman']['bias']:+.1f}" in report
    assert sorted(summary["plausibility_warnings"]) == list("0123") and "4 of 4 case(s) flagged" in report
    # The output folder is not overwritten without --overwrite.
    assert main(["evaluate", "--data", str(cases / "data"), "--predictions", str(cases / "pred"), "-o", str(out),
                 "--no-radiomics"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_cli_evaluate_with_a_model_and_too_few_cases(cases, tiny_bundle, tmp_path, capsys):
    data = tmp_path / "two"
    data.mkdir()
    for k in (0, 2):
        for kind in ("image", "label"):
            (data / f"{kind}_{k}.nii.gz").symlink_to(cases / "data" / f"{kind}_{k}.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    code = main(["evaluate", "--data", str(data), "--model", str(tiny_bundle), "--no-radiomics", "--device", "cpu",
                 "-o", str(out), "--overwrite"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 2 and summary["volume"]["icc"] is None and summary["radiomics"] is None
    assert any("ICC not computed" in note for note in summary["notes"])
    assert "tiny-test" in summary["automated"] and not (out / "radiomics_icc.csv").exists()


@pytest.mark.parametrize("problem", ["missing label", "no liver", "grid mismatch", "missing prediction"])
def test_cli_evaluate_bad_entry_is_one_line_error(cases, tmp_path, capsys, problem):
    data = tmp_path / "data"
    data.mkdir()
    for kind in ("image", "label"):
        (data / f"{kind}_7.nii.gz").symlink_to(cases / "data" / f"{kind}_0.nii.gz")
    label = data / "label_7.nii.gz"
    if problem == "missing label":
        rows = f"image,label,case\n{data / 'image_7.nii.gz'},{tmp_path / 'gone.nii.gz'},7\n"
    else:
        rows = f"image,label,case\n{data / 'image_7.nii.gz'},{label},7\n"
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
        if problem == "no liver":
            array[:] = 0
        if problem in ("no liver", "grid mismatch"):
            edited = sitk.GetImageFromArray(array)
            edited.CopyInformation(sitk.ReadImage(str(label)))
            if problem == "grid mismatch":
                edited.SetOrigin((0.0, 0.0, 0.0))
            label.unlink()
            sitk.WriteImage(edited, str(label))
    (tmp_path / "m.csv").write_text(rows)
    predictions = tmp_path / "empty_predictions" if problem == "missing prediction" else cases / "pred"
    predictions.mkdir(exist_ok=True)
    code = main(["evaluate", "--manifest", str(tmp_path / "m.csv"), "--predictions", str(predictions),
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "case 7" in err
    assert not (tmp_path / "out").exists()


def _label_map_predictions(cases: Path, tmp_path: Path, liver_values=(5, 5)) -> tuple[Path, Path]:
    """Cases 0 and 1 with predictions as label maps of another tool: the liver as
    ``liver_values[k]`` (0: missed) beside a second organ, label 2. Returns (data, predictions)."""
    data, predictions = tmp_path / "data", tmp_path / "pred"
    data.mkdir()
    predictions.mkdir()
    for k in (0, 1):
        for kind in ("image", "label"):
            (data / f"{kind}_{k}.nii.gz").symlink_to(cases / "data" / f"{kind}_{k}.nii.gz")
        reference = sitk.ReadImage(str(cases / "data" / f"label_{k}.nii.gz"))
        organs = sitk.GetArrayFromImage(reference).astype(np.uint8) * liver_values[k]
        organs[0, :4, :4] = 2
        labels = sitk.GetImageFromArray(organs)
        labels.CopyInformation(reference)
        sitk.WriteImage(labels, str(predictions / f"{k}.nii.gz"))
    return data, predictions


def test_cli_evaluate_multi_label_predictions_need_the_liver_label(cases, tmp_path, capsys):
    """Masks from another tool (TotalSegmentator: liver 5) beside a second organ (2)."""
    data, predictions = _label_map_predictions(cases, tmp_path)
    out = tmp_path / "out"
    arguments = ["evaluate", "--data", str(data), "--predictions", str(predictions), "--no-radiomics", "-o", str(out)]
    assert main(arguments) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "case 0" in err and "holds several labels (2, 5)" in err, err
    assert not out.exists()
    assert main(arguments + ["--prediction-label", "5"]) == 0, capsys.readouterr().err
    rows = _rows(out / "cases.csv")
    assert [float(rows[c]["dice"]) for c in "01"] == [1.0, 1.0]
    assert "label 5" in json.loads((out / "summary.json").read_text(encoding="utf-8"))["automated"]
    assert main(["evaluate", "--data", str(data), "--prediction-label", "5", "-o", str(tmp_path / "o2")]) == 1
    assert "--prediction-label needs --predictions" in capsys.readouterr().err


def test_cli_evaluate_a_prediction_that_missed_the_liver_label_is_an_empty_mask(cases, tmp_path, capsys):
    # A label map that holds other organs but not the liver (label 5) is a failed
    # segmentation, Dice 0, not an error stopping the whole cohort.
    data, predictions = _label_map_predictions(cases, tmp_path, liver_values=(5, 0))
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(data), "--predictions", str(predictions), "--no-radiomics",
                 "--prediction-label", "5", "-o", str(out)]) == 0, capsys.readouterr().err
    rows = _rows(out / "cases.csv")
    assert [float(rows[c]["dice"]) for c in "01"] == [1.0, 0.0]
    notes = json.loads((out / "summary.json").read_text(encoding="utf-8"))["notes"]
    assert any("1 prediction(s) hold other labels but no voxel of label 5" in n and n.endswith(": 1") for n in notes)


def _pairs_named_alike(cases: Path, root: Path) -> list[Path]:
    """Two cases whose scans are both named scan.nii.gz (as in TotalSegmentator or LiverHccSeg)."""
    folders = []
    for k in (0, 1):
        folder = root / f"patient{k}"
        folder.mkdir(parents=True)
        for kind, name in (("image", "scan"), ("label", "label")):  # copies: manifest paths are resolved
            shutil.copy(cases / "data" / f"{kind}_{k}.nii.gz", folder / f"{name}.nii.gz")
        folders.append(folder)
    rows = ["case,image,label"] + [f"p{k},{f}/scan.nii.gz,{f}/label.nii.gz" for k, f in enumerate(folders)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folders


def test_cli_evaluate_refuses_one_prediction_file_for_two_cases(cases, tmp_path, capsys):
    # Before, pred/scan_liver.nii.gz (named after the scan) was scored for both cases.
    _pairs_named_alike(cases, tmp_path)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "scan_liver.nii.gz").symlink_to(cases / "pred" / "0.nii.gz")
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(tmp_path / "manifest.csv"), "--predictions", str(tmp_path / "pred"),
                 "--no-radiomics", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the prediction of both case p0 and case p1" in err, err
    assert not out.exists()


def test_cli_evaluate_checks_every_prediction_grid_before_the_first_case(cases, tmp_path, capsys, monkeypatch):
    import LiverVolumetryTraining.evaluate as evaluate

    _pairs_named_alike(cases, tmp_path)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "p0.nii.gz").symlink_to(cases / "pred" / "0.nii.gz")
    coarse = sitk.ReadImage(str(cases / "pred" / "0.nii.gz"))
    coarse.SetSpacing([2 * s for s in coarse.GetSpacing()])
    sitk.WriteImage(coarse, str(tmp_path / "pred" / "p1.nii.gz"))
    monkeypatch.setattr(evaluate, "evaluate_case", lambda *a, **k: pytest.fail("evaluated before the checks"))
    assert main(["evaluate", "--manifest", str(tmp_path / "manifest.csv"), "--predictions", str(tmp_path / "pred"),
                 "--no-radiomics", "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "p1.nii.gz: case p1: does not match the image grid: spacing" in err and len(err.splitlines()) == 1, err


def test_cli_evaluate_reads_a_slicer_segmentation_where_there_is_no_other_prediction(cases, tmp_path):
    predictions = tmp_path / "pred"
    shutil.copytree(cases / "pred", predictions)
    (predictions / "0.nii.gz").unlink()  # case 0: corrected in Slicer and saved as a segmentation only
    reference = sitk.ReadImage(str(cases / "data" / "label_0.nii.gz"))
    write_segmentation(reference, predictions / "0.seg.nrrd")
    write_segmentation(sitk.Image(reference) * 0 + 1, predictions / "1_liver.seg.nrrd")  # beside 1.nii.gz: unused
    assert main(["evaluate", "--manifest", str(cases / "manifest.csv"), "--predictions", str(predictions),
                 "--no-radiomics", "-o", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / "cases.csv")
    assert float(rows["0"]["dice"]) == 1.0 and rows["0"]["source"].endswith("0.seg.nrrd")
    assert float(rows["1"]["dice"]) == pytest.approx(14 / 15, abs=1e-6)  # still its .nii.gz
