"""Evaluation metrics pinned against independent reference implementations.

HD95 / ASSD against MONAI (``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)``) and SimpleITK (face-connected
``LabelContour`` + Maurer distance maps); volume against the voxel volume read off the
grid's own index-to-point mapping; ICC(2,1) against the two-way ANOVA formula
(McGraw & Wong ICC(A,1)); Mann-Whitney U against a pair count. Small masks on an
anisotropic (0.7 x 0.7 x 6 mm), oblique, flipped grid with a non-zero origin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotation_direction

from LiverVolumetryLib.measure import liver_volume_ml, measure
from LiverVolumetryTraining.agreement import icc_agreement, mann_whitney
from LiverVolumetryTraining.surface_metrics import surface_metrics

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

SPACING = (0.7, 0.7, 6.0)
DIRECTION = rotation_direction((17.0, -28.0, 41.0), flips=(1, -1, 1))
ORIGIN = (-103.2, 55.7, 812.4)
SHAPE = (10, 30, 32)  # numpy z, y, x


def _image(array_zyx: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(SPACING)
    image.SetDirection(DIRECTION)
    image.SetOrigin(ORIGIN)
    return image


def _box(z0, z1, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[z0:z1, y0:y1, x0:x1] = True
    return mask


def _ellipsoid(centre, radii) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    ragged = _ellipsoid((5, 15, 16), (4, 11, 12)) & (rng.random(SHAPE) > 0.1)
    return {
        "ellipsoids": (_ellipsoid((5, 15, 16), (4, 11, 12)), _ellipsoid((4.5, 16, 14), (3.5, 9, 13))),
        "ragged_with_holes": (ragged, _ellipsoid((4.5, 16, 14), (3.5, 9, 13))),
        "touching_the_border": (_box(0, 10, 0, 18, 0, 22), _box(0, 7, 3, 30, 5, 32)),
        "one_voxel_each": (_box(4, 5, 10, 11, 10, 11), _box(6, 7, 12, 13, 15, 16)),
        "one_voxel_in_a_box": (_box(4, 5, 10, 11, 10, 11), _box(2, 8, 5, 16, 5, 16)),
        "disjoint": (_box(1, 3, 2, 8, 2, 8), _box(6, 9, 18, 28, 22, 30)),
        "identical": (_ellipsoid((5, 15, 16), (4, 11, 12)),) * 2,
    }


PAIRS = _pairs()


@pytest.mark.parametrize("name", list(PAIRS))
def test_hd95_and_assd_match_monai(name):
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    test, reference = PAIRS[name]
    metrics = surface_metrics(_image(test), _image(reference))
    pred, gt = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (test, reference))
    spacing_zyx = list(SPACING[::-1])
    hd95 = compute_hausdorff_distance(pred, gt, percentile=95, spacing=spacing_zyx).item()
    assd = compute_average_surface_distance(pred, gt, symmetric=True, spacing=spacing_zyx).item()
    assert metrics.hd95_mm == pytest.approx(hd95, abs=1e-4)  # MONAI works in float32
    assert metrics.assd_mm == pytest.approx(assd, abs=1e-4)
    dice = 2 * np.logical_and(test, reference).sum() / (test.sum() + reference.sum())
    assert metrics.dice == pytest.approx(dice, abs=1e-12)


@pytest.mark.parametrize("name", [n for n in PAIRS if n != "touching_the_border"])
def test_hd95_and_assd_match_simpleitk_contour_distance_maps(name):
    # SimpleITK's LabelContour counts outside the image as inside the mask, so a mask
    # touching the border has no contour there (a different convention): left out here.
    test, reference = (_image(m) for m in PAIRS[name])

    def contour_and_distance(mask):
        contour = sitk.LabelContour(mask, fullyConnected=False, backgroundValue=0)
        distance = sitk.Abs(sitk.SignedMaurerDistanceMap(contour, insideIsPositive=False, squaredDistance=False,
                                                         useImageSpacing=True))
        return sitk.GetArrayFromImage(contour) > 0, sitk.GetArrayFromImage(distance)

    (contour_t, distance_t), (contour_r, distance_r) = contour_and_distance(test), contour_and_distance(reference)
    forward, backward = distance_r[contour_t], distance_t[contour_r]
    metrics = surface_metrics(test, reference)
    assert metrics.hd95_mm == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)), abs=1e-4)
    assert metrics.assd_mm == pytest.approx(np.concatenate([forward, backward]).mean(), abs=1e-4)


def test_empty_masks_give_undefined_distances():
    empty, box = np.zeros(SHAPE, bool), _box(2, 8, 5, 16, 5, 16)
    for test, reference in ((empty, box), (box, empty)):
        metrics = surface_metrics(_image(test), _image(reference))
        assert metrics.dice == 0.0 and math.isnan(metrics.hd95_mm) and math.isnan(metrics.assd_mm)


def test_volume_is_count_times_physical_voxel_volume_on_an_oblique_grid():
    mask = _image(_ellipsoid((5, 15, 16), (4, 11, 12)))
    corner = np.array(mask.TransformIndexToPhysicalPoint((0, 0, 0)))
    edges = [np.array(mask.TransformIndexToPhysicalPoint(step)) - corner for step in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    voxel_mm3 = abs(np.linalg.det(np.array(edges)))
    expected = int((sitk.GetArrayFromImage(mask) > 0).sum()) * voxel_mm3 / 1000.0
    assert liver_volume_ml(mask) == pytest.approx(expected, rel=1e-9)
    image = sitk.Cast(mask, sitk.sitkFloat32)
    assert measure(image, mask, radiomics=False)["volume_ml"] == pytest.approx(expected, rel=1e-9)


def _icc_a1(x, y) -> float:
    """McGraw & Wong ICC(A,1) (Shrout & Fleiss ICC(2,1)) from the two-way ANOVA mean squares."""
    table = np.column_stack([x, y])
    n, k = table.shape
    grand = table.mean()
    ss_rows = k * ((table.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((table.mean(0) - grand) ** 2).sum()
    ss_error = ((table - grand) ** 2).sum() - ss_rows - ss_cols
    ms_rows, ms_cols, ms_error = ss_rows / (n - 1), ss_cols / (k - 1), ss_error / ((n - 1) * (k - 1))
    return (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n)


def test_volume_icc_is_absolute_agreement_icc_2_1():
    rng = np.random.default_rng(1)
    reference = rng.normal(1600.0, 350.0, 12)
    automated = reference + 150.0 + rng.normal(0.0, 60.0, 12)  # a bias: consistency ICC would be higher
    result = icc_agreement(automated, reference)
    assert result.icc == pytest.approx(_icc_a1(automated, reference), abs=1e-12)
    assert result.ci95_low <= result.icc <= result.ci95_high


def test_mann_whitney_u_is_the_first_groups_pair_count():
    dice_b, dice_a = [0.9, 0.9, 0.8, 0.95], [0.9, 0.85, 0.85, 0.7, 0.9, 0.93]
    result = mann_whitney(dice_b + dice_a, ["B"] * 4 + ["A"] * 6)
    u_a = sum((x > y) + 0.5 * (x == y) for x in dice_a for y in dice_b)
    assert (result.group_a, result.n_a, result.n_b) == ("A", 6, 4)
    assert result.u == u_a == 9.0
    assert 0.0 < result.p_value <= 1.0
