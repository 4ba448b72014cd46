"""DICOM series: listing the series of a folder, choosing one, reading it as a volume.

This is the DICOM half of input reading; :mod:`imageio` dispatches folders here and
applies the checks common to every input (layout, spacing, memory) to what the header
of a series tells before its pixels are read. ITK's multi-line stderr warnings are
silenced while GDCM scans and reads (the checks here report those cases instead), and
every failure is a one-line :class:`InputError` naming the folder.

Geometry (origin, spacing, direction) of what is read is never changed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import NOT_UTF8_CAUSE, InputError, name_is_not_utf8

_DESCRIPTION_TAG = "0008|103e"
_CHARSET_TAG = "0008|0005"
_PIXEL_SPACING_TAG = "0028|0030"
_POSITION_TAG = "0020|0032"
_ORIENTATION_TAG = "0020|0037"

#: Largest in-plane drift of slice positions per mm along the slice normal (about 0.06
#: degrees of shear; imageio.MAX_AXIS_COSINE for image files).
_MAX_SHEAR = 1e-3


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder: its SeriesInstanceUID, SeriesDescription
    (empty when absent), number of files, and the files sorted by slice position."""

    uid: str
    description: str
    n_files: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class SeriesHeader:
    """What the first file's header says about a series before its pixels are read:
    the volume size (x, y, number of files, one slice each), in-plane spacing (x, y) in mm
    and the number of components per voxel."""

    size: tuple[int, ...]
    in_plane_spacing: tuple[float, float]
    components: int


def sitk_reason(error: Exception) -> str:
    """The informative last line of a (multi-line) SimpleITK exception, on one line."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.strip().startswith("Reason:")]
    text = lines[-1] if lines else type(error).__name__
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:|\[nrrd\])\s*", "", text)
    text = re.sub(r"^\S+\(0x[0-9a-fA-F]+\):\s*", "", text)
    return text[:200]


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's multi-line stderr warnings (e.g. "No Series were found", "Non uniform
    sampling") while reading DICOM: the checks here report those cases as InputError."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def dicom_file_header(folder: Path, file_name: str) -> sitk.ImageFileReader:
    """A reader with the header of one DICOM file of ``folder`` read."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")  # ITK's own choice for DICOM, and it reads files without the preamble
    reader.SetFileName(file_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(folder, f"DICOM file {Path(file_name).name} cannot be read: "
                                 f"{sitk_reason(error)}") from None
    return reader


def _series_description(folder: Path, first_file: str) -> str:
    """SeriesDescription (0008|103e) of a series from its first file, '' when absent."""
    reader = dicom_file_header(folder, first_file)
    if not reader.HasMetaDataKey(_DESCRIPTION_TAG):
        return ""
    text = reader.GetMetaData(_DESCRIPTION_TAG)
    charset = reader.GetMetaData(_CHARSET_TAG) if reader.HasMetaDataKey(_CHARSET_TAG) else ""
    return dicom_text(text, charset).strip()


#: Python codecs of the single-byte DICOM character sets (SpecificCharacterSet, 0008,0005).
_CHARSETS = {"ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859-2", "ISO_IR 109": "iso8859-3",
             "ISO_IR 110": "iso8859-4", "ISO_IR 144": "iso8859-5", "ISO_IR 127": "iso8859-6",
             "ISO_IR 126": "iso8859-7", "ISO_IR 138": "iso8859-8", "ISO_IR 148": "iso8859-9",
             "ISO_IR 203": "iso8859-15", "ISO_IR 166": "tis-620", "ISO_IR 13": "shift_jis", "GB18030": "gb18030",
             "GBK": "gbk", "ISO_IR 192": "utf-8"}


def dicom_text(text: str, charset: str) -> str:
    """A DICOM string value as ITK gave it (its bytes decoded as UTF-8, undecodable bytes
    kept as surrogates) in its SpecificCharacterSet; Latin-1 when that is unknown and the
    bytes are not UTF-8 (the commonest case on European scanners)."""
    raw = text.encode("utf-8", "surrogateescape")
    names = [_CHARSETS.get(part.strip().upper()) for part in charset.split("\\") if part.strip()]
    for codec in [n for n in names if n] + ["utf-8", "latin-1"]:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The DICOM series directly in ``folder`` (not in sub-folders), in GDCM's order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "does not exist" if not folder.exists() else "is not a folder")
    if name_is_not_utf8(folder):
        raise InputError(folder, NOT_UTF8_CAUSE)
    try:
        with os.scandir(folder) as entries:
            odd = next((entry.name for entry in entries if name_is_not_utf8(entry.name)), None)
    except OSError as error:
        raise InputError(folder, f"cannot be listed ({error.strerror or error})") from None
    if odd is not None:
        raise InputError(folder, f"holds a file whose name is not valid UTF-8 text ({odd!r}), which the DICOM "
                                 "reader cannot take; rename it")
    try:
        with quiet_itk():
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            files = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u) for u in uids]
    except RuntimeError as error:
        raise InputError(folder, f"DICOM files cannot be listed: {sitk_reason(error)}") from None
    return [DicomSeries(uid, _series_description(folder, names[0]), len(names), tuple(names))
            for uid, names in zip(uids, files) if names]


def series_summary(series: Sequence[DicomSeries]) -> str:
    """The series as "UID 'description' (N files); ..." for messages."""
    return "; ".join(f"{s.uid} '{s.description}' ({s.n_files} files)" for s in series)


def no_series_error(folder: str | os.PathLike,
                    is_image_file: Callable[[str], bool]) -> InputError:
    """The error for a folder holding no DICOM series, saying what to pass instead: the
    image file itself when the folder holds files that ``is_image_file`` accepts (by
    name), else a sub-folder."""
    folder = Path(folder)
    entries = sorted(e.name for e in folder.iterdir() if not e.name.startswith("."))
    if not entries:
        return InputError(folder, "is an empty folder; a DICOM series folder is expected")
    images = [name for name in entries if is_image_file(name)]
    folders = [name for name in entries if (folder / name).is_dir()]
    hint = ""
    if images or folders:
        shown = ", ".join((images or folders)[:3]) + ("..." if len(images or folders) > 3 else "")
        what = "the image file itself" if images else "the sub-folder that holds the DICOM files"
        hint = f" (it holds {shown}: pass {what})"
    return InputError(folder, "holds no DICOM files; a folder is read as one DICOM series"
                              + hint)


def matching_series(series: Sequence[DicomSeries], wanted: str) -> list[DicomSeries]:
    """The series whose UID is ``wanted``, else those whose SeriesDescription is (ignoring
    case and outer spaces)."""
    by_uid = [s for s in series if s.uid == wanted]
    return by_uid or [s for s in series if s.description.strip().lower() == wanted.strip().lower()]


def choose_series(folder: str | os.PathLike, series: Sequence[DicomSeries],
                  wanted: str | None = None) -> DicomSeries:
    """The series to read among the (non-empty) ``series`` of ``folder``: the one whose
    SeriesInstanceUID is ``wanted``, else the only one whose SeriesDescription is
    ``wanted`` (ignoring case and outer spaces: one name picks the same kind of series in
    every study of a cohort), else the only one. Raises InputError listing the series
    otherwise."""
    if wanted is not None:
        chosen = matching_series(series, wanted)
        if len(chosen) > 1:
            raise InputError(folder, f"has {len(chosen)} DICOM series described '{wanted}'; choose one "
                                     f"by UID: {series_summary(chosen)}")
        if not chosen:
            raise InputError(folder, f"has no DICOM series with UID or description '{wanted}'; it holds: "
                                     f"{series_summary(series)}")
        return chosen[0]
    if len(series) > 1:
        raise InputError(folder, f"holds {len(series)} DICOM series; choose one with "
                                 f"--series (its UID or description): {series_summary(series)}")
    return series[0]


def read_series_header(folder: str | os.PathLike, series: DicomSeries) -> SeriesHeader:
    """The header facts of ``series`` from its first file (no pixels are read); the third
    size is the number of files. Refuses a series of one slice, and multi-frame files:
    SimpleITK cannot show their per-frame positions, and GDCM stacks e.g. two echoes of
    an enhanced MR file into one double-length volume, so their geometry cannot be checked."""
    folder = Path(folder)
    first = dicom_file_header(folder, series.files[0])
    size = tuple(int(s) for s in first.GetSize())
    name = Path(series.files[0]).name
    if len(size) > 2 and size[2] > 1:
        raise InputError(folder, f"DICOM file {name} holds {size[2]} frames (multi-frame or enhanced "
                                 "DICOM), which is not supported as its frame positions cannot be "
                                 "checked; export the series as one file per slice, or convert it "
                                 "to NIfTI (e.g. with dcm2niix)")
    if series.n_files == 1:
        raise InputError(folder, f"holds a single DICOM slice ({name}, series {series.uid}); a 3D "
                                 "volume is needed (a localizer? or an export with one folder per "
                                 "file: put the series' files in one folder)")
    spacing = first.GetSpacing()
    return SeriesHeader((size[0], size[1], series.n_files), (float(spacing[0]), float(spacing[1])),
                        int(first.GetNumberOfComponents()))


def _tag_vector(reader: sitk.ImageSeriesReader, index: int, tag: str, length: int) -> np.ndarray | None:
    """The numbers of a backslash-separated tag of slice ``index``, or None if absent/invalid."""
    if not reader.HasMetaDataKey(index, tag):
        return None
    try:
        values = np.array([float(v) for v in reader.GetMetaData(index, tag).split("\\")])
    except ValueError:
        return None
    return values if values.shape == (length,) and np.all(np.isfinite(values)) else None


def check_slice_positions(folder: str | os.PathLike, reader: sitk.ImageSeriesReader,
                          image: sitk.Image, n_files: int) -> None:
    """Refuse a series (one file per slice) whose slices do not form one regular stack: a
    slice without position or orientation, slices of different orientations (a localizer),
    several slices at one position (echoes or dynamic phases), uneven gaps (missing slices),
    or positions drifting in-plane (gantry tilt: ITK would stretch the stack along the slice
    normal and drop the shift). Any of these would give the volume a wrong geometry."""
    n = image.GetSize()[2]
    if n != n_files:
        return
    names = [Path(f).name for f in reader.GetFileNames()]
    points, orientations, pixels = [], [], []
    for i in range(n):
        point = _tag_vector(reader, i, _POSITION_TAG, 3)
        orientation = _tag_vector(reader, i, _ORIENTATION_TAG, 6)
        if point is None or orientation is None:
            raise InputError(folder, f"DICOM file {names[i]} has no valid ImagePositionPatient or "
                                     "ImageOrientationPatient; the slice positions are unknown")
        points.append(point)
        orientations.append(orientation)
        pixels.append(_tag_vector(reader, i, _PIXEL_SPACING_TAG, 2))
    known = [(i, v) for i, v in enumerate(pixels) if v is not None]
    odd = next((i for i, v in known if np.any(np.abs(v - known[0][1]) > 1e-4 * known[0][1])), None)
    if odd is not None:  # ITK would take the first slice's for all: every volume wrong
        first, other = known[0][1], pixels[odd]
        raise InputError(folder, f"has slices of different pixel spacing in one series ({names[odd]}: "
                                 f"{other[0]:g} x {other[1]:g} mm, {names[known[0][0]]}: {first[0]:g} x "
                                 f"{first[1]:g} mm); it is not one volume")
    differs = np.max(np.abs(np.array(orientations) - orientations[0]), axis=1) > 1e-3
    if np.any(differs):
        raise InputError(folder, f"has slices of different orientations in one series ("
                                 f"{names[int(np.argmax(differs))]} differs from {names[0]}; a "
                                 "localizer mixed in?)")
    points = np.array(points)
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    along = points @ normal
    repeated = int(np.sum(np.diff(np.sort(along)) < 1e-3))
    if repeated:
        raise InputError(folder, f"has {repeated} slice{'s' * (repeated > 1)} at the same position as another (several "
                                 "echoes or dynamic phases in one series?); it is not one volume")
    gaps = np.abs(np.diff(along))
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > max(0.05 * median, 0.01):
        raise InputError(folder, f"has unevenly spaced slices (gaps from {gaps.min():.3g} to "
                                 f"{gaps.max():.3g} mm; missing slices?{_unread_files_text(folder)})")
    drift = np.linalg.norm((points - points[0]) - np.outer(along - along[0], normal), axis=1)
    shear = float(np.max(drift)) / (float(np.ptp(along)) + 1e-9)
    if shear > _MAX_SHEAR:
        raise InputError(folder, f"has a sheared slice stack: slice positions drift "
                                 f"{math.degrees(math.atan(shear)):.2g} degrees off the slice normal "
                                 "(gantry tilt?); resample it onto an orthogonal grid first")


def _unread_files_text(folder: str | os.PathLike) -> str:
    """'' or ' N file(s) there look like DICOM but are in no series (unreadable?): ...', for
    the message of a series with a gap: GDCM drops an empty or damaged slice silently."""
    from .inputs import looks_like_dicom_file  # inputs builds on this module

    try:
        listed = {os.path.abspath(f) for s in list_dicom_series(folder) for f in s.files}
        with os.scandir(folder) as entries:
            files = [e for e in entries if e.is_file() and not e.name.startswith(".")]
        unread = sorted(e.name for e in files if os.path.abspath(e.path) not in listed
                        and (e.stat().st_size == 0 or looks_like_dicom_file(e.path)))
    except (OSError, InputError):
        return ""
    shown = ", ".join(unread[:3]) + (", ..." if len(unread) > 3 else "")
    return f" {len(unread)} file(s) there look like DICOM but are in no series (unreadable?): {shown}" if unread else ""


def _read_error(folder: str | os.PathLike, error: RuntimeError) -> InputError:
    """The InputError for a series whose pixels ITK cannot read."""
    sizes = re.search(r"size of\s+(.+?) is \[(\d+), (\d+).*?required size \[(\d+), (\d+).*?from file (.+)",
                      str(error))
    if sizes:
        other, first = Path(sizes[1].strip()).name, Path(sizes[6].strip()).name
        return InputError(folder, f"has slices of different sizes in one series ({other} is "
                                  f"{sizes[2]}x{sizes[3]}, {first} is {sizes[4]}x{sizes[5]}; a "
                                  "localizer mixed in?)")
    return InputError(folder, f"pixel data cannot be read (truncated or corrupt file): "
                              f"{sitk_reason(error)}")


def read_series(folder: str | os.PathLike, series: DicomSeries) -> sitk.Image:
    """Read the pixels of ``series`` as float32 with its geometry unchanged.

    A 3D result (every size above 1) has its slice positions checked with
    :func:`check_slice_positions`; any other result is returned as read, for the caller
    to refuse. Unreadable pixel data, or slices of different sizes, is a one-line
    InputError naming ``folder``.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(list(series.files))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as error:
        raise _read_error(folder, error) from None
    if image.GetDimension() == 3 and min(image.GetSize()) > 1:
        check_slice_positions(folder, reader, image, series.n_files)
    return image
