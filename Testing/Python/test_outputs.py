"""Tests of the result writers (mask, Slicer segmentation, measurements) and the QC picture."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from conftest import SHARED_DATA

from LiverVolumetryLib import outputs, qc
from LiverVolumetryLib.errors import InputError, OutputError
from LiverVolumetryLib.outputs import (
    LIVER_COLOR_RGB,
    LIVER_SEGMENT_NAME,
    LIVER_TERMINOLOGY,
    read_measurements,
    write_mask,
    write_measurements,
    write_segmentation,
)
from LiverVolumetryLib.qc import write_qc_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- helpers


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y and z."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique_mask() -> sitk.Image:
    """Small asymmetric mask on an oblique, flipped (left-handed), anisotropic, permuted grid."""
    direction = _rotation(0.3, -0.5, 0.8) @ np.diag([-1.0, 1.0, 1.0])
    direction = direction[:, [2, 0, 1]]
    array = np.zeros((6, 9, 11), dtype=np.uint8)  # [k, j, i]
    array[1:4, 2:7, 3:9] = 1
    array[5, 0, 10] = 1  # lone corner voxel: catches any axis mix-up
    array[2, 3, 4] = 7  # non-zero values other than 1 count as liver
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.7, 3.3))
    image.SetOrigin((12.5, -40.25, 101.0))
    image.SetDirection(direction.flatten().tolist())
    return image


def _assert_same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


def _synthetic_case(size=(40, 32, 16), spacing=(1.5, 1.5, 3.0)) -> tuple[sitk.Image, sitk.Image]:
    """LPS image with a bright blob and a 'liver' in the patient's right, anterior, upper part."""
    nx, ny, nz = size
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    pixels = (100 + 50 * np.sin(x / 3.0) + 10 * z).astype(np.float32)
    liver = (x < nx // 3) & (y < ny // 3) & (z >= nz // 2)
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, -20.0, 50.0))
    mask = sitk.GetImageFromArray(liver.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def _reoriented(image: sitk.Image) -> sitk.Image:
    """The same physical image stored on a permuted and flipped voxel grid."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


# --------------------------------------------------------------------------- masks


def test_write_mask_round_trip_keeps_geometry_and_binarises(tmp_path):
    mask = _oblique_mask()
    path = write_mask(mask, tmp_path / "case.nii.gz")
    assert path == tmp_path / "case.nii.gz"
    back = sitk.ReadImage(str(path))
    assert back.GetPixelID() == sitk.sitkUInt8
    _assert_same_geometry(back, mask)
    values = sitk.GetArrayFromImage(back)
    assert set(np.unique(values)) == {0, 1}
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(mask) != 0)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip-compressed
    assert list(tmp_path.iterdir()) == [path]


# -------------------------------------------------------------------- segmentation


def test_segmentation_round_trip_slicerio_same_voxels_in_physical_space(tmp_path):
    mask = _oblique_mask()
    path = write_segmentation(mask, tmp_path / "case.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))

    assert len(seg["segments"]) == 1
    segment = seg["segments"][0]
    assert segment["name"] == LIVER_SEGMENT_NAME == "Liver"
    assert segment["labelValue"] == 1
    np.testing.assert_allclose(segment["color"], np.array(LIVER_COLOR_RGB) / 255.0, atol=1e-5)
    assert segment["terminology"]["type"][:2] == ["SCT", "10200004"]
    assert segment["terminology"]["category"][:2] == ["SCT", "123037004"]
    header = path.read_bytes().split(b"\n\n")[0].decode()
    assert f"Segment0_Tags:=TerminologyEntry:{LIVER_TERMINOLOGY}|" in header
    assert "10200004" in LIVER_TERMINOLOGY

    liver = sitk.GetArrayFromImage(mask).transpose(2, 1, 0) != 0  # [i, j, k]
    voxels = seg["voxels"]
    assert voxels.shape == liver.shape
    assert set(np.unique(voxels)) == {0, 1}
    assert int(voxels.sum()) == int(liver.sum())
    # Every liver voxel of the mask is a liver voxel of the segmentation at the same point.
    lps_to_ijk = np.linalg.inv(seg["ijkToLPS"])
    for index in np.argwhere(liver):
        point = mask.TransformIndexToPhysicalPoint([int(v) for v in index])
        ijk = lps_to_ijk @ np.array([*point, 1.0])
        np.testing.assert_allclose(ijk[:3], index, atol=1e-6)
        assert voxels[tuple(index)] == 1
    nonzero = np.argwhere(liver)
    expected_extent = [int(v) for axis in range(3) for v in (nonzero[:, axis].min(), nonzero[:, axis].max())]
    assert segment["extent"] == expected_extent


def test_segmentation_read_by_simpleitk_lines_up_with_mask(tmp_path):
    mask = _oblique_mask()
    path = write_segmentation(mask, tmp_path / "case.seg.nrrd")
    back = sitk.ReadImage(str(path))
    _assert_same_geometry(back, mask, tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mask) != 0)


def test_segmentation_of_empty_mask_is_valid(tmp_path):
    mask = _oblique_mask() * 0
    seg = slicerio.read_segmentation(str(write_segmentation(mask, tmp_path / "empty.seg.nrrd")))
    assert [s["name"] for s in seg["segments"]] == ["Liver"]
    assert not seg["voxels"].any()


# ----------------------------------------------------- atomicity and overwrite rules


def _partial_then_fail(exception: BaseException):
    """A fake writer that leaves half a file at its destination, then fails."""

    def fake(*args, **kwargs):
        target = next(a for a in [*args, *kwargs.values()] if isinstance(a, (str, Path)))
        Path(target).write_bytes(b"half a file")
        raise exception

    return fake


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failing_mask_writer_leaves_nothing(tmp_path, monkeypatch, exception):
    monkeypatch.setattr(outputs.sitk, "WriteImage", _partial_then_fail(exception))
    expected = OutputError if isinstance(exception, RuntimeError) else KeyboardInterrupt
    with pytest.raises(expected) as raised:
        write_mask(_oblique_mask(), tmp_path / "case.nii.gz")
    assert list(tmp_path.iterdir()) == []
    if expected is OutputError:  # names the file asked for, not the hidden temporary one
        assert raised.value.path == str(tmp_path / "case.nii.gz") and ".part" not in str(raised.value)


def test_failing_segmentation_writer_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(slicerio, "write_segmentation", _partial_then_fail(OSError("disk full")))
    with pytest.raises(OutputError, match="case.seg.nrrd") as raised:
        write_segmentation(_oblique_mask(), tmp_path / "case.seg.nrrd")
    assert list(tmp_path.iterdir()) == []
    assert raised.value.path == str(tmp_path / "case.seg.nrrd") and ".part" not in str(raised.value)


def test_failing_qc_writer_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", _partial_then_fail(OSError("disk full")))
    image, mask = _synthetic_case()
    with pytest.raises(OutputError) as raised:
        write_qc_png(image, mask, tmp_path / "qc.png")
    assert list(tmp_path.iterdir()) == []
    assert raised.value.path == str(tmp_path / "qc.png") and ".part" not in str(raised.value)


def test_failing_measurement_writer_leaves_nothing(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError):
        write_measurements([{"case": "a"}], tmp_path / "m.csv", tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["case.nii.gz", "case.seg.nrrd", "qc.png"])
def test_overwrite_false_refuses_existing_file(tmp_path, name):
    image, mask = _synthetic_case()
    writers = {
        "case.nii.gz": lambda p, o: write_mask(mask, p, overwrite=o),
        "case.seg.nrrd": lambda p, o: write_segmentation(mask, p, overwrite=o),
        "qc.png": lambda p, o: write_qc_png(image, mask, p, overwrite=o),
    }
    path = tmp_path / name
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        writers[name](path, False)
    assert path.read_bytes() == b"precious"
    assert list(tmp_path.iterdir()) == [path]
    writers[name](path, True)
    assert path.read_bytes() != b"precious"


def test_measurements_overwrite_false_refuses_if_either_file_exists(tmp_path):
    csv_path, json_path = tmp_path / "m.csv", tmp_path / "m.json"
    json_path.write_text("precious")
    with pytest.raises(OutputError, match="m.json"):
        write_measurements([{"case": "a"}], csv_path, json_path, overwrite=False)
    assert json_path.read_text() == "precious"
    assert not csv_path.exists()


# -------------------------------------------------------------------- measurements


def test_measurements_round_trip_with_different_columns(tmp_path):
    rows = [
        {"case": "a", "volume_ml": 1520.25, "voxels": np.int64(7)},
        {"case": "b", "dice": float("nan"), "volume_ml": np.float32(2.5)},
        {"error": "no liver found", "case": "c", "path": Path("x/y.nii.gz"), "extra": None},
    ]
    csv_path, json_path = tmp_path / "out" / "m.csv", tmp_path / "out" / "m.json"
    write_measurements(rows, csv_path, json_path)

    with csv_path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["case", "volume_ml", "voxels", "dice", "error", "path", "extra"]
    assert table[1] == ["a", "1520.25", "7", "", "", "", ""]
    assert table[2] == ["b", "2.5", "", "", "", "", ""]
    assert table[3] == ["c", "", "", "", "no liver found", "x/y.nii.gz", ""]

    assert "NaN" not in json_path.read_text()
    back = read_measurements(json_path)
    assert back == [
        {"case": "a", "volume_ml": 1520.25, "voxels": 7},
        {"case": "b", "dice": None, "volume_ml": 2.5},
        {"error": "no liver found", "case": "c", "path": "x/y.nii.gz", "extra": None},
    ]
    assert isinstance(back[0]["voxels"], int)


def test_read_measurements_absent_and_broken(tmp_path):
    assert read_measurements(tmp_path / "missing.json") == []
    broken = tmp_path / "broken.json"
    broken.write_text("[{\"case\": ")
    with pytest.raises(InputError, match="broken.json"):
        read_measurements(broken)
    broken.write_text("{\"case\": \"a\"}")
    with pytest.raises(InputError, match="list"):
        read_measurements(broken)


def test_measurements_json_has_no_non_finite_numbers(tmp_path):
    rows = [{"a": math.inf, "b": [1.0, math.nan], "c": {"d": -math.inf}}]
    write_measurements(rows, tmp_path / "m.csv", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == [{"a": None, "b": [1.0, None], "c": {"d": None}}]


# ---------------------------------------------------------------------------- QC


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _liver_coloured_pixels(path: Path) -> int:
    from matplotlib.image import imread

    rgb = imread(str(path))[..., :3] * 255
    return int((np.abs(rgb - np.array(LIVER_COLOR_RGB)) < 25).all(axis=-1).sum())


def test_qc_png_is_a_sensible_picture(tmp_path):
    image, mask = _synthetic_case()
    path = write_qc_png(image, mask, tmp_path / "qc.png", title="case 1  ·  liver 12 mL")
    width, height = _png_size(path)
    assert 800 <= width <= 1700 and 400 <= height <= 1200
    assert _liver_coloured_pixels(path) > 50
    assert list(tmp_path.iterdir()) == [path]


def test_qc_png_with_empty_mask(tmp_path):
    image, mask = _synthetic_case()
    path = write_qc_png(image, mask * 0, tmp_path / "qc.png", title="case 1")
    assert _png_size(path)[0] > 800
    assert _liver_coloured_pixels(path) == 0


@pytest.mark.parametrize("reorient", [False, True])
def test_qc_panels_in_radiological_convention(reorient):
    image, mask = _synthetic_case()
    if reorient:
        image, mask = _reoriented(image), _reoriented(mask)
        assert image.GetDirection() != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    panels, window, has_liver = qc._panels(image, mask)
    assert has_liver and window[0] < window[1]
    assert len(panels) == 8
    axial, coronal = panels[:6], panels[6:]
    for panel in axial:  # liver in the patient's right (picture left), anterior (top)
        assert panel.pixel_size == pytest.approx((1.5, 1.5))
        assert panel.mask.shape == (32, 40)
        rows, cols = np.nonzero(panel.mask)
        assert rows.size and cols.max() < 20 and rows.max() < 16
    for panel in coronal:  # liver in the upper half (superior up), picture left
        assert panel.pixel_size == pytest.approx((1.5, 3.0))
        rows, cols = np.nonzero(panel.mask)
        assert rows.size and rows.max() < 8 and cols.max() < 20
        # brightness rises towards the head in the synthetic image: top row brightest
        assert panel.pixels[0].mean() > panel.pixels[-1].mean()


@pytest.mark.skipif(not (SHARED_DATA / "image_1.nii.gz").exists(), reason="CHAOS data not available")
def test_qc_png_real_case(tmp_path):
    image = sitk.ReadImage(str(SHARED_DATA / "image_1.nii.gz"))
    mask = sitk.Equal(sitk.ReadImage(str(SHARED_DATA / "label_1.nii.gz")), 1)
    path = write_qc_png(image, mask, tmp_path / "qc.png", title="image_1")
    assert _png_size(path)[0] <= 1700
    assert _liver_coloured_pixels(path) > 500


def test_the_table_json_is_written_before_the_csv(tmp_path, monkeypatch):
    """A run reads the JSON back: a kill between the two writes must leave the JSON, which resumes."""
    from LiverVolumetryLib import outputs

    written = []
    monkeypatch.setattr(outputs, "write_text_atomic",
                        lambda path, text, overwrite=True: written.append(Path(path).name))
    outputs.write_measurements([{"case": "a", "volume_ml": 1.0}], tmp_path / "m.csv", tmp_path / "m.json")
    assert written == ["m.json", "m.csv"]
