"""Names and values from other systems: file and folder names that are not UTF-8 (ITK
aborted the whole process on them), SeriesDescriptions in a scanner's single-byte
character set, a series whose slices disagree on pixel spacing, and in-memory images
given to the Python API that a file would have been refused for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ellipsoid_image, make_volume
from test_dicom import write_dicom_series

from LiverVolumetryLib.atomic import write_text_atomic
from LiverVolumetryLib.dicom import dicom_text
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import list_dicom_series, read_image

LATIN1_NAME = os.fsdecode(b"M\xfcller")  # "Müller" saved in Latin-1: not UTF-8


def _latin1_path(folder: Path, suffix: str = "") -> Path:
    path = folder / (LATIN1_NAME + suffix)
    try:
        path.touch()
        path.unlink()
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take names that are not UTF-8")
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    # A child process: the abort this guards against would take pytest down with it.
    return subprocess.run([sys.executable, "-m", "LiverVolumetryLib.cli", *args], capture_output=True, timeout=600)


def test_an_image_whose_name_is_not_utf8_is_refused_before_any_work(tmp_path):
    # Before: "terminate called after throwing an instance of 'std::logic_error'", exit 134.
    scans = tmp_path / "scans"
    scans.mkdir()
    image, _ = ellipsoid_image(size=(40, 40, 24), spacing=(2.0, 2.0, 2.0), radii=(18.0, 14.0, 12.0))
    sitk.WriteImage(image, str(scans / "good.nii.gz"))
    shutil.copy(scans / "good.nii.gz", _latin1_path(scans, ".nii.gz"))
    done = _cli("segment", str(scans), "-o", str(tmp_path / "out"), "--no-radiomics", "--progress", "none")
    err = done.stderr.decode("utf-8", "replace").strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1, err
    assert "its name is not valid UTF-8 text" in err and not (tmp_path / "out").exists()


def test_a_dicom_folder_holding_a_file_whose_name_is_not_utf8_is_refused(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(make_volume(shape=(4, 6, 5)), folder, "1.2.826.0.1.3680043.8.498.3")
    first = sorted(folder.iterdir())[0]
    first.rename(_latin1_path(folder, ".dcm"))
    with pytest.raises(InputError, match="holds a file whose name is not valid UTF-8 text"):
        list_dicom_series(folder)


def test_series_descriptions_are_decoded_in_their_character_set():
    latin1 = "Leber \u00dcbersicht".encode("latin-1").decode("utf-8", "surrogateescape")  # as ITK hands it over
    assert dicom_text(latin1, "ISO_IR 100") == "Leber \u00dcbersicht"
    assert dicom_text(latin1, "") == "Leber \u00dcbersicht"  # no character set, not UTF-8: Latin-1
    assert dicom_text("Leber \u00dcbersicht", "ISO_IR 192") == "Leber \u00dcbersicht"
    greek = "\u0389\u03c0\u03b1\u03c1".encode("iso8859-7").decode("utf-8", "surrogateescape")
    assert dicom_text(greek, "ISO_IR 126") == "\u0389\u03c0\u03b1\u03c1"


def test_a_text_with_an_undecodable_name_is_still_written(tmp_path):
    # Before, the error row of such a case crashed the table write (UnicodeEncodeError).
    write_text_atomic(tmp_path / "t.csv", f"case,error\nx,{LATIN1_NAME}: failed\n")
    assert "failed" in (tmp_path / "t.csv").read_text(encoding="utf-8")


def test_a_series_whose_slices_disagree_on_pixel_spacing_is_refused(tmp_path):
    # ITK took the first slice's spacing for all: +42 % liver volume without a word.
    folder = tmp_path / "series"
    write_dicom_series(make_volume(shape=(5, 6, 7)), folder, "1.2.826.0.1.3680043.8.498.4")
    third = sorted(folder.iterdir())[2]
    slab = sitk.ReadImage(str(third))
    for key in slab.GetMetaDataKeys():
        slab.SetMetaData(key, slab.GetMetaData(key))
    slab.SetSpacing((1.5, 1.5, slab.GetSpacing()[2]))  # the writer takes PixelSpacing from the spacing
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(third))
    writer.Execute(slab)
    with pytest.raises(InputError, match=f"has slices of different pixel spacing in one series \\({third.name}: "
                                         "1.5 x 1.5 mm"):
        read_image(folder)


@pytest.mark.parametrize("spoil, says", [
    (lambda a: a.__setitem__((0, 0, slice(0, 50)), np.nan), "NaN or infinite"),
    (lambda a: a.__setitem__(Ellipsis, 7.0), "constant image"),
], ids=["nan", "constant"])
def test_segment_liver_refuses_in_memory_images_a_file_would_be_refused_for(spoil, says):
    from LiverVolumetryLib.segment import segment_liver

    image, _ = ellipsoid_image(size=(40, 40, 24), spacing=(2.0, 2.0, 2.0), radii=(18.0, 14.0, 12.0))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spoil(array)
    spoiled = sitk.GetImageFromArray(array)
    spoiled.CopyInformation(image)
    with pytest.raises(InputError, match=says):  # was: an empty mask "with confidence", or a "liver"
        segment_liver(spoiled, device="cpu")


def test_measure_given_a_file_name_says_it_wants_an_image():
    from LiverVolumetryLib.measure import measure

    image, mask = ellipsoid_image(size=(20, 20, 12), spacing=(2.0, 2.0, 2.0), radii=(8.0, 7.0, 5.0))
    with pytest.raises(InputError, match="expected a SimpleITK image as the image, got str"):
        measure("scan.nii.gz", mask, radiomics=False)


def test_one_dicom_series_split_over_two_folders_is_refused_before_any_work(tmp_path):
    # Before, odd/ and even/ slices of one series were two cases at twice the slice gap,
    # both "ok", the patient counted twice.
    from LiverVolumetryLib.inputs import collect_inputs

    uid = "1.2.826.0.1.3680043.8.498.5"
    write_dicom_series(make_volume(shape=(6, 6, 7)), tmp_path / "study" / "odd", uid)
    for path in sorted((tmp_path / "study" / "odd").iterdir())[1::2]:
        (tmp_path / "study" / "even").mkdir(exist_ok=True)
        path.rename(tmp_path / "study" / "even" / path.name)
    write_dicom_series(make_volume(shape=(6, 6, 7)), tmp_path / "study" / "other", uid + ".1")
    with pytest.raises(InputError, match=f"odd: holds DICOM series {uid}, as .*even does \\(one series split"):
        collect_inputs([tmp_path / "study"])
    assert [c.case for c in collect_inputs([tmp_path / "study" / "odd", tmp_path / "study" / "other"])] == [
        "odd", "other"]
