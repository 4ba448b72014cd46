"""CHAOS MR (Kavur et al., Medical Image Analysis 2021): DICOM series + PNG ground truth
converted to NIfTI image/label pairs.

Expected layout (``source`` is the ``MR`` folder, a folder holding ``MR``,
``Train_Sets/MR`` or ``CHAOS_Train_Sets/Train_Sets/MR``, or one patient folder)::

    MR/<patient>/T2SPIR/DICOM_anon/*.dcm            MR/<patient>/T2SPIR/Ground/*.png
    MR/<patient>/T1DUAL/DICOM_anon/InPhase/*.dcm    MR/<patient>/T1DUAL/Ground/*.png
    MR/<patient>/T1DUAL/DICOM_anon/OutPhase/*.dcm

Each series becomes ``chaos-<patient>-<sequence>_image.nii.gz`` and ``..._label.nii.gz``
(sequence t2spir, t1-in or t1-out; also the case's group). Geometry: the slice order is
determined here from each file's ImagePositionPatient along the slice normal (file
names say nothing about position), the series is read in that order, and the PNG of a
DICOM file lands on that file's slice. A PNG belongs to the DICOM file of the same stem
(IMG-0004-00002.png for IMG-0004-00002.dcm); a T1 phase without its own PNG names
takes the PNG of the other phase's file at the same slice position (the in- and
out-of-phase images are acquired together and share one ground truth). PNG pixel rows
and columns are the DICOM rows and columns. Grey values: liver 63 (55..70) -> 1; with
``keep_organs`` right kidney 126 (110..135) -> 2, left kidney 189 (175..200) -> 3,
spleen 252 (240..255) -> 4. A missing or unused PNG, or one of another size than its
slice, is an error naming the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.dicom import DicomSeries, read_series, sitk_reason
from LiverVolumetryLib.errors import InputError

from .converters import ConversionOutput, Log, _quiet, compact_image
from .dataset import CaseEntry, _natural_key, list_folder, read_file

#: Sequence name -> (sequence folder, phase sub-folder of DICOM_anon or None).
SEQUENCES = {"t2spir": ("T2SPIR", None), "t1-in": ("T1DUAL", "InPhase"), "t1-out": ("T1DUAL", "OutPhase")}
#: (label value, lowest grey, highest grey) of liver, right kidney, left kidney, spleen.
GREY_RANGES = ((1, 55, 70), (2, 110, 135), (3, 175, 200), (4, 240, 255))
#: Largest distance (mm) between the positions of the two T1 phases' slices taken as the same slice.
SAME_POSITION_MM = 0.05


@dataclass(frozen=True)
class SliceFile:
    """One DICOM file: its ImagePositionPatient, ImageOrientationPatient, columns x rows,
    and SeriesInstanceUID ("" where the header has none)."""

    file: Path
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    size: tuple[int, int]
    series_uid: str = ""


def _floats(reader: sitk.ImageFileReader, tag: str, count: int, file: Path) -> tuple[float, ...]:
    """The ``count`` numbers of a backslash-separated DICOM tag; InputError if absent."""
    try:
        values = tuple(float(v) for v in reader.GetMetaData(tag).split("\\"))
    except (RuntimeError, ValueError):
        values = ()
    if len(values) != count:
        raise InputError(file, f"has no usable DICOM tag {tag} (needed to place the slice)")
    return values


def read_slice_file(file: Path) -> SliceFile:
    """The position, orientation and size of one DICOM file, from its header."""
    reader = read_file(file, "cannot be read as DICOM", header_only=True)
    size = reader.GetSize()
    uid = reader.GetMetaData("0020|000e").strip(" \0") if reader.HasMetaDataKey("0020|000e") else ""
    return SliceFile(file, _floats(reader, "0020|0032", 3, file), _floats(reader, "0020|0037", 6, file),
                     (int(size[0]), int(size[1])), uid)


def ordered_slices(folder: Path) -> list[SliceFile]:
    """The .dcm files of ``folder`` sorted by position along the slice normal; all files
    must belong to one series and share one orientation and size."""
    if not folder.is_dir():
        raise InputError(folder, "not found (expected a folder of DICOM files)")
    slices = [read_slice_file(p) for p in list_folder(folder) if p.suffix.lower() == ".dcm"]
    if len(slices) < 2:
        raise InputError(folder, f"holds {len(slices)} .dcm file(s); a series of slices is needed")
    series = {s.series_uid for s in slices if s.series_uid}
    if len(series) > 1:  # two series whose slices interleave would pass as one finer volume
        count = sum(s.series_uid == slices[0].series_uid for s in slices)
        raise InputError(folder, f"holds {len(series)} DICOM series (SeriesInstanceUID), not one: "
                                 f"{count} of {len(slices)} files are of series {slices[0].series_uid}; "
                                 "keep one series per folder")
    first = slices[0]
    for other in slices[1:]:
        if other.size != first.size or not np.allclose(other.orientation, first.orientation, atol=1e-4):
            raise InputError(other.file, f"has another slice orientation or size than {first.file.name}")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    return sorted(slices, key=lambda s: float(np.dot(s.position, normal)))


def read_volume(folder: Path, slices: Sequence[SliceFile]) -> sitk.Image:
    """The series read in the order of ``slices`` (slice k is ``slices[k]``'s file)."""
    series = DicomSeries("", "", len(slices), tuple(str(s.file) for s in slices))
    image = read_series(folder, series)
    if image.GetDimension() != 3 or image.GetSize() != (*slices[0].size, len(slices)):
        raise InputError(folder, f"reads as size {image.GetSize()}, not {slices[0].size} x {len(slices)} slices")
    return image


def _twin(file: SliceFile, others: Sequence[SliceFile]) -> SliceFile | None:
    """The slice of ``others`` at the position of ``file`` (within SAME_POSITION_MM)."""
    for other in others:
        if np.linalg.norm(np.subtract(other.position, file.position)) <= SAME_POSITION_MM:
            return other
    return None


def assign_pngs(slices: Sequence[SliceFile], ground: Path, partner: Path | None) -> list[Path]:
    """The PNG of ``ground`` for each slice: same stem, else (T1) the same stem as the
    ``partner`` phase's file at the same position. Every PNG must be used."""
    pngs = {}
    for png in (p for p in list_folder(ground) if p.suffix.lower() == ".png") if ground.is_dir() else ():
        if png.stem in pngs:  # IMG-1.png and IMG-1.PNG: which one is the slice's?
            raise InputError(ground, f"{pngs[png.stem].name} and {png.name} name the same slice; keep one")
        pngs[png.stem] = png
    if not pngs:
        raise InputError(ground, "holds no ground-truth PNG files (CHAOS test sets have no labels)")
    partner_slices: list[SliceFile] | None = None
    chosen = []
    for item in slices:
        png = pngs.get(item.file.stem)
        if png is None and partner is not None:
            partner_slices = ordered_slices(partner) if partner_slices is None else partner_slices
            twin = _twin(item, partner_slices)
            png = pngs.get(twin.file.stem) if twin is not None else None
        if png is None:
            raise InputError(item.file, f"has no ground-truth PNG (expected {ground / (item.file.stem + '.png')})")
        chosen.append(png)
    unused = sorted(set(pngs.values()) - set(chosen), key=lambda p: _natural_key(p.name))
    if unused:
        raise InputError(unused[0], f"matches no DICOM file of {slices[0].file.parent} "
                                    f"({len(unused)} PNG file(s) unused)")
    return chosen


@contextmanager
def _libpng_silenced() -> Iterator[None]:
    """Standard error closed while libpng reads: it prints its own "libpng error: ..." line
    before ITK raises, and the InputError below says the same in the tool's one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_png(png: Path, item: SliceFile) -> np.ndarray:
    """The grey values of one ground-truth PNG (rows x columns), checked against its slice."""
    try:
        with _libpng_silenced():
            grey = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    except RuntimeError as error:
        raise InputError(png, f"cannot be read as PNG ({sitk_reason(error)})") from None
    if grey.ndim == 3:  # grey stored as RGB(A): the colour channels must be equal
        colour = grey[..., :3] if grey.shape[-1] >= 3 else grey[..., :1]
        if np.any(colour != colour[..., :1]):
            raise InputError(png, "is a colour PNG (its red, green and blue differ); CHAOS ground truth is "
                                  "grey values (liver 63)")
        grey = grey[..., 0]
    columns, rows = item.size
    if grey.shape != (rows, columns):
        raise InputError(png, f"is {grey.shape[1]}x{grey.shape[0]} pixels but DICOM file {item.file.name} "
                              f"is {columns}x{rows}")
    return grey


def grey_to_labels(grey: np.ndarray, keep_organs: bool) -> np.ndarray:
    """Label values (uint8) of CHAOS grey values: liver 1, and with ``keep_organs`` 2..4."""
    labels = np.zeros(grey.shape, dtype=np.uint8)
    for value, low, high in GREY_RANGES:
        if value == 1 or keep_organs:
            labels[(grey >= low) & (grey <= high)] = value
    return labels


def convert_series(patient: Path, sequence: str, keep_organs: bool, output: ConversionOutput,
                   log: Log) -> CaseEntry:
    """One CHAOS series as NIfTI image + label on exactly the DICOM series grid."""
    folder, phase = SEQUENCES[sequence]
    dicom = patient / folder / "DICOM_anon" / (phase or "")
    partner = None
    if phase is not None:
        partner = dicom.parent / ("OutPhase" if phase == "InPhase" else "InPhase")
        partner = partner if partner.is_dir() else None
    case = f"chaos-{patient.name}-{sequence}"
    slices = ordered_slices(dicom)
    pngs = assign_pngs(slices, patient / folder / "Ground", partner)
    image = read_volume(dicom, slices)
    labels = np.stack([grey_to_labels(read_png(png, item), keep_organs) for png, item in zip(pngs, slices)])
    if not np.any(labels == 1):
        raise InputError(patient / folder / "Ground", f"case {case}: no PNG has liver pixels (grey 55..70)")
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    log(f"{case}: {len(slices)} slices, liver {int(np.count_nonzero(labels == 1))} voxels")
    return CaseEntry(case, output.write_image(compact_image(image), f"{case}_image.nii.gz"),
                     output.write_image(label, f"{case}_label.nii.gz"), 1, sequence)


def find_patients(source: Path) -> list[Path]:
    """The CHAOS MR patient folders under ``source`` (see the module docstring)."""
    def patients(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        found = [p for p in list_folder(folder) if p.is_dir() and any((p / s).is_dir() for s in ("T2SPIR", "T1DUAL"))]
        return sorted(found, key=lambda p: _natural_key(p.name))

    if any((source / s).is_dir() for s in ("T2SPIR", "T1DUAL")):
        return [source.resolve()]  # resolved: "." names its patient too
    for folder in (source, source / "MR", source / "Train_Sets" / "MR",
                   source / "CHAOS_Train_Sets" / "Train_Sets" / "MR"):
        if found := patients(folder):
            return found
    raise InputError(source, "holds no CHAOS MR patients (expected <patient>/T2SPIR/DICOM_anon; give the MR "
                             "folder or the folder holding Train_Sets/MR)")


def convert_chaos(source: str | Path, out_dir: str | Path, sequences: Sequence[str] = tuple(SEQUENCES),
                  keep_organs: bool = False, overwrite: bool = False, log: Log = _quiet) -> list[CaseEntry]:
    """Convert the CHAOS MR series of ``sequences`` (t2spir, t1-in, t1-out) to NIfTI
    pairs in ``out_dir`` with ``out_dir/manifest.csv``; a patient without a sequence's
    folder is skipped for it (logged), any other problem stops with an InputError."""
    unknown = [s for s in sequences if s not in SEQUENCES]
    if unknown or not sequences:
        raise InputError(None, f"unknown CHAOS sequence(s) {', '.join(unknown) or '(none given)'}; "
                               f"choose from {', '.join(SEQUENCES)}")
    source = Path(source)
    patients = find_patients(source)
    entries = []
    with ConversionOutput(out_dir, overwrite) as output:
        for patient in patients:
            for sequence in dict.fromkeys(sequences):
                if not (patient / SEQUENCES[sequence][0]).is_dir():
                    log(f"skipped chaos-{patient.name}-{sequence}: no {SEQUENCES[sequence][0]} folder in {patient}")
                    continue
                entries.append(convert_series(patient, sequence, keep_organs, output, log))
        if not entries:
            raise InputError(source, f"no CHAOS series of {', '.join(sequences)} found")
        return output.finish(entries)
