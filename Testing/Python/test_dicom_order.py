"""DICOM slice ordering and geometry: files are stacked by ImagePositionPatient along the
slice normal (not by file name or InstanceNumber), and the volume read puts every voxel at
the physical point the files encode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import AXIAL, OBLIQUE, SAGITTAL, assert_read_fails_in_one_line, assert_same_geometry, make_volume

from LiverVolumetryLib import dicom
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import read_image, read_mask

UID_A, UID_B = "1.2.826.0.1.3680043.8.498.901", "1.2.826.0.1.3680043.8.498.902"


def flipped(direction) -> tuple[float, ...]:
    """``direction`` with its slice axis reversed (left-handed: positions run against the
    normal row x column that ImageOrientationPatient gives)."""
    return tuple((np.reshape(direction, (3, 3)) @ np.diag([1.0, 1.0, -1.0])).ravel())


def write_slices(image: sitk.Image, folder: Path, uid: str, names=None, numbers=None) -> np.ndarray:
    """Write slice z of ``image`` as file ``names[z]`` with InstanceNumber ``numbers[z]``
    (default: s000.dcm..., 1...) and return the ImagePositionPatient of each slice."""
    folder.mkdir(parents=True, exist_ok=True)
    n = image.GetDepth()
    names = names or [f"s{z:03d}.dcm" for z in range(n)]
    numbers = numbers or list(range(1, n + 1))
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # also for names without .dcm
    writer.KeepOriginalImageUIDOn()
    positions = []
    for z in range(n):
        slab = image[:, :, z:z + 1]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        slab.SetOrigin(position)
        positions.append(position)
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"{uid}.{numbers[z]}",
                "0008|0060": "MR", "0008|103e": f"series {uid[-1]}", "0020|000d": "1.2.826.0.1.3680043.8.498.9",
                "0020|000e": uid, "0020|0013": str(numbers[z]),
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}"}
        for key, value in tags.items():
            slab.SetMetaData(key, value)
        writer.SetFileName(str(folder / names[z]))
        writer.Execute(slab)
    return np.array(positions)


def assert_stacked_along_normal(image: sitk.Image, source: sitk.Image, positions: np.ndarray) -> None:
    """``image`` is stacked along the normal of the files' orientation: right-handed, origin at
    the lowest slice position along it, spacing the slice gap, in-plane axes as written."""
    d = np.reshape(source.GetDirection(), (3, 3))
    normal = np.cross(d[:, 0], d[:, 1])
    along = positions @ normal
    got = np.reshape(image.GetDirection(), (3, 3))
    np.testing.assert_allclose(got, np.column_stack([d[:, 0], d[:, 1], normal]), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), positions[np.argmin(along)], atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), (*source.GetSpacing()[:2], np.diff(np.sort(along)).min()),
                               atol=1e-5)


def assert_same_physical_voxels(image: sitk.Image, source: sitk.Image) -> None:
    """Every voxel of ``image`` holds the value ``source`` has at the same physical point."""
    def axes(x):
        return np.reshape(x.GetDirection(), (3, 3)) * np.array(x.GetSpacing())

    index = np.stack(np.meshgrid(*[np.arange(s) for s in image.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    points = np.array(image.GetOrigin()) + index @ axes(image).T
    found = np.linalg.solve(axes(source), (points - np.array(source.GetOrigin())).T).T
    whole = np.round(found).astype(int)
    np.testing.assert_allclose(found, whole, atol=1e-3, err_msg="voxels between the source's voxels")
    assert np.all((whole >= 0) & (whole < source.GetSize())), "voxels outside the source volume"
    ours, theirs = sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(source)
    np.testing.assert_array_equal(ours[index[:, 2], index[:, 1], index[:, 0]],
                                  theirs[whole[:, 2], whole[:, 1], whole[:, 0]])


def file_order(folder: Path) -> list[str]:
    return [Path(f).name for f in dicom.list_dicom_series(folder)[0].files]


# ---------------------------------------------------------------- 1. file names out of order


def _shuffled(n):
    return [f"IM_{k:02d}.dcm" for k in np.random.default_rng(5).permutation(n)]


NAMINGS = {
    "reversed": lambda n: [f"s{n - 1 - z:03d}.dcm" for z in range(n)],
    "unpadded": lambda n: [f"{z + 1}.dcm" for z in range(n)],  # 1, 10, 11, 2, 3... by name
    "shuffled": _shuffled,
}


@pytest.mark.parametrize("naming", NAMINGS)
def test_files_are_stacked_by_position_not_by_name(tmp_path, naming):
    source = make_volume(shape=(11, 4, 5), spacing=(0.75, 0.8, 2.5), origin=(-10.5, 20.25, -7.0), seed=3)
    names = NAMINGS[naming](11)
    assert sorted(names) != names  # the names do sort in another order than the positions
    positions = write_slices(source, tmp_path / "series", UID_A, names)
    assert file_order(tmp_path / "series") == names  # DicomSeries.files: by slice position
    image = read_image(tmp_path / "series")
    assert_stacked_along_normal(image, source, positions)
    assert_same_geometry(image, source, 1e-5)
    assert_same_physical_voxels(image, source)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(source))


# ------------------------------------- 2. normal against the file order; sagittal and oblique


DIRECTIONS = {"axial_positions_decreasing": flipped(AXIAL), "sagittal": SAGITTAL, "oblique": OBLIQUE,
              "oblique_positions_decreasing": flipped(OBLIQUE)}


@pytest.mark.parametrize("name", DIRECTIONS)
def test_image_and_mask_sit_where_the_files_put_them(tmp_path, name):
    source = make_volume(spacing=(0.7, 0.9, 3.5), origin=(-101.5, 44.25, 12.0), direction=DIRECTIONS[name])
    positions = write_slices(source, tmp_path / "series", UID_A)
    image = read_image(tmp_path / "series")
    assert_stacked_along_normal(image, source, positions)
    assert_same_physical_voxels(image, source)
    reversed_stack = name.endswith("_decreasing")  # instance numbers and names run against the normal
    if reversed_stack:
        assert file_order(tmp_path / "series") == [f"s{z:03d}.dcm" for z in range(5, -1, -1)]
        np.testing.assert_allclose(image.GetOrigin(), source.TransformIndexToPhysicalPoint((0, 0, 5)), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), flipped(source.GetDirection()), atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(source)[::-1])
    else:
        assert_same_geometry(image, source, 1e-5)
    # A mask drawn on the written volume covers the same voxels of the volume read.
    mask = sitk.Cast(source > 500, sitk.sitkUInt8)
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    expected = sitk.GetArrayViewFromImage(image) > 500
    resampled = sitk.Resample(sitk.ReadImage(str(tmp_path / "mask.nii.gz")), image, sitk.Transform(),
                              sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(resampled) > 0, expected)
    if not reversed_stack:  # same grid: read_mask pastes it voxel for voxel
        on_grid = read_mask(tmp_path / "mask.nii.gz", reference=image)
        assert_same_geometry(on_grid, image, 1e-5)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(on_grid) > 0, expected)


# --------------------------------------------------- 3. instance numbers against positions


NUMBERINGS = {"reversed": [6, 5, 4, 3, 2, 1], "shuffled": [3, 6, 1, 5, 2, 4], "with_gaps": [40, 10, 30, 60, 20, 50]}


@pytest.mark.parametrize("numbering", NUMBERINGS)
def test_positions_win_over_instance_numbers(tmp_path, numbering):
    """GDCM orders by ImagePositionPatient; InstanceNumber (and the file names that follow
    it, as exports name files) only when positions cannot order the files, which
    check_slice_positions then refuses."""
    source = make_volume(direction=OBLIQUE, seed=7)
    numbers = NUMBERINGS[numbering]
    names = [f"IM{k:04d}" for k in numbers]  # no suffix, as many exports write them
    positions = write_slices(source, tmp_path / "series", UID_A, names, numbers)
    assert file_order(tmp_path / "series") == names
    image = read_image(tmp_path / "series")
    assert_stacked_along_normal(image, source, positions)
    assert_same_geometry(image, source, 1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(source))


# ------------------------------------------------------- 4. two series interleaved by name


def test_a_series_chosen_by_uid_reads_only_its_slices_in_order(tmp_path):
    """Two series of one slab, the second half a slice further: mixed into one volume they
    would pass as an evenly spaced stack of 1.5 mm slices."""
    folder = tmp_path / "study"
    first = make_volume(spacing=(0.75, 0.8, 3.0), origin=(-10.5, 20.25, 3.0), seed=1)
    second = make_volume(spacing=(0.75, 0.8, 3.0), origin=(-10.5, 20.25, 4.5), seed=2)
    order = [4, 1, 5, 0, 3, 2]  # file k of each series holds slice order[k]
    for source, uid, offset in ((first, UID_A, 0), (second, UID_B, 1)):
        names = [""] * 6
        for k, z in enumerate(order):
            names[z] = f"IMG{2 * k + offset:02d}.dcm"  # IMG00 (first), IMG01 (second), IMG02 (first)...
        write_slices(source, folder, uid, names)
    series = {s.uid: s for s in dicom.list_dicom_series(folder)}
    for source, uid, offset in ((first, UID_A, 0), (second, UID_B, 1)):
        expected = [f"IMG{2 * order.index(z) + offset:02d}.dcm" for z in range(6)]
        assert [Path(f).name for f in series[uid].files] == expected
        image = read_image(folder, series_uid=uid)
        assert_same_geometry(image, source, 1e-5)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(source))
    assert_read_fails_in_one_line(folder, {}, "holds 2 dicom series")


# ----------------------------------------------------------------- 5. duplicate positions


def _extra_slice_at(folder: Path, source: sitk.Image, z: int, number: int) -> None:
    """One more file (other pixels, other InstanceNumber) at the position of slice ``z``."""
    extra = make_volume(shape=(1, *source.GetSize()[1::-1]), spacing=source.GetSpacing(),
                        origin=source.TransformIndexToPhysicalPoint((0, 0, z)), direction=source.GetDirection(),
                        seed=9)
    write_slices(extra, folder, UID_A, [f"extra{number}.dcm"], [number])


DUPLICATES = {
    "first_position": lambda folder, source: _extra_slice_at(folder, source, 0, 7),
    "middle_position": lambda folder, source: _extra_slice_at(folder, source, 3, 7),
    "last_position_numbered_first": lambda folder, source: _extra_slice_at(folder, source, 5, 0),
    "copied_file": lambda folder, source: shutil.copy(folder / "s002.dcm", folder / "s002 copy.dcm"),
}


@pytest.mark.parametrize("direction", [AXIAL, flipped(OBLIQUE)], ids=["axial", "oblique_decreasing"])
@pytest.mark.parametrize("duplicate", DUPLICATES)
def test_two_files_at_one_position_are_refused(tmp_path, duplicate, direction):
    folder = tmp_path / "dup_series"
    source = make_volume(direction=direction)
    write_slices(source, folder, UID_A)
    DUPLICATES[duplicate](folder, source)
    assert dicom.list_dicom_series(folder)[0].n_files == 7
    assert_read_fails_in_one_line(folder, {}, "1 slice at the same position as another")
    with pytest.raises(InputError) as caught:
        read_image(folder)
    assert str(caught.value).startswith(str(folder))
