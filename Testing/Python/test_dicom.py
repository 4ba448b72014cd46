"""Tests for LiverVolumetryLib.dicom and DICOM folders read through imageio.read_image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (AXIAL, OBLIQUE, ORIENTATIONS, SAGITTAL, assert_read_fails_in_one_line, assert_same_geometry,
                      make_volume, write_image)

from LiverVolumetryLib import dicom, imageio
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import DicomSeries, list_dicom_series, read_image


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str,
                       description: str = "T2 HASTE", prefix: str = "slice",
                       skip: tuple[int, ...] = (), repeat: int = 1, tilt_mm: float = 0.0,
                       first_number: int = 0) -> None:
    """Write ``image`` as one DICOM file per slice with the tags a scanner would set.

    ``skip`` leaves slices out (a gap), ``repeat`` writes every slice that many times
    (same position, like several echoes in one series), ``tilt_mm`` shifts each slice that
    much further along the image's y axis (a gantry-tilt-like sheared stack), and
    InstanceNumbers start after ``first_number``."""
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    number = first_number
    for z in range(image.GetDepth()):
        if z in skip:
            continue
        for _ in range(repeat):
            number += 1
            slab = image[:, :, z:z + 1]
            position = np.add(image.TransformIndexToPhysicalPoint((0, 0, z)),
                              np.multiply(d[1::3], z * tilt_mm))
            slab.SetOrigin(tuple(position))
            tags = {
                "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
                "0008|0018": f"{series_uid}.{number}",
                "0008|0060": "MR",
                "0008|103e": description,
                "0010|0020": "TEST01",
                "0020|000d": "1.2.826.0.1.3680043.8.498.1",
                "0020|000e": series_uid,
                "0020|0013": str(number),
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0037": orientation,
                "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
                "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            }
            for key, value in tags.items():
                slab.SetMetaData(key, value)
            writer.SetFileName(str(folder / f"{prefix}{number:03d}.dcm"))
            writer.Execute(slab)


# --------------------------------------------------------------------------- bad inputs


def bad_empty_folder(tmp_path, monkeypatch):
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    return folder, {}


def bad_folder_with_image_file(tmp_path, monkeypatch):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    write_image(folder, "image_1.nii.gz", make_volume())
    return folder, {}


def bad_two_series(tmp_path, monkeypatch):
    folder = tmp_path / "two_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.11", "T2", "a")
    write_dicom_series(make_volume(seed=1), folder, "1.2.826.0.1.3680043.8.498.22", "T1", "b")
    return folder, {}


def bad_unknown_series(tmp_path, monkeypatch):
    folder = tmp_path / "one_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.11")
    return folder, {"series_uid": "9.9.9"}


def bad_dicom_gap(tmp_path, monkeypatch):
    folder = tmp_path / "gap_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.33", skip=(3,))
    return folder, {}


def bad_dicom_duplicate_positions(tmp_path, monkeypatch):
    folder = tmp_path / "echo_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.44", repeat=2)
    return folder, {}


def bad_dicom_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "available_memory_bytes", lambda: 100 * 1024**2)
    folder = tmp_path / "big_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.66")
    return folder, {}


def bad_dicom_echoes_numbered_in_turn(tmp_path, monkeypatch):
    """Two echoes in one series, numbered echo after echo: GDCM cannot sort them by position
    and falls back to InstanceNumber order."""
    folder = tmp_path / "dual_echo"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.45", prefix="e1")
    write_dicom_series(make_volume(seed=1), folder, "1.2.826.0.1.3680043.8.498.45", prefix="e2",
                       first_number=6)
    return folder, {}


def bad_dicom_gantry_tilt(tmp_path, monkeypatch):
    folder = tmp_path / "tilted_series"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.46", tilt_mm=0.5)
    return folder, {}


def bad_dicom_localizer_in_series(tmp_path, monkeypatch):
    folder = tmp_path / "with_localizer"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.47")
    localizer = make_volume(shape=(1, 7, 8), origin=(-10.5, 20.25, 9.0), direction=SAGITTAL)
    write_dicom_series(localizer, folder, "1.2.826.0.1.3680043.8.498.47", prefix="loc", first_number=6)
    return folder, {}


def bad_dicom_slice_of_other_size(tmp_path, monkeypatch):
    folder = tmp_path / "other_size"
    write_dicom_series(make_volume(), folder, "1.2.826.0.1.3680043.8.498.48")
    write_dicom_series(make_volume(shape=(1, 9, 9), origin=(-10.5, 20.25, 21.0)), folder,
                       "1.2.826.0.1.3680043.8.498.48", prefix="z", first_number=6)
    return folder, {}


def bad_dicom_single_slice(tmp_path, monkeypatch):
    folder = tmp_path / "one_slice"
    write_dicom_series(make_volume(shape=(1, 7, 8)), folder, "1.2.826.0.1.3680043.8.498.49")
    return folder, {}


def bad_dicom_multi_frame(tmp_path, monkeypatch):
    folder = tmp_path / "multi_frame"
    folder.mkdir()
    volume = make_volume(direction=OBLIQUE)
    for key, value in (("0008|0060", "MR"), ("0020|000e", "1.2.826.0.1.3680043.8.498.50")):
        volume.SetMetaData(key, value)
    write_image(folder, "volume.dcm", volume)
    return folder, {}


BAD_FOLDERS = [
    (bad_dicom_too_large, "size 8x7x6): needs about"),
    (bad_empty_folder, "empty"),
    (bad_folder_with_image_file, "image_1.nii.gz"),
    (bad_two_series, "--series"),
    (bad_unknown_series, "9.9.9"),
    (bad_dicom_gap, "unevenly spaced"),
    (bad_dicom_duplicate_positions, "same position"),
    (bad_dicom_echoes_numbered_in_turn, "6 slices at the same position"),
    (bad_dicom_gantry_tilt, "sheared slice stack"),
    (bad_dicom_localizer_in_series, "different orientations in one series (loc007.dcm"),
    (bad_dicom_slice_of_other_size, "different sizes in one series (z007.dcm is 9x9, slice001.dcm is 8x7"),
    (bad_dicom_single_slice, "single dicom slice"),
    (bad_dicom_multi_frame, "volume.dcm holds 6 frames (multi-frame"),
]


@pytest.mark.parametrize("make, keyword", BAD_FOLDERS,
                         ids=[make.__name__.removeprefix("bad_") for make, _ in BAD_FOLDERS])
def test_bad_folder_is_one_line_input_error(tmp_path, monkeypatch, make, keyword):
    path, kwargs = make(tmp_path, monkeypatch)
    assert_read_fails_in_one_line(path, kwargs, keyword)


def test_too_large_series_is_refused_before_pixels_are_read(tmp_path, monkeypatch):
    folder, _ = bad_dicom_too_large(tmp_path, monkeypatch)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute",
                        lambda self: pytest.fail("pixels were read"))
    with pytest.raises(InputError, match="needs about 0.5 GB of memory to process, 0.1 GB"):
        read_image(folder)


def test_two_series_message_lists_each_series(tmp_path, monkeypatch):
    folder, _ = bad_two_series(tmp_path, monkeypatch)
    message = str(pytest.raises(InputError, read_image, folder).value)
    for uid, description in (("1.2.826.0.1.3680043.8.498.11", "T2"),
                             ("1.2.826.0.1.3680043.8.498.22", "T1")):
        assert f"{uid} '{description}' (6 files)" in message


@pytest.mark.parametrize("make", [bad_dicom_gap, bad_empty_folder, bad_two_series])
def test_dicom_problems_print_no_itk_warnings(tmp_path, monkeypatch, capfd, make):
    path, kwargs = make(tmp_path, monkeypatch)
    with pytest.raises(InputError):
        read_image(path, **kwargs)
    assert "WARNING" not in capfd.readouterr().err


class _SliceTags:
    """A stand-in for an ImageSeriesReader's per-slice tags (``None``: tag absent)."""

    def __init__(self, positions, orientation="1\\0\\0\\0\\1\\0"):
        self.tags = [{"0020|0032": p, "0020|0037": orientation} for p in positions]

    def GetFileNames(self):
        return [f"IM{i}" for i in range(len(self.tags))]

    def HasMetaDataKey(self, index, key):
        return self.tags[index].get(key) is not None

    def GetMetaData(self, index, key):
        return self.tags[index][key]


def test_slice_without_position_is_refused(tmp_path):
    image = sitk.Image(4, 4, 3, sitk.sitkFloat32)
    dicom.check_slice_positions(tmp_path, _SliceTags(["0\\0\\0", "0\\0\\1", "0\\0\\2"]), image, 3)
    with pytest.raises(InputError, match="IM1 has no valid ImagePositionPatient"):
        dicom.check_slice_positions(tmp_path, _SliceTags(["0\\0\\0", None, "0\\0\\2"]), image, 3)


@pytest.mark.parametrize("direction", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_shear_below_the_limit_is_read(tmp_path, direction):
    folder = tmp_path / "series"
    source = make_volume(direction=direction)  # 3 mm slices: 0.002 mm/slice is 0.04 degrees
    write_dicom_series(source, folder, "1.2.826.0.1.3680043.8.498.51", tilt_mm=0.002)
    assert_same_geometry(read_image(folder), source, 1e-5)


def test_quiet_itk_restores_the_warning_setting():
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    try:
        sitk.ProcessObject.SetGlobalWarningDisplay(True)
        with pytest.raises(ValueError), dicom.quiet_itk():
            assert sitk.ProcessObject.GetGlobalWarningDisplay() is False
            raise ValueError("inside")
        assert sitk.ProcessObject.GetGlobalWarningDisplay() is True
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


def test_no_series_error_points_to_a_sub_folder(tmp_path):
    (tmp_path / "case" / "DICOM").mkdir(parents=True)
    message = str(dicom.no_series_error(tmp_path / "case", is_image_file=lambda name: False))
    assert "holds no DICOM files" in message and "(it holds DICOM: pass the sub-folder" in message


# --------------------------------------------------------------------------- good reads


@pytest.mark.parametrize("direction", [AXIAL, SAGITTAL, OBLIQUE], ids=ORIENTATIONS)
def test_dicom_series_reads_back_with_source_geometry(tmp_path, direction):
    source = make_volume(spacing=(0.7, 0.9, 3.5), origin=(-101.5, 44.25, 12.0), direction=direction)
    folder = tmp_path / "series"
    write_dicom_series(source, folder, "1.2.826.0.1.3680043.8.498.55")
    image = read_image(folder)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(image, source, 1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image),
                                  sitk.GetArrayViewFromImage(source))


def test_series_uid_selects_that_series(tmp_path, monkeypatch):
    folder, _ = bad_two_series(tmp_path, monkeypatch)
    series = {s.uid: s for s in list_dicom_series(folder)}
    assert {(s.description, s.n_files) for s in series.values()} == {("T2", 6), ("T1", 6)}
    assert all(Path(f).name.startswith("b") for f in series["1.2.826.0.1.3680043.8.498.22"].files)
    image = read_image(folder, series_uid="1.2.826.0.1.3680043.8.498.22")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image),
                                  sitk.GetArrayFromImage(make_volume(seed=1)))


def test_module_api_header_then_pixels(tmp_path):
    source = make_volume(spacing=(0.7, 0.9, 3.5), direction=OBLIQUE)
    folder = tmp_path / "series"
    write_dicom_series(source, folder, "1.2.826.0.1.3680043.8.498.77", description="T2 SPIR")
    (found,) = dicom.list_dicom_series(folder)
    assert isinstance(found, DicomSeries)
    assert (found.description, found.n_files) == ("T2 SPIR", 6)
    assert dicom.choose_series(folder, [found]) == found
    header = dicom.read_series_header(folder, found)
    assert header.size == (8, 7, 6) and header.components == 1
    np.testing.assert_allclose(header.in_plane_spacing, (0.7, 0.9), atol=1e-6)
    image = dicom.read_series(folder, found)
    assert_same_geometry(image, source, 1e-5)


def test_reexports_are_the_dicom_module_objects():
    assert imageio.DicomSeries is dicom.DicomSeries
    assert imageio.list_dicom_series is dicom.list_dicom_series


def test_results_record_the_series_and_another_series_of_the_folder_is_not_taken_for_it(tmp_path, capsys):
    from LiverVolumetryLib.cli import main
    from LiverVolumetryLib.phantom import make_phantom

    folder, uids = tmp_path / "study", ("1.2.826.0.1.3680043.8.498.31", "1.2.826.0.1.3680043.8.498.32")
    for seed, uid, prefix, description in ((3, uids[0], "a", "T2 HASTE"), (4, uids[1], "b", "T1 VIBE pv")):
        image = sitk.Cast(sitk.RescaleIntensity(make_phantom(seed, shape=(80, 64, 26), spacing=(5.0, 5.0, 9.0),
                                                             orientation="LPS", oblique_degrees=0).image, 0, 2000),
                          sitk.sitkInt16)
        write_dicom_series(image, folder, uid, description, prefix=prefix)
    out = tmp_path / "out"
    arguments = ["segment", str(folder), "-o", str(out), "--no-radiomics", "--progress", "none", "--series"]
    assert main([*arguments, uids[0]]) == 0
    table = (out / "measurements.csv").read_text(encoding="utf-8")
    assert uids[0] in table and table.splitlines()[0].startswith("case,input,series_uid,volume_ml")
    capsys.readouterr()
    # The same folder and case name, another series: not a resume of the first one.
    assert main([*arguments, uids[1]]) == 1
    error = capsys.readouterr().err.strip()
    assert "another DICOM series" in error and uids[0] in error and "\n" not in error
    assert (out / "measurements.csv").read_text(encoding="utf-8") == table
    assert main([*arguments, " t2 haste"]) == 0  # the same series, by its description: resumed
    assert (out / "measurements.csv").read_text(encoding="utf-8") == table  # skipped: same seconds, same row
    (folder / ".DS_Store").write_bytes(b"\0Bud1")  # a file that is not DICOM: not a change of the scan
    assert main([*arguments, uids[0]]) == 0 and (out / "measurements.csv").read_text(encoding="utf-8") == table
    slice_file = sorted(folder.glob("a*"))[0]  # one slice file re-exported since: the case is redone
    os.utime(slice_file, ns=(slice_file.stat().st_mtime_ns + 10**9,) * 2)
    assert main([*arguments, uids[0]]) == 0 and (out / "measurements.csv").read_text(encoding="utf-8") != table
    assert main(["measure", str(folder), str(out / "study_liver.nii.gz"), "--no-radiomics", "--progress", "none",
                 "--series", uids[0], "-o", str(tmp_path / "m")]) == 0
    assert uids[0] in (tmp_path / "m" / "measurements.csv").read_text(encoding="utf-8")
    # A slice removed (the newest modification time is the same): redone, and now refused as a gap.
    middle = sorted(folder.glob("a*"))[len(list(folder.glob("a*"))) // 2]
    middle.rename(tmp_path / middle.name)
    assert main([*arguments, uids[0]]) == 1
    assert json.loads((out / "measurements.json").read_text(encoding="utf-8"))[0]["status"] == "failed"


def test_a_series_description_picks_the_series_and_an_ambiguous_one_is_refused(tmp_path, monkeypatch):
    folder, _ = bad_two_series(tmp_path, monkeypatch)  # descriptions "T2" and "T1"
    image = read_image(folder, series_uid=" t1")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayFromImage(make_volume(seed=1)))
    assert imageio.series_uid_of(image) == "1.2.826.0.1.3680043.8.498.22"
    write_dicom_series(make_volume(seed=2), folder, "1.2.826.0.1.3680043.8.498.33", "T1", "c")
    assert_read_fails_in_one_line(folder, {"series_uid": "T1"}, "2 dicom series described 't1'")
    assert_read_fails_in_one_line(folder, {"series_uid": "T1 VIBE"}, "no dicom series with uid or description")


def test_a_chosen_series_keeps_only_the_folders_that_hold_it_in_a_tree_of_studies(tmp_path):
    from LiverVolumetryLib.inputs import collect_inputs

    for k, patient in enumerate(("p1", "p2")):
        write_dicom_series(make_volume(seed=k), tmp_path / "studies" / patient / "s1",
                           f"1.2.826.0.1.3680043.8.498.4{k}", "T2 HASTE", "a")
        write_dicom_series(make_volume(seed=k + 5), tmp_path / "studies" / patient / "s2",
                           f"1.2.826.0.1.3680043.8.498.5{k}", "T1 VIBE pv", "b")
    assert [c.case for c in collect_inputs([tmp_path / "studies"])] == ["p1_s1", "p1_s2", "p2_s1", "p2_s2"]
    chosen = collect_inputs([tmp_path / "studies"], series_uid="t1 vibe PV")
    assert [(c.case, c.series_uid) for c in chosen] == [("p1_s2", "t1 vibe PV"), ("p2_s2", "t1 vibe PV")]
    assert [c.case for c in collect_inputs([tmp_path / "studies"], series_uid="1.2.826.0.1.3680043.8.498.41")] == \
        ["p2_s1"]
    with pytest.raises(InputError, match="no DICOM folder below it holds a series with UID or description 'T1 fs'"):
        collect_inputs([tmp_path / "studies"], series_uid="T1 fs")


def test_an_empty_slice_file_is_named_in_the_gap_message(tmp_path):
    # GDCM drops an empty or damaged slice silently: the gap was reported without the file.
    folder = tmp_path / "series"
    write_dicom_series(make_volume(shape=(6, 6, 7)), folder, "1.2.826.0.1.3680043.8.498.6")
    empty = sorted(folder.iterdir())[3]
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=f"missing slices\\? 1 file\\(s\\) there look like DICOM but are in no series "
                                         f"\\(unreadable\\?\\): {empty.name}"):
        read_image(folder)


def test_a_series_of_files_without_preamble_or_suffix_is_read(tmp_path):
    # Some older exports drop the 128-byte preamble and "DICM"; GDCM reads them, but the
    # folder was taken for one without DICOM ("holds no image files").
    volume = make_volume(shape=(5, 6, 7))
    folder = tmp_path / "series"
    write_dicom_series(volume, folder, "1.2.826.0.1.3680043.8.498.9")
    expected = read_image(folder)
    for path in sorted(folder.iterdir()):
        (folder / path.stem).write_bytes(path.read_bytes()[132:])
        path.unlink()
    image = read_image(folder)
    assert_same_geometry(image, expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
    assert dicom.list_dicom_series(folder)[0].n_files == 5  # one file per slice (numpy order: z first)


def test_raw_voxel_data_is_not_taken_for_dicom_without_preamble(tmp_path):
    from LiverVolumetryLib.inputs import looks_like_dicom_file

    (tmp_path / "data.raw").write_bytes(b"\x08\x00\x05\x00\x0a\x00\x00\x00" + bytes(200))  # int16 voxels 8, 5, 10
    (tmp_path / "meta").write_bytes(b"\x02\x00\x00\x00UL\x04\x00" + bytes(200))
    assert not looks_like_dicom_file(tmp_path / "data.raw") and looks_like_dicom_file(tmp_path / "meta")
