"""Check of NRRD headers (.nrrd/.nhdr) that ITK's reader does not make: without a
``space directions`` or ``spacings`` field, or with a NaN spacing, it takes 1 mm voxels
without a word, so every volume would be wrong. Only the header is read."""

from __future__ import annotations

import math
import re
from pathlib import Path

from .errors import InputError


def _fields(path: Path) -> dict[str, str] | None:
    """The header's fields (keys lower case, ``key: value`` lines up to the blank line
    that ends it), or None if the file is not a NRRD file."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        if not handle.read(4) == b"NRRD":
            return None
        handle.readline(4096)
        for _ in range(1000):
            line = handle.readline(1 << 16).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            key, separator, value = line.partition(":")
            if separator and not line.startswith("#") and not value.startswith("="):  # 'key:=value' is metadata
                fields[key.strip().lower()] = value.strip()
    return fields


def _numbers(text: str) -> list[float]:
    """Every number in a field value (vectors like (1.2,0,0) included); 'none' skipped."""
    return [float(v) for v in re.findall(r"[-+]?(?:nan|inf|[0-9.]+(?:e[-+]?[0-9]+)?)", text.lower())]


def check_nrrd_header(path: Path) -> None:
    """Refuse a NRRD header with no voxel size, or a non-finite spacing, direction or origin."""
    try:
        fields = _fields(path)
    except OSError:
        return  # the reader says why
    if fields is None:
        return
    if "space directions" not in fields and "spacings" not in fields:
        raise InputError(path, "has no voxel size (no 'space directions' or 'spacings' field in its header; the "
                               "reader would take 1 mm)")
    for key in ("space directions", "spacings", "space origin"):
        try:
            finite = all(math.isfinite(v) for v in _numbers(fields.get(key, "")))
        except ValueError:
            finite = False
        if not finite:
            raise InputError(path, f"has a header field '{key}' that is not finite numbers ({fields[key]!r}): its "
                                   "geometry is unknown")
