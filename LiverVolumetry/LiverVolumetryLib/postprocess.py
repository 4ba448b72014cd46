"""Post-processing: network probabilities -> clean binary liver mask on the input grid.

Work on the fine input grid is confined to the box that can hold liver (from the coarse
network grid), so large inputs cost little more than small ones; the result is the same
as processing the whole grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .preprocess import array_to_grid_image, resample_to_grid


def _empty_like(image: sitk.Image) -> sitk.Image:
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    return mask


def _region_of(image: sitk.Image, start: list[int], stop: list[int]) -> sitk.Image:
    """An empty image on the voxels ``start``..``stop`` (exclusive) of ``image``'s grid."""
    region = sitk.Image([b - a for a, b in zip(start, stop)], sitk.sitkFloat32)
    region.SetSpacing(image.GetSpacing())
    region.SetDirection(image.GetDirection())
    region.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in start]))
    return region


def _input_box(foreground: np.ndarray, network_grid: sitk.Image, image: sitk.Image) -> tuple[list[int], list[int]]:
    """Input-grid index box holding every input voxel that may interpolate to foreground:
    the foreground's box on the network grid grown by one network voxel, mapped to input
    indices, grown by one input voxel."""
    idx = np.argwhere(foreground)
    low = idx.min(axis=0) - 1
    high = idx.max(axis=0) + 1
    corners = [network_grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in (x, y, z)])
               for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    continuous = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    size = np.array(image.GetSize())
    start = np.clip(np.floor(continuous.min(axis=0)).astype(int) - 1, 0, size)
    stop = np.clip(np.ceil(continuous.max(axis=0)).astype(int) + 2, 0, size)
    return [int(v) for v in start], [int(v) for v in stop]


def probability_to_input_grid(probability: np.ndarray, network_grid: sitk.Image, image: sitk.Image,
                              threshold: float = 0.5) -> sitk.Image:
    """Resample the liver probability (x, y, z array on ``network_grid``) onto ``image``'s grid.

    Probabilities are interpolated linearly and thresholded on the fine grid, which gives
    smoother borders than nearest-neighbour resampling of a coarse label map.
    """
    foreground = probability >= threshold
    mask = _empty_like(image)
    if not foreground.any():
        return mask
    start, stop = _input_box(foreground, network_grid, image)
    if any(b <= a for a, b in zip(start, stop)):
        return mask
    prob_image = array_to_grid_image(probability.astype(np.float32, copy=False), network_grid)
    on_region = resample_to_grid(prob_image, _region_of(image, start, stop), sitk.sitkLinear, 0.0)
    region_mask = sitk.BinaryThreshold(on_region, float(threshold), 1e9, 1, 0)
    return sitk.Paste(mask, region_mask, region_mask.GetSize(), [0, 0, 0], start)


def largest_component(mask: sitk.Image) -> sitk.Image:
    """Keep the largest 3D connected component (26-connectivity) of a binary mask."""
    components = sitk.ConnectedComponent(mask, True)
    relabelled = sitk.RelabelComponent(components, sortByObjectSize=True)
    return sitk.Cast(relabelled == 1, sitk.sitkUInt8)


def fill_holes(mask: sitk.Image) -> sitk.Image:
    """Fill cavities that are fully enclosed by the mask in 3D (e.g. missed lesions)."""
    return sitk.Cast(sitk.BinaryFillhole(mask, fullyConnected=False, foregroundValue=1), sitk.sitkUInt8)


def _mask_box(mask: sitk.Image) -> tuple[list[int], list[int]] | None:
    """Index box of the non-zero voxels grown by one voxel (clipped), or None if empty."""
    array = sitk.GetArrayViewFromImage(mask)  # z, y, x
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(array.any(axis=other))
        if hits.size == 0:
            return None
        bounds.append((max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, array.shape[axis])))
    zyx_start, zyx_stop = zip(*bounds)
    return list(zyx_start[::-1]), list(zyx_stop[::-1])


def clean_mask(mask: sitk.Image, largest: bool = True, holes: bool = True) -> sitk.Image:
    """Apply the bundle's post-processing steps; the grid is never changed.

    Both steps run on the mask's box grown by one background voxel, which gives the same
    result as the whole grid: every component lies inside, and background connected to
    the outside stays connected through the margin.
    """
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    if not (largest or holes):
        return mask
    box = _mask_box(mask)
    if box is None:
        return mask
    start, stop = box
    region = sitk.RegionOfInterest(mask, [b - a for a, b in zip(start, stop)], start)
    if largest:
        region = largest_component(region)
    if holes:
        region = fill_holes(region)
    return sitk.Paste(_empty_like(mask), region, region.GetSize(), [0, 0, 0], start)
