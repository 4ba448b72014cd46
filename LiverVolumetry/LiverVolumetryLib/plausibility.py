"""Plausibility checks: liver masks a reader should look at before trusting the volume.

A segmentation network that fails on an unusual scan rarely fails a little: it segments
another structure (a large cyst, the bowel) or a small fragment, and the volume it reports
looks like any other number. These checks rest on anatomy, not on the network, so they
hold for any mask, automatic or edited by hand:

- the volume lies outside the range of adult livers this tool is meant for;
- most of the mask lies in the patient's left half of the body (the liver lies on the
  right; situs inversus is the rare exception), unless the field of view cuts the body on
  one side only, so that the body's middle is unknown;
- the mask reaches the scan's first or last axial slice, so either the liver extends
  beyond the scan (the volume is then too small) or the mask leaks into what lies there.

Each finding is one sentence for the results table's ``warnings`` column; an empty list
means nothing stood out, not that the mask is right. Automatic masks also get a check on
the network's own uncertainty (:mod:`.confidence`), which can catch a partial miss that
looks anatomically plausible.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .crop import body_extent

MIN_VOLUME_ML = 500.0
MAX_VOLUME_ML = 4000.0
MAX_LEFT_FRACTION = 0.5   # of the mask's voxels in the patient's left half of the body
MIN_EDGE_AREA_CM2 = 1.0   # of the mask on the scan's first or last axial slice

_LEFT, _SUPERIOR = 0, 2   # physical LPS axes: +x towards the patient's left, +z superior


def _array_axis(image: sitk.Image, physical_axis: int) -> tuple[int, float]:
    """(numpy axis of ``image``'s array closest to ``physical_axis``, +1/-1 whether the
    index grows towards that axis' positive direction). Arrays are (z, y, x) of the index."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(direction[physical_axis])))
    return 2 - index_axis, float(np.sign(direction[physical_axis, index_axis]))


def _profile(mask: np.ndarray, axis: int) -> np.ndarray:
    """Mask voxel count of every slab along ``axis``."""
    return mask.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64)


def _left_fraction(image: sitk.Image, mask: np.ndarray) -> float | None:
    """Share of the mask's voxels in the patient's left half of the body, split at the
    middle of the body's left-right extent (not of the field of view); None when the
    field of view cuts the body on one side only, which hides where the middle is."""
    axis, sign = _array_axis(image, _LEFT)
    size = mask.shape[axis]
    start, stop = body_extent(sitk.GetArrayViewFromImage(image), axis) or (0, size)
    if (start == 0) != (stop == size):
        return None
    middle = (start + stop - 1) / 2.0
    profile = _profile(mask, axis)
    index = np.arange(profile.size)
    left = profile[index > middle].sum() if sign > 0 else profile[index < middle].sum()
    return float(left) / float(profile.sum())


def _edge_areas_cm2(image: sitk.Image, mask: np.ndarray) -> dict[str, float]:
    """Mask area (cm²) on the scan's most superior ('top') and most inferior ('bottom') slice."""
    axis, sign = _array_axis(image, _SUPERIOR)
    if mask.shape[axis] < 2:
        return {}
    in_plane = [s for k, s in enumerate(reversed(image.GetSpacing())) if k != axis]
    area = float(np.prod(in_plane)) / 100.0
    first, last = (np.count_nonzero(np.take(mask, k, axis=axis)) * area for k in (0, -1))
    return {"top": last, "bottom": first} if sign > 0 else {"top": first, "bottom": last}


def plausibility_warnings(image: sitk.Image, mask: sitk.Image) -> list[str]:
    """One sentence per finding on the liver ``mask`` (non-zero voxels) on ``image``'s
    grid; [] when nothing stands out. The grids must match (as ``measure`` checks)."""
    array = sitk.GetArrayViewFromImage(mask) != 0
    count = int(np.count_nonzero(array))
    if count == 0:
        return ["the mask is empty"]
    warnings = []
    volume = count * float(np.prod(mask.GetSpacing())) / 1000.0
    if volume < MIN_VOLUME_ML:
        warnings.append(f"liver volume {volume:.0f} mL is below {MIN_VOLUME_ML:.0f} mL: "
                        "is the whole liver segmented, and is it the liver?")
    elif volume > MAX_VOLUME_ML:
        warnings.append(f"liver volume {volume:.0f} mL is above {MAX_VOLUME_ML:.0f} mL: "
                        "check for leakage into neighbouring organs")
    left = _left_fraction(image, array)
    if left is not None and left > MAX_LEFT_FRACTION:
        warnings.append(f"{100 * left:.0f} % of the mask lies in the patient's left half of the body, "
                        "where the liver normally is not")
    for end, area in _edge_areas_cm2(image, array).items():
        if area >= MIN_EDGE_AREA_CM2:
            warnings.append(f"the mask reaches the scan's {end} slice ({area:.0f} cm^2): the liver may extend "
                            "beyond the scan (volume too small) or the mask may leak")
    return warnings
