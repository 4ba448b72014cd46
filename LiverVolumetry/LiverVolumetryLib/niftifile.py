"""Checks of NIfTI files that ITK's reader does not make: it fills the missing voxels of a
truncated file with 0 and turns NaN and infinite voxels into 0, both without a word.
Only the header and, for the second check, the voxel data of float files are read."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError


def _gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


# NIfTI datatype codes of real floating-point voxels, as numpy types (byte order added later).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(data start, data end, numpy dtype if the voxels are float else None) of a NIfTI-1/2
    file, from its header; None if the header cannot be interpreted (then nothing is checked)."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            offset = struct.unpack(endian + "f", header[108:112])[0]
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dim = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dim[0] <= 7 or bitpix <= 0 or not math.isfinite(offset) or offset < 0:
            return None
        end = int(offset) + math.prod(max(int(d), 1) for d in dim[1:dim[0] + 1]) * bitpix // 8
        dtype = _NIFTI_FLOATS.get(int(datatype))
        return int(offset), end, None if dtype is None else endian + dtype
    return None


def _count_nonfinite_nifti(path: Path, start: int, end: int, dtype: str) -> int:
    """NaN and infinite voxels in a float NIfTI file's data, read block by block.

    ITK's NIfTI reader turns NaN and infinity into 0 without a word, so they must be
    counted in the file itself."""
    itemsize = np.dtype(dtype).itemsize
    block = (1 << 22) // itemsize * itemsize
    count = 0
    with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            data = handle.read(min(block, remaining))
            if not data:
                break
            remaining -= len(data)
            values = np.frombuffer(data[: len(data) // itemsize * itemsize], dtype=dtype)
            count += values.size - int(np.count_nonzero(np.isfinite(values)))
    return count


def _gzip_size(path: Path, expected: int) -> int:
    """Uncompressed size of a .gz file: its trailer when that equals ``expected`` (mod
    2**32), else counted by decompressing (all members; stops at corrupt data)."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        if struct.unpack("<I", handle.read(4))[0] == expected % 2**32:
            return expected
        handle.seek(0)
        total, inflater = 0, zlib.decompressobj(31)
        while block := handle.read(1 << 22):
            while block:
                try:
                    total += len(inflater.decompress(block))
                except zlib.error:
                    return total
                block = inflater.unused_data if inflater.eof else b""
                if inflater.eof:
                    inflater = zlib.decompressobj(31)
    return total


def check_nifti_complete(path: Path) -> None:
    """Refuse a truncated NIfTI file (ITK would silently fill the missing voxels with 0)."""
    compressed = _gzipped(path)
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            layout = _nifti_layout(handle.read(544))
    except (EOFError, OSError, zlib.error):
        raise InputError(path, "is truncated: it ends inside its header or first voxels (incomplete download or "
                               "corrupt file)") from None
    if layout is None:
        return
    end = layout[1]
    try:
        size = _gzip_size(path, end) if compressed else path.stat().st_size
    except (EOFError, OSError, zlib.error):
        size = 0
    if size < end:
        raise InputError(path, f"is truncated: {size} of its {end} bytes are present "
                               "(incomplete download or corrupt file)")


def check_nifti_finite(path: Path) -> None:
    """Refuse NaN or infinite voxels in a float NIfTI file (see :func:`_count_nonfinite_nifti`)."""
    try:
        with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as handle:
            layout = _nifti_layout(handle.read(544))
        if layout is None or layout[2] is None:
            return
        n_bad = _count_nonfinite_nifti(path, *layout)
    except (EOFError, OSError, zlib.error):
        return  # unreadable data is reported when the pixels are read
    if n_bad:
        raise InputError(path, f"has {n_bad} voxel(s) with NaN or infinite values")
