"""Reading and validating one input image for the engine.

The engine segments 3D scalar MRI volumes. Everything that can be checked from a file's
header (dimension, components, spacing, direction, memory needed) is checked *before*
pixels are read, so a huge or unusable file is refused without loading it. Every failure
is a one-line :class:`InputError` naming the file and the cause; SimpleITK's multi-line
exceptions never reach the user.

Geometry (origin, spacing, direction) of what is read is never changed. DICOM series
folders are read by :mod:`.dicom` (``DicomSeries`` and ``list_dicom_series`` are
re-exported here), voxel values are checked by :mod:`.pixel_checks`. Masks are read by
:mod:`.masks`; ``read_mask`` is re-exported here (imported lazily, as :mod:`.masks`
builds on this module).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dicom import (DicomSeries, choose_series, list_dicom_series, no_series_error, quiet_itk, read_series,
                    read_series_header)
from .dicom import sitk_reason as _sitk_reason
from .errors import NOT_UTF8_CAUSE, InputError, name_is_not_utf8
from .metafile import check_metaimage_complete
from .niftifile import (check_nifti_complete, check_nifti_finite, check_nifti_gzip, check_nifti_orientation,
                        check_nifti_pixdim, check_nifti_sform)
from .nrrdfile import check_nrrd_header
from .pixel_checks import Where, check_pixels

SERIES_UID_TAG = "0020|000e"  # SeriesInstanceUID

__all__ = [
    "IMAGE_SUFFIXES", "DicomSeries", "available_memory_bytes", "case_id", "estimate_memory_bytes",
    "image_suffix", "list_dicom_series", "read_image", "read_mask", "series_uid_of", "validate_image",
]

#: File suffixes read as images (lower case; ``.seg.nrrd`` is a ``.nrrd``).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Plausible voxel spacing in mm: a spacing outside (MIN, MAX] is a broken header.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 30.0

#: Farthest plausible origin coordinate in mm (100 m): scanners give at most a few hundred.
MAX_ORIGIN_MM = 1e5

#: Memory estimate (see :func:`estimate_memory_bytes`).
BYTES_PER_VOXEL = 16
FIXED_OVERHEAD_BYTES = 512 * 1024**2

#: Largest |cosine| between two image axes accepted as orthogonal (about 0.06 degrees).
MAX_AXIS_COSINE = 1e-3

_COMPLEX_PIXEL_IDS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def image_suffix(path: str | os.PathLike) -> str | None:
    """The supported image suffix of ``path`` (lower case, e.g. ``".nii.gz"``), or None."""
    name = Path(path).name.lower()
    matches = [s for s in IMAGE_SUFFIXES if name.endswith(s) and len(name) > len(s)]
    return max(matches, key=len) if matches else None


def case_id(path: str | os.PathLike) -> str:
    """The case name for an input: the file name without its image extensions
    (``image_1.nii.gz`` -> ``image_1``, ``x.seg.nrrd`` -> ``x``), or a folder's name."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name if p.name in ("", ".", "..") else p.name
    name = p.name
    suffix = image_suffix(p)
    if suffix is not None:
        name = name[: -len(suffix)]
        if name.lower().endswith(".seg"):
            name = name[: -len(".seg")]
    return name


def _size_text(size: Sequence[int]) -> str:
    """A size as '256x256x30'."""
    return "x".join(str(int(s)) for s in size)


def _gb(n_bytes: float) -> str:
    """A byte count in GB with one decimal."""
    return f"{n_bytes / 1024**3:.1f} GB"


def estimate_memory_bytes(size: Sequence[int]) -> int:
    """Memory needed to process an image of ``size`` voxels (x, y, z).

    The pipeline holds at once roughly: the float32 input (4 B/voxel), a float32
    resampled copy (4), a float32 probability map (4), the uint8 output mask (1) and
    scratch space for casts and post-processing (~3): ``BYTES_PER_VOXEL`` = 16. On top
    comes ``FIXED_OVERHEAD_BYTES`` (512 MiB) for the model weights, the torch runtime and
    sliding-window buffers. The 2 mm resampled grid is usually smaller than the native
    grid, so this errs on the safe side.
    """
    n_voxels = math.prod(int(s) for s in size)
    return n_voxels * BYTES_PER_VOXEL + FIXED_OVERHEAD_BYTES


def available_memory_bytes() -> int:
    """Memory available to this process now: psutil if importable, else
    ``MemAvailable`` from /proc/meminfo; a huge number when it cannot be known."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or failing: fall back
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 2**62


def _check_layout(path: Where, dimension: int, size: Sequence[int], components: int,
                  allow_components: bool = False) -> None:
    """Refuse 2D, 4D and multi-component images (from header values)."""
    if dimension == 2:
        raise InputError(path, f"is 2D (size {_size_text(size)}); a 3D volume is needed")
    if dimension != 3:
        raise InputError(path, f"is {dimension}D (size {_size_text(size)}); "
                               "a single 3D volume is needed")
    if any(int(s) <= 1 for s in size):
        raise InputError(path, f"is 2D (size {_size_text(size)}); a 3D volume is needed")
    if components != 1 and not allow_components:
        raise InputError(path, f"has {components} components per voxel (RGB or vector image); "
                               "a scalar (grayscale) volume is needed")


def _check_spacing(path: Where, spacing: Sequence[float]) -> None:
    """Refuse non-finite or implausible voxel spacing."""
    ok = all(math.isfinite(s) and MIN_SPACING_MM < s <= MAX_SPACING_MM for s in spacing)
    if not ok:
        text = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(path, f"has implausible voxel spacing {text} mm (each must be "
                               f"above {MIN_SPACING_MM:g} and at most {MAX_SPACING_MM:g} mm)")


def _check_direction(path: Where, direction: Sequence[float]) -> None:
    """Refuse a non-finite or (nearly) singular direction matrix."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)):
        raise InputError(path, "has a degenerate direction matrix (non-finite values)")
    norms = np.linalg.norm(matrix, axis=0)
    if np.any(norms < 1e-6) or abs(np.linalg.det(matrix / norms)) < 1e-3:
        raise InputError(path, "has a degenerate direction matrix (axes are parallel "
                               "or zero); the image orientation is unusable")
    if np.any(np.abs(norms - 1) > 1e-3):
        # ITK scales the voxels by them (e.g. a .mhd TransformMatrix 2 0 0 ...), NIfTI and Slicer do not.
        raise InputError(path, f"has a direction matrix whose axes are not unit vectors (lengths "
                               f"{', '.join(f'{n:.4g}' for n in norms)}), so its voxel size is ambiguous; give "
                               "the voxel size as spacing and unit axes")
    cosines = (matrix / norms).T @ (matrix / norms)
    worst = float(np.max(np.abs(cosines - np.eye(3))))
    if worst > MAX_AXIS_COSINE:
        # A sheared grid (e.g. gantry tilt) cannot be kept: NIfTI masks and most viewers
        # would silently square its axes and misplace the liver by centimetres.
        angle = math.degrees(math.acos(min(1.0, worst)))
        raise InputError(path, f"has a sheared (non-orthogonal) voxel grid: two axes meet at {angle:.1f} "
                               "degrees instead of 90; resample it onto an orthogonal grid first")


def _check_origin(path: Where, origin: Sequence[float]) -> None:
    """Refuse a non-finite origin, or one no scanner gives (beyond MAX_ORIGIN_MM): NIfTI
    stores it in float32, so the masks would be written millimetres off."""
    if not all(math.isfinite(o) and abs(o) <= MAX_ORIGIN_MM for o in origin):
        raise InputError(path, f"has an implausible position: origin {', '.join(f'{o:g}' for o in origin)} mm (each "
                               f"coordinate must be finite and within {MAX_ORIGIN_MM:g} mm of the scanner's centre)")


def _check_memory(path: Where, size: Sequence[int]) -> None:
    """Refuse an image too large for the memory available now."""
    needed, available = estimate_memory_bytes(size), available_memory_bytes()
    if needed > available:
        raise InputError(path, f"is too large (size {_size_text(size)}): needs about "
                               f"{_gb(needed)} of memory to process, {_gb(available)} available")


def validate_image(image: sitk.Image, path: Where) -> None:
    """Check an image already in memory (e.g. from Slicer): 3D, scalar, plausible spacing,
    usable direction, and pixel data that is finite and not constant. Raises InputError."""
    size = image.GetSize()
    _check_layout(path, image.GetDimension(), size, image.GetNumberOfComponentsPerPixel())
    _check_spacing(path, image.GetSpacing())
    _check_direction(path, image.GetDirection())
    _check_origin(path, image.GetOrigin())
    check_pixels(path, image)


# (suffix, header key, separator) of the line naming a detached header's voxel data file.
_DATA_FILE_LINES = ((".mhd", "elementdatafile", "="), (".nhdr", "data file", ":"), (".nhdr", "datafile", ":"))


def _check_detached_data(path: Path) -> None:
    """Refuse a .mhd/.nhdr header whose single data file is missing, naming that file
    (the readers only say the header cannot be read). Lists and patterns are not checked."""
    suffix = image_suffix(path)
    keys = {key: separator for s, key, separator in _DATA_FILE_LINES if s == suffix}
    if not keys:
        return
    try:
        with open(path, encoding="latin-1") as handle:
            lines = [line.strip() for _, line in zip(range(200), handle)]
    except OSError:
        return
    for line in lines:
        for key, separator in keys.items():
            name, _, value = line.partition(separator)
            value = value.strip()
            if name.strip().lower() != key or not value:
                continue
            if value.upper().startswith(("LOCAL", "LIST")) or "%" in value or " " in value:
                return  # data in the header itself, or several files: left to the reader
            data = Path(value) if Path(value).is_absolute() else path.parent / value
            if not data.exists():
                raise InputError(path, f"its data file {data.name} is missing (expected at {data})")
            return


def _file_reader(path: Path) -> sitk.ImageFileReader:
    """A reader with the header of ``path`` read (missing/corrupt/unsupported refused)."""
    if not path.exists():
        raise InputError(path, "does not exist")
    if name_is_not_utf8(path):
        raise InputError(path, NOT_UTF8_CAUSE)
    if not path.is_file():
        raise InputError(path, "is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    if image_suffix(path) is None:
        raise InputError(path, f"has an unsupported file type; expected one of "
                               f"{', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    _check_detached_data(path)
    if image_suffix(path) in (".mha", ".mhd"):
        check_metaimage_complete(path)
    if image_suffix(path) in (".nrrd", ".nhdr"):
        check_nrrd_header(path)
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_gzip(path)
        check_nifti_orientation(path)
        check_nifti_pixdim(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():  # e.g. NIfTI's "unexpected scales in sform": checked below instead
            reader.ReadImageInformation()
    except RuntimeError as error:
        reason = _sitk_reason(error)
        detail = "" if "Unable to determine ImageIO" in reason else f": {reason}"
        raise InputError(path, f"cannot be read: not a valid {image_suffix(path)} file, "
                               f"or the file is corrupt{detail}") from None
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_complete(path)
        check_nifti_sform(path, reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    if reader.GetPixelID() in _COMPLEX_PIXEL_IDS:
        raise InputError(path, "has complex-valued voxels; a real-valued volume is needed")
    return reader


def _execute(reader: sitk.ImageReaderBase, path: Where) -> sitk.Image:
    """Read the pixels; a truncated or corrupt body becomes an InputError."""
    try:
        with quiet_itk():
            return reader.Execute()
    except RuntimeError as error:
        raise InputError(path, f"pixel data cannot be read (truncated or corrupt file): "
                               f"{_sitk_reason(error)}") from None


def read_header(path: Path) -> sitk.ImageFileReader:
    """A reader holding the header of image file ``path``, refused for everything the header
    tells (layout, spacing, direction, origin, memory needed) as reading would; no pixels read."""
    reader = _file_reader(path)
    size = reader.GetSize()
    _check_layout(path, reader.GetDimension(), size, reader.GetNumberOfComponents())
    _check_spacing(path, reader.GetSpacing())
    _check_direction(path, reader.GetDirection())
    _check_origin(path, reader.GetOrigin())
    _check_memory(path, size)
    return reader


def _read_file(path: Path) -> sitk.Image:
    """Read an image file as float32 after checking everything its header tells."""
    reader = read_header(path)
    if reader.GetPixelID() == sitk.sitkFloat64:
        return _as_float32(path, _read_float64(reader, path))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    if image_suffix(path) not in (".nii", ".nii.gz"):
        return _execute(reader, path)
    # The NaN count reads the file a second time: beside ITK's read (both decompress outside
    # the GIL), a 512x512x200 float .nii.gz costs 2.0 s instead of 1.5 + 1.5 s on 2 cores.
    with ThreadPoolExecutor(max_workers=1) as pool:
        finite = pool.submit(check_nifti_finite, path)
        image = _execute(reader, path)
        finite.result()  # raises its InputError
    return image


def _read_float64(reader: sitk.ImageFileReader, path: Path) -> sitk.Image:
    """A float64 file as stored, NaN and infinity included (NIfTI's are checked in the file:
    ITK's reader turns them into 0)."""
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_finite(path)
    return _execute(reader, path)


def _as_float32(path: Path, image: sitk.Image) -> sitk.Image:
    """``image`` as float32, refusing finite values beyond its range (they would become
    infinite and be reported as such)."""
    array = sitk.GetArrayViewFromImage(image)
    finite = array[np.isfinite(array)]
    largest = float(np.max(np.abs(finite))) if finite.size else 0.0
    if largest > float(np.finfo(np.float32).max):
        raise InputError(path, f"has voxel values beyond the float32 range (largest magnitude {largest:.3g}); "
                               "rescale the image first")
    return sitk.Cast(image, sitk.sitkFloat32)


def _read_dicom(folder: Path, series_uid: str | None) -> sitk.Image:
    """Read one DICOM series of ``folder`` as float32, checking its first header first."""
    series = list_dicom_series(folder)
    if not series:
        raise no_series_error(folder, is_image_file=lambda name: image_suffix(name) is not None)
    chosen = choose_series(folder, series, series_uid)
    header = read_series_header(folder, chosen)
    _check_layout(folder, 3, header.size, header.components)
    _check_spacing(folder, header.in_plane_spacing)
    _check_memory(folder, header.size)
    image = read_series(folder, chosen)
    _check_layout(folder, image.GetDimension(), image.GetSize(), 1)
    image.SetMetaData(SERIES_UID_TAG, chosen.uid)  # which series was read, for the results table
    return image


def series_uid_of(image: sitk.Image) -> str | None:
    """The SeriesInstanceUID of a volume :func:`read_image` read from a DICOM folder, else None."""
    return image.GetMetaData(SERIES_UID_TAG) if image.HasMetaDataKey(SERIES_UID_TAG) else None


def read_image(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read one input volume: an image file (by suffix) or a DICOM series folder.

    Returns a float32 3D scalar image with the file's geometry unchanged. ``series_uid``
    selects a series in a folder holding several (ignored for image files). Raises a
    one-line InputError naming the file and the cause for any unusable input.
    """
    path = Path(path)
    if path.is_dir():
        image = _read_dicom(path, series_uid)
    elif not path.exists():
        raise InputError(path, "does not exist")
    else:
        image = _read_file(path)
    validate_image(image, path)
    return image


def __getattr__(name: str) -> Callable[..., sitk.Image]:
    """``read_mask`` (now in :mod:`.masks`), imported on first use to avoid an import cycle."""
    if name == "read_mask":
        from .masks import read_mask

        return read_mask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
