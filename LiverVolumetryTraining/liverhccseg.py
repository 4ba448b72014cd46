"""LiverHccSeg (Gross et al., Data in Brief 2023; TCIA): portal-venous phase and liver mask.

Expected layout: one folder per patient directly under ``source`` (``source`` may also
be one patient's folder, or a folder holding the TCIA package ``nifti_and_segms``, which
is followed down, also when nested twice as ``nifti_and_segms/nifti_and_segms`` or inside
one more folder that an unzip tool added),
holding anywhere below it the phases as image files (NIfTI, NRRD, MHA) or DICOM series
folders, and the liver segmentation as an image file::

    <source>/<patient>/[<study>/]art_pre.nii.gz, art.nii.gz, art_pv.nii.gz, art_del.nii.gz,
                                 rater1_liver.nii.gz, rater2_liver.nii.gz, rater1_tumor.nii.gz
    <source>/<patient>/<study>/<series folder of .dcm files>/... (DICOM phases)

Discovery rule, on file and folder names (lower case, split into words at anything
that is not a letter or digit, and between letters and digits):

- a *label* is an image file whose name contains "liver", or has a word seg,
  segmentation, mask, label, labels or gt; names with tumor, tumour, lesion or the word
  hcc are never labels nor images (tumour masks are ignored). Of several labels, the one
  whose name contains ``rater`` (default "rater1") is taken, else the only one with
  "liver" in its name; otherwise the patient is refused, listing them.
- an *image* is any other image file, or a folder directly holding DICOM files (its
  name and SeriesDescription are its name). Of several, the one with a word pv, pvp,
  portal, venous or portalvenous is taken (art_pv, "Ax LAVA PV", portal_venous); none
  or several such is an error listing the candidates.

The image is referenced in place when it is a file whose grid the label shares;
a DICOM image is written as NIfTI into ``out_dir``. A label on another grid than its
image (phases co-registered but stored on the arterial grid) is resampled onto the image
grid (linear interpolation of the liver mask, threshold 0.5) and written into
``out_dir``; if that changes the liver volume by more than 20 % the label and image do
not share physical space and the patient is refused. Case name: the patient folder's
name; group "liverhccseg".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.errors import InputError
from LiverVolumetryLib.imageio import image_suffix

from .converters import ConversionOutput, Log, _quiet, compact_image
from .dataset import (CaseEntry, _natural_key, grids_match, list_folder, liver_mask, read_case_image, read_case_label,
                      read_file)

GROUP = "liverhccseg"
PACKAGE = "nifti_and_segms"  # the TCIA download nifti_and_segms.zip (phases + segmentations)
LABEL_WORDS = {"seg", "segmentation", "mask", "label", "labels", "gt"}
PHASE_WORDS = {"pv", "pvp", "portal", "venous", "portalvenous"}
MAX_VOLUME_CHANGE = 0.2


def words(name: str) -> set[str]:
    """The lower-case words of a name: split at non-alphanumerics and letter/digit changes."""
    return set(re.findall(r"[a-z]+|[0-9]+", name.lower()))


def _is_tumour(name: str) -> bool:
    lower = name.lower()
    return any(w in lower for w in ("tumor", "tumour", "lesion")) or "hcc" in words(name)


def _is_label(name: str) -> bool:
    return not _is_tumour(name) and ("liver" in name.lower() or bool(words(name) & LABEL_WORDS))


def _has_dicom(folder: Path) -> bool:
    """Whether ``folder`` directly holds DICOM files (.dcm, or the DICM marker)."""
    for number, path in enumerate(p for p in folder.iterdir() if p.is_file()):
        if path.suffix.lower() == ".dcm":
            return True
        if number < 3:
            try:
                with open(path, "rb") as stream:
                    if stream.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                continue
    return False


def _series_description(folder: Path) -> str:
    """The SeriesDescription of the first DICOM file of ``folder`` ('' if none)."""
    from LiverVolumetryLib.dicom import list_dicom_series

    try:
        series = list_dicom_series(folder)
    except InputError:
        return ""
    return series[0].description if series else ""


def candidates(patient: Path) -> tuple[list[Path], list[Path]]:
    """(labels, images) found anywhere under ``patient`` (see the module docstring)."""
    labels, images = [], []
    def unreadable(error: OSError):  # os.walk would skip the folder, and with it maybe the scan
        raise InputError(error.filename, f"cannot be listed ({(error.strerror or str(error)).lower()})")

    for folder, subfolders, files in os.walk(patient, onerror=unreadable):
        subfolders.sort()
        here = Path(folder)
        if here != patient and not _is_tumour(here.name) and _has_dicom(here):
            images.append(here)
        for name in sorted(files):
            if image_suffix(name) is None or name.startswith(".") or _is_tumour(name):
                continue
            (labels if _is_label(name) else images).append(here / name)
    return labels, images


def choose_label(patient: Path, labels: list[Path], rater: str) -> Path:
    """The liver label among ``labels``: the ``rater``'s, else the only "liver" one."""
    if len(labels) == 1:
        return labels[0]
    for rule in (lambda p: rater.lower() in p.name.lower(), lambda p: "liver" in p.name.lower()):
        chosen = [p for p in labels if rule(p)]
        if len(chosen) == 1:
            return chosen[0]
    if not labels:
        raise InputError(patient, "holds no liver segmentation (a file named like rater1_liver.nii.gz)")
    raise InputError(patient, f"holds several liver segmentations and none is {rater}'s: "
                              f"{', '.join(p.name for p in labels)}")


def choose_image(patient: Path, images: list[Path]) -> Path:
    """The portal-venous image among ``images`` (or the only image)."""
    if len(images) == 1:
        return images[0]
    def name(path: Path) -> str:
        return f"{path.name} {_series_description(path)}" if path.is_dir() else path.name
    chosen = [p for p in images if words(name(p)) & PHASE_WORDS]
    if len(chosen) == 1:
        return chosen[0]
    shown = ", ".join(str(p.relative_to(patient)) for p in (chosen or images))
    if not images:
        raise InputError(patient, "holds no image (NIfTI file or DICOM series folder)")
    what = "several portal-venous images" if chosen else "no image named as portal-venous (pv, portal, venous)"
    raise InputError(patient, f"holds {what}: {shown}")


def resample_label(label: sitk.Image, liver_label: int, image: sitk.Image, case: str, path: Path) -> sitk.Image:
    """The liver of ``label`` on the grid of ``image`` (uint8, 1 = liver)."""
    liver = sitk.Cast(sitk.Equal(sitk.Cast(label, sitk.sitkInt32), liver_label), sitk.sitkFloat32)
    moved = sitk.Resample(liver, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = sitk.Cast(sitk.GreaterEqual(moved, 0.5), sitk.sitkUInt8)
    before = float(sitk.GetArrayViewFromImage(liver).sum()) * float(np.prod(label.GetSpacing()))
    after = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(image.GetSpacing()))
    if before == 0 or abs(after - before) > MAX_VOLUME_CHANGE * before:
        raise InputError(path, f"case {case}: the liver label does not overlap the image in physical space "
                               f"({before / 1000:.0f} mL on the label grid, {after / 1000:.0f} mL on the image grid)")
    return mask


def convert_patient(patient: Path, case: str, liver_label: int, rater: str, output: ConversionOutput,
                    log: Log) -> CaseEntry | None:
    """One patient's portal-venous image and liver label as a training case (None, logged,
    for a patient folder without any liver segmentation)."""
    labels, images = candidates(patient)
    if not labels:
        log(f"skipped {patient}: no liver segmentation (a file named like rater1_liver.nii.gz)")
        return None
    label_path, image_path = choose_label(patient, labels, rater), choose_image(patient, images)
    entry = CaseEntry(case, image_path, label_path, liver_label, GROUP)
    label = read_case_label(entry)
    liver_mask(entry, label)  # refuses a label without the liver value, as check and train would
    if image_path.is_file():
        header = read_file(image_path, f"case {case}: image cannot be read", header_only=True)
        if grids_match(header, label):
            log(f"{case}: {image_path.relative_to(patient)} + {label_path.relative_to(patient)} (in place)")
            return entry
    image = read_case_image(entry)
    if image_path.is_dir():
        image_path = output.write_image(compact_image(image), f"{case}_image.nii.gz")
    if grids_match(image, label):
        new_label = label_path
    else:
        log(f"{case}: resampling {label_path.name} onto the grid of the image")
        label = resample_label(label, liver_label, image, case, label_path)
        new_label, liver_label = output.write_image(label, f"{case}_label.nii.gz"), 1
    log(f"{case}: {entry.image.relative_to(patient)} + {label_path.relative_to(patient)}")
    return CaseEntry(case, image_path, new_label, liver_label, GROUP)


def convert_liverhccseg(source: str | Path, out_dir: str | Path, liver_label: int | None = None,
                        rater: str = "rater1", overwrite: bool = False, log: Log = _quiet) -> list[CaseEntry]:
    """LiverHccSeg patients under ``source`` as training cases with ``out_dir/manifest.csv``
    (see the module docstring for the layout and the discovery rule)."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "is not a folder")
    wrappers = [p for p in list_folder(source) if p.is_dir() and (p / PACKAGE).is_dir()]
    if not (source / PACKAGE).is_dir() and len(wrappers) == 1:  # one folder more, as some unzip tools add
        source = wrappers[0]
    while (source / PACKAGE).is_dir():  # the patients lie in nifti_and_segms[/nifti_and_segms]
        source = source / PACKAGE
    listed = list_folder(source)
    top = [p for p in listed if p.is_file() and image_suffix(p) is not None and not p.name.startswith(".")]
    skip = Path(out_dir).resolve()
    folders = sorted((p for p in listed if p.is_dir() and not p.name.startswith(".") and p.resolve() != skip),
                     key=lambda p: _natural_key(p.name))
    # One patient's folder holds its liver segmentation; an image file that lies beside
    # patient folders (a preview, an atlas) does not make the whole source one patient.
    one_patient = any(_is_label(p.name) for p in top) or (top and not folders)
    for stray in [] if one_patient else top:
        log(f"ignored {stray}: an image file beside the patient folders")
    patients = [source] if one_patient else folders
    value = 1 if liver_label is None else liver_label
    with ConversionOutput(out_dir, overwrite) as output:
        entries = [convert_patient(p, p.resolve().name, value, rater, output, log) for p in patients]
        entries = [e for e in entries if e is not None]
        if not entries:
            raise InputError(source, "holds no patient folder with a liver segmentation")
        return output.finish(entries)
