"""Geometry of the pipeline: native grid -> RAS network grid -> native grid.

Masks must come back on the exact input grid and line up in physical space for any input
orientation: flipped, permuted, oblique, anisotropic.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import dice, ellipsoid_image, rotation_direction, same_grid

from LiverVolumetryLib.postprocess import clean_mask, probability_to_input_grid
from LiverVolumetryLib.preprocess import (RAS_DIRECTION, IntensityScaling, Preprocessing, label_to_network_grid,
                                          network_grid, physical_corners, to_network_input)

GRIDS = {
    "axial-LPS": dict(direction=None),
    "flipped-LAS": dict(direction=rotation_direction((0, 0, 0), flips=(1, -1, 1))),
    "permuted-coronal": dict(direction=rotation_direction((0, 0, 0), flips=(1, 1, -1), permutation=(0, 2, 1))),
    "oblique-20deg": dict(direction=rotation_direction((12, -8, 20))),
    "oblique-flipped-anisotropic": dict(direction=rotation_direction((-15, 10, 5), flips=(-1, 1, -1)),
                                        spacing=(2.5, 5.0, 11.0), size=(72, 36, 18)),
}


def _centroid_mm(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.array(stats.GetCentroid(1))


@pytest.mark.parametrize("name", GRIDS)
def test_network_grid_is_ras_and_covers_input(name):
    image, _ = ellipsoid_image(**GRIDS[name])
    grid = network_grid(image, (2.0, 2.0, 2.0))
    assert grid.GetDirection() == RAS_DIRECTION
    assert grid.GetSpacing() == (2.0, 2.0, 2.0)
    corners_ras = physical_corners(image) * np.array([-1, -1, 1])
    grid_ras = physical_corners(grid) * np.array([-1, -1, 1])
    assert np.all(grid_ras.min(0) <= corners_ras.min(0) + 1e-6)
    assert np.all(grid_ras.max(0) >= corners_ras.max(0) - 1e-6)
    assert np.all(grid_ras.max(0) - grid_ras.min(0) < corners_ras.max(0) - corners_ras.min(0) + 2.0 + 1e-6)


@pytest.mark.parametrize("name", GRIDS)
def test_mask_round_trip_keeps_grid_and_physical_position(name):
    image, mask = ellipsoid_image(**GRIDS[name])
    net = to_network_input(image, Preprocessing())
    label = label_to_network_grid(mask, net.grid)
    # The ellipsoid must sit at the same physical place on the RAS grid.
    assert label.shape == net.array.shape
    back = probability_to_input_grid(label.astype(np.float32), net.grid, image)
    assert same_grid(back, image), "mask must come back on the exact input grid"
    assert back.GetPixelID() == sitk.sitkUInt8
    assert dice(back, mask) > 0.9
    assert np.linalg.norm(_centroid_mm(back) - _centroid_mm(mask)) < 0.5 * max(image.GetSpacing())


def test_network_array_is_in_ras_xyz_order():
    # An object on the patient's right (LPS x < 0) must have large RAS index i.
    image, _ = ellipsoid_image(centre=(-60.0, 0.0, 0.0), radii=(15.0, 15.0, 15.0))
    net = to_network_input(image, Preprocessing())
    bright = np.argwhere(net.array > 5.0)
    i_centre = bright[:, 0].mean()
    point = net.grid.TransformContinuousIndexToPhysicalPoint((float(i_centre), 0.0, 0.0))
    assert point[0] == pytest.approx(-60.0, abs=4.0)


def test_percentile_scaling_ignores_added_background():
    image, _ = ellipsoid_image()
    plain = to_network_input(image, Preprocessing())
    tilted, _ = ellipsoid_image(direction=rotation_direction((0, 0, 30)))
    oblique = to_network_input(tilted, Preprocessing())
    # Percentiles come from native voxels, so the ellipsoid maps to the same value.
    assert np.median(plain.array[plain.array > 5]) == pytest.approx(np.median(oblique.array[oblique.array > 5]), rel=0.05)


def test_intensity_scaling_maps_percentiles():
    image, _ = ellipsoid_image()
    scaled = to_network_input(image, Preprocessing(spacing=(4.0, 4.5, 9.0), intensity=IntensityScaling(10, 90, 0, 1)))
    assert scaled.array.dtype == np.float32
    assert np.percentile(scaled.array, 50) > 0 - 1e-6


def test_clean_mask_keeps_largest_component_and_fills_holes():
    arr = np.zeros((30, 30, 30), np.uint8)
    arr[5:20, 5:20, 5:20] = 1
    arr[10:13, 10:13, 10:13] = 0  # enclosed hole
    arr[25:28, 25:28, 25:28] = 1  # small separate blob
    mask = sitk.GetImageFromArray(arr)
    mask.SetSpacing((1.5, 1.0, 3.0))
    out = sitk.GetArrayFromImage(clean_mask(mask))
    assert out[11, 11, 11] == 1
    assert out[26, 26, 26] == 0
    assert out.sum() == 15 ** 3
