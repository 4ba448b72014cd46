"""Plausibility warnings on liver masks: right anatomy passes, wrong anatomy is named,
whatever the orientation of the grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.phantom import make_phantom
from LiverVolumetryLib.plausibility import MAX_VOLUME_ML, MIN_VOLUME_ML, plausibility_warnings


@pytest.fixture(scope="module")
def phantom():
    """A phantom on an axis-aligned LPS grid (index axis 0 runs to the patient's left)."""
    return make_phantom(3, shape=(80, 72, 44), spacing=(5.0, 5.0, 8.0), orientation="LPS", oblique_degrees=0)


def _mirrored(mask: sitk.Image) -> sitk.Image:
    """The mask flipped left-right on the same grid: the liver moves to the patient's left."""
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(mask)[:, :, ::-1].copy())
    out.CopyInformation(mask)
    return out


def _scaled(image: sitk.Image, factor: float) -> sitk.Image:
    """The same voxels with ``factor`` times the spacing: a bigger or smaller patient."""
    out = sitk.Image(image)
    out.SetSpacing([s * factor for s in image.GetSpacing()])
    return out


def _liver_slices(mask: sitk.Image) -> tuple[int, int]:
    """First and last slice index (k, running superior on an LPS grid) holding liver."""
    k = np.flatnonzero(sitk.GetArrayViewFromImage(mask).any(axis=(1, 2)))
    return int(k[0]), int(k[-1])


def test_a_true_liver_raises_no_warning_in_any_orientation(phantom):
    assert plausibility_warnings(phantom.image, phantom.liver) == []
    for code in ("RAS", "PIL", "SRA"):
        image, mask = (sitk.DICOMOrient(im, code) for im in (phantom.image, phantom.liver))
        assert plausibility_warnings(image, mask) == [], code
    oblique = make_phantom(3, shape=(80, 72, 44), spacing=(5.0, 5.0, 8.0), orientation="RAI", oblique_degrees=12)
    assert plausibility_warnings(oblique.image, oblique.liver) == []


def test_a_liver_on_the_left_is_named_in_every_orientation(phantom):
    mirrored = _mirrored(phantom.liver)
    warnings = plausibility_warnings(phantom.image, mirrored)
    assert len(warnings) == 1 and "patient's left half of the body" in warnings[0]
    for code in ("RAS", "PIL", "SRA", "ILP"):
        image, mask = (sitk.DICOMOrient(im, code) for im in (phantom.image, mirrored))
        assert plausibility_warnings(image, mask) == warnings, code


def test_a_field_of_view_cutting_one_side_of_the_body_leaves_the_side_unjudged(phantom):
    # A field of view ending 5 cm left of the liver's centre (through its left lobe): the
    # body's middle as seen would lie right of the liver's centre, as if the liver lay left.
    centre = int(np.nonzero(sitk.GetArrayViewFromImage(phantom.liver))[2].mean())
    size = [centre + 10, *phantom.image.GetSize()[1:]]
    image, liver = (sitk.RegionOfInterest(im, size, [0, 0, 0]) for im in (phantom.image, phantom.liver))
    assert plausibility_warnings(image, liver) == []
    assert plausibility_warnings(image, _mirrored(liver)) == []  # not judged either way
    # Cut on both sides (a field of view narrower than the body): its centre stands for the middle.
    both = [sitk.RegionOfInterest(im, [50, *size[1:]], [12, 0, 0]) for im in (phantom.image, phantom.liver)]
    assert plausibility_warnings(*both) == []
    assert "left half" in plausibility_warnings(both[0], _mirrored(both[1]))[0]


def test_volumes_outside_the_adult_range_are_named(phantom):
    small = plausibility_warnings(_scaled(phantom.image, 0.6), _scaled(phantom.liver, 0.6))
    large = plausibility_warnings(_scaled(phantom.image, 1.8), _scaled(phantom.liver, 1.8))
    assert len(small) == 1 and f"below {MIN_VOLUME_ML:.0f} mL" in small[0]
    assert len(large) == 1 and f"above {MAX_VOLUME_ML:.0f} mL" in large[0]


@pytest.mark.parametrize("end", ["top", "bottom"])
def test_a_liver_cut_by_the_field_of_view_is_named(phantom, end):
    first, last = _liver_slices(phantom.liver)
    size = list(phantom.image.GetSize())
    start = [0, 0, first + 3] if end == "bottom" else [0, 0, 0]
    stop = size[2] if end == "bottom" else last - 2
    crop = [size[0], size[1], stop - start[2]]
    image, mask = (sitk.RegionOfInterest(im, crop, start) for im in (phantom.image, phantom.liver))
    warnings = plausibility_warnings(image, mask)
    assert len(warnings) == 1 and f"reaches the scan's {end} slice" in warnings[0]
    # the same in a grid whose slices run the other way (inferior first, as after DICOMOrient to ...I)
    flipped = [sitk.DICOMOrient(im, "LPI") for im in (image, mask)]
    assert plausibility_warnings(*flipped) == warnings


def test_an_empty_mask_is_named(phantom):
    assert plausibility_warnings(phantom.image, phantom.liver * 0) == ["the mask is empty"]


def test_the_measure_command_writes_the_warnings_to_the_table_and_the_summary(phantom, tmp_path, capsys):
    from LiverVolumetryLib.cli import main

    image, mask = tmp_path / "scan.nii.gz", tmp_path / "mirrored.nii.gz"
    sitk.WriteImage(phantom.image, str(image))
    sitk.WriteImage(_mirrored(phantom.liver), str(mask))
    assert main(["measure", str(image), str(mask), "-o", str(tmp_path / "out"), "--no-radiomics"]) == 0
    assert "check: " in capsys.readouterr().out
    row = json.loads((tmp_path / "out" / "measurements.json").read_text(encoding="utf-8"))[0]
    assert "patient's left half" in row["warnings"]


def test_the_qc_picture_shows_the_warnings_under_the_title(phantom, tmp_path):
    from LiverVolumetryLib.qc import write_qc_png

    plain, warned = tmp_path / "plain.png", tmp_path / "warned.png"
    write_qc_png(phantom.image, phantom.liver, plain, title="case")
    write_qc_png(phantom.image, phantom.liver, warned, title="case", warnings=["the mask is empty"])
    top, below = (sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[40:70] for p in (plain, warned))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(plain)))[100:],
                          sitk.GetArrayFromImage(sitk.ReadImage(str(warned)))[100:])  # the panels are untouched
    assert not np.array_equal(top, below)  # a line of text appeared under the title
