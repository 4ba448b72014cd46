"""The files a scan is made of, and a stamp of them that tells when the scan changed.

A resumed cohort run redoes a finished case whose stamp differs from the one its table row
records: a re-exported, corrected, shortened or restored scan is segmented again, while
files beside it that are not part of it (a ``.DS_Store``, notes) change nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .inputs import looks_like_dicom_file
from .metafile import _data_file, _header
from .nrrdfile import _fields


def _detached_data(path: Path) -> list[Path]:
    """The data file a detached header (.mhd, .nhdr) names, when it names one file."""
    suffix = path.name.lower()
    try:
        if suffix.endswith(".mhd"):
            header = _header(path)
            found = _data_file(path, *header) if header else None
            return [found[0]] if found and found[0] != path else []
        if suffix.endswith(".nhdr"):
            name = (_fields(path) or {}).get("data file") or (_fields(path) or {}).get("datafile") or ""
            if name and " " not in name and "%" not in name and name.upper() != "LIST":
                return [Path(name) if Path(name).is_absolute() else path.parent / name]
    except (OSError, ValueError):
        pass
    return []


def scan_files(path: str | os.PathLike) -> list[Path]:
    """The files of the scan at ``path``: the DICOM files of a folder, a detached header and
    its data file, or the image file itself."""
    path = Path(path)
    if path.is_dir():
        with os.scandir(path) as entries:
            return sorted(Path(e.path) for e in entries if e.is_file() and looks_like_dicom_file(e.path))
    return [path, *_detached_data(path)]


def input_stamp(path: str | os.PathLike) -> str | None:
    """16 hex digits from the names, sizes and modification times of the scan's files (a
    slice removed, added, replaced or restored from an older copy changes it); None if the
    scan cannot be read."""
    try:
        stats = [(file.name, file.stat()) for file in scan_files(path)]
    except OSError:
        return None
    if not stats:
        return None
    text = "\n".join(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}" for name, stat in stats)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
