"""Tests for LiverVolumetryLib.masks: reading reference and hand-corrected liver masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (OBLIQUE, SAGITTAL, SHARED_DATA, assert_same_geometry, ellipsoid_image, make_volume,
                      rotation_direction, write_image)

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import read_image
from LiverVolumetryLib.masks import read_mask

CHAOS = SHARED_DATA


def test_bad_mask_is_one_line_input_error(tmp_path):
    path = write_image(tmp_path, "flat_mask.nrrd", sitk.Image(16, 16, sitk.sitkUInt8))
    with pytest.raises(InputError, match=r"flat_mask.nrrd: is 2D \(size 16x16\)"):
        read_mask(path)


def test_read_mask_one_value_one_label_or_several_labels(tmp_path):
    array = np.zeros((6, 7, 8), np.uint8)
    array[1, 2, 3], array[2, 2, 2], array[4, 5, 6] = 255, 255, 255
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(make_volume(direction=OBLIQUE))
    path = write_image(tmp_path, "label_1.nii.gz", labels)
    mask = read_mask(path)  # one non-zero value (a 0/255 mask): every non-zero voxel
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), (array != 0).astype(np.uint8))
    assert_same_geometry(mask, labels, 1e-5)
    array[1, 2, 3], array[2, 2, 2] = 1, 2
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(make_volume(direction=OBLIQUE))
    write_image(tmp_path, "label_1.nii.gz", labels)
    only_two = sitk.GetArrayFromImage(read_mask(path, label=2))
    assert only_two.sum() == 1 and only_two[2, 2, 2] == 1
    liver_and_lesion = sitk.GetArrayFromImage(read_mask(path, label=(1, 2)))
    assert liver_and_lesion.sum() == 2 and liver_and_lesion[1, 2, 3] == liver_and_lesion[2, 2, 2] == 1


def test_a_labelmap_of_several_labels_without_a_label_value_is_refused(tmp_path):
    array = np.zeros((6, 7, 8), np.uint8)
    array[1:3, 2, 3], array[4, 5, 6] = 6, 5  # e.g. AMOS: liver 6, beside another organ
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(make_volume())
    path = write_image(tmp_path, "organs.nii.gz", labels)
    with pytest.raises(InputError, match=r"organs.nii.gz: holds several labels \(5, 6\).*--label") as caught:
        read_mask(path)
    assert "\n" not in str(caught.value)
    assert sitk.GetArrayFromImage(read_mask(path, label=6)).sum() == 2
    with pytest.raises(InputError, match=r"organs.nii.gz: has no voxel of label 1,9; it holds label\(s\) 5, 6$"):
        read_mask(path, label=(1, 9))
    smooth = sitk.GetImageFromArray(np.where(array > 0, 0.9, 0.05).astype(np.float32))
    probability = write_image(tmp_path, "probability.nii.gz", smooth)
    with pytest.raises(InputError, match=r"probability.nii.gz: holds non-whole values from 0.05 to 0.9: a "
                                         r"probability map, not a mask"):
        read_mask(probability)


def test_read_mask_takes_reference_geometry_within_round_off(tmp_path):
    reference = make_volume(direction=OBLIQUE)
    labels = sitk.Cast(reference > 500, sitk.sitkUInt8)
    labels.SetOrigin(tuple(v + 2e-4 for v in reference.GetOrigin()))
    mask = read_mask(write_image(tmp_path, "seg.nrrd", labels), reference=reference)
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
    path = write_image(tmp_path, "corrected.seg.nrrd", _shifted(labels, what))
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
    assert_reads_back_identical(write_image(tmp_path, "sub.nii.gz", mask[liver_box(mask, 2)]), image, mask)


def test_read_mask_super_box_drops_background_outside(tmp_path):
    image, mask = oblique_case()
    padded = sitk.ConstantPad(mask, (2, 1, 0), (1, 3, 2), 0)
    assert_reads_back_identical(write_image(tmp_path, "padded.nrrd", padded), image, mask)


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
    message = refusal(write_image(tmp_path, "half.seg.nrrd", sub), image)
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
    assert "extends beyond the image" in refusal(write_image(tmp_path, "outside.nii.gz", outside), image)


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


@pytest.mark.skipif(not CHAOS.is_dir(), reason="CHAOS T2 data not available")
def test_real_case_image_and_label_line_up():
    image = read_image(CHAOS / "image_1.nii.gz")
    mask = read_mask(CHAOS / "label_1.nii.gz", reference=image, label=1)
    assert image.GetSize() == mask.GetSize()
    assert 500_000 < sitk.GetArrayViewFromImage(mask).sum() * math.prod(image.GetSpacing()) < 3e6
