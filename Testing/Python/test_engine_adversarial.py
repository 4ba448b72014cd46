"""Adversarial inputs to the headless engine: each test here failed before its fix."""

from __future__ import annotations

import copy
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import read_image
from LiverVolumetryLib.masks import read_mask


def _small_image(size=(12, 10, 8), spacing=(2.0, 2.5, 3.0)) -> sitk.Image:
    array = np.random.default_rng(0).normal(100, 10, size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image


# ------------------------------------------------------------ NIfTI qform / sform


def _nifti_with_sform(tmp_path: Path, name: str, code: int, shift_mm: float) -> Path:
    """An uncompressed NIfTI-1 written by ITK (qform = sform, both code 1), then its
    sform_code set to ``code`` and its sform moved ``shift_mm`` along x."""
    path = tmp_path / name
    sitk.WriteImage(_small_image(), str(path))
    header = bytearray(path.read_bytes())
    assert struct.unpack("<i", header[:4])[0] == 348
    struct.pack_into("<h", header, 254, code)
    offset_x = struct.unpack_from("<f", header, 292)[0]
    struct.pack_into("<f", header, 292, offset_x + shift_mm)
    path.write_bytes(bytes(header))
    return path


def test_nifti_whose_sform_disagrees_with_the_geometry_read_is_refused(tmp_path):
    # ITK places this image by its qform (sform_code 2 is not "scanner"), nibabel, FSL
    # and ANTs by its sform: a mask written on ITK's geometry would lie 30 mm away from
    # the image in those tools.
    path = _nifti_with_sform(tmp_path, "ambiguous.nii", code=2, shift_mm=30.0)
    with pytest.raises(InputError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "sform" in message and "30" in message
    with pytest.raises(InputError, match="sform"):
        read_mask(path)


def test_nifti_whose_sform_agrees_is_read(tmp_path):
    path = _nifti_with_sform(tmp_path, "aligned.nii", code=2, shift_mm=0.0)
    image = read_image(path)
    np.testing.assert_allclose(image.GetOrigin(), (-10.0, 20.0, 5.0), atol=1e-4)


def _patched_nifti(tmp_path: Path, name: str, fields: dict[int, tuple[str, float]]) -> Path:
    """An uncompressed NIfTI-1 written by ITK with header ``fields`` (offset: (format, value)) set."""
    path = tmp_path / name
    sitk.WriteImage(_small_image(), str(path))
    header = bytearray(path.read_bytes())
    for offset, (fmt, value) in fields.items():
        struct.pack_into("<" + fmt, header, offset, value)
    path.write_bytes(bytes(header))
    return path


def test_nifti_with_zero_pixdim_and_no_sform_is_refused(tmp_path, capfd):
    # ITK's NIfTI library took 1 mm for the zero voxel size (saying so only on stderr).
    path = _patched_nifti(tmp_path, "flat.nii", {252: ("h", 0), 254: ("h", 0), 80: ("f", 0.0)})
    with pytest.raises(InputError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "pixdim" in message and "\n" not in message
    assert capfd.readouterr().err == ""


def test_nifti_with_sform_scales_itk_distrusts_fails_quietly(tmp_path, capfd):
    # pixdim[1] = -2 against an sform with 2 mm: ITK warned on stderr ("unexpected scales
    # in sform"), fell back to the qform and placed the image elsewhere than the sform.
    path = _patched_nifti(tmp_path, "negative.nii", {80: ("f", -2.0)})
    with pytest.raises(InputError, match="sform"):
        read_image(path)
    assert capfd.readouterr().err == ""


# ------------------------------------------------------- .seg.nrrd with several segments


def _segmentation(tmp_path: Path, name: str, image: sitk.Image, liver: np.ndarray, other: np.ndarray,
                  names=("Liver", "Spleen"), layers: bool = False) -> Path:
    """A Slicer .seg.nrrd (written by slicerio) with two segments; arrays are (i, j, k)."""
    import slicerio

    from LiverVolumetryLib.outputs import _segmentation_dict

    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    segmentation = _segmentation_dict(empty, names[0])
    second = copy.deepcopy(segmentation["segments"][0])
    second.update(id=names[1], name=names[1], labelValue=1 if layers else 2, layer=1 if layers else 0)
    segmentation["segments"].append(second)
    if layers:
        segmentation["voxels"] = np.stack([liver, other]).astype(np.uint8)
    else:
        segmentation["voxels"] = (liver + 2 * (other & ~liver)).astype(np.uint8)
    path = tmp_path / name
    slicerio.write_segmentation(str(path), segmentation)
    return path


@pytest.mark.parametrize("layers", [False, True], ids=["one_layer", "two_layers"])
def test_seg_nrrd_measures_only_its_liver_segment(tmp_path, layers):
    # The Slicer module measures the segment named 'Liver'; the CLI measured the union of
    # every segment (here liver + spleen) for the same file.
    image = _small_image()
    liver = np.zeros(image.GetSize(), bool)
    liver[2:6, 2:6, 2:5] = True
    spleen = np.zeros_like(liver)
    spleen[8:11, 3:7, 1:4] = True
    path = _segmentation(tmp_path, f"two_{layers}.seg.nrrd", image, liver, spleen, layers=layers)
    mask = sitk.GetArrayFromImage(read_mask(path, reference=image)).transpose(2, 1, 0)
    np.testing.assert_array_equal(mask, liver.astype(np.uint8))


def _image_and_two_boxes() -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """A small image and two disjoint boxes (i, j, k arrays) to be its two segments."""
    image = _small_image()
    a = np.zeros(image.GetSize(), bool)
    a[2:6, 2:6, 2:5] = True
    b = np.zeros_like(a)
    b[8:11, 3:7, 1:4] = True
    return image, a, b


@pytest.mark.parametrize("names, says", [
    (("Segment_1", "Segment_2"), "holds 2 segments ('Segment_1', 'Segment_2') and none is named 'Liver'"),
    # Before, the first one was measured without a word (e.g. an automatic 'Liver' and a
    # hand-drawn 'liver' copy): which one the table held depended on the segment order.
    (("Liver", "liver"), "holds 2 segments named 'Liver' ('Liver', 'liver')"),
], ids=["no_liver", "two_livers"])
def test_seg_nrrd_without_one_clear_liver_segment_is_refused(tmp_path, names, says):
    image, a, b = _image_and_two_boxes()
    path = _segmentation(tmp_path, "two.seg.nrrd", image, a, b, names=names)
    with pytest.raises(InputError) as caught:
        read_mask(path, reference=image)
    message = str(caught.value)
    assert message.startswith(f"{path}: {says}") and "\n" not in message, message


# ------------------------------------------------------------ truncated MetaImage


@pytest.mark.parametrize("name", ["cut.mha", "cut_compressed.mha", "cut.mhd"])
def test_truncated_metaimage_is_refused_in_one_line(tmp_path, capfd, name):
    # MetaIO printed "MetaImage: M_ReadElementsData: data not read completely" and an
    # "ideal = ... : actual = ..." line to stderr before the one-line error.
    path = tmp_path / name
    sitk.WriteImage(_small_image(), str(path), "compressed" in name)
    data = path.with_suffix(".raw") if name.endswith(".mhd") else path
    data.write_bytes(data.read_bytes()[:-200])
    with pytest.raises(InputError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "truncated" in message and "\n" not in message
    assert capfd.readouterr().err == ""


def test_complete_metaimage_vector_and_compressed_are_read(tmp_path):
    image = _small_image()
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(tmp_path / "short.mha"), True)
    assert read_image(tmp_path / "short.mha").GetSize() == image.GetSize()
    sitk.WriteImage(sitk.Compose(image, image), str(tmp_path / "vector.mhd"))
    assert read_mask(tmp_path / "vector.mhd").GetSize() == image.GetSize()


# ------------------------------------------------------------ measure -o FILE


def test_measure_into_an_output_path_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    from LiverVolumetryLib.cli import main

    image = _small_image()
    mask = sitk.Cast(image > 100, sitk.sitkUInt8)
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    (tmp_path / "results").write_text("not a folder")
    code = main(["measure", str(tmp_path / "scan.nrrd"), str(tmp_path / "mask.nrrd"), "-o", str(tmp_path / "results"),
                 "--no-radiomics"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""  # no volume printed for a run that cannot be recorded
    assert err.strip() == f"livervolumetry: error: {tmp_path / 'results'}: is a file; the output must be a folder"
    assert (tmp_path / "results").read_text() == "not a folder"


# ------------------------------------------------------------ resume from another working folder


def test_resume_from_another_working_folder_does_not_take_another_scan_for_done(tmp_path, monkeypatch, capsys):
    # The table recorded 'images/case1.nii.gz' relative to the first run's working folder;
    # a second site's images/case1.nii.gz, run from its own folder, was then resolved to
    # itself, matched, and skipped: site A's volume was reported for site B's scan.
    from LiverVolumetryLib.cli import main
    from LiverVolumetryLib.phantom import make_phantom

    for site, seed in (("siteA", 3), ("siteB", 4)):
        (tmp_path / site / "images").mkdir(parents=True)
        phantom = make_phantom(seed, shape=(64, 48, 20), spacing=(6.0, 6.0, 10.0))
        sitk.WriteImage(phantom.image, str(tmp_path / site / "images" / "case1.nii.gz"))
    out = tmp_path / "results"
    args = ["segment", "images", "-o", str(out), "--no-radiomics", "--progress", "none", "--device", "cpu"]
    monkeypatch.chdir(tmp_path / "siteA")
    assert main(args) == 0
    table = (out / "measurements.csv").read_bytes()
    monkeypatch.chdir(tmp_path / "siteB")
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "already holds case 'case1' from another input" in err and str(tmp_path / "siteA") in err, err
    assert (out / "measurements.csv").read_bytes() == table
