"""Post-processing: network probabilities -> clean binary liver mask on the input grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .preprocess import array_to_grid_image, resample_to_grid


def probability_to_input_grid(probability: np.ndarray, network_grid: sitk.Image, image: sitk.Image,
                              threshold: float = 0.5) -> sitk.Image:
    """Resample the liver probability (x, y, z array on ``network_grid``) onto ``image``'s grid.

    Probabilities are interpolated linearly and thresholded on the fine grid, which gives
    smoother borders than nearest-neighbour resampling of a coarse label map.
    """
    prob_image = array_to_grid_image(probability.astype(np.float32, copy=False), network_grid)
    on_input = resample_to_grid(prob_image, image, sitk.sitkLinear, 0.0)
    return sitk.BinaryThreshold(on_input, float(threshold), 1e9, 1, 0)


def largest_component(mask: sitk.Image) -> sitk.Image:
    """Keep the largest 3D connected component (26-connectivity) of a binary mask."""
    components = sitk.ConnectedComponent(mask, True)
    relabelled = sitk.RelabelComponent(components, sortByObjectSize=True)
    return sitk.Cast(relabelled == 1, sitk.sitkUInt8)


def fill_holes(mask: sitk.Image) -> sitk.Image:
    """Fill cavities that are fully enclosed by the mask in 3D (e.g. missed lesions)."""
    return sitk.Cast(sitk.BinaryFillhole(mask, fullyConnected=False, foregroundValue=1), sitk.sitkUInt8)


def clean_mask(mask: sitk.Image, largest: bool = True, holes: bool = True) -> sitk.Image:
    """Apply the bundle's post-processing steps; the grid is never changed."""
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    if largest:
        mask = largest_component(mask)
    if holes:
        mask = fill_holes(mask)
    return mask
