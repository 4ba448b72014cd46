"""Every bad input: one-line error naming the file and the cause, exit 1, no output at all.

The table below is the list of bad inputs the tool promises to handle (reader-level
details are in test_imageio.py, test_dicom.py and test_masks.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib import imageio
from LiverVolumetryLib.cli import main


def _write(array: np.ndarray, path: Path, spacing=None, vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 10, (12, 16, 16)).astype(np.float32)


def missing(tmp: Path) -> Path:
    return tmp / "absent.nii.gz"


def garbage(tmp: Path) -> Path:
    path = tmp / "garbage.nii.gz"
    path.write_bytes(b"\x00this is not a NIfTI file" * 10)
    return path


def two_d(tmp: Path) -> Path:
    return _write(_volume()[0], tmp / "flat.nrrd")


def single_slice(tmp: Path) -> Path:
    return _write(_volume()[:1], tmp / "oneslice.nrrd")


def four_d(tmp: Path) -> Path:
    image = sitk.JoinSeries([sitk.GetImageFromArray(_volume(k)) for k in range(3)])
    sitk.WriteImage(image, str(tmp / "dynamic.nii.gz"))
    return tmp / "dynamic.nii.gz"


def rgb(tmp: Path) -> Path:
    return _write(np.stack([_volume(k) for k in range(3)], -1).astype(np.uint8), tmp / "colour.nrrd", vector=True)


def nan_voxels(tmp: Path) -> Path:
    array = _volume()
    array[3, 4, 5] = np.nan
    return _write(array, tmp / "nan.nrrd")


def inf_voxels(tmp: Path) -> Path:
    array = _volume()
    array[3, 4, 5] = np.inf
    return _write(array, tmp / "inf.nrrd")


def nan_voxels_nifti(tmp: Path) -> Path:
    """ITK's NIfTI reader turns NaN into 0, so this is caught in the file itself."""
    array = _volume().astype(np.float64)
    array[3, 4, 5] = np.nan
    return _write(array, tmp / "nan.nii.gz")


def inf_voxels_nifti(tmp: Path) -> Path:
    array = _volume()
    array[0, 0, 0] = -np.inf
    return _write(array, tmp / "inf.nii")


def sheared_grid(tmp: Path) -> Path:
    """y axis tilted 8.5 degrees towards x: NIfTI masks would square it and misplace the liver."""
    image = sitk.GetImageFromArray(_volume())
    tilt = np.radians(8.5)
    image.SetDirection([1, np.sin(tilt), 0, 0, np.cos(tilt), 0, 0, 0, 1])
    path = tmp / "sheared.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def constant(tmp: Path) -> Path:
    return _write(np.full((12, 16, 16), 7, np.float32), tmp / "constant.nrrd")


def liver_mask_as_scan(tmp: Path) -> Path:
    mask = np.zeros((12, 16, 16), np.uint8)
    mask[3:9, 4:12, 4:12] = 1
    return _write(mask, tmp / "case_liver.nii.gz")


def label_map_as_scan(tmp: Path) -> Path:
    """A TotalSegmentator-like label map: 12 organs, more labels than a mask has."""
    labels = np.zeros((20, 64, 64), np.uint8)
    for label in range(1, 13):
        labels[2:18, 8 + 4 * label:12 + 4 * label, 8:56] = label
    return _write(labels, tmp / "case_total.nii.gz")


def tiny_spacing(tmp: Path) -> Path:
    return _write(_volume(), tmp / "tiny_spacing.nrrd", spacing=(0.001, 0.001, 0.001))


def huge_spacing(tmp: Path) -> Path:
    return _write(_volume(), tmp / "huge_spacing.nrrd", spacing=(1.0, 1.0, 500.0))


def empty_dicom_folder(tmp: Path) -> Path:
    folder = tmp / "empty_series"
    folder.mkdir()
    return folder


def unsupported_suffix(tmp: Path) -> Path:
    path = tmp / "scan.txt"
    path.write_text("hello")
    return path


BAD_INPUTS = {
    # name: (make the input, a word of the expected cause)
    "missing file": (missing, "not exist"),
    "unreadable file": (garbage, "read"),
    "2D image": (two_d, "2D"),
    "single slice": (single_slice, "2D"),
    "4D image": (four_d, "4D"),
    "multi-component image": (rgb, "component"),
    "NaN voxels": (nan_voxels, "NaN"),
    "inf voxels": (inf_voxels, "infinite"),
    "NaN voxels in NIfTI": (nan_voxels_nifti, "NaN"),
    "inf voxels in NIfTI": (inf_voxels_nifti, "infinite"),
    "sheared voxel grid": (sheared_grid, "sheared"),
    "constant image": (constant, "constant"),
    "a mask given as the scan": (liver_mask_as_scan, "holds only 2 distinct values (0, 1): a mask or label map"),
    "a label map given as the scan": (label_map_as_scan, "is a label map, not a scan: 13 or more distinct"),
    "absurd small spacing": (tiny_spacing, "spacing"),
    "absurd large spacing": (huge_spacing, "spacing"),
    "empty DICOM folder": (empty_dicom_folder, "DICOM"),
    "unsupported file type": (unsupported_suffix, "unsupported file type"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gives_one_line_error_and_no_output(name, tmp_path, capsys):
    make, cause = BAD_INPUTS[name]
    path = make(tmp_path)
    out = tmp_path / "out"
    code = main(["segment", str(path), "-o", str(out), "--progress", "text"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert path.name in err, err
    cause_text = err.split(path.name, 1)[1]  # the file name itself may hold the word
    assert cause.lower() in cause_text.lower(), err
    assert not out.exists() or not any(out.iterdir()), "no partial output"


def test_image_too_large_for_memory(tmp_path, capsys, monkeypatch):
    path = _write(_volume(), tmp_path / "big.nrrd")
    monkeypatch.setattr(imageio, "available_memory_bytes", lambda: 10_000)
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "big.nrrd" in err and "memory" in err
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_keeps_an_existing_table_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "measurements.csv").write_text("case,volume_ml\nold,1000\n")
    assert main(["segment", str(missing(tmp_path)), "-o", str(out)]) == 1
    assert (out / "measurements.csv").read_text() == "case,volume_ml\nold,1000\n"


@pytest.mark.parametrize("arguments", [["segment", "", "-o", "out"], ["segment", "scan.nii.gz", "-o", ""],
                                       ["measure", "scan.nii.gz", " ", "-o", "out"], ["demo", "-o", ""],
                                       ["segment", "scan.nii.gz", "-o", "out", "--model", ""],
                                       ["segment", "scan.nii.gz", "-o", "out", "--series", " "]],
                         ids=["input", "output", "mask", "demo output", "model", "series"])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, capsys, arguments):
    """What an unset shell variable gives: "" would be the current folder (segment every scan in it,
    or write into it), and --model "" the bundled model."""
    monkeypatch.chdir(tmp_path)
    _write(_volume(), tmp_path / "scan.nii.gz", spacing=(3.0, 3.0, 5.0))
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    assert "(an unset shell variable?)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_a_tilde_in_the_output_folder_is_the_home_folder(tmp_path, monkeypatch):
    from LiverVolumetryLib.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    args = build_parser().parse_args(["segment", "~/scan.nii.gz", "-o", "~/results"])
    assert args.output == str(tmp_path / "results") and args.inputs == [str(tmp_path / "scan.nii.gz")]
