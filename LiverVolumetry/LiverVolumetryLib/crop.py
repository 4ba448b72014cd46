"""Crop the network grid to the body: air around the patient costs time and adds nothing.

The body is found on the preprocessed network array (x, y, z) with an Otsu threshold and
per-axis profiles, which ignore isolated bright noise and artefacts in the air. The box
gets a safety margin; the network sees the box, and everything outside it is background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

_HISTOGRAM_BINS = 256
_MIN_PROFILE_FRACTION = 0.02  # a slab belongs to the body when it holds 2 % of the fullest slab's body voxels


def otsu_threshold(values: np.ndarray, bins: int = _HISTOGRAM_BINS) -> float:
    """Otsu's threshold: the value that best splits ``values`` into two classes."""
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


@dataclass(frozen=True)
class Box:
    """Index ranges [start, stop) per axis of an (x, y, z) array."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))


def _profile_range(profile: np.ndarray) -> tuple[int, int]:
    keep = np.flatnonzero(profile >= _MIN_PROFILE_FRACTION * profile.max())
    return int(keep[0]), int(keep[-1]) + 1


def body_threshold(array: np.ndarray, sample_step: int = 2) -> float:
    """The intensity above which a voxel of ``array`` counts as body rather than air."""
    sample = array[::sample_step, ::sample_step, ::sample_step].ravel().astype(np.float64)
    # Otsu on log intensities above the darkest value: the log compresses the bright tail
    # (fat, fluid, vessels), so the split falls between air and tissue, not inside tissue.
    low = float(sample.min())
    epsilon = 0.01 * (float(np.percentile(sample, 99)) - low) or 1e-6
    return low + math.exp(otsu_threshold(np.log(sample - low + epsilon))) - epsilon


def body_extent(array: np.ndarray, axis: int, sample_step: int = 2) -> tuple[int, int] | None:
    """[start, stop) of the body along one ``axis`` of ``array``; None when no body is found."""
    body = array > body_threshold(array, sample_step)
    profile = body.sum(axis=tuple(a for a in range(3) if a != axis))
    return _profile_range(profile) if profile.any() else None


def body_box(array: np.ndarray, margin: int = 8, sample_step: int = 2) -> Box:
    """The box around the body in a network array, grown by ``margin`` voxels per side.

    Returns the whole array when no body can be told apart from the background.
    """
    whole = Box((0, 0, 0), tuple(int(s) for s in array.shape))
    body = array > body_threshold(array, sample_step)
    if not body.any():
        return whole
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        low, high = _profile_range(body.sum(axis=other))
        start.append(max(0, low - margin))
        stop.append(min(array.shape[axis], high + margin))
    return Box(tuple(start), tuple(stop))


def box_grid(grid: sitk.Image, box: Box) -> sitk.Image:
    """An empty image with ``grid``'s spacing and direction covering ``box`` of it."""
    sub = sitk.Image([int(s) for s in box.shape], grid.GetPixelID())
    sub.SetSpacing(grid.GetSpacing())
    sub.SetDirection(grid.GetDirection())
    sub.SetOrigin(grid.TransformIndexToPhysicalPoint([int(s) for s in box.start]))
    return sub
