"""Training cases: discovery of image/label pairs, and cached preprocessing.

Every case is preprocessed exactly as the engine does at inference
(``LiverVolumetryLib.preprocess``) and cached as ``.npy`` arrays on the network grid, so
epochs cost no resampling.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.errors import InputError
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
    """A case on the network grid: scaled image (x, y, z float32) and binary liver label."""

    case: str
    image: np.ndarray
    label: np.ndarray


def _strip(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_pairs(folder: str | Path, liver_label: int = 1, group: str = "") -> list[CaseEntry]:
    """Image/label pairs in a folder: ``image_N``/``label_N`` (also img/seg, image/mask)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    files = {_strip(p.name): p for p in sorted(folder.iterdir()) if p.name.endswith(_SUFFIXES)}
    entries = []
    for stem, path in files.items():
        for image_word, label_word in _PAIR_PATTERNS:
            match = re.fullmatch(rf"(.*?){image_word}(.*)", stem)
            if match and f"{match[1]}{label_word}{match[2]}" in files:
                case = f"{match[1]}{match[2]}".strip("_-") or stem
                entries.append(CaseEntry(case, path, files[f"{match[1]}{label_word}{match[2]}"], liver_label, group))
                break
    if not entries:
        raise InputError(folder, "no image/label pairs found (expected names like image_1.nii.gz + label_1.nii.gz)")
    return sorted(entries, key=lambda e: _natural_key(e.case))


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_manifest(path: str | Path) -> list[CaseEntry]:
    """A CSV manifest with columns image, label, optional case, liver_label, group."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as error:
        raise InputError(path, f"cannot read manifest ({error.strerror})") from None
    entries = []
    for number, row in enumerate(rows, start=2):
        if not row.get("image") or not row.get("label"):
            raise InputError(path, f"line {number}: needs 'image' and 'label' columns")
        image, label = (path.parent / row["image"]).resolve(), (path.parent / row["label"]).resolve()
        entries.append(CaseEntry(row.get("case") or _strip(image.name), image, label,
                                 int(row.get("liver_label") or 1), row.get("group") or ""))
    return entries


def _cache_key(entry: CaseEntry, prep: Preprocessing) -> str:
    stat_i, stat_l = entry.image.stat(), entry.label.stat()
    text = json.dumps([str(entry.image.resolve()), stat_i.st_size, stat_i.st_mtime_ns, str(entry.label.resolve()),
                       stat_l.st_size, stat_l.st_mtime_ns, entry.liver_label, prep.to_dict()])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_entry(entry: CaseEntry) -> tuple[sitk.Image, sitk.Image]:
    """Image (float32) and binary liver mask (uint8) on the image grid; checks the pair."""
    from LiverVolumetryLib.imageio import read_image

    image = read_image(entry.image)
    try:
        label = sitk.ReadImage(str(entry.label))
    except RuntimeError:
        raise InputError(entry.label, f"case {entry.case}: label cannot be read") from None
    if label.GetSize() != image.GetSize() or not np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=1e-4) \
            or not np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-2) \
            or not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-4):
        raise InputError(entry.label, f"case {entry.case}: label grid does not match the image grid")
    liver = sitk.Cast(sitk.Equal(sitk.Cast(label, sitk.sitkInt32), entry.liver_label), sitk.sitkUInt8)
    liver.CopyInformation(image)
    if not sitk.GetArrayViewFromImage(liver).any():
        raise InputError(entry.label, f"case {entry.case}: no voxel has the liver label {entry.liver_label}")
    return image, liver


def preprocess_case(image: sitk.Image, liver: sitk.Image, prep: Preprocessing, case: str) -> CachedCase:
    """Image and label on the network grid, as the engine preprocesses at inference."""
    net_input = to_network_input(image, prep)
    return CachedCase(case, net_input.array, label_to_network_grid(liver, net_input.grid))


def cached_case(entry: CaseEntry, prep: Preprocessing, cache_dir: Path | None) -> CachedCase:
    """Preprocess a case once; later runs read the cached arrays."""
    if cache_dir is not None:
        key = _cache_key(entry, prep)
        image_file, label_file = cache_dir / f"{entry.case}-{key}-image.npy", cache_dir / f"{entry.case}-{key}-label.npy"
        if image_file.is_file() and label_file.is_file():
            return CachedCase(entry.case, np.load(image_file), np.load(label_file))
    case = preprocess_case(*load_entry(entry), prep, entry.case)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(image_file, case.image)
        np.save(label_file, case.label)
    return case
