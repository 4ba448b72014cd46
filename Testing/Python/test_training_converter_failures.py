"""Converters on damaged or unusual datasets: one-line errors naming the file, and an
``--overwrite`` that fails leaves the earlier conversion as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_training_datasets import chaos_grey, volume, write_dicom_slices, write_pair

from LiverVolumetryLib.errors import InputError, OutputError
from LiverVolumetryTraining import cli as training_cli
from LiverVolumetryTraining import converters
from LiverVolumetryTraining.chaos import convert_chaos
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.converters import convert_pairs
from LiverVolumetryTraining.liverhccseg import convert_liverhccseg

OTHER_SERIES = "1.2.826.0.1.3680043.8.498.99"


def chaos_patient(root: Path, image: sitk.Image | None = None) -> Path:
    """MR/3/T2SPIR with one DICOM file and one ground-truth PNG per slice of ``image``."""
    image = volume() if image is None else image
    patient = root / "MR" / "3"
    names = [f"IMG-0002-{z + 1:05d}" for z in range(image.GetSize()[2])]
    write_dicom_slices(image, patient / "T2SPIR" / "DICOM_anon", names)
    (patient / "T2SPIR" / "Ground").mkdir(parents=True)
    for z, name in enumerate(names):
        sitk.WriteImage(sitk.GetImageFromArray(chaos_grey(image)[z]), str(patient / "T2SPIR" / "Ground" / f"{name}.png"))
    return patient


def test_two_interleaved_series_in_one_folder_are_refused(tmp_path):
    # A second series half a slice away: without the series check both read as one volume
    # of twice the slices at half the spacing, and the conversion succeeded.
    patient = chaos_patient(tmp_path / "src")
    image = volume()
    shifted = volume(seed=5, origin=image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 0.5)))
    other = chaos_patient(tmp_path / "other", shifted) / "T2SPIR"
    for dcm in sorted((other / "DICOM_anon").glob("*.dcm")):
        slab = sitk.ReadImage(str(dcm))
        slab.SetMetaData("0020|000e", OTHER_SERIES)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(patient / "T2SPIR" / "DICOM_anon" / dcm.name.replace("0002", "0003", 1)))
        writer.Execute(slab)
        shutil.copy(other / "Ground" / f"{dcm.stem}.png",
                    patient / "T2SPIR" / "Ground" / f"{dcm.stem.replace('0002', '0003', 1)}.png")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"DICOM_anon: holds 2 DICOM series \(SeriesInstanceUID\), not one: "
                                         r"6 of 12 files are of series"):
        convert_chaos(tmp_path / "src", out, sequences=["t2spir"])
    assert not out.exists()


def test_colour_and_duplicate_pngs_are_refused(tmp_path):
    patient = chaos_patient(tmp_path / "src")
    ground = patient / "T2SPIR" / "Ground"
    png = sorted(ground.glob("*.png"))[2]
    grey = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    rgb = np.stack([np.zeros_like(grey), grey, np.zeros_like(grey)], axis=-1)  # liver drawn in green only
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(png))
    with pytest.raises(InputError, match=f"{png.name}: is a colour PNG"):
        convert_chaos(tmp_path / "src", tmp_path / "out", sequences=["t2spir"])
    grey_rgb = np.stack([grey] * 3, axis=-1)  # grey saved as RGB: converted as grey
    sitk.WriteImage(sitk.GetImageFromArray(grey_rgb, isVector=True), str(png))
    assert len(convert_chaos(tmp_path / "src", tmp_path / "out", sequences=["t2spir"])) == 1
    shutil.copy(png, png.with_suffix(".PNG"))  # which of the two is the slice's?
    with pytest.raises(InputError, match=rf"Ground: {png.stem}\.(png|PNG) and {png.stem}\.(png|PNG) name the "
                                         "same slice"):
        convert_chaos(tmp_path / "src", tmp_path / "out2", sequences=["t2spir"])


def test_a_folder_that_cannot_be_listed_is_one_line(tmp_path, monkeypatch, capsys):
    patient = chaos_patient(tmp_path / "src")
    ground = patient / "T2SPIR" / "Ground"
    listing = Path.iterdir

    def iterdir(self):  # chmod 000 does not stop root, who runs CI: fail the listing itself
        if self == ground:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert main(["convert", "chaos", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"livervolumetry-train: error: {ground}: cannot be listed (permission denied)\n"
    assert not (tmp_path / "out").exists()


def test_a_truncated_png_is_one_line_on_stderr(tmp_path, capfd):
    patient = chaos_patient(tmp_path / "src")
    png = sorted((patient / "T2SPIR" / "Ground").glob("*.png"))[1]
    png.write_bytes(png.read_bytes()[:40])
    assert main(["convert", "chaos", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 1
    err = capfd.readouterr().err  # libpng's own "libpng error: ..." went to the same stream
    assert err.startswith(f"livervolumetry-train: error: {png}: cannot be read as PNG") and err.count("\n") == 1, err


def test_a_file_that_cannot_be_read_is_not_called_missing(tmp_path):
    patient = chaos_patient(tmp_path / "src")
    blocked = patient / "T2SPIR" / "DICOM_anon" / "IMG-0002-00099.dcm"
    blocked.mkdir()  # open() fails on it as on a file without read permission
    with pytest.raises(InputError, match=f"{blocked.name}: cannot be read as DICOM \\(is a directory\\)$"):
        convert_chaos(tmp_path / "src", tmp_path / "out", sequences=["t2spir"])


def test_an_os_error_nothing_else_caught_is_one_line_naming_the_file(monkeypatch, capsys):
    def fails(args):
        raise PermissionError(13, "Permission denied", "/data/MR/3/T2SPIR")

    def reader_went_away(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(training_cli, "cmd_check", fails)
    assert main(["check", "--data", "/data"]) == 1
    assert capsys.readouterr().err == "livervolumetry-train: error: /data/MR/3/T2SPIR: permission denied\n"
    monkeypatch.setattr(training_cli, "cmd_check", reader_went_away)
    assert main(["check", "--data", "/data"]) == 1
    assert capsys.readouterr().err == ""  # `| head` closed the pipe: nothing to report


def test_a_4d_or_rgb_image_is_skipped_as_the_image_not_the_label(tmp_path, capsys):
    data = tmp_path / "pairs"
    write_pair(data, "image_1.nii.gz", "label_1.nii.gz")
    image, _ = write_pair(data, "image_2.nii.gz", "label_2.nii.gz", seed=1)
    four_d = sitk.JoinSeries([sitk.ReadImage(str(image))] * 2)
    sitk.WriteImage(four_d, str(image))
    image3, _ = write_pair(data, "image_3.nii.gz", "label_3.nii.gz", seed=2)
    grey = sitk.ReadImage(str(image3))
    rgb = sitk.Compose(grey, grey, grey)
    sitk.WriteImage(rgb, str(image3))
    lines = []
    entries = convert_pairs(data, tmp_path / "out", log=lines.append)
    assert [e.case for e in entries] == ["1"]
    assert any(line.startswith(f"skipped {image}: case 2: image is 4D") for line in lines), lines
    assert any(line.startswith(f"skipped {image3}: case 3: image has 3 components per voxel") for line in lines), lines


def test_a_failed_overwrite_leaves_the_earlier_conversion_as_it_was(tmp_path, monkeypatch):
    chaos_patient(tmp_path / "src")
    out = tmp_path / "out"
    convert_chaos(tmp_path / "src", out, sequences=["t2spir"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["chaos-3-t2spir_image.nii.gz", "chaos-3-t2spir_label.nii.gz", "manifest.csv"]

    def disk_full(entries, path, overwrite=True):
        raise OutputError(path, "cannot write here (No space left on device)")

    monkeypatch.setattr(converters, "write_manifest", disk_full)
    with pytest.raises(OutputError, match=r"out: cannot move the converted files into place .*No space left.*; "
                                          "the folder is as it was"):
        convert_chaos(tmp_path / "src", out, sequences=["t2spir"], keep_organs=True, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left either
    monkeypatch.undo()
    # A folder where the conversion writes a file is refused before anything is moved.
    label = out / "chaos-3-t2spir_label.nii.gz"
    label.unlink()
    label.mkdir()
    with pytest.raises(OutputError, match=f"{label}: is a folder where the conversion writes a file"):
        convert_chaos(tmp_path / "src", out, sequences=["t2spir"], overwrite=True)
    assert (out / "manifest.csv").read_bytes() == before["manifest.csv"]
    assert (out / "chaos-3-t2spir_image.nii.gz").read_bytes() == before["chaos-3-t2spir_image.nii.gz"]


def test_an_image_beside_liverhccseg_patient_folders_is_not_a_patient(tmp_path):
    # It made the whole source one patient: named after the source folder with one
    # patient folder, refused as having "several liver segmentations" with two.
    source = tmp_path / "LiverHccSeg"
    for patient in ("HCC-001", "HCC-002"):
        write_pair(source / patient, "art_pv.nii.gz", "rater1_liver.nii.gz")
    sitk.WriteImage(volume(), str(source / "overview.nii.gz"))
    lines = []
    entries = convert_liverhccseg(source, tmp_path / "out", log=lines.append)
    assert [e.case for e in entries] == ["HCC-001", "HCC-002"]
    assert f"ignored {source / 'overview.nii.gz'}: an image file beside the patient folders" in lines
    # One patient's own folder (its segmentation at the top) is still one patient.
    assert [e.case for e in convert_liverhccseg(source / "HCC-001", tmp_path / "one")] == ["HCC-001"]
