"""Which scans a model was trained on, recognised by their content rather than their names.

A bundle records the fingerprint of every training image (``training.case_fingerprints``
in ``model.json``) and how it was taken (``training.fingerprint_method``); ``evaluate
--model`` marks a case whose image has one of them as a training case, whatever the case
is called in the manifest at hand.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import SimpleITK as sitk
from LiverVolumetryLib.errors import ModelBundleError

VOXELS = "sha256 of pixel type, size and voxels"
"""The method of bundles exported now. The grid is left out: the same voxels are the same
scan, and a grid written to NIfTI (float32) and read back is not the grid that was saved
(float64), which made a resaved training scan look held out."""
VOXELS_AND_GRID = "sha256 of pixel type, size, voxels and grid rounded to 1e-4"
"""The method of bundles that record none (exported before the method was recorded)."""
METHODS = (VOXELS, VOXELS_AND_GRID)


def fingerprint_method(training: dict, bundle: str | os.PathLike | None = None) -> str:
    """The method by which the ``training`` record of ``bundle`` took its fingerprints."""
    method = training.get("fingerprint_method") or VOXELS_AND_GRID
    if method not in METHODS:
        raise ModelBundleError(bundle, f"model.json records fingerprint_method {method!r}, which this version of "
                                       "LiverVolumetry does not know (update it to evaluate with this model)")
    return method


def image_fingerprint(image: sitk.Image, method: str = VOXELS) -> str:
    """SHA-256 of an image's pixel type, size and voxels (and, for ``VOXELS_AND_GRID``, its
    spacing, origin and direction rounded to 1e-4): the same scan under another name, in
    another format or compression, has the same fingerprint."""
    if method not in METHODS:
        raise ValueError(f"unknown fingerprint method {method!r}")
    header = [image.GetPixelIDTypeAsString(), list(image.GetSize()), image.GetNumberOfComponentsPerPixel()]
    if method == VOXELS_AND_GRID:
        header += [[round(v, 4) + 0.0 for v in values]  # + 0.0: -0.0 and 0.0 alike
                   for values in (image.GetSpacing(), image.GetOrigin(), image.GetDirection())]
    digest = hashlib.sha256(repr(header).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike, method: str = VOXELS) -> str | None:
    """:func:`image_fingerprint` of an image file; None if it cannot be read as one."""
    try:
        return image_fingerprint(sitk.ReadImage(os.fspath(path)), method)
    except RuntimeError:
        return None
