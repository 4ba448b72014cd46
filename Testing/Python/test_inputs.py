"""Tests for LiverVolumetryLib.inputs: turning CLI arguments into cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.inputs import InputCase, collect_inputs


def write_image(path: Path) -> Path:
    """A small random 3D image at ``path`` (any supported suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(0).integers(0, 100, size=(4, 5, 6)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def write_dicom(folder: Path, series_uid: str = "1.2.826.0.1.3680043.8.498.7") -> Path:
    """A 3-slice DICOM series, one file per slice, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    for z in range(3):
        slab = sitk.GetImageFromArray(np.full((1, 5, 6), z + 1, np.int16))
        for key, value in (("0008|0060", "MR"), ("0020|000e", series_uid),
                           ("0008|0018", f"{series_uid}.{z}"), ("0020|0013", str(z + 1)),
                           ("0020|0032", f"0\\0\\{2.0 * z}"), ("0020|0037", "1\\0\\0\\0\\1\\0")):
            slab.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{z:04d}"))  # scanners often write no suffix
        writer.Execute(slab)
    return folder


def cases(found: list[InputCase]) -> list[tuple[str, str]]:
    return [(case.case, case.path.name) for case in found]


def test_single_image_file(tmp_path):
    path = write_image(tmp_path / "image_1.nii.gz")
    assert collect_inputs([path]) == [InputCase("image_1", path)]
    assert collect_inputs([str(path)])[0].path == path


def test_folder_of_images_natural_order_skips_segmentations_and_other_files(tmp_path):
    names = ("image_10.nii.gz", "image_2.nrrd", "image_1.mha", "image_3.seg.nrrd", ".hidden.nii")
    for name in names:
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty_sub").mkdir()
    assert cases(collect_inputs([tmp_path])) == [
        ("image_1", "image_1.mha"), ("image_2", "image_2.nrrd"), ("image_10", "image_10.nii.gz")]


def test_dicom_folder_is_one_case_with_series(tmp_path):
    folder = write_dicom(tmp_path / "patient7")
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    uid = "1.2.826.0.1.3680043.8.498.7"  # write_dicom's
    assert collect_inputs([folder], series_uid=uid) == [InputCase("patient7", folder, uid)]
    assert collect_inputs([folder]) == [InputCase("patient7", folder)]


def test_nested_dicom_subfolders_and_images(tmp_path):
    write_image(tmp_path / "scan.nii.gz")
    write_dicom(tmp_path / "p1" / "T2")
    write_dicom(tmp_path / "p2" / "T2")
    write_dicom(tmp_path / "p3")
    write_image(tmp_path / "p4" / "deeper_image.nii.gz")  # images below the top are not cases
    uid = "1.2.826.0.1.3680043.8.498.7"  # write_dicom's
    found = collect_inputs([tmp_path], series_uid=uid)
    assert [(c.case, c.path.relative_to(tmp_path).as_posix(), c.series_uid) for c in found] == [
        ("scan", "scan.nii.gz", None), ("p1_T2", "p1/T2", uid),
        ("p2_T2", "p2/T2", uid), ("p3", "p3", uid)]


def test_a_folder_whose_series_cannot_be_listed_is_kept_for_its_read_to_report(tmp_path):
    write_dicom(tmp_path / "p1" / "T1", "1.2.826.0.1.3680043.8.498.7")
    bad = write_dicom(tmp_path / "p2" / "T1", "1.2.826.0.1.3680043.8.498.8")
    bits_allocated_16 = b"\x28\x00\x00\x01\x02\x00\x00\x00\x10\x00"  # (0028,0100) US 16, implicit VR
    for file in bad.iterdir():  # BitsAllocated 7: GDCM lists the file, its header cannot be read
        data = file.read_bytes()
        assert data.count(bits_allocated_16) == 1
        file.write_bytes(data.replace(bits_allocated_16, bits_allocated_16[:-2] + b"\x07\x00"))
    found = collect_inputs([tmp_path], series_uid="1.2.826.0.1.3680043.8.498.7")
    assert [c.case for c in found] == ["p1_T1", "p2_T1"]  # not an InputError for the whole run
    assert [c.case for c in collect_inputs([bad], series_uid="1.2.826.0.1.3680043.8.498.7")] == ["T1"]


def _two_studies(tmp_path: Path, second: tuple[str, ...]) -> tuple[Path, Path]:
    """studyA holding a 't1_vibe_fs_pv' series, studyC the series described ``second``."""
    from conftest import make_volume
    from test_dicom import write_dicom_series

    first, other = tmp_path / "studies" / "studyA", tmp_path / "studies" / "studyC"
    write_dicom_series(make_volume(), first, "1.2.826.0.1.3680043.8.498.60", "t1_vibe_fs_pv")
    for k, description in enumerate(second):
        write_dicom_series(make_volume(seed=k + 1), other, f"1.2.826.0.1.3680043.8.498.7{k}", description,
                           prefix=f"s{k}")
    return first, other


@pytest.mark.parametrize("second, series, keywords", [
    (("t2_spir",), ["--series", "t1_vibe_fs_pv"],
     ["no DICOM series with UID or description 't1_vibe_fs_pv'", "1.2.826.0.1.3680043.8.498.70 't2_spir'"]),
    (("t2_spir", "t1_vibe_fs_pv"), [],
     ["holds 2 DICOM series; choose one with --series", "1.2.826.0.1.3680043.8.498.71 't1_vibe_fs_pv'"]),
], ids=["series_missing", "several_series_without_series"])
def test_a_named_dicom_folder_whose_series_cannot_be_chosen_stops_the_run_before_any_work(
        tmp_path, monkeypatch, capsys, second, series, keywords):
    from LiverVolumetryLib import batch
    from LiverVolumetryLib.cli import main

    first, other = _two_studies(tmp_path, second)
    monkeypatch.setattr(batch, "run_segmentation", lambda *a, **k: pytest.fail("a case was processed"))
    out = tmp_path / "out"
    code = main(["segment", str(first), str(other), *series, "-o", str(out), "--no-radiomics",
                 "--progress", "none"])
    printed = capsys.readouterr()
    assert code != 0 and printed.out == "" and not out.exists()
    error = printed.err.strip()
    assert "\n" not in error and error.startswith(f"livervolumetry: error: {other}: "), error
    assert all(keyword in error for keyword in keywords) and "studyA" not in error, error


def test_a_named_dicom_folder_holding_the_series_is_one_case_and_a_study_tree_skips_the_others(tmp_path):
    first, other = _two_studies(tmp_path, ("t2_spir",))
    assert collect_inputs([first], series_uid=" T1_VIBE_fs_pv") == [InputCase("studyA", first, " T1_VIBE_fs_pv")]
    found = collect_inputs([first.parent], series_uid="t1_vibe_fs_pv")  # a tree: studyC is left out
    assert [(c.case, c.path) for c in found] == [("studyA", first)]


def test_csv_manifest_with_relative_paths(tmp_path):
    data = tmp_path / "data"
    write_image(data / "a.nii.gz")
    write_image(tmp_path / "elsewhere" / "b.nrrd")
    write_dicom(data / "dicom_a", "5.6")
    write_dicom(data / "dicom_b", "1.2.3.4")
    manifest = data / "manifest.csv"
    manifest.write_text("\ufeffCase, Path ,series_uid\n"
                        "first,a.nii.gz,\n"
                        ",../elsewhere/b.nrrd,\n"
                        "third,dicom_b,1.2.3.4\n"
                        "\n"
                        "fourth,dicom_a,\n", encoding="utf-8")
    found = collect_inputs([manifest], series_uid="5.6")
    assert [(c.case, c.path.resolve(), c.series_uid) for c in found] == [
        ("first", (data / "a.nii.gz").resolve(), None),
        ("b", (tmp_path / "elsewhere" / "b.nrrd").resolve(), None),
        ("third", (data / "dicom_b").resolve(), "1.2.3.4"),
        ("fourth", (data / "dicom_a").resolve(), "5.6"),
    ]


@pytest.mark.parametrize("second, column, keywords", [
    (("t2_spir",), "t1_vibe_fs_pv",
     ["no DICOM series with UID or description 't1_vibe_fs_pv'", "1.2.826.0.1.3680043.8.498.70 't2_spir'"]),
    (("t2_spir", "t1_vibe_fs_pv"), "",
     ["holds 2 DICOM series; choose one with --series", "1.2.826.0.1.3680043.8.498.71 't1_vibe_fs_pv'"]),
], ids=["series_missing", "several_series_without_series"])
def test_a_manifest_row_whose_dicom_series_cannot_be_chosen_stops_the_run_before_any_work(
        tmp_path, monkeypatch, capsys, second, column, keywords):
    from LiverVolumetryLib import batch
    from LiverVolumetryLib.cli import main

    first, other = _two_studies(tmp_path, second)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"image,series_uid\n{first},t1_vibe_fs_pv\n{other},{column}\n", encoding="utf-8")
    monkeypatch.setattr(batch, "run_segmentation", lambda *a, **k: pytest.fail("a case was processed"))
    out = tmp_path / "out"
    code = main(["segment", str(manifest), "-o", str(out), "--no-radiomics", "--progress", "none"])
    printed = capsys.readouterr()
    assert code != 0 and printed.out == "" and not out.exists()
    error = printed.err.strip()
    assert "\n" not in error and error.startswith(f"livervolumetry: error: {manifest}: line 3: {other}: "), error
    assert all(keyword in error for keyword in keywords) and "studyA" not in error, error


def test_arguments_of_several_kinds_keep_their_order(tmp_path):
    last = write_image(tmp_path / "z_last.nhdr")
    write_image(tmp_path / "folder" / "b.mha")
    write_image(tmp_path / "folder" / "a.mha")
    first = write_image(tmp_path / "y_first.mha")
    write_dicom(tmp_path / "dicom")
    found = collect_inputs([first, tmp_path / "folder", tmp_path / "dicom", last])
    assert [c.case for c in found] == ["y_first", "a", "b", "dicom", "z_last"]


def test_no_pixel_data_is_read(tmp_path):
    garbage = tmp_path / "broken.nii.gz"
    garbage.write_bytes(b"not an image")
    assert cases(collect_inputs([garbage])) == [("broken", "broken.nii.gz")]


def _duplicate_files(tmp_path):
    return [write_image(tmp_path / "a" / "x.nii.gz"), write_image(tmp_path / "b" / "x.nrrd")]


def _duplicate_folder_and_file(tmp_path):
    path = write_image(tmp_path / "in" / "Case1.nii.gz")
    return [tmp_path / "in", path]


def _duplicate_case_insensitive(tmp_path):
    return [write_image(tmp_path / "Liver.mha"), write_image(tmp_path / "sub" / "liver.mha")]


def _duplicate_in_manifest(tmp_path):
    write_image(tmp_path / "a.nii.gz")
    write_image(tmp_path / "b.nii.gz")
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,case\na.nii.gz,same\nb.nii.gz,same\n")
    return [manifest]


@pytest.mark.parametrize("make", [_duplicate_files, _duplicate_folder_and_file,
                                  _duplicate_case_insensitive, _duplicate_in_manifest],
                         ids=["two_folders", "folder_and_file", "letter_case", "manifest"])
def test_duplicate_case_ids_are_refused(tmp_path, make):
    arguments = make(tmp_path)
    with pytest.raises(InputError, match="two inputs would write the same outputs") as caught:
        collect_inputs(arguments)
    message = str(caught.value)
    assert "\n" not in message
    assert message.count(str(tmp_path)) >= 2  # names both paths


def _missing(tmp_path):
    return [tmp_path / "gone.nii.gz"], "gone.nii.gz", "does not exist"


def _empty_folder(tmp_path):
    (tmp_path / "nothing_here").mkdir()
    return [tmp_path / "nothing_here"], "nothing_here", "no image files"


def _unsupported(tmp_path):
    (tmp_path / "slide.png").write_bytes(b"png")
    return [tmp_path / "slide.png"], "slide.png", "unsupported"


def _single_dicom_file(tmp_path):
    (tmp_path / "one.dcm").write_bytes(b"\0" * 128 + b"DICM")
    return [tmp_path / "one.dcm"], "one.dcm", "pass the folder"


def _manifest_without_image_column(tmp_path):
    (tmp_path / "cases.csv").write_text("file,case\na.nii.gz,a\n")
    return [tmp_path / "cases.csv"], "cases.csv", "no column 'image'"


def _manifest_missing_file(tmp_path):
    (tmp_path / "cases.csv").write_text("image\n\nmissing.nrrd\n")
    return [tmp_path / "cases.csv"], "cases.csv", "line 3: "


def _empty_manifest(tmp_path):
    (tmp_path / "cases.csv").write_text("image\n")
    return [tmp_path / "cases.csv"], "cases.csv", "lists no images"


def _no_arguments(tmp_path):
    return [], "", "no input images given"


def _segmentation_file(tmp_path):
    write_image(tmp_path / "case_liver.seg.nrrd")
    return [tmp_path / "case_liver.seg.nrrd"], "case_liver.seg.nrrd", "is a Slicer segmentation (.seg.nrrd), not a scan"


def _manifest_segmentation_row(tmp_path):
    write_image(tmp_path / "case_liver.seg.nrrd")
    (tmp_path / "cases.csv").write_text("image\ncase_liver.seg.nrrd\n")
    return [tmp_path / "cases.csv"], "cases.csv: line 2: ", "case_liver.seg.nrrd is a Slicer segmentation"


BAD = [_missing, _empty_folder, _unsupported, _single_dicom_file,
       _manifest_without_image_column, _manifest_missing_file, _empty_manifest, _no_arguments,
       _segmentation_file, _manifest_segmentation_row]


@pytest.mark.parametrize("make", BAD, ids=[make.__name__.lstrip("_") for make in BAD])
def test_bad_arguments_are_one_line_input_errors(tmp_path, make):
    arguments, name, keyword = make(tmp_path)
    with pytest.raises(InputError) as caught:
        collect_inputs(arguments)
    message = str(caught.value)
    assert name in message and keyword in message and "\n" not in message


@pytest.mark.parametrize("header, column, meant", [
    ("image,Case ID", "case id", "'case'"),
    ("image,SeriesInstanceUID", "seriesinstanceuid", "'series_uid'"),
    ("path,series description", "series description", "'series_uid'"),
], ids=["case_id", "series_instance_uid", "series_description"])
def test_a_manifest_column_meant_as_case_or_series_is_refused_not_ignored(tmp_path, header, column, meant):
    write_image(tmp_path / "a.nii.gz")
    (tmp_path / "cases.csv").write_text(f"{header}\na.nii.gz,x\n")
    with pytest.raises(InputError) as caught:
        collect_inputs([tmp_path / "cases.csv"])
    message = str(caught.value)
    assert f"column '{column}' is not a manifest column" in message and f"did you mean {meant}" in message, message


def test_a_manifest_with_the_image_under_another_name_says_which_column_to_rename(tmp_path):
    (tmp_path / "cases.csv").write_text("Image Path,case\na.nii.gz,a\n")
    with pytest.raises(InputError, match="rename column 'image path' to 'image'"):
        collect_inputs([tmp_path / "cases.csv"])


def test_a_manifest_row_with_more_values_than_columns_is_refused_naming_the_line(tmp_path):
    write_image(tmp_path / "a.nii.gz")
    (tmp_path / "cases.csv").write_text("image,case\na.nii.gz,first,\na.nii.gz,second,1.2.3\n")
    with pytest.raises(InputError, match=r"cases.csv: line 3: more values than the header has columns \(image, case\)"):
        collect_inputs([tmp_path / "cases.csv"])


def test_other_manifest_columns_are_ignored(tmp_path):
    write_image(tmp_path / "a.nii.gz")
    (tmp_path / "cases.csv").write_text("image,case,label,site,series_uid_note\na.nii.gz,first,a_l.nii.gz,x,y\n")
    assert [c.case for c in collect_inputs([tmp_path / "cases.csv"])] == ["first"]
