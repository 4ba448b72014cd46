"""Training cases: discovery of image/label pairs, and cached preprocessing.

Every case is preprocessed exactly as the engine does at inference
(``LiverVolumetryLib.preprocess``) and cached as ``.npy`` arrays on the network grid, so
epochs cost no resampling.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.atomic import atomic_path
from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.masks import labels_text
from LiverVolumetryLib.preprocess import Preprocessing, label_to_network_grid, to_network_input

_PAIR_PATTERNS = (("image", "label"), ("img", "seg"), ("image", "mask"))
_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class CaseEntry:
    """One training/validation case: image, label file, the liver's label value, a group."""

    case: str
    image: Path
    label: Path
    liver_label: int = 1
    group: str = ""


@dataclass
class CachedCase:
    """A case on the network grid: scaled image (x, y, z float32) and binary liver label.

    ``tissues`` (uint8, optional): the label file's other structures (e.g. kidneys and
    spleen) numbered 1..n in the order of their label values; augmentation uses them to
    randomise each organ's contrast on its own. Never a training target.
    """

    case: str
    image: np.ndarray
    label: np.ndarray
    tissues: np.ndarray | None = None


def _strip(name: str) -> str:
    """``name`` without its image suffix (in any letter case: IMAGE_1.NII.GZ is image 1)."""
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_folder(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; one that cannot be listed is a one-line InputError."""
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        raise InputError(folder, f"cannot be listed ({(error.strerror or str(error)).lower()})") from None


def _image_files(folder: Path) -> dict[str, Path]:
    """The image files directly in ``folder``, keyed by their lower-case name without suffix;
    two that differ only in letter case or suffix (image_1.nii, Image_1.nii.gz) are refused."""
    files: dict[str, Path] = {}
    for path in list_folder(folder):
        if path.name.lower().endswith(_SUFFIXES):
            key = _strip(path.name).lower()
            if key in files:
                raise InputError(folder, f"{files[key].name} and {path.name} name the same file (they differ only "
                                         "in letter case or file type); keep one")
            files[key] = path
    return files


def find_pairs(folder: str | Path, liver_label: int = 1, group: str = "") -> list[CaseEntry]:
    """Image/label pairs in a folder: ``image_N``/``label_N`` (also img/seg, image/mask)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    files = _image_files(folder)
    entries, paired = [], set()
    for stem, path in files.items():
        for image_word, label_word in _PAIR_PATTERNS:
            match = re.fullmatch(rf"(.*?){image_word}(.*)", stem)
            if match and (label := f"{match[1]}{label_word}{match[2]}") in files:
                name = _strip(path.name)  # the case keeps its letter case: Image_A3 is case A3
                case = (name[:match.end(1)] + name[match.start(2):]).strip("_-") or name
                entries.append(CaseEntry(case, path, files[label], liver_label, group))
                paired |= {stem, label}
                break
    # A scan without its label (or a label without its scan) beside complete pairs is a
    # case the user meant to give: refused, not silently left out.
    words = {word for pattern in _PAIR_PATTERNS for word in pattern}
    unpaired = [files[stem].name for stem in files
                if stem not in paired and any(word in stem for word in words)]
    if entries and unpaired:
        more = f" and {len(unpaired) - 3} more" if len(unpaired) > 3 else ""
        raise InputError(folder, f"{', '.join(unpaired[:3])}{more} without a matching image or label file "
                                 "(pairs are named like image_1.nii.gz + label_1.nii.gz); add or move them")
    if not entries:
        images = [files[stem].name for stem in files if re.fullmatch(r".*?(image|img).*", stem)]
        unpaired = f"; {', '.join(images[:3])}{' ...' if len(images) > 3 else ''} without a label file" if images else ""
        raise InputError(folder, "no image/label pairs found (expected names like image_1.nii.gz + label_1.nii.gz)"
                                 + unpaired)
    return sorted(entries, key=lambda e: _natural_key(e.case))


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_manifest(path: str | Path) -> list[CaseEntry]:
    """A manifest (CSV or JSON) of cases; see :func:`LiverVolumetryTraining.manifest.read_manifest`."""
    from .manifest import read_manifest as _read_manifest

    return _read_manifest(path)


def _cache_key(entry: CaseEntry, prep: Preprocessing) -> str:
    stat_i, stat_l = entry.image.stat(), entry.label.stat()
    text = json.dumps([str(entry.image.resolve()), stat_i.st_size, stat_i.st_mtime_ns, str(entry.label.resolve()),
                       stat_l.st_size, stat_l.st_mtime_ns, entry.liver_label, prep.to_dict()])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


#: Grid attribute -> allclose tolerances under which a label's grid is its image's grid.
_GRID_TOLERANCES = {"Spacing": {"rtol": 1e-4}, "Origin": {"atol": 1e-2}, "Direction": {"atol": 1e-4}}


def _grid_differs(a, b, name: str) -> bool:
    x, y = getattr(a, f"Get{name}")(), getattr(b, f"Get{name}")()
    if name == "Size" or len(x) != len(y):
        return tuple(x) != tuple(y)
    return not np.allclose(x, y, **_GRID_TOLERANCES[name])


def grids_match(a, b) -> bool:
    """Whether two grids (``sitk.Image`` or a reader after ``ReadImageInformation``) are the
    same: size, spacing (relative 1e-4), origin (0.01 mm) and direction (1e-4)."""
    return not any(_grid_differs(a, b, name) for name in ("Size", *_GRID_TOLERANCES))


def grid_difference(image, label) -> str:
    """What differs between the image grid and the label grid, e.g.
    'image size 10x10x5, label size 10x10x6' (arguments as for :func:`grids_match`)."""
    def text(grid, name: str) -> str:
        return "x".join(f"{float(v):.4g}" for v in getattr(grid, f"Get{name}")())

    for name in ("Size", *_GRID_TOLERANCES):
        if _grid_differs(image, label, name):
            return f"image {name.lower()} {text(image, name)}, label {name.lower()} {text(label, name)}"
    return "grids match"


def read_case_image(entry: CaseEntry) -> sitk.Image:
    """The entry's image (file or DICOM folder) as float32; errors name the case."""
    from LiverVolumetryLib.imageio import read_image

    if not entry.image.exists():
        raise InputError(entry.image, f"case {entry.case}: image file not found")
    try:
        return read_image(entry.image)
    except InputError as error:
        raise InputError(error.path, f"case {entry.case}: image {error.cause}") from None


def read_file(path: Path, failure: str, header_only: bool = False) -> sitk.Image | sitk.ImageFileReader:
    """An image file (or, with ``header_only``, a reader holding its header); a reader
    error becomes the one-line InputError "<path>: <failure> (<reason>)". A truncated
    NIfTI file is refused (ITK would fill its missing voxels with 0)."""
    from LiverVolumetryLib.dicom import sitk_reason
    from LiverVolumetryLib.imageio import image_suffix
    from LiverVolumetryLib.niftifile import check_nifti_complete

    try:  # ITK says "does not exist" of a file it may not read
        open(path, "rb").close()
    except OSError as error:
        raise InputError(path, f"{failure} ({(error.strerror or str(error)).lower()})") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        reason = sitk_reason(error)
        if "Unable to determine ImageIO" in reason:  # ITK's words for a file it cannot make sense of
            reason = f"not a valid {image_suffix(path) or 'image'} file, or the file is corrupt"
        raise InputError(path, f"{failure} ({reason})") from None
    if image_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_complete(path)
    if header_only:
        return reader
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(path, f"{failure} ({sitk_reason(error)})") from None


def read_case_label(entry: CaseEntry, header_only: bool = False) -> sitk.Image | sitk.ImageFileReader:
    """The entry's label image (or, with ``header_only``, a reader holding its header).

    Refused as the engine refuses an image: unreadable, truncated, complex-valued, not
    3D, with several components per voxel, or (NIfTI, float) NaN or infinite values;
    errors name the case and the file."""
    from LiverVolumetryLib.imageio import _check_layout, _execute, _file_reader, image_suffix
    from LiverVolumetryLib.niftifile import check_nifti_finite

    if not entry.label.is_file():
        what = "not found" if not entry.label.exists() else "is not a file"
        raise InputError(entry.label, f"case {entry.case}: label file {what}")
    try:
        reader = _file_reader(entry.label)
        _check_layout(entry.label, reader.GetDimension(), reader.GetSize(), 1)
        if reader.GetNumberOfComponents() != 1:
            raise InputError(entry.label, f"has {reader.GetNumberOfComponents()} components per voxel; "
                                          "a scalar label map is needed")
        if header_only:
            return reader
        if image_suffix(entry.label) in (".nii", ".nii.gz"):
            check_nifti_finite(entry.label)  # ITK reads NaN as 0
        return _execute(reader, entry.label)
    except InputError as error:
        raise InputError(entry.label, f"case {entry.case}: label {error.cause}") from None


def liver_mask(entry: CaseEntry, label: sitk.Image) -> sitk.Image:
    """Binary uint8 mask of the voxels holding the entry's liver value; refuses an empty
    one, the background value 0 as liver value, and NaN or infinite label values."""
    if entry.liver_label == 0:
        raise InputError(entry.label, f"case {entry.case}: liver label 0 is the background value; give the liver's "
                                      "label (--label-value, or the manifest's liver_label)")
    values = sitk.GetArrayViewFromImage(label)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        raise InputError(entry.label, f"case {entry.case}: label has {bad} voxel(s) with NaN or infinite values")
    if values.dtype.kind == "f" and (fractional := values[values != np.round(values)]).size:
        # Cast to integers, 1.5 would count as liver 1: a probability map or a resampled label.
        raise InputError(entry.label, f"case {entry.case}: label has {fractional.size} voxel(s) with values that are "
                                      f"not whole numbers (e.g. {float(fractional.flat[0]):g}); a label map holds "
                                      "whole numbers (threshold a probability map first)")
    liver = sitk.Cast(sitk.Equal(sitk.Cast(label, sitk.sitkInt32), entry.liver_label), sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(liver).any():
        present = values[values != 0]
        held = ("; the label is empty" if present.size == 0 else
                f"; it holds label(s) {labels_text(present)} (give the liver's with --label-value, "
                "or the manifest's liver_label)")
        raise InputError(entry.label, f"case {entry.case}: no voxel has the liver label {entry.liver_label}{held}")
    return liver


def _checked_pair(entry: CaseEntry) -> tuple[sitk.Image, sitk.Image]:
    image = read_case_image(entry)
    label = read_case_label(entry)
    if not grids_match(image, label):
        raise InputError(entry.label, f"case {entry.case}: label grid does not match the image grid "
                                      f"({grid_difference(image, label)})")
    return image, label


def load_entry(entry: CaseEntry) -> tuple[sitk.Image, sitk.Image]:
    """Image (float32) and binary liver mask (uint8) on the image grid; checks the pair."""
    image, label = _checked_pair(entry)
    liver = liver_mask(entry, label)
    liver.CopyInformation(image)
    return image, liver


def other_tissues(entry: CaseEntry, label: sitk.Image) -> sitk.Image | None:
    """The label's non-liver structures renumbered 1..n (uint8), or None when it has none."""
    values = np.unique(sitk.GetArrayViewFromImage(label))
    others = [v for v in values if v != 0 and v != entry.liver_label][:255]
    if not others:
        return None
    array = sitk.GetArrayViewFromImage(label)
    out = np.zeros(array.shape, dtype=np.uint8)
    for number, value in enumerate(others, start=1):
        out[array == value] = number
    tissues = sitk.GetImageFromArray(out)
    tissues.CopyInformation(label)
    return tissues


def preprocess_case(image: sitk.Image, liver: sitk.Image, prep: Preprocessing, case: str,
                    tissues: sitk.Image | None = None) -> CachedCase:
    """Image and label on the network grid, as the engine preprocesses at inference."""
    net_input = to_network_input(image, prep)
    return CachedCase(case, net_input.array, label_to_network_grid(liver, net_input.grid),
                      None if tissues is None else label_to_network_grid(tissues, net_input.grid))


def cached_case(entry: CaseEntry, prep: Preprocessing, cache_dir: Path | None) -> CachedCase:
    """Preprocess a case once; later runs read the cached arrays."""
    present = entry.image.exists() and entry.label.exists()  # else load_entry says which is missing
    if cache_dir is not None and present:
        stem = cache_dir / f"{entry.case}-{_cache_key(entry, prep)}"
        files = {part: Path(f"{stem}-{part}.npy") for part in ("image", "label", "tissues")}
        if all(f.is_file() for f in files.values()):
            tissues = np.load(files["tissues"])
            return CachedCase(entry.case, np.load(files["image"]), np.load(files["label"]),
                              tissues if tissues.any() else None)
    image, label = _checked_pair(entry)
    liver = liver_mask(entry, label)
    liver.CopyInformation(image)
    case = preprocess_case(image, liver, prep, entry.case, other_tissues(entry, label))
    if cache_dir is not None and present:
        # Each file complete or absent (an interrupted run, or parallel fold runs sharing the
        # cache, never leave a truncated array that a later run would take as cached).
        tissues = case.tissues if case.tissues is not None else np.zeros((1, 1, 1), np.uint8)
        for part, array in (("image", case.image), ("label", case.label), ("tissues", tissues)):
            with atomic_path(files[part]) as tmp:
                np.save(tmp, array)
    return case
