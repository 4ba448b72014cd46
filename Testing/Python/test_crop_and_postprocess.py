"""Body crop and region-limited post-processing: faster, and the same result as whole-grid work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ellipsoid_image, rotation_direction, same_grid

from LiverVolumetryLib.crop import Box, body_box, box_grid, otsu_threshold
from LiverVolumetryLib.postprocess import (clean_mask, fill_holes, largest_component,
                                           probability_to_input_grid)
from LiverVolumetryLib.preprocess import Preprocessing, resample_to_grid, to_network_input


def test_otsu_splits_two_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 5000), rng.normal(10, 1, 5000)])
    assert 3.0 < otsu_threshold(values) < 7.0


def test_body_box_ignores_air_noise_and_keeps_a_margin():
    rng = np.random.default_rng(1)
    array = rng.normal(-1.0, 0.02, (80, 70, 60)).astype(np.float32)
    array[20:50, 15:40, 10:55] = 1.0  # the body
    array[70, 65, 5] = 5.0  # one bright noise voxel in the air
    box = body_box(array, margin=3)
    assert box.start == (17, 12, 7)
    assert box.stop == (53, 43, 58)


def test_body_box_keeps_dark_organs_next_to_bright_fat():
    # A heavy bright tail (fat, fluid) must not push the threshold into soft tissue.
    array = np.full((60, 60, 40), -0.6, np.float32)
    array[10:50, 10:50, :] = 0.0  # soft tissue (liver-like)
    array[10:50, 10:14, :] = 6.0  # bright subcutaneous fat on one side
    box = body_box(array, margin=0)
    assert box.start[:2] == (10, 10) and box.stop[:2] == (50, 50)


def test_body_box_of_a_constant_array_is_the_whole_array():
    array = np.zeros((10, 12, 14), np.float32)
    assert body_box(array) == Box((0, 0, 0), (10, 12, 14))


def test_box_grid_is_the_same_physical_voxels():
    image, _ = ellipsoid_image(direction=rotation_direction((10, 5, 20)))
    net = to_network_input(image, Preprocessing())
    box = Box((3, 4, 5), (20, 22, 18))
    sub = box_grid(net.grid, box)
    assert sub.GetSize() == box.shape
    assert np.allclose(sub.TransformIndexToPhysicalPoint((0, 0, 0)), net.grid.TransformIndexToPhysicalPoint((3, 4, 5)))
    assert np.allclose(sub.TransformIndexToPhysicalPoint((2, 1, 7)), net.grid.TransformIndexToPhysicalPoint((5, 5, 12)))


def _whole_grid_reference(probability, grid, image, threshold=0.5):
    prob = sitk.GetImageFromArray(np.ascontiguousarray(probability.transpose(2, 1, 0)))
    prob.CopyInformation(grid)
    on_input = resample_to_grid(prob, image, sitk.sitkLinear, 0.0)
    mask = sitk.BinaryThreshold(on_input, threshold, 1e9, 1, 0)
    return fill_holes(largest_component(mask))


@pytest.mark.parametrize("direction", [None, rotation_direction((15, -10, 25), flips=(1, -1, 1)),
                                       rotation_direction((0, 0, 0), permutation=(2, 0, 1))])
def test_region_postprocessing_equals_whole_grid(direction):
    image, truth = ellipsoid_image(size=(60, 50, 24), direction=direction)
    net = to_network_input(image, Preprocessing(spacing=(3.0, 3.0, 3.0)))
    rng = np.random.default_rng(2)
    probability = rng.uniform(0, 0.3, net.array.shape).astype(np.float32)
    bright = net.array > 2.0
    probability[bright] = rng.uniform(0.45, 1.0, int(bright.sum()))  # ragged border, small holes
    probability[1:3, 1:3, 1:3] = 0.9  # a stray blob in a corner
    fast = clean_mask(probability_to_input_grid(probability, net.grid, image))
    slow = _whole_grid_reference(probability, net.grid, image)
    assert same_grid(fast, image)
    assert sitk.GetArrayFromImage(fast).sum() > 1000
    assert np.array_equal(sitk.GetArrayFromImage(fast), sitk.GetArrayFromImage(slow))


def test_empty_probability_gives_an_empty_mask_on_the_input_grid():
    image, _ = ellipsoid_image()
    net = to_network_input(image, Preprocessing())
    mask = probability_to_input_grid(np.zeros(net.array.shape, np.float32), net.grid, image)
    assert same_grid(mask, image) and sitk.GetArrayFromImage(mask).sum() == 0
    assert same_grid(clean_mask(mask), image)


def test_clean_mask_touching_the_grid_border():
    arr = np.zeros((20, 20, 20), np.uint8)
    arr[0:10, 0:12, 5:20] = 1  # touches three faces
    arr[3:5, 3:5, 10:12] = 0  # an enclosed hole
    arr[15:18, 15:18, 0:2] = 1  # a smaller component at another face
    mask = sitk.GetImageFromArray(arr)
    out = sitk.GetArrayFromImage(clean_mask(mask))
    expected = np.zeros_like(arr)
    expected[0:10, 0:12, 5:20] = 1
    assert np.array_equal(out, expected)


def _one_window_bundle(folder, norm: str, channels: list[int], overlap: float):
    """A tiny random-weight U-Net bundle whose grids up to 1 M voxels run as one window."""
    import torch
    from monai.networks.nets import UNet

    from LiverVolumetryLib.bundle import load_bundle, write_bundle

    torch.manual_seed(0)
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": channels,
            "strides": [2] * (len(channels) - 1), "num_res_units": 0, "norm": norm}
    spec = {"name": norm, "version": "0", "network": {"class": "UNet", "args": args},
            "preprocessing": {"orientation": "RAS", "spacing_mm": [4.0, 4.0, 4.0]},
            "inference": {"roi_size": [16, 16, 16], "overlap": overlap, "max_window_voxels": 10**6}}
    return load_bundle(write_bundle(folder, UNet(**args).state_dict(), spec).path)


def test_cropped_single_window_inference_matches_whole_grid_for_batch_norm(tmp_path):
    """A batch-norm network in eval mode does not depend on what else is in its window, so
    the body crop and one whole window leave the probability unchanged away from the crop's
    faces (where zero padding differs)."""
    from LiverVolumetryLib.segment import liver_probability

    bundle = _one_window_bundle(tmp_path / "bn", "batch", [4, 8], overlap=0.5)
    array = np.random.default_rng(3).normal(0, 1, (48, 44, 40)).astype(np.float32)
    whole = liver_probability(array, bundle, "cpu")
    box = Box((8, 6, 8), (40, 38, 34))
    cropped = liver_probability(np.ascontiguousarray(array[box.slices]), bundle, "cpu")
    inner = (slice(10, -10),) * 3
    assert np.allclose(cropped[inner], whole[box.slices][inner], atol=1e-5)
    # Instance norm (the default) would differ: the check above can fail.
    assert not np.allclose(cropped, whole[box.slices], atol=1e-5)


def test_one_window_shortcut_gives_monais_sliding_window_result(tmp_path):
    """When one window holds the array the engine skips MONAI's blending; the result must be
    what sliding_window_inference gives (same even padding with the air value)."""
    import torch
    from monai.inferers import sliding_window_inference

    from LiverVolumetryLib.segment import _network_on, liver_probability

    bundle = _one_window_bundle(tmp_path / "in", "instance", [4, 8, 8], overlap=0.25)
    array = np.random.default_rng(4).normal(0, 1, (21, 27, 13)).astype(np.float32)
    got = liver_probability(array, bundle, "cpu")
    network = _network_on(bundle, "cpu")
    with torch.inference_mode():
        expected = sliding_window_inference(torch.from_numpy(array)[None, None], (24, 28, 16), 1,
                                            lambda x: torch.softmax(network(x), dim=1)[:, 1:2], overlap=0.25,
                                            mode="gaussian", cval=float(array.min()))[0, 0].numpy()
    assert got.shape == array.shape and np.allclose(got, expected, atol=1e-5)
