"""Overlap and surface-distance metrics between two binary masks on one native grid.

* **Dice** = 2 |A ∩ B| / (|A| + |B|).
* **Surface** of a mask: its voxels with at least one face neighbour (6-connectivity)
  outside the mask; outside the image counts as outside the mask.
* **Directed distances** A -> B: for each surface voxel of A, the physical distance (mm,
  between voxel centres) to the nearest surface voxel of B.
* **HD95** = max(95th percentile of A -> B, 95th percentile of B -> A), the symmetric
  95 % Hausdorff distance as MONAI computes it (``compute_hausdorff_distance`` with
  ``percentile=95``).
* **ASSD** = mean of all A -> B and B -> A distances pooled together (average symmetric
  surface distance, MONAI's ``symmetric=True`` form).

Distances are physical: voxel index steps are scaled by the spacing, and for an
orthonormal direction matrix (any rotation or flip) a Euclidean distance transform with
``sampling=spacing`` is exact. A sheared (non-orthogonal) direction matrix (the engine's
file readers refuse one, but an image built in memory may have it) is handled by
nearest-neighbour search between the surface voxels' physical points. When a mask is empty, HD95 and ASSD are NaN, and Dice is 0 (1 when both
are empty, as in :func:`LiverVolumetryLib.measure.dice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from LiverVolumetryLib.errors import InputError

#: Largest difference in spacing / origin (mm) and direction cosines accepted between the
#: two masks' grids (round-off of file round trips only).
GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SurfaceMetrics:
    """Agreement of a test mask with a reference mask: Dice, HD95 (mm), ASSD (mm)."""

    dice: float
    hd95_mm: float
    assd_mm: float


def _check_same_grid(test: sitk.Image, reference: sitk.Image) -> None:
    """Raise InputError unless both masks are 3D scalar images on the same grid."""
    for image in (test, reference):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(None, "surface metrics need two 3D scalar masks")
    if test.GetSize() != reference.GetSize():
        raise InputError(None, f"masks differ in size: {test.GetSize()} vs {reference.GetSize()}")
    for name in ("Spacing", "Origin", "Direction"):
        a, b = getattr(test, f"Get{name}")(), getattr(reference, f"Get{name}")()
        if np.max(np.abs(np.subtract(a, b))) > GRID_TOLERANCE:
            raise InputError(None, f"masks differ in {name.lower()}: {tuple(a)} vs {tuple(b)}")


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both boolean arrays cut to the box around their union, padded by one background
    voxel on every side (equivalent to the full arrays for surfaces and distances), and
    the numpy index of the padded box's first voxel."""
    union = a | b
    box = []
    for axis in range(3):
        used = np.nonzero(union.any(axis=tuple(k for k in range(3) if k != axis)))[0]
        box.append(slice(int(used[0]), int(used[-1]) + 1))
    box = tuple(box)
    start = np.array([s.start for s in box]) - 1
    return np.pad(a[box], 1), np.pad(b[box], 1), start


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean array of the mask's surface voxels (face neighbour outside, or image edge)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _is_orthonormal(direction: np.ndarray) -> bool:
    return bool(np.allclose(direction.T @ direction, np.eye(3), atol=1e-6))


def _directed_distances_edt(from_surface: np.ndarray, to_surface: np.ndarray,
                            spacing_zyx: np.ndarray) -> np.ndarray:
    """Distances (mm) from each voxel of ``from_surface`` to the nearest of ``to_surface``."""
    distance = ndimage.distance_transform_edt(~to_surface, sampling=spacing_zyx)
    return distance[from_surface]


def _physical_points(voxels: np.ndarray, start: np.ndarray, spacing: np.ndarray,
                     direction: np.ndarray) -> np.ndarray:
    """Physical offsets (mm, relative to the origin) of numpy (z, y, x) voxel indices."""
    index_xyz = (np.argwhere(voxels) + start)[:, ::-1].astype(float)
    return (index_xyz * spacing) @ direction.T


def _directed_distances_points(from_surface: np.ndarray, to_surface: np.ndarray, start: np.ndarray,
                               spacing: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """As :func:`_directed_distances_edt`, by nearest-neighbour search in physical space."""
    from scipy.spatial import cKDTree

    targets = _physical_points(to_surface, start, spacing, direction)
    distance, _ = cKDTree(targets).query(_physical_points(from_surface, start, spacing, direction))
    return np.asarray(distance, dtype=float)


def surface_distances(test: sitk.Image, reference: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm): test -> reference and reference -> test.

    Both arrays are empty when either mask is empty.
    """
    _check_same_grid(test, reference)
    a = sitk.GetArrayViewFromImage(test) > 0
    b = sitk.GetArrayViewFromImage(reference) > 0
    if not a.any() or not b.any():
        return np.empty(0), np.empty(0)
    a, b, start = _crop_to_union(a, b)
    surface_a, surface_b = surface(a), surface(b)
    spacing = np.asarray(reference.GetSpacing(), dtype=float)
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    if _is_orthonormal(direction):
        spacing_zyx = spacing[::-1]
        return (_directed_distances_edt(surface_a, surface_b, spacing_zyx),
                _directed_distances_edt(surface_b, surface_a, spacing_zyx))
    return (_directed_distances_points(surface_a, surface_b, start, spacing, direction),
            _directed_distances_points(surface_b, surface_a, start, spacing, direction))


def dice_coefficient(test: sitk.Image, reference: sitk.Image) -> float:
    """Dice of two masks on the same grid (non-zero = inside): 0 when exactly one is empty,
    1 when both are."""
    _check_same_grid(test, reference)
    a = sitk.GetArrayViewFromImage(test) > 0
    b = sitk.GetArrayViewFromImage(reference) > 0
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def hd95_from_distances(test_to_ref: np.ndarray, ref_to_test: np.ndarray) -> float:
    """Symmetric 95 % Hausdorff distance (mm) from directed distances; NaN if none."""
    if test_to_ref.size == 0 or ref_to_test.size == 0:
        return math.nan
    return float(max(np.percentile(test_to_ref, 95), np.percentile(ref_to_test, 95)))


def assd_from_distances(test_to_ref: np.ndarray, ref_to_test: np.ndarray) -> float:
    """Average symmetric surface distance (mm): mean of both directions pooled; NaN if none."""
    if test_to_ref.size == 0 or ref_to_test.size == 0:
        return math.nan
    return float(np.concatenate([test_to_ref, ref_to_test]).mean())


def surface_metrics(test: sitk.Image, reference: sitk.Image) -> SurfaceMetrics:
    """Dice, HD95 (mm) and ASSD (mm) of ``test`` against ``reference`` (same grid)."""
    forward, backward = surface_distances(test, reference)
    return SurfaceMetrics(dice=dice_coefficient(test, reference), hd95_mm=hd95_from_distances(forward, backward),
                          assd_mm=assd_from_distances(forward, backward))
