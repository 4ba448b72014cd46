"""Converters from public liver-MRI datasets to a training manifest.

Each ``convert_<name>(source, out_dir, ...)`` finds the labelled cases of a dataset as
it is downloaded and writes ``out_dir/manifest.csv``; it returns the cases as
:class:`CaseEntry`. NIfTI images and labels are referenced where they are, never copied;
NIfTI files are written into ``out_dir`` only where a conversion is needed (DICOM
series, PNG ground truth, a label on another grid than its image).

- :func:`convert_amos` (here): AMOS 2022, MRI cases (ids above 500), liver label 6.
- :func:`convert_totalseg` (here): TotalSegmentator MRI, ``<subject>/mri.nii.gz``.
- :func:`convert_pairs` (here): any folder of ``image_N``/``label_N`` pairs.
- :func:`convert_chaos` (:mod:`.chaos`): CHAOS MR, DICOM series + PNG ground truth.
- :func:`convert_liverhccseg` (:mod:`.liverhccseg`): LiverHccSeg, portal-venous phase.

Nothing partial is left behind: converted files are written into a hidden staging
folder inside ``out_dir`` and moved into place only when every case has been converted,
the manifest last; a failure removes the staging folder (and ``out_dir`` if it was
created and is empty). Cases of a referenced-in-place dataset that are unusable (label
missing, without liver voxels, or on another grid) are skipped with a logged reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.dicom import sitk_reason
from LiverVolumetryLib.errors import InputError, LiverVolumetryError, OutputError

from .dataset import CaseEntry, _natural_key, find_pairs, list_folder
from .manifest import check_entry, write_manifest

MANIFEST_NAME = "manifest.csv"
DATASETS = ("chaos", "amos", "liverhccseg", "totalseg", "pairs")
AMOS_LIVER_LABEL = 6
AMOS_FIRST_MRI_ID = 501  # amos_0001-0500 are CT (amos_0500 has CT intensities), 0501-0600 MRI
TOTALSEG_LIVER_LABEL = 5
TOTALSEG_COMBINED_NAMES = ("seg.nii.gz", "label.nii.gz", "labels.nii.gz", "segmentation.nii.gz")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default log: says nothing."""


class ConversionOutput:
    """Where a converter writes: ``path_for(name)`` gives a staging path for a converted
    file and :meth:`finish` moves the files into ``out_dir`` and writes the manifest.
    Use as a context manager; leaving it without :meth:`finish` leaves nothing behind."""

    def __init__(self, out_dir: str | Path, overwrite: bool = False):
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        self.manifest = self.out_dir / MANIFEST_NAME
        self.check_out_dir(self.out_dir, overwrite)
        self._created = not self.out_dir.exists()
        self.staging: Path | None = None

    @staticmethod
    def check_out_dir(out_dir: Path, overwrite: bool) -> None:
        """Refuse an output that is a file, or that holds a manifest (without ``overwrite``)."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputError(out_dir, "exists and is not a folder")
        if (out_dir / MANIFEST_NAME).exists() and not overwrite:
            raise OutputError(out_dir / MANIFEST_NAME, "already exists (use --overwrite to replace it)")

    def __enter__(self) -> ConversionOutput:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=self.out_dir))
        except OSError as error:
            raise OutputError(self.out_dir, f"cannot write here ({error.strerror or error})") from None
        return self

    def __exit__(self, *exc_info) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._created and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def write_image(self, image: sitk.Image, name: str) -> Path:
        """Write ``image`` (compressed NIfTI) to the staging folder; returns its final path."""
        try:
            sitk.WriteImage(image, str(self.staging / name), useCompression=True)
        except RuntimeError as error:
            raise OutputError(self.out_dir / name, f"cannot be written ({sitk_reason(error)})") from None
        return self.out_dir / name

    def finish(self, entries: Sequence[CaseEntry]) -> list[CaseEntry]:
        """Move the converted files into ``out_dir``, then write the manifest. Files and a
        manifest replaced (``overwrite``) are first moved aside and put back if any step
        fails, so the folder holds either the old conversion or the new one."""
        staged = sorted(self.staging.iterdir())
        taken = [self.out_dir / p.name for p in staged if os.path.lexists(self.out_dir / p.name)]
        if taken and not self.overwrite:
            raise OutputError(taken[0], "already exists (use --overwrite to replace it)")
        if folder := next((path for path in taken if path.is_dir() and not path.is_symlink()), None):
            raise OutputError(folder, "is a folder where the conversion writes a file (remove or rename it)")
        aside = self.staging / ".replaced"
        moved, placed = [], []
        try:
            aside.mkdir()
            for path in [*taken, self.manifest] if self.manifest.exists() else taken:
                os.replace(path, aside / path.name)
                moved.append(path)
            for path in staged:
                os.replace(path, self.out_dir / path.name)
                placed.append(self.out_dir / path.name)
            write_manifest(entries, self.manifest)
        except (OSError, LiverVolumetryError) as error:
            for path in placed:
                path.unlink(missing_ok=True)
            for path in moved:
                os.replace(aside / path.name, path)
            reason = error.cause if isinstance(error, OutputError) else (error.strerror or str(error)).lower()
            raise OutputError(self.out_dir, f"cannot move the converted files into place ({reason}); "
                                            "the folder is as it was") from None
        return list(entries)


def compact_image(image: sitk.Image) -> sitk.Image:
    """``image`` as int16 when that holds its values exactly (halves the file), else as is."""
    values = sitk.GetArrayViewFromImage(image)
    if values.size and np.all(np.isfinite(values)) and values.min() >= -32768 and values.max() <= 32767 \
            and np.array_equal(values, np.round(values)):
        return sitk.Cast(image, sitk.sitkInt16)
    return image


def keep_usable(entries: Sequence[CaseEntry], log: Log) -> list[CaseEntry]:
    """The entries whose files exist, whose label grid matches the image header and whose
    label holds the liver value; each other entry is logged as skipped with its reason."""
    usable = []
    for entry in entries:
        try:
            check_entry(entry, full=False)
        except InputError as error:
            log(f"skipped {error}")
            continue
        usable.append(entry)
    return usable


def write_in_place(entries: list[CaseEntry], source: Path, out_dir: str | Path, overwrite: bool, log: Log,
                   what: str) -> list[CaseEntry]:
    """Write the manifest of referenced-in-place ``entries`` (usable ones only)."""
    found = len(entries)
    entries = keep_usable(entries, log)
    if not entries:
        raise InputError(source, f"no usable {what} cases found ({found} examined)")
    with ConversionOutput(out_dir, overwrite) as output:
        return output.finish(entries)


# ---------------------------------------------------------------------------- AMOS 2022


def _amos_root(source: Path) -> Path:
    """The AMOS folder holding dataset.json / imagesTr: ``source`` or ``source/amos22``."""
    for folder in (source, source / "amos22"):
        if (folder / "imagesTr").is_dir() or (folder / "imagesVa").is_dir():
            return folder
    raise InputError(source, "is not an AMOS 2022 folder (expected imagesTr/ and labelsTr/, or amos22/)")


def amos_liver_value(root: Path) -> int:
    """The liver's label value named in ``root/dataset.json`` ("labels"), else 6."""
    path = root / "dataset.json"
    if not path.is_file():
        return AMOS_LIVER_LABEL
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
    except (OSError, ValueError, AttributeError):
        raise InputError(path, "cannot be read as the AMOS dataset description (JSON)") from None
    names = {str(name).strip().lower(): value for value, name in labels.items()} if isinstance(labels, dict) else {}
    return int(names["liver"]) if str(names.get("liver", "")).isdigit() else AMOS_LIVER_LABEL


def convert_amos(source: str | Path, out_dir: str | Path, liver_label: int | None = None,
                 overwrite: bool = False, log: Log = _quiet) -> list[CaseEntry]:
    """AMOS 2022 MRI cases (``amos_XXXX`` with XXXX > 500) of imagesTr/imagesVa with
    their labelsTr/labelsVa label, referenced in place; group "amos-mri"."""
    source = Path(source)
    root = _amos_root(source)
    value = amos_liver_value(root) if liver_label is None else liver_label
    entries = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        if not (root / images).is_dir():
            continue
        for image in list_folder(root / images):
            match = re.fullmatch(r"amos_(\d+)\.nii(\.gz)?", image.name)
            if match and int(match[1]) >= AMOS_FIRST_MRI_ID:
                label = root / labels / image.name
                entries.append(CaseEntry(image.name.split(".")[0], image, label, value, "amos-mri"))
    return write_in_place(entries, source, out_dir, overwrite, log, "AMOS MRI")


# ------------------------------------------------------------------ TotalSegmentator MRI


def _totalseg_label(subject: Path, liver_label: int | None) -> tuple[Path, int]:
    """The liver label of a subject: segmentations/liver.nii.gz (value 1), else a
    combined label map (liver ``liver_label``, default 5)."""
    single = subject / "segmentations" / "liver.nii.gz"
    if single.is_file():
        return single, 1
    for name in TOTALSEG_COMBINED_NAMES:
        if (subject / name).is_file():
            return subject / name, TOTALSEG_LIVER_LABEL if liver_label is None else liver_label
    return single, 1  # reported as missing


def convert_totalseg(source: str | Path, out_dir: str | Path, liver_label: int | None = None,
                     overwrite: bool = False, log: Log = _quiet) -> list[CaseEntry]:
    """TotalSegmentator MRI subjects ``<source>/<subject>/mri.nii.gz`` with
    ``segmentations/liver.nii.gz`` or a combined map (seg/label.nii.gz, liver 5),
    referenced in place; subjects whose scan holds no liver are skipped. Group
    "totalseg-mri"."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "is not a folder")
    subjects = [source.resolve()] if (source / "mri.nii.gz").is_file() else \
        sorted((p for p in list_folder(source) if (p / "mri.nii.gz").is_file()), key=lambda p: _natural_key(p.name))
    if not subjects:
        raise InputError(source, "holds no TotalSegmentator MRI subjects (<subject>/mri.nii.gz)")
    entries = [CaseEntry(f"totalseg-{s.name}", s / "mri.nii.gz", *_totalseg_label(s, liver_label), "totalseg-mri")
               for s in subjects]
    return write_in_place(entries, source, out_dir, overwrite, log, "TotalSegmentator MRI")


# --------------------------------------------------------------------- folder of pairs


def convert_pairs(source: str | Path, out_dir: str | Path, liver_label: int | None = None,
                  group: str | None = None, overwrite: bool = False, log: Log = _quiet) -> list[CaseEntry]:
    """A folder of image_N/label_N pairs (see :func:`find_pairs`), referenced in place;
    group defaults to the folder's name."""
    source = Path(source)
    entries = find_pairs(source, 1 if liver_label is None else liver_label,
                         source.resolve().name if group is None else group)
    return write_in_place(entries, source, out_dir, overwrite, log, "image/label")


# ------------------------------------------------------------------------ dispatch


def convert(dataset: str, source: str | Path, out_dir: str | Path, sequences: Sequence[str] | None = None,
            label_value: int | None = None, keep_organs: bool = False, overwrite: bool = False,
            log: Log = _quiet) -> list[CaseEntry]:
    """Run the converter of ``dataset`` (one of :data:`DATASETS`) with the options that
    apply to it; an option that does not apply is refused."""
    if dataset not in DATASETS:
        raise LiverVolumetryError(f"unknown dataset '{dataset}' (choose from {', '.join(DATASETS)})")
    if not Path(source).is_dir():
        raise InputError(source, "does not exist" if not Path(source).exists() else "is not a folder")
    ConversionOutput.check_out_dir(Path(out_dir).absolute(), overwrite)  # before reading any case
    inside = Path(source).resolve() in (Path(out_dir).resolve(), *Path(out_dir).resolve().parents)
    if dataset in ("chaos", "liverhccseg") and inside:  # these write images, which the next run reads as data
        raise OutputError(out_dir, f"is inside the {dataset} dataset folder {source}: the converted files would "
                                   "be read as the dataset's by the next conversion; choose a folder outside it")
    if dataset != "chaos" and (sequences or keep_organs):
        raise LiverVolumetryError("--sequences and --keep-organs apply to chaos only")
    if dataset == "chaos":
        if label_value is not None:
            raise LiverVolumetryError("--label-value does not apply to chaos (its PNG grey values are fixed)")
        from .chaos import SEQUENCES, convert_chaos

        return convert_chaos(source, out_dir, tuple(sequences or SEQUENCES), keep_organs, overwrite, log)
    if dataset == "liverhccseg":
        from .liverhccseg import convert_liverhccseg

        return convert_liverhccseg(source, out_dir, label_value, overwrite=overwrite, log=log)
    function = {"amos": convert_amos, "totalseg": convert_totalseg, "pairs": convert_pairs}[dataset]
    return function(source, out_dir, label_value, overwrite=overwrite, log=log)


def __getattr__(name: str):
    """``convert_chaos`` and ``convert_liverhccseg``, imported from their modules on use."""
    if name == "convert_chaos":
        from .chaos import convert_chaos

        return convert_chaos
    if name == "convert_liverhccseg":
        from .liverhccseg import convert_liverhccseg

        return convert_liverhccseg
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
