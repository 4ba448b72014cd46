"""Checks of NIfTI files that ITK's reader does not make: it fills the missing voxels of a
truncated file with 0 and turns NaN and infinite voxels into 0, both without a word; it
takes 1 mm for a zero voxel size, and it may place an image by its qform where FSL and
nibabel use its sform. Only the header and, for the NaN check, the voxel data of float
files are read."""

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


def check_nifti_gzip(path: Path) -> None:
    """Refuse a file named .nii.gz that is not gzip data (e.g. a renamed .nii): the other
    checks would read it as a damaged gzip file and call it truncated."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return
    plain_nifti = len(start) == 4 and any(struct.unpack(e + "i", start)[0] in (348, 540) for e in "<>")
    if _gzipped(path) and plain_nifti:  # other content: the reader says it is not a valid file
        raise InputError(path, "is named .nii.gz but is not gzip-compressed (rename it to .nii, or compress it)")


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


def _spatial_fields(header: bytes) -> tuple[np.ndarray | None, tuple[float, ...]] | None:
    """(3x4 sform, voxel index to RAS mm, when its sform_code is set else None; pixdim of
    the spatial axes present) of a NIfTI-1/2 header, or None if it is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            code, ndim = struct.unpack_from(endian + "h", header, 254)[0], struct.unpack_from(endian + "h", header, 40)[0]
            rows, pixdim = struct.unpack_from(endian + "12f", header, 280), struct.unpack_from(endian + "3f", header, 80)
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            code, ndim = struct.unpack_from(endian + "i", header, 348)[0], struct.unpack_from(endian + "q", header, 16)[0]
            rows, pixdim = struct.unpack_from(endian + "12d", header, 400), struct.unpack_from(endian + "3d", header, 112)
        else:
            continue
        return (np.array(rows, dtype=float).reshape(3, 4) if code > 0 else None), pixdim[:max(0, min(3, ndim))]
    return None


def _read_spatial_fields(path: Path) -> tuple[np.ndarray | None, tuple[float, ...]] | None:
    try:
        with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as handle:
            return _spatial_fields(handle.read(544))
    except (EOFError, OSError, zlib.error):
        return None  # reported by the reader or check_nifti_complete


def _orientation_codes(header: bytes) -> tuple[int, int] | None:
    """(qform_code, sform_code) of a NIfTI-1/2 header, or None if it is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            return struct.unpack_from(endian + "2h", header, 252)
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            return struct.unpack_from(endian + "2i", header, 344)
    return None


def check_nifti_orientation(path: Path) -> None:
    """Refuse a NIfTI file with neither a qform nor an sform (both codes 0): ITK then places
    it by its voxel size alone, nibabel and FSL elsewhere (flipped and shifted), and the
    masks written for it carry ITK's placement, so they would not lie on it in those tools."""
    try:
        with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as handle:
            codes = _orientation_codes(handle.read(544))
    except (EOFError, OSError, zlib.error):
        return  # reported by the reader or check_nifti_complete
    if codes == (0, 0):
        raise InputError(path, "has no orientation (its qform_code and sform_code are 0), so tools place it "
                               "differently; convert it again from DICOM or set its orientation (e.g. fslorient)")


def check_nifti_pixdim(path: Path) -> None:
    """Refuse a NIfTI file without an sform whose voxel size (pixdim) is 0 or not finite:
    ITK's NIfTI library would take 1 mm instead (saying so only on stderr), so every
    volume would be wrong. Call before ITK reads the header."""
    fields = _read_spatial_fields(path)
    if fields is None or fields[0] is not None:
        return
    if not all(math.isfinite(v) and v != 0 for v in fields[1]):
        text = " x ".join(f"{v:g}" for v in fields[1])
        raise InputError(path, f"has voxel size {text} mm in its header (pixdim) and no sform; the voxel size "
                               "is unknown")


#: Largest distance (mm) at a corner voxel between ITK's geometry and the file's sform.
MAX_SFORM_DISAGREEMENT_MM = 0.1


def check_nifti_sform(path: Path, size, spacing, origin, direction) -> None:
    """Refuse a NIfTI file whose sform places the voxels elsewhere than the geometry ITK
    read (``size``.. ``direction``, LPS): ITK uses the qform unless the sform code is
    "scanner", nibabel, FSL and ANTs use the sform, so masks written on ITK's geometry
    would lie elsewhere in those tools. Only 3D images are checked (others are refused)."""
    fields = _read_spatial_fields(path) if len(size) == 3 else None
    sform = None if fields is None else fields[0]
    if sform is None or not np.all(np.isfinite(sform)):
        return
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)],
                       dtype=float)
    axes = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)
    itk = np.asarray(origin, dtype=float) + corners @ axes.T
    by_sform = (corners @ sform[:, :3].T + sform[:, 3]) * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
    distance = float(np.max(np.linalg.norm(itk - by_sform, axis=1)))
    if distance > MAX_SFORM_DISAGREEMENT_MM:
        raise InputError(path, f"has a qform and an sform that place the image {distance:.3g} mm apart (ITK and "
                               "Slicer use one, FSL and nibabel the other), so its position is ambiguous; make "
                               "them agree first (e.g. fslorient -copyqform2sform or -copysform2qform)")


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
