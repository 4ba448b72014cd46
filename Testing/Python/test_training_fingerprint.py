"""Training-image fingerprints survive the round trips scans take between formats."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.errors import ModelBundleError
from LiverVolumetryTraining.fingerprint import (VOXELS, VOXELS_AND_GRID, file_fingerprint, fingerprint_method,
                                                image_fingerprint)


def test_a_scan_saved_as_nrrd_then_nifti_keeps_its_fingerprint(tmp_path):
    # NRRD keeps the grid in float64, NIfTI in float32: the grid read back is not the grid saved.
    rng = np.random.default_rng(3)
    voxels = sitk.GetImageFromArray(rng.integers(0, 900, (3, 4, 5)).astype(np.int16))
    grid_kept = []
    for _ in range(40):
        voxels.SetOrigin(tuple(np.round(rng.uniform(-250, 250, 3), 5)))
        voxels.SetSpacing(tuple(np.round(rng.uniform(0.5, 5, 3), 6)))
        sitk.WriteImage(voxels, str(tmp_path / "scan.nrrd"))
        sitk.WriteImage(sitk.ReadImage(str(tmp_path / "scan.nrrd")), str(tmp_path / "scan.nii.gz"))
        assert file_fingerprint(tmp_path / "scan.nrrd") == file_fingerprint(tmp_path / "scan.nii.gz")
        grid_kept.append(file_fingerprint(tmp_path / "scan.nrrd", VOXELS_AND_GRID)
                         == file_fingerprint(tmp_path / "scan.nii.gz", VOXELS_AND_GRID))
    assert not all(grid_kept)  # the grid-hashing method of older bundles lost some of them


def test_other_voxels_or_pixel_type_are_another_scan():
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    edited = sitk.Image(image)
    edited[0, 0, 0] = 7
    assert image_fingerprint(image) != image_fingerprint(edited)
    assert image_fingerprint(image) != image_fingerprint(sitk.Cast(image, sitk.sitkFloat32))
    assert image_fingerprint(image) != image_fingerprint(image, VOXELS_AND_GRID)


def test_the_method_is_read_from_the_training_record():
    assert fingerprint_method({}) == VOXELS_AND_GRID  # bundles exported before it was recorded
    assert fingerprint_method({"fingerprint_method": VOXELS}) == VOXELS
    with pytest.raises(ModelBundleError, match=r"^model bundle /b: model.json records fingerprint_method 'md5'"):
        fingerprint_method({"fingerprint_method": "md5"}, "/b")
