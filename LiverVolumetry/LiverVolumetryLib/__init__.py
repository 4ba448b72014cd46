"""LiverVolumetryLib: Slicer-free engine for liver segmentation, volumetry and radiomics on MRI.

The public API, used by the command-line tool and the 3D Slicer module alike::

    from LiverVolumetryLib import segment_liver, read_image
    from LiverVolumetryLib.measure import measure   # the package attribute ``measure`` is the module
    image = read_image("scan.nii.gz")
    result = segment_liver(image, device="auto", progress=print)   # result.mask: uint8 on image's grid
    table = measure(image, result.mask, radiomics=True)            # {"volume_ml": ..., "original_...": ...}

No ``slicer``, ``qt`` or ``vtk`` imports anywhere in this package. Names are imported
lazily so that importing the package stays cheap (torch loads only when needed).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "segment_liver": "segment", "SegmentationResult": "segment",
    "measure": "measure", "liver_volume_ml": "measure", "plausibility_warnings": "plausibility",
    "unsure_fraction": "confidence", "confidence_warnings": "confidence",
    "read_image": "imageio", "read_mask": "masks",
    "load_bundle": "bundle", "default_bundle_dir": "bundle", "ModelBundle": "bundle",
    "make_phantom": "phantom",
    "run_segmentation": "batch",
    "LiverVolumetryError": "errors", "InputError": "errors", "ModelBundleError": "errors", "CancelledError": "errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
