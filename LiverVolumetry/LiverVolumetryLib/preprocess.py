"""Preprocessing shared by inference and training: image -> network grid -> array.

The network sees the image resampled onto an axis-aligned grid in RAS orientation (see
``RAS_DIRECTION``) at the bundle's spacing, covering the physical bounding box of the
input, whatever the input's orientation (flipped, permuted or oblique). Intensities are scaled by percentiles computed on the
native voxels, so the result does not depend on how much empty space resampling adds.

Arrays handed to the network are in (x, y, z) = (i, j, k) index order, the order MONAI
uses, i.e. the transpose of ``sitk.GetArrayFromImage``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

# SimpleITK works in LPS. An index axis pointing to the patient's Right has direction
# (-1, 0, 0); Anterior is (0, -1, 0); Superior is (0, 0, +1). "RAS" orientation (nibabel
# axcodes, as MONAI's Orientation("RAS")) means axis 0 increases towards R, 1 towards A,
# 2 towards S.
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
_MAX_PERCENTILE_SAMPLES = 2_000_000


@dataclass(frozen=True)
class IntensityScaling:
    """Linear scaling mapping the ``lower``/``upper`` percentiles to ``b_min``/``b_max``."""

    lower: float = 25.0
    upper: float = 75.0
    b_min: float = -0.5
    b_max: float = 0.5
    clip: bool = False

    def to_dict(self) -> dict:
        return {"method": "percentile", "lower": self.lower, "upper": self.upper,
                "b_min": self.b_min, "b_max": self.b_max, "clip": self.clip}


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects: orientation, spacing (mm, x y z) and intensity scaling."""

    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    orientation: str = "RAS"
    intensity: IntensityScaling = field(default_factory=IntensityScaling)

    @classmethod
    def from_dict(cls, spec: dict) -> "Preprocessing":
        if spec.get("orientation", "RAS") != "RAS":
            raise ValueError(f"unsupported orientation {spec.get('orientation')!r} (only RAS)")
        intensity = dict(spec.get("intensity", {}))
        if intensity.pop("method", "percentile") != "percentile":
            raise ValueError("unsupported intensity method (only 'percentile')")
        return cls(spacing=tuple(float(s) for s in spec["spacing_mm"]),
                   intensity=IntensityScaling(**intensity))

    def to_dict(self) -> dict:
        return {"orientation": self.orientation, "spacing_mm": list(self.spacing),
                "intensity": self.intensity.to_dict()}


def physical_corners(image: sitk.Image) -> np.ndarray:
    """The 8 corners (LPS, mm) of the image's voxel extent (voxel edges, not centres)."""
    size = np.array(image.GetSize(), dtype=float)
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    corners = np.array(list(itertools.product(*[(-0.5, s - 0.5) for s in size])))
    return origin + (corners * spacing) @ direction.T


def _ras_extent(image: sitk.Image, spacing_arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high corner along the RAS axes, voxel count per axis) of the network grid."""
    corners_ras = physical_corners(image) @ np.array(RAS_DIRECTION).reshape(3, 3)  # coordinates along RAS axes
    low, high = corners_ras.min(axis=0), corners_ras.max(axis=0)
    return low, high, np.maximum(np.ceil((high - low) / spacing_arr - 1e-6).astype(int), 1)


def network_grid_size(image: sitk.Image, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The size of :func:`network_grid` (x, y, z), without allocating it."""
    size = _ras_extent(image, np.asarray(spacing, dtype=float))[2]
    return int(size[0]), int(size[1]), int(size[2])


def network_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty RAS-aligned image at ``spacing`` covering ``image``'s physical extent."""
    direction = np.array(RAS_DIRECTION).reshape(3, 3)
    spacing_arr = np.asarray(spacing, dtype=float)
    low, high, size = _ras_extent(image, spacing_arr)
    # Centre the grid on the extent so that rounding is split between both sides.
    first_centre = (low + high) / 2 - (size - 1) / 2 * spacing_arr
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing_arr])
    grid.SetDirection(RAS_DIRECTION)
    grid.SetOrigin([float(v) for v in direction @ first_centre])
    return grid


def percentiles(image: sitk.Image, lower: float, upper: float) -> tuple[float, float]:
    """``lower``/``upper`` percentiles of the native voxels (deterministic subsample)."""
    values = sitk.GetArrayViewFromImage(image).ravel()
    step = max(1, values.size // _MAX_PERCENTILE_SAMPLES)
    low, high = np.percentile(values[::step], [lower, upper])
    return float(low), float(high)


def scale_intensity(array: np.ndarray, low: float, high: float, scaling: IntensityScaling) -> np.ndarray:
    """Map ``low``..``high`` linearly to ``b_min``..``b_max`` in place (float32)."""
    width = high - low
    if not np.isfinite(width) or width <= 0:
        width = 1.0  # degenerate histogram: keep the offset, avoid dividing by zero
    factor = (scaling.b_max - scaling.b_min) / width
    array -= np.float32(low)
    array *= np.float32(factor)
    array += np.float32(scaling.b_min)
    if scaling.clip:
        np.clip(array, scaling.b_min, scaling.b_max, out=array)
    return array


def resample_to_grid(image: sitk.Image, grid: sitk.Image, interpolator=sitk.sitkLinear,
                     default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``grid``'s geometry (identity transform, physical space)."""
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, default_value,
                         image.GetPixelID())


@dataclass
class NetworkInput:
    """The network's input array (x, y, z order, float32) and the grid it lives on."""

    array: np.ndarray
    grid: sitk.Image


def to_network_input(image: sitk.Image, prep: Preprocessing) -> NetworkInput:
    """Resample ``image`` to the RAS network grid and scale its intensities."""
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    low, high = percentiles(image, prep.intensity.lower, prep.intensity.upper)
    grid = network_grid(image, prep.spacing)
    # Voxels outside the input's field of view get the darkest native value (air-like).
    background = float(np.min(sitk.GetArrayViewFromImage(image)))
    resampled = resample_to_grid(image, grid, sitk.sitkLinear, background)
    array = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0).copy()
    return NetworkInput(scale_intensity(array, low, high, prep.intensity), grid)


def label_to_network_grid(label: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A label map on the network grid (nearest neighbour), x y z order, uint8."""
    resampled = resample_to_grid(sitk.Cast(label, sitk.sitkUInt8), grid, sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0).copy()


def array_to_grid_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """Wrap an (x, y, z) array as a SimpleITK image with ``grid``'s geometry."""
    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    out.CopyInformation(grid)
    return out
