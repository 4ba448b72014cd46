"""Reading a reference or hand-corrected liver mask onto an image's grid.

A mask file is checked like an input image (via :mod:`.imageio`), except that several
components (the layers of a Slicer ``.seg.nrrd``) are allowed. On a reference image grid,
the mask is pasted voxel for voxel, never interpolated. Every failure is a one-line
:class:`InputError` naming the file and the cause.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .imageio import _check_direction, _check_layout, _check_spacing, _execute, _file_reader, image_suffix
from .niftifile import check_nifti_finite
from .outputs import LIVER_SEGMENT_NAME

__all__ = ["MissingLabelError", "check_mask_header", "labels_text", "read_mask", "segment_name_warnings"]


class MissingLabelError(InputError):
    """A mask with voxels, but none of the liver label asked for (a wrong label value, or a
    label map in which the liver was missed)."""


def read_mask(path: str | os.PathLike, reference: sitk.Image | None = None,
              label: int | Sequence[int] | None = None) -> sitk.Image:
    """Read a reference or hand-corrected liver mask as uint8 0/1.

    With ``label`` None any non-zero voxel is liver, as long as all of them share one value
    (a labelmap of several labels is refused, listing them: their union is rarely the
    liver); else voxels equal to ``label`` (or to any of several values, e.g. liver plus
    lesions). A Slicer ``.seg.nrrd`` with several segments gives its segment named 'Liver'
    (refused when none is). A multi-layer file is read as the union of its layers
    (``label`` is then ambiguous and refused). With ``reference``, the mask is returned on exactly
    the reference's grid. The mask's own grid may be a sub-box or super-box of it (as
    Slicer saves a segmentation cropped to its extent): same spacing and direction within
    round-off, origin a whole number of voxels away. It is pasted in voxel for voxel (no
    interpolation); reference voxels outside the mask's box are 0, and liver voxels
    outside the reference grid are refused (background there is dropped).
    """
    path = Path(path)
    reader, offset = check_mask_header(path, reference, label)
    components = reader.GetNumberOfComponents()
    wanted = () if label is None else [label] if isinstance(label, int) else list(label)
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_finite(path)  # ITK reads NaN in NIfTI as 0: a hole, not an error
    image = _execute(reader, path)
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(path, "contains NaN or infinite voxel values")
    segment = None if label is not None else _liver_segment(path, reader, components)
    if segment is not None:  # (layer, label value) of the 'Liver' segment
        liver = (array[..., segment[0]] if components > 1 else array) == segment[1]
    elif label is None:
        liver = array != 0
        if components > 1:
            liver = liver.any(axis=-1)
        else:
            _check_single_label(path, array, liver)
    else:
        liver = np.isin(array, wanted)
        if not liver.any() and np.any(array):
            raise MissingLabelError(path, f"has no voxel of label {','.join(str(v) for v in wanted)}; "
                                   f"it holds label(s) {labels_text(array[array != 0])}")
    return _paste_into_grid(path, liver, offset, image if reference is None else reference)


def check_mask_header(path: str | os.PathLike, reference=None, label: int | Sequence[int] | None = None
                      ) -> tuple[sitk.ImageFileReader, tuple[int, int, int]]:
    """What :func:`read_mask` checks from the header alone (no voxels read): a readable 3D
    file, its spacing and direction, ``label``, and, with ``reference`` (an image, or a
    reader holding an image's header), that the grids line up. Returns the reader and the
    index in the reference grid of the mask's first voxel."""
    path = Path(path)
    reader = _file_reader(path)
    components = reader.GetNumberOfComponents()
    _check_layout(path, reader.GetDimension(), reader.GetSize(), components,
                  allow_components=True)
    _check_spacing(path, reader.GetSpacing())
    _check_direction(path, reader.GetDirection())
    if components > 1 and label is not None:
        shown = label if isinstance(label, int) else ",".join(str(v) for v in label)
        raise InputError(path, f"has {components} segment layers, so label {shown} is "
                               "ambiguous; omit the label to use every segment")
    if label is not None and 0 in ([label] if isinstance(label, int) else list(label)):
        raise InputError(path, "label 0 is the background value; give the liver's label value")
    return reader, (0, 0, 0) if reference is None else _grid_offset(path, reader, reference)


def labels_text(values: np.ndarray) -> str:
    """The distinct ``values`` as "1, 2, 5" (the first 8, then how many in all)."""
    found = np.unique(values)
    return ", ".join(f"{v:g}" for v in found[:8]) + (f", ... ({found.size} in all)" if found.size > 8 else "")


def _check_single_label(path: Path, array: np.ndarray, liver: np.ndarray) -> None:
    """Refuse a plain labelmap whose non-zero voxels hold several values, naming them."""
    values = array[liver]
    if values.size == 0 or values.min() == values.max():
        return
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise InputError(path, f"holds non-whole values from {values.min():g} to {values.max():g}: a "
                               "probability map, not a mask (threshold it first, e.g. at 0.5)")
    raise InputError(path, f"holds several labels ({labels_text(values)}), so which voxels are liver is ambiguous; "
                           "give the liver's label value (measure --label, evaluate --prediction-label: N, "
                           "or N,M for liver plus lesions)")


def _segment_field(reader: sitk.ImageFileReader):
    """``field(n, "Name")``: segment ``n``'s entry of a Slicer segmentation header (None if absent)."""
    def field(n: int, name: str) -> str | None:
        key = f"Segment{n}_{name}"
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None
    return field


def _segment_names(reader: sitk.ImageFileReader) -> list[str]:
    """The names (else IDs) of a Slicer segmentation's segments; [] for a plain label map."""
    field, names = _segment_field(reader), []
    while field(len(names), "ID") is not None or field(len(names), "Name") is not None:
        names.append(field(len(names), "Name") or field(len(names), "ID"))
    return names


def segment_name_warnings(path: str | os.PathLike) -> list[str]:
    """A warning for a Slicer segmentation whose only segment is not named 'Liver' (it is
    measured as the liver, but it may be a lesion's or another organ's segment)."""
    names = _segment_names(_file_reader(Path(path)))
    if len(names) == 1 and names[0].lower() != LIVER_SEGMENT_NAME.lower():
        return [f"measured segment '{names[0]}' as the liver (the file has no segment named '{LIVER_SEGMENT_NAME}')"]
    return []


def _liver_segment(path: Path, reader: sitk.ImageFileReader, components: int) -> tuple[int, int] | None:
    """(layer, label value) of the segment named 'Liver' of a Slicer segmentation with
    several segments, as the Slicer module measures it; None for a file with at most one
    segment (then every non-zero voxel is liver). Several segments, none named 'Liver'
    (their union is not the liver) or more than one (in any letter case), are refused."""
    field = _segment_field(reader)
    names = _segment_names(reader)
    if len(names) < 2:
        return None
    livers = [n for n, name in enumerate(names) if name.lower() == LIVER_SEGMENT_NAME.lower()]
    if len(livers) > 1:
        raise InputError(path, f"holds {len(livers)} segments named '{LIVER_SEGMENT_NAME}' "
                               f"({', '.join(repr(names[n]) for n in livers)}), so which one is the liver is "
                               "ambiguous; rename or remove the others")
    liver = livers[0] if livers else None
    if liver is None:
        raise InputError(path, f"holds {len(names)} segments ({', '.join(repr(n) for n in names)}) and none is "
                               f"named '{LIVER_SEGMENT_NAME}'; name the liver segment '{LIVER_SEGMENT_NAME}' "
                               "or keep only it")
    try:
        layer = int(field(liver, "Layer") or (liver if components > 1 else 0))
        value = int(field(liver, "LabelValue") or 1)
    except ValueError:
        raise InputError(path, f"has an unreadable layer or label value for segment '{names[liver]}'") from None
    if value == 0:  # background: the "liver" would be everything else
        raise InputError(path, f"segment '{names[liver]}' has label value 0, the background value")
    if not 0 <= layer < components:
        raise InputError(path, f"segment '{names[liver]}' is in layer {layer}, but the file has {components}")
    return layer, value


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
