"""Manifests: lists of training cases in a file, and their validation.

A manifest is a CSV file with the columns ``image``, ``label`` and optionally ``case``,
``liver_label`` (default 1) and ``group``, or a JSON file holding a list of objects with
those keys (or an object ``{"cases": [...]}``). Relative paths are relative to the
manifest's folder. :func:`write_manifest` writes one (CSV, or JSON for a ``.json``
name) with paths relative to its folder for files inside that folder, absolute otherwise.

:func:`check_entries` reports every problem of a list of cases (missing files,
duplicated case names, label grid differing from the image grid, no liver voxel) as
one line each, naming the case and the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import SimpleITK as sitk

from LiverVolumetryLib.atomic import write_text_atomic
from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryLib.inputs import other_separator

from .dataset import (CaseEntry, _strip, grid_difference, grids_match, liver_mask, load_entry, read_case_image,
                      read_case_label)

#: Columns of a manifest, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS = ("case", "image", "label", "liver_label", "group")


def _check_columns(path: Path, names: Iterable[str], where: str = "") -> None:
    """Refuse a column that looks meant as one of :data:`MANIFEST_COLUMNS` but is not
    (``Liver_Label``, ``liver_value``, ``labels``): ignored, it would silently train the
    default liver label 1, another organ in e.g. AMOS. Other extra columns are ignored."""
    for name in names:
        if name in MANIFEST_COLUMNS:
            continue
        flat = re.sub(r"[^a-z]", "", str(name).lower())
        near = next((c for c in MANIFEST_COLUMNS if flat in (c.replace("_", ""), c.replace("_", "") + "s")), None)
        if near or "liver" in flat or "label" in flat:
            hint = f"did you mean {near!r}?" if near else "the liver's label value goes in 'liver_label'"
            raise InputError(path, f"{where}column {name!r} is not a manifest column ({', '.join(MANIFEST_COLUMNS)}); "
                                   f"{hint}")


def _is_json(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{")


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    """(where, row) for each object of a JSON manifest."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON (line {error.lineno}: {error.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        data = data["cases"]
    if not isinstance(data, list):
        raise InputError(path, 'a JSON manifest must be a list of cases or {"cases": [...]}')
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise InputError(path, f"case {number}: is not an object with 'image' and 'label'")
        _check_columns(path, row, f"case {number}: ")
        yield f"case {number}", row


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    """(where, row) for each data line of a CSV manifest."""
    reader = csv.DictReader(io.StringIO(text))
    columns = [name.strip() for name in reader.fieldnames or []]
    if other := other_separator(columns):
        raise InputError(path, f"its columns are separated by {other!r}, not commas (header {columns[0]!r}): save "
                               "it as comma-separated CSV")
    _check_columns(path, columns)
    if "image" not in columns or "label" not in columns:
        raise InputError(path, f"needs 'image' and 'label' columns (found: {', '.join(columns) or 'none'})")
    for row in reader:
        if any(str(value).strip() for value in row.pop(None, None) or ()):  # DictReader's surplus values
            raise InputError(path, f"line {reader.line_num}: more values than the header has columns "
                                   f"({', '.join(columns)}); name every column in the header")
        clean = {(key or "").strip(): (value or "").strip() if isinstance(value, str) else value
                 for key, value in row.items()}
        if any(clean.get(column) for column in MANIFEST_COLUMNS):  # skip blank lines
            yield f"line {reader.line_num}", clean


def _entry(path: Path, where: str, row: dict) -> CaseEntry:
    """The CaseEntry of one manifest row; paths relative to the manifest's folder."""
    image, label = row.get("image"), row.get("label")
    if not isinstance(image, str) or not image or not isinstance(label, str) or not label:
        raise InputError(path, f"{where}: needs 'image' and 'label'")
    for column in ("image", "label", "case"):
        if any(ord(c) < 32 for c in _text(row.get(column))):
            raise InputError(path, f"{where}: {column} holds a control character (a NUL byte, tab or line break)")
    value = row.get("liver_label")
    try:
        number = 1 if value in (None, "") else float(value)
        if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"{where}: liver_label {value!r} is not a whole number") from None
    image_path, label_path = (_absolute(path.parent / os.path.expanduser(p)) for p in (image, label))
    case = _text(row.get("case")) or _strip(image_path.name)
    if case in (".", "..") or any(sep in case for sep in ("/", "\\")):
        raise InputError(path, f"{where}: case name {case!r} is not usable as a file name (it names the cached "
                               "arrays and the masks): no / or \\, not . or ..")
    return CaseEntry(case, image_path, label_path, int(number), _text(row.get("group")))


def _absolute(path: Path) -> Path:
    """``path`` made absolute with its folders resolved but a symlinked file kept under its
    own name (git-annex, DVC and datalad store ``patient1.nii.gz`` as a link to a content
    hash: the case, and the engine's mask ``patient1_liver.nii.gz``, are named after the link)."""
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def _text(value) -> str:
    """A JSON or CSV value as text; only a missing value is empty (a JSON group 0 is '0')."""
    return "" if value is None else str(value).strip()


def read_manifest(path: str | Path) -> list[CaseEntry]:
    """The cases of a CSV or JSON manifest (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InputError(path, f"cannot read manifest ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise InputError(path, "cannot read manifest (not UTF-8 text: save it as UTF-8 CSV)") from None
    rows = _json_rows(path, text) if _is_json(path, text) else _csv_rows(path, text)
    entries = [_entry(path, where, row) for where, row in rows]
    if not entries:
        raise InputError(path, "lists no cases")
    return entries


def _manifest_path(file: Path, folder: Path) -> str:
    """``file`` relative to ``folder`` when inside it (POSIX separators), else absolute."""
    file = _absolute(Path(file).absolute())
    try:
        return file.relative_to(folder).as_posix()
    except ValueError:
        return str(file)


def manifest_text(entries: Iterable[CaseEntry], folder: Path, as_json: bool = False) -> str:
    """The text of a manifest of ``entries`` stored in ``folder``."""
    folder = Path(folder).resolve()
    rows = [{"case": e.case, "image": _manifest_path(e.image, folder), "label": _manifest_path(e.label, folder),
             "liver_label": int(e.liver_label), "group": e.group} for e in entries]
    if as_json:
        return json.dumps({"cases": rows}, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_manifest(entries: Iterable[CaseEntry], path: str | Path, overwrite: bool = True) -> Path:
    """Write ``entries`` as a manifest (CSV; JSON for a ``.json`` name), atomically."""
    path = Path(path)
    text = manifest_text(entries, path.parent, as_json=path.suffix.lower() == ".json")
    write_text_atomic(path, text, overwrite=overwrite)
    return path


def _image_header(entry: CaseEntry) -> sitk.ImageFileReader:
    """A reader holding the header of the entry's image file, checked as training's read
    checks it (a 4D, RGB or badly spaced image is refused here, before its pixels are read)."""
    from LiverVolumetryLib.imageio import read_header

    if not entry.image.exists():
        raise InputError(entry.image, f"case {entry.case}: image file not found")
    try:
        return read_header(entry.image)  # the engine's reasons (corrupt, unsupported type, 4D, ...)
    except InputError as error:
        raise InputError(entry.image, f"case {entry.case}: image {error.cause}") from None


def check_entry(entry: CaseEntry, full: bool = True) -> None:
    """Raise a one-line InputError naming the case and the file if ``entry`` is unusable.

    ``full`` reads the image as training does (:func:`load_entry`); otherwise only the
    image file's header is read and checked (a DICOM folder is still read), and the label's
    pixels: NaN or infinite image voxels are found by the full check only.
    """
    if full:
        load_entry(entry)
        return
    image = read_case_image(entry) if entry.image.is_dir() else _image_header(entry)
    label = read_case_label(entry)
    if not grids_match(image, label):
        raise InputError(entry.label, f"case {entry.case}: label grid does not match the image grid "
                                      f"({grid_difference(image, label)})")
    liver_mask(entry, label)


def duplicate_problems(entries: Iterable[CaseEntry]) -> list[str]:
    """One line per entry whose case name, or image file, an earlier entry already uses."""
    problems, first_use, first_image = [], {}, {}
    for entry in entries:
        image = _same_file_key(entry.image)
        if entry.case in first_use:
            problems.append(str(InputError(entry.image, f"case {entry.case}: duplicated case name "
                                                        f"(also used for {first_use[entry.case]})")))
        elif image in first_image:
            # One scan under two names would train on a validation case, or on a held-out fold's.
            problems.append(str(InputError(entry.image, f"case {entry.case}: the same image as case "
                                                        f"{first_image[image]}")))
        first_use.setdefault(entry.case, entry.image)
        first_image.setdefault(image, entry.case)
    return problems


def _same_file_key(path: Path):
    """A key equal for two paths of the same file (device and inode), else the resolved path."""
    try:
        stat = path.stat()
        return stat.st_dev, stat.st_ino
    except OSError:
        return str(path.resolve())


def refuse_duplicates(entries: Iterable[CaseEntry]) -> None:
    """Raise the first of :func:`duplicate_problems` (and how many more) as one line."""
    problems = duplicate_problems(entries)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LiverVolumetryError(problems[0] + more)


def check_entries(entries: Iterable[CaseEntry], full: bool = True) -> list[str]:
    """Every problem of ``entries``, one line each naming the case and the file: duplicated
    case names, then, per case, the first problem :func:`check_entry` finds."""
    entries = list(entries)
    problems = duplicate_problems(entries)
    for entry in entries:
        try:
            check_entry(entry, full=full)
        except InputError as error:
            problems.append(str(error))
    return problems
