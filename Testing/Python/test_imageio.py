"""Tests for LiverVolumetryLib.imageio: reading, validating and refusing input images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (AXIAL, OBLIQUE, ORIENTATIONS, SAGITTAL, assert_read_fails_in_one_line, assert_same_geometry,
                      make_volume, write_image)

from LiverVolumetryLib import imageio
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import (
    case_id,
    estimate_memory_bytes,
    read_image,
    validate_image,
)

def write_nhdr(folder: Path, name: str, directions: str, spacing_ok: bool = True) -> Path:
    """A detached-header NRRD whose 'space directions' line is given verbatim."""
    data = folder / (name + ".raw")
    np.arange(60, dtype="<f4").tofile(data)
    header = folder / (name + ".nhdr")
    header.write_text(
        "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: 3 4 5\nspace directions: {directions}\nkinds: domain domain domain\n"
        f"endian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: {data.name}\n")
    return header


# --------------------------------------------------------------------------- bad inputs


def bad_missing_file(tmp_path, monkeypatch):
    return tmp_path / "nothing.nii.gz", {}


def bad_missing_folder(tmp_path, monkeypatch):
    return tmp_path / "no_such_dicom_folder", {}


def bad_garbage_nifti(tmp_path, monkeypatch):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"this is not an image\n" * 50)
    return path, {}


def bad_garbage_nrrd(tmp_path, monkeypatch):
    path = tmp_path / "garbage.nrrd"
    path.write_bytes(bytes(range(256)) * 4)
    return path, {}


def bad_truncated_nifti(tmp_path, monkeypatch):
    path = write_image(tmp_path, "cut.nii.gz", make_volume(dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, {}


def bad_truncated_in_header(tmp_path, monkeypatch):
    noise = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)  # compresses little
    path = write_image(tmp_path, "stub.nii.gz", sitk.GetImageFromArray(noise))
    path.write_bytes(path.read_bytes()[:300])  # ITK still reads the header from these bytes
    return path, {}


def bad_truncated_nrrd(tmp_path, monkeypatch):
    path = tmp_path / "cut.nrrd"
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.UseCompressionOff()
    writer.Execute(make_volume(dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    return path, {}


def bad_suffix(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n")
    return path, {}


def bad_2d(tmp_path, monkeypatch):
    return write_image(tmp_path, "flat.nrrd", sitk.Image(32, 32, sitk.sitkFloat32)), {}


def bad_single_slice(tmp_path, monkeypatch):
    return write_image(tmp_path, "one_slice.nii.gz", make_volume(shape=(1, 256, 256))), {}


def bad_4d(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume(), sitk.sitkFloat32)
    return write_image(tmp_path, "series4d.nii.gz", sitk.JoinSeries([volume, volume])), {}


def bad_vector(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume(), sitk.sitkFloat32)
    return write_image(tmp_path, "vector.mha", sitk.Compose([volume, volume])), {}


def bad_rgb(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume() / 4, sitk.sitkUInt8)
    return write_image(tmp_path, "colour.nrrd", sitk.Compose([volume, volume, volume])), {}


def bad_nan(tmp_path, monkeypatch):
    array = sitk.GetArrayFromImage(make_volume(dtype=np.float32))
    array[2, 3, 4] = np.nan
    return write_image(tmp_path, "nan.nrrd", sitk.GetImageFromArray(array)), {}


def bad_inf(tmp_path, monkeypatch):
    array = sitk.GetArrayFromImage(make_volume(dtype=np.float32))
    array[0, 0, 0] = np.inf
    return write_image(tmp_path, "inf.mha", sitk.GetImageFromArray(array)), {}


def bad_constant(tmp_path, monkeypatch):
    image = sitk.Image(8, 8, 8, sitk.sitkInt16) + 7
    return write_image(tmp_path, "constant.nrrd", image), {}


def bad_spacing_small(tmp_path, monkeypatch):
    return write_image(tmp_path, "tiny.nrrd", make_volume(spacing=(0.01, 1.0, 1.0))), {}


def bad_spacing_large(tmp_path, monkeypatch):
    return write_image(tmp_path, "huge_voxels.mha", make_volume(spacing=(1.0, 1.0, 100.0))), {}


def bad_direction(tmp_path, monkeypatch):
    return write_nhdr(tmp_path, "parallel", "(1,0,0) (1,0,0) (0,0,1)"), {}


def bad_mhd_without_raw(tmp_path, monkeypatch):
    path = write_image(tmp_path, "scan.mhd", make_volume())
    next(tmp_path.glob("scan.*raw")).unlink()
    return path, {}


def bad_nhdr_without_data(tmp_path, monkeypatch):
    path = write_nhdr(tmp_path, "detached", "(1,0,0) (0,1,0) (0,0,1)")
    data_line = next(line for line in path.read_text().splitlines() if line.startswith("data file:"))
    (tmp_path / data_line.split(":", 1)[1].strip()).unlink()
    return path, {}


def bad_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "available_memory_bytes", lambda: 100 * 1024**2)
    return write_image(tmp_path, "big.nii.gz", make_volume()), {}


BAD_INPUTS = [
    (bad_missing_file, "does not exist"),
    (bad_missing_folder, "does not exist"),
    (bad_garbage_nifti, "cannot be read"),
    (bad_garbage_nrrd, "cannot be read"),
    (bad_truncated_nifti, "truncated"),
    (bad_truncated_in_header, "truncated: it ends inside its header"),
    (bad_truncated_nrrd, "truncated"),
    (bad_suffix, "unsupported"),
    (bad_2d, "is 2d (size 32x32)"),
    (bad_single_slice, "is 2d (size 256x256x1)"),
    (bad_4d, "4d"),
    (bad_vector, "2 components"),
    (bad_rgb, "3 components"),
    (bad_nan, "nan"),
    (bad_inf, "infinite"),
    (bad_constant, "constant"),
    (bad_spacing_small, "spacing 0.01"),
    (bad_spacing_large, "spacing 1 x 1 x 100"),
    (bad_direction, "direction"),
    (bad_mhd_without_raw, "its data file scan.raw is missing"),
    (bad_nhdr_without_data, "its data file detached.raw is missing"),
    (bad_too_large, "gb of memory"),
]


@pytest.mark.parametrize("make, keyword", BAD_INPUTS,
                         ids=[make.__name__.removeprefix("bad_") for make, _ in BAD_INPUTS])
def test_bad_input_is_one_line_input_error(tmp_path, monkeypatch, make, keyword):
    path, kwargs = make(tmp_path, monkeypatch)
    assert_read_fails_in_one_line(path, kwargs, keyword)


def test_too_large_is_refused_before_pixels_are_read(tmp_path, monkeypatch):
    path, _ = bad_too_large(tmp_path, monkeypatch)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute",
                        lambda self: pytest.fail("pixels were read"))
    with pytest.raises(InputError, match="needs about 0.5 GB of memory to process, 0.1 GB"):
        read_image(path)


# --------------------------------------------------------------------------- good reads


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, OBLIQUE], ids=ORIENTATIONS)
def test_round_trip_preserves_geometry_and_values(tmp_path, suffix, direction):
    source = make_volume(spacing=(0.7, 0.9, 3.3), origin=(-120.3, 33.1, -7.7), direction=direction)
    path = write_image(tmp_path, "case" + suffix, source)
    image = read_image(path)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetDimension() == 3 and image.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image),
                                  sitk.GetArrayViewFromImage(source))
    # exactly what the file holds; NIfTI stores geometry in float32, NRRD/MetaImage in
    # decimal text (NRRD as spacing x direction, so double round-off remains)
    assert_same_geometry(image, sitk.ReadImage(str(path)))
    assert_same_geometry(image, source, 1e-5 if suffix.startswith(".nii") else 1e-12)


def test_validate_image_checks_images_in_memory():
    validate_image(sitk.Cast(make_volume(), sitk.sitkFloat32), "from_slicer")
    with pytest.raises(InputError, match=r"^from_slicer: is a constant image"):
        validate_image(sitk.Image(4, 4, 4, sitk.sitkFloat32), "from_slicer")


@pytest.mark.parametrize("count, refused", [(2, True), (8, True), (9, False), (256, False)])
def test_an_image_of_a_few_values_is_refused_as_a_mask_or_label_map(count, refused):
    """Up to 8 distinct values is a mask or label map (an MRI has thousands); the values
    sit in one slab each, far apart, so a strided sample misses most of them."""
    array = np.zeros((40, 256, 256), np.int16)
    for value in range(1, count):
        array[value % 40, value % 256, (7 * value) % 256] = value * 10
    image = sitk.GetImageFromArray(array)
    if refused:
        with pytest.raises(InputError, match=rf"^labels: holds only {count} distinct values \(0, 10[,)]"):
            validate_image(image, "labels")
    else:
        validate_image(image, "labels")


def _many_label_map(labels: int) -> np.ndarray:
    """A label map of ``labels`` non-zero labels: 10-voxel blocks in a 12 x 12 grid."""
    array = np.zeros((30, 140, 140), np.uint16)
    for label in range(1, labels + 1):
        row, column = 10 + 10 * ((label - 1) // 12), 10 + 10 * ((label - 1) % 12)
        array[4:26, row:row + 10, column:column + 10] = label
    return array


@pytest.mark.parametrize("labels", [9, 40, 118])
def test_a_label_map_with_many_labels_is_refused(labels):
    """More labels than the few-values check takes (TotalSegmentator maps hold up to 118)."""
    with pytest.raises(InputError, match=rf"^totalseg: is a label map, not a scan: {labels + 1} or more distinct"):
        validate_image(sitk.GetImageFromArray(_many_label_map(labels)), "totalseg")


def test_a_label_map_stored_as_float_is_refused_too():
    with pytest.raises(InputError, match=r"^labels\.nii: is a label map, not a scan"):
        validate_image(sitk.GetImageFromArray(_many_label_map(20).astype(np.float32)), "labels.nii")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_noisy_scans_of_few_grey_levels_are_not_label_maps(dtype):
    """An 8-bit scan or a noisy phantom of piecewise constant tissues is still a scan: noise
    makes neighbours differ. Rounded to whole numbers, the float phantom is examined too."""
    rng = np.random.default_rng(3)
    tissues = _many_label_map(20).astype(np.float32) * 10 + 20
    scan = np.clip(np.round(tissues + rng.normal(0, 4, tissues.shape)), 0, 255).astype(dtype)
    validate_image(sitk.GetImageFromArray(scan), "scan")


def test_a_label_map_check_ignores_a_constant_padding_value():
    """The most common value is taken as background, so a scan padded with a constant
    non-zero value outside the body is judged on the body alone."""
    rng = np.random.default_rng(4)
    scan = np.full((40, 96, 96), 7, np.int16)
    scan[10:30, 30:60, 30:60] = np.round(rng.normal(100, 3, (20, 30, 30)))
    validate_image(sitk.GetImageFromArray(scan), "padded")


@pytest.mark.parametrize("shear_degrees, accepted", [(0.0, True), (0.01, True), (0.5, False), (8.5, False)])
def test_sheared_grids_are_refused_and_round_off_is_not(shear_degrees, accepted):
    image = sitk.Cast(make_volume(direction=OBLIQUE), sitk.sitkFloat32)
    matrix = np.array(image.GetDirection()).reshape(3, 3)
    tilt = np.radians(shear_degrees)
    matrix[:, 1] = np.cos(tilt) * matrix[:, 1] + np.sin(tilt) * matrix[:, 0]  # y axis leans towards x
    image.SetDirection(matrix.ravel().tolist())
    if accepted:
        validate_image(image, "scan")
    else:
        with pytest.raises(InputError, match=rf"^scan: has a sheared .* meet at {90 - shear_degrees:.1f} degrees"):
            validate_image(image, "scan")


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("name, expected", [
    ("image_1.nii.gz", "image_1"), ("x.seg.nrrd", "x"), ("scan.v2.nrrd", "scan.v2"),
    ("CT.MHA", "CT"), ("case.nhdr", "case"), ("a.mhd", "a"), ("b.nii", "b"),
])
def test_case_id_strips_image_extensions(name, expected):
    assert case_id(name) == expected


def test_case_id_of_folder_is_its_name(tmp_path):
    folder = tmp_path / "patient.07"
    folder.mkdir()
    assert case_id(folder) == "patient.07"


def test_memory_estimate_is_16_bytes_per_voxel_plus_overhead():
    small, large = estimate_memory_bytes((10, 10, 10)), estimate_memory_bytes((100, 100, 100))
    assert large - small == 16 * (100**3 - 10**3)
    assert small > 100 * 1024**2  # the fixed overhead dominates tiny images


def test_available_memory_without_psutil(monkeypatch):
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    monkeypatch.setitem(sys.modules, "psutil", None)
    lines = Path("/proc/meminfo").read_text().splitlines()
    expected = next(int(line.split()[1]) * 1024 for line in lines
                    if line.startswith("MemAvailable:"))
    assert abs(imageio.available_memory_bytes() - expected) < 256 * 1024**2
