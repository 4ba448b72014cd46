"""Tests for LiverVolumetryLib.imageio: reading, validating and refusing input images."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ellipsoid_image, rotation_direction

from LiverVolumetryLib import imageio
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import (
    case_id,
    estimate_memory_bytes,
    read_image,
    read_mask,
    validate_image,
)

CHAOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "chaos-t2"

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def oblique_direction() -> tuple[float, ...]:
    """A rotation by 0.4 rad about (1, 2, 3): no axis aligned with the world axes."""
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(0.4) * k + (1 - math.cos(0.4)) * (k @ k)
    return tuple(rotation.flatten())


OBLIQUE = oblique_direction()
ORIENTATIONS = ["axial", "sagittal", "oblique"]


def make_volume(shape=(6, 7, 8), spacing=(0.75, 0.8, 3.0), origin=(-10.5, 20.25, 3.0),
                direction=AXIAL, dtype=np.int16, seed=0) -> sitk.Image:
    """A random 3D image; ``shape`` is numpy order (z, y, x)."""
    array = np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


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


def _write(tmp_path: Path, name: str, image: sitk.Image) -> Path:
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


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
    path = _write(tmp_path, "cut.nii.gz", make_volume(dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
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
    return _write(tmp_path, "flat.nrrd", sitk.Image(32, 32, sitk.sitkFloat32)), {}


def bad_single_slice(tmp_path, monkeypatch):
    return _write(tmp_path, "one_slice.nii.gz", make_volume(shape=(1, 256, 256))), {}


def bad_4d(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume(), sitk.sitkFloat32)
    return _write(tmp_path, "series4d.nii.gz", sitk.JoinSeries([volume, volume])), {}


def bad_vector(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume(), sitk.sitkFloat32)
    return _write(tmp_path, "vector.mha", sitk.Compose([volume, volume])), {}


def bad_rgb(tmp_path, monkeypatch):
    volume = sitk.Cast(make_volume() / 4, sitk.sitkUInt8)
    return _write(tmp_path, "colour.nrrd", sitk.Compose([volume, volume, volume])), {}


def bad_nan(tmp_path, monkeypatch):
    array = sitk.GetArrayFromImage(make_volume(dtype=np.float32))
    array[2, 3, 4] = np.nan
    return _write(tmp_path, "nan.nrrd", sitk.GetImageFromArray(array)), {}


def bad_inf(tmp_path, monkeypatch):
    array = sitk.GetArrayFromImage(make_volume(dtype=np.float32))
    array[0, 0, 0] = np.inf
    return _write(tmp_path, "inf.mha", sitk.GetImageFromArray(array)), {}


def bad_constant(tmp_path, monkeypatch):
    image = sitk.Image(8, 8, 8, sitk.sitkInt16) + 7
    return _write(tmp_path, "constant.nrrd", image), {}


def bad_spacing_small(tmp_path, monkeypatch):
    return _write(tmp_path, "tiny.nrrd", make_volume(spacing=(0.01, 1.0, 1.0))), {}


def bad_spacing_large(tmp_path, monkeypatch):
    return _write(tmp_path, "huge_voxels.mha", make_volume(spacing=(1.0, 1.0, 100.0))), {}


def bad_direction(tmp_path, monkeypatch):
    return write_nhdr(tmp_path, "parallel", "(1,0,0) (1,0,0) (0,0,1)"), {}


def bad_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "available_memory_bytes", lambda: 100 * 1024**2)
    return _write(tmp_path, "big.nii.gz", make_volume()), {}


BAD_INPUTS = [
    (bad_missing_file, "does not exist"),
    (bad_missing_folder, "does not exist"),
    (bad_garbage_nifti, "cannot be read"),
    (bad_garbage_nrrd, "cannot be read"),
    (bad_truncated_nifti, "truncated"),
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
    (bad_too_large, "gb of memory"),
]


@pytest.mark.parametrize("make, keyword", BAD_INPUTS,
                         ids=[make.__name__.removeprefix("bad_") for make, _ in BAD_INPUTS])
def test_bad_input_is_one_line_input_error(tmp_path, monkeypatch, make, keyword):
    path, kwargs = make(tmp_path, monkeypatch)
    with pytest.raises(InputError) as caught:
        read_image(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    assert keyword in message.lower()
    assert "\n" not in message and "\r" not in message
    assert "Exception thrown" not in message and "sitk::ERROR" not in message


def test_bad_mask_is_one_line_input_error(tmp_path):
    path = _write(tmp_path, "flat_mask.nrrd", sitk.Image(16, 16, sitk.sitkUInt8))
    with pytest.raises(InputError, match=r"flat_mask.nrrd: is 2D \(size 16x16\)"):
        read_mask(path)


def test_too_large_is_refused_before_pixels_are_read(tmp_path, monkeypatch):
    path, _ = bad_too_large(tmp_path, monkeypatch)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute",
                        lambda self: pytest.fail("pixels were read"))
    with pytest.raises(InputError, match="needs about 0.5 GB of memory to process, 0.1 GB"):
        read_image(path)


# --------------------------------------------------------------------------- good reads


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 0.0) -> None:
    assert a.GetSize() == b.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), rtol=0,
                                   atol=tolerance, err_msg=get)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, OBLIQUE], ids=ORIENTATIONS)
def test_round_trip_preserves_geometry_and_values(tmp_path, suffix, direction):
    source = make_volume(spacing=(0.7, 0.9, 3.3), origin=(-120.3, 33.1, -7.7), direction=direction)
    path = _write(tmp_path, "case" + suffix, source)
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


# --------------------------------------------------------------------------- masks


def test_read_mask_any_nonzero_or_one_label(tmp_path):
    array = np.zeros((6, 7, 8), np.uint8)
    array[1, 2, 3], array[2, 2, 2], array[4, 5, 6] = 1, 2, 255
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(make_volume(direction=OBLIQUE))
    path = _write(tmp_path, "label_1.nii.gz", labels)
    mask = read_mask(path)
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), (array != 0).astype(np.uint8))
    assert_same_geometry(mask, labels, 1e-5)
    only_two = sitk.GetArrayFromImage(read_mask(path, label=2))
    assert only_two.sum() == 1 and only_two[2, 2, 2] == 1


def test_read_mask_takes_reference_geometry_within_round_off(tmp_path):
    reference = make_volume(direction=OBLIQUE)
    labels = sitk.Cast(reference > 500, sitk.sitkUInt8)
    labels.SetOrigin(tuple(v + 2e-4 for v in reference.GetOrigin()))
    mask = read_mask(_write(tmp_path, "seg.nrrd", labels), reference=reference)
    assert_same_geometry(mask, reference)  # exactly the reference's geometry
    assert int(sitk.GetArrayViewFromImage(mask).sum()) > 0


def _shifted(image: sitk.Image, what: str) -> sitk.Image:
    changed = sitk.Image(image)
    if what == "spacing":
        changed.SetSpacing((0.75, 0.8, 3.01))
    elif what == "origin":
        changed.SetOrigin((-10.5, 20.25, 4.0))
    elif what == "direction":
        changed.SetDirection(SAGITTAL)
    return changed


@pytest.mark.parametrize("what", ["spacing", "origin", "direction"])
def test_read_mask_grid_mismatch_names_mask_and_difference(tmp_path, what):
    reference = make_volume()
    labels = sitk.Cast(reference > 500, sitk.sitkUInt8)
    path = _write(tmp_path, "corrected.seg.nrrd", _shifted(labels, what))
    with pytest.raises(InputError) as caught:
        read_mask(path, reference=reference)
    message = str(caught.value)
    assert "corrected.seg.nrrd" in message and f"grid: {what}" in message and "\n" not in message


def oblique_case() -> tuple[sitk.Image, sitk.Image]:
    """Image and liver mask on an oblique, flipped (left-handed), anisotropic grid; the
    liver lies well inside the grid."""
    direction = rotation_direction((20.0, -15.0, 35.0), flips=(-1, 1, -1), permutation=(1, 0, 2))
    image, mask = ellipsoid_image(size=(30, 26, 14), spacing=(3.1, 2.3, 7.0), direction=direction,
                                  centre=(0.0, 0.0, 0.0), radii=(25.0, 20.0, 28.0))
    assert np.linalg.det(np.reshape(direction, (3, 3))) < 0
    return image, mask


def liver_box(mask: sitk.Image, margin: int = 1) -> tuple[slice, ...]:
    """SimpleITK (x, y, z) slices of the liver's bounding box grown by ``margin`` voxels."""
    array = sitk.GetArrayViewFromImage(mask)
    box = []
    for axis in (2, 1, 0):
        nonzero = np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != axis)))
        assert nonzero[0] >= margin and nonzero[-1] < array.shape[axis] - margin
        box.append(slice(int(nonzero[0]) - margin, int(nonzero[-1]) + 1 + margin))
    return tuple(box)


def assert_reads_back_identical(path: Path, image: sitk.Image, mask: sitk.Image,
                                resized: bool = True) -> None:
    """``path`` (on a grid of another size unless not ``resized``) read with ``image`` as
    reference is ``mask`` voxel for voxel, on exactly the image grid."""
    assert (sitk.ReadImage(str(path)).GetSize() != image.GetSize()) == resized
    back = read_mask(path, reference=image)
    assert_same_geometry(back, image)  # exactly the reference grid
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(mask))


@pytest.mark.parametrize("cropped", [False, True], ids=["full", "cropped"])
def test_read_mask_slicer_segmentation_on_oblique_flipped_grid(tmp_path, cropped):
    from LiverVolumetryLib.outputs import write_segmentation

    image, mask = oblique_case()
    written = mask[liver_box(mask)] if cropped else mask
    path = write_segmentation(written, tmp_path / "liver.seg.nrrd")
    assert_reads_back_identical(path, image, mask, resized=cropped)


def test_read_mask_cropped_nifti_sub_box(tmp_path):
    image, mask = oblique_case()
    assert_reads_back_identical(_write(tmp_path, "sub.nii.gz", mask[liver_box(mask, 2)]), image, mask)


def test_read_mask_super_box_drops_background_outside(tmp_path):
    image, mask = oblique_case()
    padded = sitk.ConstantPad(mask, (2, 1, 0), (1, 3, 2), 0)
    assert_reads_back_identical(_write(tmp_path, "padded.nrrd", padded), image, mask)


def refusal(path: Path, image: sitk.Image) -> str:
    """The one-line InputError message, naming ``path``, of reading it on ``image``'s grid."""
    with pytest.raises(InputError) as caught:
        read_mask(path, reference=image)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_read_mask_half_voxel_shift_is_refused(tmp_path):
    image, mask = oblique_case()
    sub = mask[liver_box(mask)]
    step = np.reshape(image.GetDirection(), (3, 3))[:, 0] * image.GetSpacing()[0]
    sub.SetOrigin(tuple(np.array(sub.GetOrigin()) + 0.5 * step))
    message = refusal(_write(tmp_path, "half.seg.nrrd", sub), image)
    assert "grid: origin" in message and "not a whole number" in message


@pytest.mark.parametrize("where", ["padding", "far_away"])
def test_read_mask_liver_outside_the_image_is_refused(tmp_path, where):
    image, mask = oblique_case()
    if where == "padding":
        outside = sitk.ConstantPad(mask, (2, 2, 2), (2, 2, 2), 0)
        outside[0, 10, 8] = 1
    else:  # a whole number of voxels, but entirely beyond the image grid
        outside = mask[liver_box(mask)]
        outside.SetOrigin(image.TransformIndexToPhysicalPoint((40, 0, 0)))
    assert "extends beyond the image" in refusal(_write(tmp_path, "outside.nii.gz", outside), image)


def test_read_mask_multi_layer_segmentation(tmp_path):
    layers = np.zeros((5, 4, 3, 2), np.uint8)
    layers[1, 1, 1, 0], layers[2, 2, 2, 1] = 1, 2
    path = tmp_path / "layers.seg.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: unsigned char\ndimension: 4\nspace: left-posterior-superior\n"
        b"sizes: 2 3 4 5\nspace directions: none (1,0,0) (0,1,0) (0,0,2)\n"
        b"kinds: list domain domain domain\nendian: little\nencoding: raw\n"
        b"space origin: (0,0,0)\n\n" + layers.tobytes())
    mask = sitk.GetArrayFromImage(read_mask(path))
    assert mask.shape == (5, 4, 3) and mask.sum() == 2 and mask[1, 1, 1] == mask[2, 2, 2] == 1
    with pytest.raises(InputError, match="ambiguous"):
        read_mask(path, label=1)
    reference = sitk.Image(6, 6, 7, sitk.sitkFloat32)  # a super-box: mask at index (1, 0, 1)
    reference.SetSpacing((1.0, 1.0, 2.0))
    reference.SetOrigin((-1.0, 0.0, -2.0))
    on_reference = sitk.GetArrayFromImage(read_mask(path, reference=reference))
    assert on_reference.sum() == 2 and on_reference[2, 1, 2] == on_reference[3, 2, 3] == 1


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


@pytest.mark.skipif(not CHAOS.is_dir(), reason="CHAOS T2 data not available")
def test_real_case_image_and_label_line_up():
    image = read_image(CHAOS / "image_1.nii.gz")
    mask = read_mask(CHAOS / "label_1.nii.gz", reference=image, label=1)
    assert image.GetSize() == mask.GetSize()
    assert 500_000 < sitk.GetArrayViewFromImage(mask).sum() * math.prod(image.GetSpacing()) < 3e6
