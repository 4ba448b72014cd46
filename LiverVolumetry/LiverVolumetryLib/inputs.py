"""Turning command-line arguments into a list of cases to process.

An argument is an image file, a folder, or a CSV manifest. No pixel data is read here
(only directory listings, 132-byte DICOM magic checks and the CSV; the DICOM headers of a
DICOM folder argument or manifest row, and with a series chosen those of sub-folders; else one
header per DICOM folder, to find a series split over folders), so this is fast even for large
batches; each case is fully checked later when it is read.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .dicom import choose_series, dicom_file_header, list_dicom_series, matching_series
from .errors import NOT_UTF8_CAUSE, InputError, name_is_not_utf8
from .imageio import IMAGE_SUFFIXES, case_id, image_suffix

_IMAGE_COLUMNS = ("image", "path")

#: Column names (lower case, letters only) that are meant as a manifest column but are not
#: one: ignored, a case would be named after its file or read the wrong DICOM series.
_LOOK_ALIKES = {
    "image": ("images", "imagepath", "imagefile", "imagefilename", "paths", "file", "filename", "filepath"),
    "case": ("cases", "caseid", "casename", "casenumber", "caseno"),
    "series_uid": ("series", "seriesuid", "seriesuids", "seriesid", "seriesinstanceuid", "seriesdescription"),
}


@dataclass(frozen=True)
class InputCase:
    """One case: its name (outputs are named after it), the image file or DICOM folder,
    and the DICOM series to read from that folder: its UID, or its SeriesDescription when
    that names one series (a manifest's ``series_uid``, else ``--series``; None: the
    folder's only series)."""

    case: str
    path: Path
    series_uid: str | None = None


#: How a DICOM file without its 128-byte preamble starts: its file meta group length
#: (0002,0000) UL 4, or, where that is left out, (0002,0001) OB. Exact, so that raw voxel
#: data (a .mhd's .raw) is never taken for DICOM.
_META_STARTS = (b"\x02\x00\x00\x00UL\x04\x00", b"\x02\x00\x01\x00OB\x00\x00")


def _starts_like_dicom(head: bytes) -> bool:
    """Whether a file without the 128-byte preamble starts with a DICOM file meta group."""
    return head[:8] in _META_STARTS


def looks_like_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a DICOM Part-10 file (``DICM`` magic at byte 128), ends in
    ``.dcm``, or starts as DICOM data without the preamble (some older exports).
    DICOMDIR index files and hidden files are not image files."""
    p = Path(path)
    if p.name.startswith(".") or p.name.upper() == "DICOMDIR" or not p.is_file():
        return False
    if p.suffix.lower() == ".dcm":
        return True
    if image_suffix(p) is not None:
        return False
    try:
        with open(p, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:132] == b"DICM") or _starts_like_dicom(head)


def folder_holds_dicom(folder: str | os.PathLike) -> bool:
    """True if ``folder`` directly contains at least one DICOM file (fast: no GDCM scan)."""
    try:
        with os.scandir(folder) as entries:
            return any(looks_like_dicom_file(entry.path) for entry in entries)
    except OSError:
        return False


def _natural_key(name: str) -> list:
    """Sort key putting image_2 before image_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _is_input_image(path: Path) -> bool:
    """A supported image file that is not hidden and not a Slicer segmentation."""
    name = path.name.lower()
    return (path.is_file() and not name.startswith(".") and image_suffix(path) is not None
            and not name.endswith(".seg.nrrd"))


def _dicom_subfolders(folder: Path) -> list[Path]:
    """Every folder below ``folder`` (at any depth) that directly holds DICOM files."""
    found = []
    for root, dirs, _files in os.walk(folder):
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=_natural_key)
        if Path(root) != folder and folder_holds_dicom(root):
            found.append(Path(root))
    return found


def _subfolder_case(folder: Path, sub: Path) -> str:
    """Case name of a DICOM sub-folder: its path below ``folder`` joined with '_'."""
    return "_".join(sub.relative_to(folder).parts)


def _holds_series(folder: Path, wanted: str) -> bool:
    """Whether DICOM ``folder`` holds the series ``wanted`` (UID or description). A folder
    whose series cannot be listed is kept: its read records why as that case's error,
    instead of one unreadable folder stopping the whole cohort here."""
    try:
        return bool(matching_series(list_dicom_series(folder), wanted))
    except InputError:
        return True


def _dicom_folder_case(folder: Path, series_uid: str | None) -> InputCase:
    """A DICOM folder named as an input, as one case. Which series it reads is settled now
    (headers only), so a ``series_uid`` it lacks, or several series and none chosen, stops
    the run before any case is processed (InputError listing its series). A folder whose
    series cannot be listed, or that GDCM finds none in, is kept: its read records why."""
    try:
        series = list_dicom_series(folder)
    except InputError:
        series = []
    if series:
        choose_series(folder, series, series_uid)
    return InputCase(case_id(folder), folder, series_uid)


def _cases_from_folder(folder: Path, series_uid: str | None) -> list[InputCase]:
    """One DICOM case, or the folder's image files plus its DICOM sub-folders (with a
    series chosen, only the sub-folders holding it: an export with a folder per series)."""
    if folder_holds_dicom(folder):
        return [_dicom_folder_case(folder, series_uid)]
    files = sorted((p for p in folder.iterdir() if _is_input_image(p)),
                   key=lambda p: _natural_key(p.name))
    subfolders = _dicom_subfolders(folder)
    if series_uid is not None and subfolders:
        subfolders = [sub for sub in subfolders if _holds_series(sub, series_uid)]
        if not subfolders:
            raise InputError(folder, f"no DICOM folder below it holds a series with UID or description "
                                     f"'{series_uid}'")
    cases = [InputCase(case_id(p), p) for p in files]
    cases += [InputCase(_subfolder_case(folder, sub), sub, series_uid) for sub in subfolders]
    if not cases:
        raise InputError(folder, f"holds no image files ({', '.join(IMAGE_SUFFIXES)}) "
                                 "and no DICOM series")
    return cases


def _manifest_column(fields: Sequence[str], names: Iterable[str]) -> str | None:
    """The first of ``names`` that is a column of the manifest, or None."""
    return next((name for name in names if name in fields), None)


def _look_alike(fields: Sequence[str], column: str) -> str | None:
    """The first of ``fields`` that looks meant as manifest column ``column``, or None."""
    return next((name for name in fields if re.sub(r"[^a-z]", "", name) in _LOOK_ALIKES[column]), None)


def other_separator(header: Sequence[str]) -> str | None:
    """The ';' or tab a CSV header read as one column holds (saved with another separator)."""
    return next((d for d in ";\t" if len(header) == 1 and d in header[0]), None)


def _cases_from_manifest(manifest: Path, series_uid: str | None) -> list[InputCase]:
    """The cases listed in a CSV manifest (columns image|path, optional case, series_uid)."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise InputError(manifest, "cannot be read as a CSV manifest: it is not UTF-8 text (save it as UTF-8 "
                                   "CSV)") from None
    except (OSError, csv.Error) as error:
        raise InputError(manifest, f"cannot be read as a CSV manifest: {error}") from None
    if not rows:
        raise InputError(manifest, "is an empty CSV manifest; a header with a column "
                                   "'image' (or 'path') is needed")
    fields = [cell.strip().lower() for cell in rows[0][1]]
    image_column = _manifest_column(fields, _IMAGE_COLUMNS)
    if image_column is None:
        other = other_separator(fields)
        hint = f"; its columns are separated by {other!r}, not commas: save it as comma-separated CSV" if other else ""
        alike = _look_alike(fields, "image")
        hint += f"; rename column {alike!r} to 'image'" if alike and not other else ""
        raise InputError(manifest, f"has no column 'image' (or 'path') in its header "
                                   f"(columns: {', '.join(fields)}){hint}")
    for column in ("case", "series_uid"):
        alike = None if column in fields else _look_alike(fields, column)
        if alike:
            raise InputError(manifest, f"column {alike!r} is not a manifest column (image or path, case, series_uid) "
                                       f"and would be ignored; did you mean {column!r}? Rename it")
    cases = []
    for line, row in rows[1:]:
        if any(cell.strip() for cell in row[len(fields):]):  # a value without a column would be dropped
            raise InputError(manifest, f"line {line}: more values than the header has columns "
                                       f"({', '.join(fields)}); name every column in the header")
        record = dict(zip(fields, (cell.strip() for cell in row)))
        cases.append(_manifest_case(manifest, line, record, image_column, series_uid))
    if not cases:
        raise InputError(manifest, "lists no images")
    return cases


def _manifest_case(manifest: Path, line: int, record: dict[str, str], image_column: str,
                   series_uid: str | None) -> InputCase:
    """One manifest row as a case; relative paths are relative to the manifest's folder."""
    value = record.get(image_column, "")
    if not value:
        raise InputError(manifest, f"line {line}: the '{image_column}' column is empty")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = manifest.parent / path
    if not path.exists():
        raise InputError(manifest, f"line {line}: {path} does not exist")
    if _is_segmentation(path):
        raise InputError(manifest, f"line {line}: {path} {_SEGMENTATION_CAUSE}")
    if path.is_file() and image_suffix(path) is None:
        raise InputError(manifest, f"line {line}: {path} is not a supported image file "
                                   f"({', '.join(IMAGE_SUFFIXES)}) or a DICOM folder")
    case = record.get("case") or case_id(path)
    if not _is_plain_name(case):
        raise InputError(manifest, f"line {line}: case name '{case}' must be a plain file name (no '/', '\\', "
                                   "'..' or leading '.'): the outputs are named after it")
    uid = record.get("series_uid") or series_uid
    if not path.is_dir():
        return InputCase(case, path)
    if folder_holds_dicom(path):
        try:
            _dicom_folder_case(path, uid)
        except InputError as error:
            raise InputError(manifest, f"line {line}: {error}") from None
    return InputCase(case, path, uid)


def _is_segmentation(path: Path) -> bool:
    """A Slicer segmentation file (``.seg.nrrd``): a mask, never a scan to segment."""
    return path.is_file() and path.name.lower().endswith(".seg.nrrd")


_SEGMENTATION_CAUSE = ("is a Slicer segmentation (.seg.nrrd), not a scan: pass the image it belongs to "
                       "(to re-measure a corrected mask: livervolumetry measure IMAGE MASK)")


def _is_plain_name(case: str) -> bool:
    """A case name that names files inside the output folder and nowhere else."""
    return bool(case) and not case.startswith(".") and not any(c in case for c in "/\\\0")


def _cases_from_argument(argument: str | os.PathLike, series_uid: str | None) -> list[InputCase]:
    path = Path(argument).expanduser()
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        return _cases_from_folder(path, series_uid)
    if path.suffix.lower() == ".csv":
        return _cases_from_manifest(path, series_uid)
    if _is_segmentation(path):
        raise InputError(path, _SEGMENTATION_CAUSE)
    if image_suffix(path) is None:
        dicom = path.suffix.lower() == ".dcm"
        hint = " (pass the folder holding the DICOM series)" if dicom else ""
        raise InputError(path, f"has an unsupported file type; expected an image file "
                               f"({', '.join(IMAGE_SUFFIXES)}), a DICOM folder or a .csv "
                               f"manifest{hint}")
    return [InputCase(case_id(path), path)]


def _first_series_uid(folder: Path) -> str | None:
    """The SeriesInstanceUID of the first DICOM file directly in ``folder`` (one header
    read), or None when it cannot be told."""
    try:
        with os.scandir(folder) as entries:
            first = min((e.path for e in entries if looks_like_dicom_file(e.path)), key=_natural_key, default=None)
        if first is None:
            return None
        reader = dicom_file_header(folder, first)
        return reader.GetMetaData("0020|000e").strip() if reader.HasMetaDataKey("0020|000e") else None
    except (OSError, InputError):
        return None  # reading the case says why


def _check_split_series(cases: Sequence[InputCase]) -> None:
    """Refuse one DICOM series found in two case folders (its files split over folders, or
    a study copied twice): each would be a partial or repeated volume, counted as a patient."""
    seen: dict[str, InputCase] = {}
    for case in cases:
        if not case.path.is_dir() or case.series_uid is not None:  # a chosen series: checked when read
            continue
        uid = _first_series_uid(case.path)
        if uid and uid in seen:
            raise InputError(case.path, f"holds DICOM series {uid}, as {seen[uid].path} does (one series split "
                                        "over folders, or a copy): put its files in one folder, or leave the copy out")
        if uid:
            seen[uid] = case


def _check_unique(cases: Sequence[InputCase]) -> None:
    """Refuse two cases with the same name (case-insensitively): same output files."""
    seen: dict[str, InputCase] = {}
    for case in cases:
        key = case.case.casefold()
        if key in seen:
            raise InputError(case.path, f"two inputs would write the same outputs (case "
                                        f"'{case.case}'): {seen[key].path} and {case.path}")
        seen[key] = case


def collect_inputs(arguments: Sequence[str | os.PathLike],
                   series_uid: str | None = None) -> list[InputCase]:
    """The cases named by ``arguments`` (image files, folders, CSV manifests), in order.

    A folder that directly holds DICOM files is one case; otherwise each supported image
    file directly in it (natural sort, ``.seg.nrrd`` skipped) and each sub-folder at any
    depth holding DICOM files (named by its relative path, parts joined with ``_``) is a
    case. ``series_uid`` applies to DICOM cases that do not name their own. Raises
    InputError for missing paths, unsupported files, nothing found, duplicate names, or a
    DICOM folder argument whose series cannot be chosen (``series_uid`` not in it, or
    several series and no ``series_uid``).
    """
    cases: list[InputCase] = []
    for argument in arguments:
        cases.extend(_cases_from_argument(argument, series_uid))
    if not cases:
        raise InputError(None, "no input images given")
    if odd := next((case for case in cases if name_is_not_utf8(case.path)), None):
        raise InputError(odd.path, NOT_UTF8_CAUSE)  # before any work: ITK would abort the whole run on it
    _check_unique(cases)
    _check_split_series(cases)
    return cases
