"""Which scans a model was trained on, recognised by their content rather than their names.

A bundle records the fingerprint of every training image (``training.case_fingerprints``
in ``model.json``); ``evaluate --model`` marks a case whose image has one of them as a
training case, whatever the case is called in the manifest at hand.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import SimpleITK as sitk


def image_fingerprint(image: sitk.Image) -> str:
    """SHA-256 of an image's voxels and grid (pixel type, size, spacing, origin and direction
    rounded to 1e-4): the same scan under another name, in another format or compression,
    has the same fingerprint."""
    grid = [image.GetPixelIDTypeAsString(), list(image.GetSize()), image.GetNumberOfComponentsPerPixel()]
    grid += [[round(v, 4) + 0.0 for v in values]  # + 0.0: -0.0 and 0.0 alike
             for values in (image.GetSpacing(), image.GetOrigin(), image.GetDirection())]
    digest = hashlib.sha256(repr(grid).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str | None:
    """:func:`image_fingerprint` of an image file; None if it cannot be read as one."""
    try:
        return image_fingerprint(sitk.ReadImage(os.fspath(path)))
    except RuntimeError:
        return None
