"""Check of MetaImage files (.mha/.mhd) that ITK's reader makes only noisily: on a
truncated file MetaIO prints two lines of its own to stderr before ITK fails, which a
one-line error cannot take back. Only the header and the data file's size are read."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import InputError

# Bytes per channel of the MetaIO element types (metaTypes.h: MET_LONG is 4 bytes).
_ELEMENT_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                  "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                  "MET_DOUBLE": 8}


def _header(path: Path) -> tuple[dict[str, str], int] | None:
    """The header's fields (keys lower case) and the byte offset just after it (after the
    ElementDataFile line, which ends a MetaImage header), or None if it has no such line."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        for _ in range(200):
            line = handle.readline(4096)
            if not line:
                return None
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                return fields, handle.tell()
    return None


def _needed_bytes(fields: dict[str, str]) -> int | None:
    """Bytes of voxel data the header promises (compressed size when compressed), or None
    when that cannot be told simply (unknown type, malformed numbers, compressed without
    CompressedDataSize)."""
    try:
        if fields.get("compresseddata", "false").lower() == "true":
            return int(fields["compresseddatasize"]) if "compresseddatasize" in fields else None
        size = [int(v) for v in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        return None
    element = _ELEMENT_BYTES.get(fields.get("elementtype", "").upper())
    if element is None or not size:
        return None
    return math.prod(size) * channels * element


def check_metaimage_complete(path: Path) -> None:
    """Refuse a truncated .mha/.mhd (inline data, or one detached data file)."""
    try:
        parsed = _header(path)
        if parsed is None:
            return
        fields, data_start = parsed
        needed = _needed_bytes(fields)
        name = fields["elementdatafile"]
        if needed is None or int(fields.get("headersize", "0") or 0) != 0:
            return
        if name.upper() == "LOCAL":
            data, present = path, path.stat().st_size - data_start
        elif name.upper().startswith("LIST") or "%" in name or " " in name:
            return  # several data files: left to the reader
        else:
            data = Path(name) if Path(name).is_absolute() else path.parent / name
            present = data.stat().st_size
    except (OSError, ValueError):
        return  # unreadable header or data file: the reader says why
    if present < needed:
        where = "" if data == path else f" (data file {data.name})"
        raise InputError(path, f"is truncated: {present} of its {needed} bytes of voxel data are present{where} "
                               "(incomplete download or corrupt file)")
