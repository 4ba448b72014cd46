"""Reading a reference or hand-corrected liver mask onto an image's grid.

A mask file is checked like an input image (via :mod:`.imageio`), except that several
components (the layers of a Slicer ``.seg.nrrd``) are allowed. On a reference image grid,
the mask is pasted voxel for voxel, never interpolated. Every failure is a one-line
:class:`InputError` naming the file and the cause.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .imageio import _check_direction, _check_layout, _check_spacing, _execute, _file_reader

__all__ = ["read_mask"]


def read_mask(path: str | os.PathLike, reference: sitk.Image | None = None,
              label: int | None = None) -> sitk.Image:
    """Read a reference or hand-corrected liver mask as uint8 0/1.

    With ``label`` None any non-zero voxel is liver, else voxels equal to ``label``.
    A multi-layer Slicer ``.seg.nrrd`` is read as the union of its layers (``label``
    is then ambiguous and refused). With ``reference``, the mask is returned on exactly
    the reference's grid. The mask's own grid may be a sub-box or super-box of it (as
    Slicer saves a segmentation cropped to its extent): same spacing and direction within
    round-off, origin a whole number of voxels away. It is pasted in voxel for voxel (no
    interpolation); reference voxels outside the mask's box are 0, and liver voxels
    outside the reference grid are refused (background there is dropped).
    """
    path = Path(path)
    reader = _file_reader(path)
    components = reader.GetNumberOfComponents()
    _check_layout(path, reader.GetDimension(), reader.GetSize(), components,
                  allow_components=True)
    _check_spacing(path, reader.GetSpacing())
    _check_direction(path, reader.GetDirection())
    if components > 1 and label is not None:
        raise InputError(path, f"has {components} segment layers, so label {label} is "
                               "ambiguous; omit the label to use every segment")
    offset = (0, 0, 0) if reference is None else _grid_offset(path, reader, reference)
    image = _execute(reader, path)
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(path, "contains NaN or infinite voxel values")
    liver = array != 0 if label is None else array == label
    if components > 1:
        liver = liver.any(axis=-1)
    return _paste_into_grid(path, liver, offset, image if reference is None else reference)


def _grid_offset(path: Path, reader: sitk.ImageFileReader,
                 reference: sitk.Image) -> tuple[int, int, int]:
    """Index (x, y, z) in the reference grid of the mask's first voxel (from the header).

    Refuses a mask whose spacing (1e-4 relative) or direction (1e-4) differs from the
    reference, or whose origin is not a whole number of voxels away from the reference's
    (tolerance 1e-3 voxel, at least 1e-3 mm), saying what differs.
    """
    mine, theirs = ({name: np.asarray(getattr(x, "Get" + name)(), dtype=float)
                     for name in ("Spacing", "Direction", "Origin")} for x in (reader, reference))
    spacing = theirs["Spacing"]
    axes = theirs["Direction"].reshape(3, 3) * spacing
    index = np.linalg.solve(axes, mine["Origin"] - theirs["Origin"])
    whole = np.round(index)
    wrong = {"Spacing": np.abs(mine["Spacing"] - spacing) > 1e-4 * spacing,
             "Direction": np.abs(mine["Direction"] - theirs["Direction"]) > 1e-4,
             "Origin": np.abs(index - whole) > np.maximum(1e-3, 1e-3 / spacing)}
    for name, bad in wrong.items():
        if np.any(bad):
            shown = [", ".join(f"{v:.4g}" for v in x[name]) for x in (mine, theirs)]
            steps = ", ".join(f"{v:.4g}" for v in index)
            detail = f": {steps} voxels apart, not a whole number" if name == "Origin" else ""
            raise InputError(path, f"does not match the image grid: {name.lower()} ({shown[0]}) "
                                   f"vs image ({shown[1]}){detail}")
    return int(whole[0]), int(whole[1]), int(whole[2])


def _paste_into_grid(path: Path, liver: np.ndarray, offset: tuple[int, int, int],
                     reference: sitk.Image) -> sitk.Image:
    """The boolean mask ``liver`` (numpy z, y, x; its voxel 0 at index ``offset`` of the
    reference grid) as uint8 on the reference grid: copied voxel for voxel where the grids
    overlap, 0 elsewhere. Refuses liver voxels that fall outside the reference grid."""
    target = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    source_box, target_box = [], []
    for n_mask, n_target, shift in zip(liver.shape, target.shape, offset[::-1]):
        low = max(0, -shift)
        high = max(low, min(n_mask, n_target - shift))
        source_box.append(slice(low, high))
        target_box.append(slice(low + shift, high + shift))
    inside = liver[tuple(source_box)]
    outside = int(np.count_nonzero(liver)) - int(np.count_nonzero(inside))
    if outside:
        raise InputError(path, f"extends beyond the image: {outside} liver voxel(s) lie "
                               "outside the image grid")
    target[tuple(target_box)] = inside
    mask = sitk.GetImageFromArray(target)
    mask.CopyInformation(reference)
    return mask
