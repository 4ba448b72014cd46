"""Tests for LiverVolumetryLib.measure: volumetry, radiomics and column descriptions.

All images are small synthetic volumes; the radiomics extraction on them takes well under
a second each.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib import measure as measure_module
from LiverVolumetryLib.measure import (describe_column, liver_volume_ml, measure, normalize_like_pyradiomics,
                                       radiomics_params_path)

# An oblique direction: rotation of 30 degrees about z then 20 degrees about x.
_CA, _SA, _CB, _SB = math.cos(math.pi / 6), math.sin(math.pi / 6), math.cos(math.pi / 9), math.sin(math.pi / 9)
OBLIQUE = tuple((np.array([[1, 0, 0], [0, _CB, -_SB], [0, _SB, _CB]])
                 @ np.array([[_CA, -_SA, 0], [_SA, _CA, 0], [0, 0, 1]])).ravel())
# A permuted, flipped axis-aligned direction (columns are the index axes in LPS).
PERMUTED = (0.0, 0.0, -1.0,
            1.0, 0.0, 0.0,
            0.0, -1.0, 0.0)
TEXTURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


def make_grid(size, spacing, direction, origin, pixel=sitk.sitkUInt8) -> sitk.Image:
    image = sitk.Image([int(s) for s in size], pixel)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction])
    image.SetOrigin([float(o) for o in origin])
    return image


def centred_grid(size, spacing, direction, centre) -> sitk.Image:
    """A grid whose middle voxel-centre position lies at ``centre`` (LPS, mm)."""
    offset = np.array(direction).reshape(3, 3) @ ((np.array(size) - 1) / 2.0 * np.array(spacing))
    return make_grid(size, spacing, direction, np.asarray(centre) - offset)


def touches_border(mask: sitk.Image) -> bool:
    array = sitk.GetArrayViewFromImage(mask)
    return any(np.any(np.take(array, end, axis=axis)) for axis in range(3) for end in (0, -1))


def physical_centres(grid: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) array of voxel-centre positions (LPS, mm), numpy index order."""
    size = grid.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    return np.array(grid.GetOrigin()) + (index * np.array(grid.GetSpacing())) @ direction.T


def from_array(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def ellipsoid_mask(grid: sitk.Image, centre, radii) -> sitk.Image:
    """Mask of the physical ellipsoid (axis-aligned in LPS) rasterized on ``grid``."""
    offsets = (physical_centres(grid) - np.asarray(centre)) / np.asarray(radii, dtype=float)
    return from_array((np.sum(offsets**2, axis=-1) <= 1.0).astype(np.uint8), grid)


# --------------------------------------------------------------------------- volume

def test_box_volume_is_voxel_count_times_voxel_volume():
    grid = make_grid((24, 30, 10), (0.8, 1.1, 3.3), OBLIQUE, (-40.0, 12.5, 7.0))
    array = np.zeros((10, 30, 24), np.uint8)
    array[2:8, 4:24, 3:13] = 1          # 6 x 20 x 10 voxels
    array[3, 5, 4] = 255                # any non-zero value counts as liver
    array[4, 6, 5] = 2
    mask = from_array(array, grid)
    expected_ml = 1200 * 0.8 * 1.1 * 3.3 / 1000.0
    assert liver_volume_ml(mask) == pytest.approx(expected_ml, rel=1e-12)
    row = measure(make_grid((24, 30, 10), (0.8, 1.1, 3.3), OBLIQUE, (-40.0, 12.5, 7.0),
                            sitk.sitkFloat32), mask, radiomics=False)
    assert row["voxel_count"] == 1200
    assert row["volume_ml"] == pytest.approx(expected_ml, rel=1e-12)


def test_float_mask_counts_non_zero_voxels():
    grid = make_grid((10, 10, 10), (2.0, 2.0, 2.0), PERMUTED, (0.0, 0.0, 0.0), sitk.sitkFloat32)
    array = np.zeros((10, 10, 10), np.float32)
    array[0, 0, :5] = 0.5
    array[1, 1, :3] = -1.0
    assert liver_volume_ml(from_array(array, grid)) == pytest.approx(8 * 8.0 / 1000.0)


def test_sphere_volume_is_analytic_and_independent_of_grid_orientation():
    centre, radius = (3.0, -7.0, 11.0), 25.0
    analytic_ml = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    grid_a = centred_grid((62, 44, 24), (0.9, 1.3, 2.5), OBLIQUE, np.add(centre, (1.1, -0.7, 0.3)))
    sphere_a = ellipsoid_mask(grid_a, centre, (radius,) * 3)
    assert not touches_border(sphere_a)
    volume_a = liver_volume_ml(sphere_a)
    assert volume_a == pytest.approx(analytic_ml, rel=0.01)

    # The same voxels, re-indexed: flipped and permuted grids describe the same object.
    flipped = sitk.Flip(sphere_a, [True, False, True])
    permuted = sitk.PermuteAxes(sphere_a, [2, 0, 1])
    assert flipped.GetDirection() != sphere_a.GetDirection()
    assert permuted.GetSpacing() == (2.5, 0.9, 1.3)
    for other in (flipped, permuted):
        assert liver_volume_ml(other) == pytest.approx(volume_a, rel=1e-12)

    # The same physical sphere rasterized on an unrelated grid (other spacing/direction).
    grid_b = centred_grid((32, 46, 66), (1.7, 1.2, 0.8), PERMUTED, np.add(centre, (-0.4, 0.9, 0.2)))
    sphere_b = ellipsoid_mask(grid_b, centre, (radius,) * 3)
    assert not touches_border(sphere_b)
    assert liver_volume_ml(sphere_b) == pytest.approx(volume_a, rel=0.01)
    assert liver_volume_ml(sphere_b) == pytest.approx(analytic_ml, rel=0.01)


# --------------------------------------------------------------------------- inputs

def _image_for(mask: sitk.Image) -> sitk.Image:
    image = sitk.Cast(mask, sitk.sitkFloat32) * 100.0
    image.CopyInformation(mask)
    return image


@pytest.mark.parametrize("what, change", [
    ("size", lambda m: m[:, :, 1:]),
    ("spacing", lambda m: _with(m, spacing=tuple(s * 1.01 for s in m.GetSpacing()))),
    ("origin", lambda m: _with(m, origin=tuple(o + 0.5 for o in m.GetOrigin()))),
    ("direction", lambda m: _with(m, direction=PERMUTED)),
])
def test_grid_mismatch_raises_one_line_input_error(what, change):
    mask = ellipsoid_mask(make_grid((20, 20, 8), (1.5, 1.5, 4.0), OBLIQUE, (0, 0, 0)), (0, 10, 12), (8, 8, 8))
    image = _image_for(mask)
    with pytest.raises(InputError) as caught:
        measure(image, change(mask), radiomics=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("mask and image grids differ: ")
    assert re.search(rf"\b{what}\b", message)


def _with(image: sitk.Image, **geometry) -> sitk.Image:
    copy = sitk.Image(image)
    for name, value in geometry.items():
        getattr(copy, f"Set{name.capitalize()}")(value)
    return copy


def test_grid_differences_below_tolerance_are_accepted():
    mask = ellipsoid_mask(make_grid((20, 20, 8), (1.5, 1.5, 4.0), OBLIQUE, (0, 0, 0)), (0, 10, 12), (8, 8, 8))
    nudged = _with(mask, origin=tuple(o + 1e-5 for o in mask.GetOrigin()))
    assert measure(_image_for(mask), nudged, radiomics=False)["voxel_count"] > 0


def test_empty_mask_raises_one_line_input_error():
    grid = make_grid((12, 12, 6), (1.0, 1.0, 3.0), OBLIQUE, (0, 0, 0))
    with pytest.raises(InputError, match=r"^mask is empty: no liver voxels$"):
        measure(_image_for(grid), grid, radiomics=False)


def test_too_small_region_for_radiomics_is_an_input_error():
    mask = ellipsoid_mask(make_grid((20, 20, 8), (1.5, 1.5, 4.0), OBLIQUE, (0, 0, 0)), (0, 10, 12), (6, 6, 6))
    with pytest.raises(InputError, match="radiomics failed: .*too small") as caught:
        measure(_image_for(mask), mask)
    assert "\n" not in str(caught.value)


def test_without_radiomics_only_volume_columns():
    mask = ellipsoid_mask(make_grid((20, 20, 8), (1.5, 1.5, 4.0), OBLIQUE, (0, 0, 0)), (0, 10, 12), (8, 8, 8))
    row = measure(_image_for(mask), mask, radiomics=False)
    assert list(row) == ["volume_ml", "voxel_count"]
    assert isinstance(row["voxel_count"], int) and isinstance(row["volume_ml"], float)


# --------------------------------------------------------------------------- radiomics

@pytest.fixture(scope="module")
def liver_case() -> tuple[sitk.Image, sitk.Image]:
    """A textured, T2-like synthetic 'liver' ellipsoid (88 mL) in a body on air."""
    grid = make_grid((60, 52, 22), (1.5, 1.5, 4.0), OBLIQUE, (-30.0, -50.0, -20.0), sitk.sitkFloat32)
    centres = physical_centres(grid)
    centre = centres[11, 26, 30]
    liver = ellipsoid_mask(grid, centre, (30.0, 25.0, 28.0))
    body = sitk.GetArrayFromImage(ellipsoid_mask(grid, centre, (42.0, 36.0, 60.0))) > 0
    rng = np.random.default_rng(7)
    texture = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        from_array(rng.normal(size=body.shape).astype(np.float32), grid), 2.5))
    array = np.where(body, 250.0, 5.0) + rng.normal(0.0, 8.0, body.shape)
    in_liver = sitk.GetArrayViewFromImage(liver) > 0
    array[in_liver] = 420.0 + 600.0 * texture[in_liver] + 40.0 * centres[..., 0][in_liver] / 30.0
    return from_array(array.astype(np.float32), grid), liver


@pytest.fixture(scope="module")
def liver_row(liver_case) -> dict:
    return measure(*liver_case)


def test_radiomics_columns(liver_row):
    assert list(liver_row)[:2] == ["volume_ml", "voxel_count"]
    features = {k: v for k, v in liver_row.items() if k not in ("volume_ml", "voxel_count")}
    assert len(features) >= 100
    assert all(re.fullmatch(r"original_(shape|firstorder|glcm|glrlm|glszm|gldm|ngtdm)_[A-Za-z0-9]+", k)
               for k in features)
    assert all(type(v) is float and math.isfinite(v) for v in features.values())
    for name in ("original_shape_MeshVolume", "original_firstorder_Mean", "original_glcm_Contrast",
                 "original_ngtdm_Busyness", "original_glszm_ZoneEntropy", "original_gldm_DependenceEntropy",
                 "original_glrlm_RunEntropy"):
        assert name in features
    assert not any(k.startswith("diagnostics_") for k in liver_row)


def test_mesh_volume_matches_native_volume(liver_row):
    ellipsoid_ml = 4.0 / 3.0 * math.pi * 30.0 * 25.0 * 28.0 / 1000.0
    assert liver_row["volume_ml"] == pytest.approx(ellipsoid_ml, rel=0.02)
    assert liver_row["original_shape_MeshVolume"] / 1000.0 == pytest.approx(liver_row["volume_ml"], rel=0.03)


def _intensity_features(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if k.split("_")[1:2] and k.split("_")[1] in TEXTURE_CLASSES}


def test_features_are_invariant_to_intensity_scale(liver_case, liver_row):
    image, mask = liver_case
    scaled = measure(image * 7.3, mask)
    reference = _intensity_features(liver_row)
    assert len(reference) >= 80
    for name, value in reference.items():
        assert scaled[name] == pytest.approx(value, rel=1e-3, abs=1e-6), name
    assert scaled["volume_ml"] == liver_row["volume_ml"]


def test_without_normalization_the_scale_would_leak_into_features(liver_case, tmp_path):
    """Control for the test above: it fails if the parameter file stops normalizing."""
    params = yaml.safe_load(radiomics_params_path().read_text())
    params["setting"]["normalize"] = False
    params["setting"].pop("removeOutliers")
    params["setting"]["binWidth"] = 25.0
    unnormalized = tmp_path / "raw.yaml"
    unnormalized.write_text(yaml.safe_dump(params))
    image, mask = liver_case
    plain = measure(image, mask, params=unnormalized)
    scaled = measure(image * 7.3, mask, params=unnormalized)
    mean = "original_firstorder_Mean"
    assert scaled[mean] == pytest.approx(7.3 * plain[mean], rel=1e-4)
    assert scaled["original_glcm_Contrast"] != pytest.approx(plain["original_glcm_Contrast"], rel=0.1)


@pytest.mark.parametrize("pixel_type", [sitk.sitkFloat32, sitk.sitkInt16])
@pytest.mark.parametrize("outliers", [None, 2.5])
def test_lean_normalization_is_pyradiomics_normalization_bit_for_bit(pixel_type, outliers):
    from radiomics.imageoperations import normalizeImage

    rng = np.random.default_rng(3)
    array = rng.gamma(2.0, 150.0, size=(12, 30, 26)) + 40.0 * (rng.random((12, 30, 26)) < 0.01) * 50.0
    image = sitk.Cast(from_array(array.astype(np.float32), make_grid((26, 30, 12), (1.2, 1.2, 5.0), OBLIQUE,
                                                                     (5.0, -3.0, 1.0), sitk.sitkFloat32)), pixel_type)
    ours = normalize_like_pyradiomics(image, 100, outliers)
    theirs = normalizeImage(image, normalizeScale=100, removeOutliers=outliers)
    assert ours.GetPixelID() == theirs.GetPixelID() == sitk.sitkFloat64
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
    assert ours.GetOrigin() == theirs.GetOrigin() and ours.GetDirection() == theirs.GetDirection()
    assert normalize_like_pyradiomics(image * 0, 100, outliers) is None  # constant: left to pyradiomics


def test_features_equal_those_of_pyradiomics_own_normalization(liver_case, liver_row, monkeypatch):
    monkeypatch.setattr(measure_module, "normalize_like_pyradiomics", lambda *args: None)
    assert measure(*liver_case) == liver_row


def test_progress_reports_start_and_end(liver_case):
    calls: list[tuple[float, str]] = []
    measure(*liver_case, progress=lambda fraction, stage: calls.append((fraction, stage)))
    assert calls[0] == (0.0, "volume") and calls[-1][0] == 1.0
    assert "radiomics" in {stage for _, stage in calls}
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and all(0.0 <= f <= 1.0 for f in fractions)


# --------------------------------------------------------------------------- parameters and columns

def test_bundled_parameters_suit_mri():
    path = radiomics_params_path()
    assert path.is_file() and path.suffix == ".yaml"
    params = yaml.safe_load(path.read_text())
    setting = params["setting"]
    assert setting["normalize"] is True and setting["normalizeScale"] > 0
    assert ("binWidth" in setting) != ("binCount" in setting)
    spacing = setting["resampledPixelSpacing"]
    assert len(spacing) == 3 and len(set(spacing)) == 1
    assert setting["label"] == 1
    assert list(params["imageType"]) == ["Original"]
    assert set(params["featureClass"]) == {"shape", *TEXTURE_CLASSES}


def test_describe_column():
    unit, text = describe_column("volume_ml")
    assert unit == "mL" and text.startswith("Liver volume")
    unit, text = describe_column("original_glcm_Contrast")
    assert unit == "" and "GLCM" in text and "Contrast" in text and len(text) > 30
    assert "\n" not in text and ":math:" not in text and "\\" not in text
    assert describe_column("original_shape_MeshVolume")[0] == "mm³"
    assert describe_column("original_shape_SurfaceArea")[0] == "mm²"
    assert describe_column("original_shape_Maximum3DDiameter")[0] == "mm"
    assert describe_column("original_shape_Sphericity")[0] == ""
    assert describe_column("original_firstorder_Mean")[0] == "a.u."
    assert describe_column("original_ngtdm_Busyness")[1]
    assert describe_column("original_glcm_NoSuchFeature") == ("", "")
    assert describe_column("patient_id") == ("", "")


def test_every_feature_column_has_a_description(liver_row):
    for name in liver_row:
        unit, text = describe_column(name)
        assert text and "\n" not in text and "`" not in text, name
