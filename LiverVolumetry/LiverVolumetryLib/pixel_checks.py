"""Checks on an input image's voxel values: finite, not constant, and a scan rather than a
mask or label map given by mistake. Pixels are read slab by slab or sampled, never copied
whole; every failure is a one-line :class:`InputError` naming the file and the cause."""

from __future__ import annotations

import math
import os
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: What an InputError names: a file, a folder, or a label for an in-memory image.
Where = Optional[Union[str, os.PathLike]]  # typing form: evaluated at import on Python 3.9

#: Most distinct voxel values of an image refused as a mask or label map rather than a scan.
MAX_LABEL_VALUES = 8

#: A label map with more labels than MAX_LABEL_VALUES (TotalSegmentator's have up to 118)
#: holds at most this many distinct whole-number values ...
MAX_LABEL_MAP_VALUES = 256
#: ... and is piecewise constant: at least this share of neighbouring voxels outside the
#: background hold the same value (structures 5 voxels wide give 0.8). In an MRI noise
#: makes them differ: 6-14 % in the shared CHAOS scans, 14-28 % quantised to 8 bits.
MIN_LABEL_MAP_SAME_NEIGHBOURS = 0.8
#: Fewest neighbour pairs outside the background on which that share is judged.
MIN_LABEL_MAP_PAIRS = 1000

#: Voxels in the strided sample that settles most checks at once.
_SAMPLE_VOXELS = 200_000


def check_pixels(path: Where, image: sitk.Image) -> None:
    """Refuse NaN/inf voxels, constant images and masks or label maps given as the scan."""
    array = sitk.GetArrayViewFromImage(image)
    n_bad, low, high = 0, math.inf, -math.inf
    for start in range(0, array.shape[0], 16):
        slab = array[start:start + 16]
        finite = np.isfinite(slab)
        n_bad += slab.size - int(np.count_nonzero(finite))
        if n_bad == 0 and slab.size:
            low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    if n_bad:
        raise InputError(path, f"has {n_bad} voxel(s) with NaN or infinite values")
    if low == high:
        raise InputError(path, f"is a constant image (every voxel is {low:g}); it holds no image")
    values = _few_values(array)
    if values is not None:
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(path, f"holds only {len(values)} distinct values ({shown}): a mask or label map, "
                               "not a scan (pass the MRI it belongs to)")
    labels = _label_map_values(array)
    if labels is not None:
        raise InputError(path, f"is a label map, not a scan: {labels} or more distinct whole-number values in "
                               "regions of one value each (pass the MRI it belongs to)")


def _sample(array: np.ndarray) -> np.ndarray:
    """About _SAMPLE_VOXELS evenly strided voxels of ``array``."""
    flat = array.reshape(-1)
    return flat[::max(1, flat.size // _SAMPLE_VOXELS)]


def _few_values(array: np.ndarray) -> list[float] | None:
    """The distinct values of ``array`` when it has at most MAX_LABEL_VALUES of them (a
    mask or label map: an MRI has thousands), else None. The strided sample settles nearly
    every scan at once; only a sample of few values is checked in full."""
    if np.unique(_sample(array)).size > MAX_LABEL_VALUES:
        return None
    found: set[float] = set()
    for start in range(0, array.shape[0], 16):
        found.update(np.unique(array[start:start + 16]).tolist())
        if len(found) > MAX_LABEL_VALUES:
            return None
    return sorted(found)


def _label_map_values(array: np.ndarray) -> int | None:
    """The number of distinct values (of the strided sample) when ``array`` is a label map
    with many labels, else None. Only an image whose sample holds at most
    MAX_LABEL_MAP_VALUES whole numbers is examined further, on up to 32 evenly spaced slices."""
    sample = _sample(array)
    if sample.dtype.kind == "f" and not np.array_equal(sample, np.round(sample)):
        return None
    values, counts = np.unique(sample, return_counts=True)
    if values.size > MAX_LABEL_MAP_VALUES:
        return None
    background = values[counts.argmax()]
    same = pairs = 0
    for z in np.unique(np.linspace(0, array.shape[0] - 1, num=min(32, array.shape[0])).astype(int)):
        right, left = array[z][:, 1:], array[z][:, :-1]
        inside = (right != background) & (left != background)
        pairs += int(np.count_nonzero(inside))
        same += int(np.count_nonzero(right[inside] == left[inside]))
    if pairs < MIN_LABEL_MAP_PAIRS or same < MIN_LABEL_MAP_SAME_NEIGHBOURS * pairs:
        return None
    return int(values.size)
