"""Files whose headers or compressed data ITK reads without a word but wrongly: damaged
compressed MetaImage data (garbage voxels), a missing or NaN voxel size or position (1 mm
at the origin), scaled direction axes, NIfTI without an orientation, origins beyond what
NIfTI's float32 keeps, a liver segment with label value 0, and fields of view whose
network grid cannot fit in memory. Each is refused in one line naming the file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_volume

from LiverVolumetryLib.cli import main
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import read_image
from LiverVolumetryLib.masks import read_mask


def _scan(shape=(20, 18, 12)) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 20, shape[::-1]).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 4.0))
    return image


def _mask(image: sitk.Image) -> sitk.Image:
    array = np.zeros(image.GetSize()[::-1], np.uint8)
    array[3:9, 4:14, 5:15] = 1
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return mask


def _refused(path: Path, says: str, reference: sitk.Image | None = None) -> None:
    with pytest.raises(InputError) as caught:
        read_mask(path, reference=reference) if reference is not None else read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message


# --------------------------------------------------------------------- MetaImage


def _damaged_mha(tmp_path: Path, image: sitk.Image, keep_size_field: bool, cut: bool) -> Path:
    whole = tmp_path / "whole.mha"
    sitk.WriteImage(image, str(whole), True)
    data = whole.read_bytes()
    start = data.index(b"LOCAL\n") + 6
    header, body = data[:start].decode(), bytearray(data[start:])
    if not keep_size_field:
        header = "".join(line for line in header.splitlines(True) if not line.startswith("CompressedDataSize"))
    if cut:
        body = body[:len(body) // 2]
    else:
        for k in range(len(body) // 3, 2 * len(body) // 3):
            body[k] ^= 0x5A
    path = tmp_path / f"damaged_{keep_size_field}_{cut}.mha"
    path.write_bytes(header.encode() + bytes(body))
    return path


@pytest.mark.parametrize("keep_size_field, cut", [(True, False), (False, False), (False, True)],
                         ids=["flipped_bytes", "flipped_bytes_no_size", "cut_no_size"])
def test_damaged_compressed_metaimage_is_refused_not_read_as_garbage(tmp_path, keep_size_field, cut):
    # ITK decompressed such files into garbage voxels: a mask of 1,850 mL measured 7,207 mL.
    image = _scan()
    mask_path = _damaged_mha(tmp_path, _mask(image), keep_size_field, cut)
    _refused(mask_path, "do not decompress", reference=image)
    _refused(_damaged_mha(tmp_path, image, keep_size_field, cut), "do not decompress")


def test_intact_compressed_metaimage_reads_back_exactly(tmp_path):
    image = _scan()
    sitk.WriteImage(image, str(tmp_path / "ok.mha"), True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "ok.mha")),
                                  sitk.GetArrayViewFromImage(image))


def _mhd(tmp_path: Path, lines: str) -> Path:
    image = _scan()
    sitk.GetArrayFromImage(image).astype("<f4").tofile(tmp_path / "data.raw")
    path = tmp_path / "hand.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 20 18 12\n" + lines
                    + "ElementType = MET_FLOAT\nElementDataFile = data.raw\n")
    return path


@pytest.mark.parametrize("lines, says", [
    ("ElementSpacing = 1.5 1.5 4\nTransformMatrix = 2 0 0 0 2 0 0 0 2\n",
     "axes are not unit vectors (lengths 2, 2, 2)"),
    ("", "has no voxel size"),
    ("ElementSpacing = 1.5 1.5 nan\n", "elementspacing that is not finite numbers"),
    ("ElementSpacing = 1.5 1.5 4\nOffset = nan 0 0\n", "offset that is not finite numbers"),
], ids=["scaled_axes", "no_spacing", "nan_spacing", "nan_offset"])
def test_metaimage_headers_itk_would_misread_are_refused(tmp_path, lines, says):
    _refused(_mhd(tmp_path, lines), says)


def test_a_plain_metaimage_header_is_read(tmp_path):
    image = read_image(_mhd(tmp_path, "ElementSpacing = 1.5 1.5 4\nOffset = -10 5 0\n"))
    assert image.GetSpacing() == (1.5, 1.5, 4.0) and image.GetOrigin() == (-10.0, 5.0, 0.0)


# --------------------------------------------------------------------- NRRD


@pytest.mark.parametrize("lines, says", [
    ("", "has no voxel size"),
    ("spacings: 1.5 1.5 nan\n", "'spacings' that is not finite numbers"),
], ids=["no_spacing", "nan_spacing"])
def test_nrrd_headers_without_a_voxel_size_are_refused(tmp_path, lines, says):
    # ITK took 1 mm: the liver volume of 1.25 x 1.25 x 7.7 mm scans came out as 1.8 mL.
    data = sitk.GetArrayFromImage(_scan()).astype("<f4").tobytes()
    path = tmp_path / "hand.nrrd"
    path.write_bytes(("NRRD0004\ntype: float\ndimension: 3\nsizes: 20 18 12\n" + lines
                      + "encoding: raw\nendian: little\n\n").encode() + data)
    _refused(path, says)
    path.write_bytes(("NRRD0004\ntype: float\ndimension: 3\nsizes: 20 18 12\nspacings: 1.5 1.5 4\n"
                      "encoding: raw\nendian: little\n\n").encode() + data)
    assert read_image(path).GetSpacing() == (1.5, 1.5, 4.0)


# --------------------------------------------------------------------- NIfTI and origins


def test_nifti_without_qform_or_sform_is_refused(tmp_path):
    # ITK and nibabel place such a file differently (flipped and ~160 mm apart), and the
    # masks are written with ITK's placement.
    sitk.WriteImage(_scan(), str(tmp_path / "coded.nii"))
    header = bytearray((tmp_path / "coded.nii").read_bytes())
    struct.pack_into("<2h", header, 252, 0, 0)
    (tmp_path / "nocodes.nii").write_bytes(header)
    read_image(tmp_path / "coded.nii")
    _refused(tmp_path / "nocodes.nii", "has no orientation (its qform_code and sform_code are 0)")


def test_an_uncompressed_nifti_named_nii_gz_is_named_as_such(tmp_path):
    sitk.WriteImage(_scan(), str(tmp_path / "plain.nii"))
    (tmp_path / "plain.nii.gz").write_bytes((tmp_path / "plain.nii").read_bytes())
    _refused(tmp_path / "plain.nii.gz", "is named .nii.gz but is not gzip-compressed")  # was: "is truncated"


@pytest.mark.parametrize("origin", [(1e8 + 2.5, 0.0, 0.0), (0.0, -2e5, 0.0)])
def test_an_origin_no_scanner_gives_is_refused(tmp_path, origin):
    # At 1e8 mm, NIfTI's float32 origin put the mask 2.5 mm (two voxels) off the scan.
    image = _scan()
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(tmp_path / "far.nrrd"))
    _refused(tmp_path / "far.nrrd", "has an implausible position")


# --------------------------------------------------------------------- masks


def test_a_liver_segment_with_label_value_0_is_refused(tmp_path):
    image = _scan()
    mask = sitk.Cast(_mask(image) * 2, sitk.sitkUInt8)
    for key, value in {"Segment0_ID": "S0", "Segment0_Name": "Liver", "Segment0_LabelValue": "0",
                       "Segment0_Layer": "0", "Segment1_ID": "S1", "Segment1_Name": "Tumor",
                       "Segment1_LabelValue": "2", "Segment1_Layer": "0"}.items():
        mask.SetMetaData(key, value)
    sitk.WriteImage(mask, str(tmp_path / "zero.seg.nrrd"), True)
    _refused(tmp_path / "zero.seg.nrrd", "segment 'Liver' has label value 0", reference=image)


# --------------------------------------------------------------------- network grid memory


def test_a_field_of_view_too_large_for_memory_on_the_network_grid_is_refused(tmp_path, monkeypatch, capsys):
    # 20 x 18 x 12 voxels of 30 mm: a tiny file, but 300 x 270 x 180 voxels at 2 mm.
    import LiverVolumetryLib.imageio as imageio

    image = make_volume(shape=(12, 18, 20), spacing=(30.0, 30.0, 30.0))
    path = tmp_path / "coarse.nrrd"
    sitk.WriteImage(image, str(path))
    monkeypatch.setattr(imageio, "available_memory_bytes", lambda: 700 * 1024**2)  # the file itself fits
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--no-radiomics", "--progress", "none"]) == 1
    captured = capsys.readouterr()
    assert f"{path}: is too large on the network's grid" in captured.out + captured.err
    assert "300x270x180 voxels" in captured.out + captured.err


def test_a_metaimage_header_with_too_few_values_is_refused_without_metaio_noise(tmp_path, capfd):
    path = _mhd(tmp_path, "ElementSpacing = 1.5 1.5\n")
    _refused(path, "has a malformed header: elementspacing has 2 values, NDims 3 needs 3")
    assert capfd.readouterr().err == ""


def test_float64_values_beyond_float32_are_named_as_such_not_as_infinite(tmp_path):
    array = sitk.GetArrayFromImage(_scan()).astype(np.float64) * 1e38
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 4.0))
    sitk.WriteImage(image, str(tmp_path / "huge.nrrd"))
    _refused(tmp_path / "huge.nrrd", "has voxel values beyond the float32 range")  # was: "NaN or infinite values"
    sitk.WriteImage(sitk.GetImageFromArray(array / 1e38), str(tmp_path / "plain.nrrd"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_image(tmp_path / "plain.nrrd")), array / 1e38, rtol=1e-6)
