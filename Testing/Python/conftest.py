"""Shared test fixtures: small synthetic images and a tiny random-weight model bundle."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

#: The shared real cases: ../shared beside the project root, or the folder LIVERVOLUMETRY_SHARED names.
SHARED_DATA = Path(os.environ.get("LIVERVOLUMETRY_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
                   ) / "data" / "chaos-t2"


def rotation_direction(angles_deg: tuple[float, float, float], flips=(1, 1, 1), permutation=(0, 1, 2)) -> tuple:
    """A direction matrix: axis permutation and flips followed by an oblique rotation."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    base = np.eye(3)[:, list(permutation)] * np.array(flips)
    return tuple((rz @ ry @ rx @ base).ravel())


def ellipsoid_image(size=(48, 40, 20), spacing=(4.0, 4.5, 9.0), direction=None, origin=None,
                    centre=(-20.0, 10.0, 5.0), radii=(45.0, 35.0, 50.0)) -> tuple[sitk.Image, sitk.Image]:
    """A bright ellipsoid (given in physical LPS mm) rendered on an arbitrary grid, and its mask.

    Without ``origin`` the grid is centred on the physical point (0, 0, 0).
    """
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    if origin is None:
        half = (np.array(size) - 1) / 2 * np.array(spacing)
        origin = tuple(-(np.array(image.GetDirection()).reshape(3, 3) @ half))
    image.SetOrigin(origin)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3)
    d = np.array(image.GetDirection()).reshape(3, 3)
    points = np.array(origin) + (idx * np.array(spacing)) @ d.T
    inside = (((points - np.array(centre)) / np.array(radii)) ** 2).sum(1) <= 1
    values = np.where(inside, 200.0, 50.0) + np.random.default_rng(0).normal(0, 5, inside.size)
    arr = values.reshape(size).transpose(2, 1, 0).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    mask = sitk.GetImageFromArray(inside.reshape(size).transpose(2, 1, 0).astype(np.uint8))
    mask.CopyInformation(image)
    return out, mask


def write_ellipsoid_scan(path: Path) -> Path:
    """A small 2 mm scan of a bright ellipsoid (fast to segment) written to ``path``."""
    image, _ = ellipsoid_image(size=(40, 40, 24), spacing=(2.0, 2.0, 2.0), radii=(18.0, 14.0, 12.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle with a tiny random-weight UNet (fast; its output is meaningless)."""
    import torch
    from monai.networks.nets import UNet

    from LiverVolumetryLib.bundle import write_bundle

    torch.manual_seed(0)
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
            "num_res_units": 0}
    network = UNet(**args)
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    spec = {"name": "tiny-test", "version": "0.0.0", "network": {"class": "UNet", "args": args},
            "preprocessing": {"orientation": "RAS", "spacing_mm": [4.0, 4.0, 4.0],
                              "intensity": {"method": "percentile", "lower": 25, "upper": 75,
                                            "b_min": -0.5, "b_max": 0.5, "clip": False}},
            "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian",
                          "threshold": 0.5}}
    write_bundle(folder, network.state_dict(), spec)
    return folder


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / max(1, x.sum() + y.sum()))


# ------------------------------------------------ images shared by test_imageio, test_masks, test_dicom

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def oblique_direction() -> tuple[float, ...]:
    """A rotation by 0.4 rad about (1, 2, 3): no axis aligned with the world axes."""
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(0.4) * k + (1 - math.cos(0.4)) * (k @ k)
    return tuple(rotation.flatten())


OBLIQUE = oblique_direction()
ORIENTATIONS = ["axial", "sagittal", "oblique"]


def make_volume(shape=(6, 7, 8), spacing=(0.75, 0.8, 3.0), origin=(-10.5, 20.25, 3.0),
                direction=AXIAL, dtype=np.int16, seed=0) -> sitk.Image:
    """A random 3D image; ``shape`` is numpy order (z, y, x)."""
    array = np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def write_image(tmp_path: Path, name: str, image: sitk.Image) -> Path:
    """Write ``image`` as ``tmp_path / name`` (format by suffix) and return that path."""
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 0.0) -> None:
    """Same size, and spacing, origin and direction equal within ``tolerance``."""
    assert a.GetSize() == b.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), rtol=0,
                                   atol=tolerance, err_msg=get)


def assert_read_fails_in_one_line(path, kwargs: dict, keyword: str) -> None:
    """``read_image`` refuses ``path`` with a one-line InputError naming it and the cause."""
    from LiverVolumetryLib.errors import InputError
    from LiverVolumetryLib.imageio import read_image

    with pytest.raises(InputError) as caught:
        read_image(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    assert keyword in message.lower()
    assert "\n" not in message and "\r" not in message
    assert "Exception thrown" not in message and "sitk::ERROR" not in message


# The volumetry-net recipe made tiny (2-level network, small patches and windows).
TINY_VOLUMETRY_NET = {"base": "volumetry-net",
                      "network": {"args": {"channels": [4, 8], "strides": [2], "num_res_units": 0}},
                      "patch_size": [16, 16, 16], "inference": {"roi_size": [32, 32, 32]}}


@pytest.fixture(scope="session")
def tiny_cases(tmp_path_factory) -> Path:
    """Three 40x40x24 cases at 2 mm (an ellipsoidal 'liver' placed differently in each)."""
    folder = tmp_path_factory.mktemp("tiny-cases")
    for k, centre in enumerate([(-6.0, 4.0, 0.0), (8.0, -4.0, 4.0), (0.0, 0.0, -4.0)]):
        image, mask = ellipsoid_image(size=(40, 40, 24), spacing=(2.0, 2.0, 2.0), centre=centre,
                                      radii=(18.0, 14.0, 12.0))
        sitk.WriteImage(image, str(folder / f"image_{k}.nii.gz"))
        sitk.WriteImage(mask, str(folder / f"label_{k}.nii.gz"))
    return folder
