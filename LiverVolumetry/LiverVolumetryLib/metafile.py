"""Checks of MetaImage files (.mha/.mhd) that ITK's reader makes only noisily or not at
all: on a truncated file MetaIO prints two lines of its own to stderr before ITK fails,
which a one-line error cannot take back; damaged compressed data it decompresses into
garbage voxels without failing; a header without ElementSpacing, or with a NaN in it or in
the Offset, it reads as 1 mm voxels at the origin. The header is read, and the voxel data
only when compressed (to check that it decompresses)."""

from __future__ import annotations

import math
import zlib
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


def _data_file(path: Path, fields: dict[str, str], data_start: int) -> tuple[Path, int] | None:
    """(file, offset) of the voxel data, or None for several data files or a HeaderSize."""
    name = fields["elementdatafile"]
    if int(fields.get("headersize", "0") or 0) != 0:
        return None
    if name.upper() == "LOCAL":
        return path, data_start
    if name.upper().startswith("LIST") or "%" in name or " " in name:
        return None  # several data files: left to the reader
    return (Path(name) if Path(name).is_absolute() else path.parent / name), 0


#: Header fields of the geometry, each of which must hold finite numbers when present.
_GEOMETRY_FIELDS = ("elementspacing", "elementsize", "offset", "origin", "position", "transformmatrix", "rotation",
                    "orientation")


def _check_geometry_fields(path: Path, fields: dict[str, str]) -> None:
    """Refuse a header without a voxel size, or with a non-finite geometry value."""
    if "elementspacing" not in fields and "elementsize" not in fields:
        raise InputError(path, "has no voxel size (no ElementSpacing in its header; the reader would take 1 mm)")
    for key in _GEOMETRY_FIELDS:
        try:
            finite = all(math.isfinite(float(v)) for v in fields.get(key, "").split())
        except ValueError:
            finite = False
        if not finite:
            raise InputError(path, f"has a header field {key} that is not finite numbers ({fields[key]!r}): its "
                                   "geometry is unknown")
    try:
        ndims = int(fields.get("ndims", ""))
    except ValueError:
        return  # the reader says why
    for key in ("dimsize", *_GEOMETRY_FIELDS):
        wanted = ndims * ndims if key in ("transformmatrix", "rotation", "orientation") else ndims
        if key in fields and len(fields[key].split()) != wanted:  # MetaIO would print its complaints to stderr
            raise InputError(path, f"has a malformed header: {key} has {len(fields[key].split())} values, NDims "
                                   f"{ndims} needs {wanted}")


def _decompressed_size(data: Path, offset: int, limit: int) -> int | None:
    """Bytes the zlib stream at ``offset`` of ``data`` decompresses to (at most ``limit``
    + 1), or None if it is corrupt or ends early."""
    stream = zlib.decompressobj()
    total = 0
    try:
        with open(data, "rb") as handle:
            handle.seek(offset)
            while not stream.eof and total <= limit:
                chunk = handle.read(1 << 22)
                if not chunk:
                    return None
                total += len(stream.decompress(chunk, limit + 1 - total))
                while stream.unconsumed_tail and total <= limit:
                    total += len(stream.decompress(stream.unconsumed_tail, limit + 1 - total))
    except zlib.error:
        return None
    return total


def check_metaimage_complete(path: Path) -> None:
    """Refuse a truncated .mha/.mhd (inline data, or one detached data file), compressed
    voxel data that do not decompress to the header's size, and a missing or non-finite
    voxel size or position."""
    try:
        parsed = _header(path)
        if parsed is None:
            return
        fields, data_start = parsed
        _check_geometry_fields(path, fields)
        needed = _needed_bytes(fields)
        location = _data_file(path, fields, data_start)
        if location is None:
            return
        data, offset = location
        present = data.stat().st_size - offset
    except (OSError, ValueError):
        return  # unreadable header or data file: the reader says why
    where = "" if data == path else f" (data file {data.name})"
    if needed is not None and present < needed:
        raise InputError(path, f"is truncated: {present} of its {needed} bytes of voxel data are present{where} "
                               "(incomplete download or corrupt file)")
    if fields.get("compresseddata", "false").lower() == "true":
        expected = _needed_bytes({**fields, "compresseddata": "false"})
        if expected is not None and _decompressed_size(data, offset, expected) != expected:
            raise InputError(path, f"has compressed voxel data that do not decompress to the {expected} bytes its "
                                   f"header promises{where} (truncated or corrupt file)")
