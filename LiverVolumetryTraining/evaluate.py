"""Evaluation of automated liver masks against reference masks (Gross et al., Eur Radiol 2024).

For each case the automated mask is either made by the engine (:func:`segment_liver` with
a model bundle, the bundled default when none is named) or read from a predictions
folder (``<case>.nii.gz``, ``<case>_liver.nii.gz`` or the engine's ``<image name>_liver.nii.gz``,
checked to lie on the image grid).
Against the case's reference mask, on the native image grid:

* segmentation: Dice, HD95 and ASSD in mm (:mod:`.surface_metrics`);
* volumetry: automated and reference liver volume (mL); over all cases the ICC(2,1)
  and the Bland–Altman bias and 95 % limits of agreement (automated − reference);
* radiomics (optional): the engine's pyradiomics features (same YAML settings as the
  engine, :func:`LiverVolumetryLib.measure.measure`) on the automated and on the
  reference mask; the ICC(2,1) of each feature over all cases;
* groups: with exactly two distinct case groups, a two-sided Mann–Whitney U test of Dice
  (cases without a group are left out of it);
* the engine's plausibility warnings on each automated mask (and, when the engine segments
  the case here, its network-uncertainty warning), to show which failures a user would have
  been warned of.

:func:`evaluate` writes the tables, summary, report and plots via :mod:`.evaluate_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.confidence import confidence_warnings
from LiverVolumetryLib.errors import InputError, LiverVolumetryError, OutputError
from LiverVolumetryLib.measure import liver_volume_ml, measure
from LiverVolumetryLib.plausibility import plausibility_warnings

from .agreement import (MIN_ICC_CASES, BlandAltman, ICCResult, MannWhitney, bland_altman, icc_agreement,
                        mann_whitney)
from .dataset import CaseEntry, load_entry
from .fingerprint import file_fingerprint, fingerprint_method
from .surface_metrics import surface_metrics

Log = Callable[[str], None]

#: Feature ICCs below this are listed as poorly reproducible (good reliability: >= 0.75).
ICC_THRESHOLD = 0.75
_PREDICTION_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class CaseResult:
    """Metrics of one case; volumes in mL, distances in mm. Features keyed by column name."""

    case: str
    group: str
    dice: float
    hd95_mm: float
    assd_mm: float
    volume_auto_ml: float
    volume_ref_ml: float
    source: str
    seconds: float
    trained_on: bool = False
    warnings: str = ""  # the engine's plausibility warnings on the automated mask, "; "-joined
    features_auto: dict[str, float] = field(default_factory=dict, repr=False)
    features_ref: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def volume_diff_ml(self) -> float:
        """Automated minus reference volume (mL)."""
        return self.volume_auto_ml - self.volume_ref_ml


@dataclass(frozen=True)
class FeatureICC:
    """ICC(2,1) of one radiomics feature, automated vs reference mask, over ``n`` cases."""

    feature: str
    icc: float
    ci95_low: float
    ci95_high: float
    n: int


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` measured, and the files it wrote."""

    cases: list[CaseResult]
    automated: str
    radiomics: bool
    volume_icc: ICCResult | None = None
    volume_agreement: BlandAltman | None = None
    feature_iccs: list[FeatureICC] = field(default_factory=list)
    mann_whitney: MannWhitney | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def summary_cases(self) -> list[CaseResult]:
        """The cases the summary figures cover: the held-out ones where some (not all) of the
        cases trained the model, else all of them."""
        return [c for c in self.cases if not c.trained_on] or self.cases

    def features_below(self, threshold: float = ICC_THRESHOLD) -> list[FeatureICC]:
        """Features whose ICC is below ``threshold`` (undefined ICCs are not listed)."""
        return [f for f in self.feature_iccs if math.isfinite(f.icc) and f.icc < threshold]


#: Appended to a case's source when its prediction holds other labels but not the liver's.
NO_LIVER_LABEL = " (no voxel of the liver label)"

# --------------------------------------------------------------------------- inputs

def prediction_file(folder: Path, case: str, image: Path | None = None) -> Path:
    """The predicted mask of ``case`` in ``folder``: ``<case>.nii.gz`` or ``<case>_liver.nii.gz``
    (also .nii, .nrrd, .mha), or, named after the case's ``image`` as the engine names its
    masks, ``<image name>_liver.nii.gz``; a Slicer ``.seg.nrrd`` of those names where none of
    them is there (its 'Liver' segment, as ``measure`` reads it); refuses none or several."""
    from LiverVolumetryLib.imageio import case_id

    stems = dict.fromkeys([case, f"{case}_liver"] + ([f"{case_id(image)}_liver"] if image is not None else []))
    for suffixes in (_PREDICTION_SUFFIXES, (".seg.nrrd",)):  # a Slicer segmentation only where there is no other
        found = [folder / f"{stem}{suffix}" for stem in stems for suffix in suffixes
                 if (folder / f"{stem}{suffix}").is_file()]
        if found:
            break
    if not found:
        engine = f" or {case_id(image)}_liver.nii.gz" if image is not None else ""
        raise InputError(folder, f"case {case}: no prediction file {case}.nii.gz, {case}_liver.nii.gz{engine}")
    if len(found) > 1:
        raise InputError(folder, f"case {case}: several prediction files ({', '.join(p.name for p in found)})")
    return found[0]


def _check_prediction(entry: CaseEntry, path: Path, label: Sequence[int] | None) -> None:
    """The header checks of the case's prediction file against its image (no voxels read)."""
    from LiverVolumetryLib.masks import check_mask_header

    from .manifest import _image_header

    reference = None if entry.image.is_dir() else _image_header(entry)  # a DICOM image: checked when read
    check_mask_header(path, reference, label)


def _check_inputs(entries: Sequence[CaseEntry], predictions: Path | None,
                  label: Sequence[int] | None = None) -> None:
    """Fail early, in one line naming the entry, before any slow work: the entries, and
    each prediction file (found, claimed by one case only, its header fits the image)."""
    from .manifest import _same_file_key, check_entries

    if not entries:
        raise LiverVolumetryError("no cases to evaluate: give --data FOLDER or --manifest CSV")
    problems = check_entries(entries, full=False)
    if predictions is not None:
        if not predictions.is_dir():
            raise InputError(predictions, "predictions folder not found")
        claimed: dict = {}
        for entry in entries:
            try:
                path = prediction_file(predictions, entry.case, entry.image)
                if (other := claimed.setdefault(_same_file_key(path), entry.case)) != entry.case:
                    # e.g. scans all named mri.nii.gz: one mri_liver.nii.gz would be scored for each
                    raise InputError(path, f"is the prediction of both case {other} and case {entry.case} "
                                           f"(name predictions after the cases: {entry.case}.nii.gz)")
                _check_prediction(entry, path, label)
            except InputError as error:
                problems.append(str(_with_case(error, entry)))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LiverVolumetryError(problems[0] + more)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output the report could not be written into."""
    from .evaluate_report import REPORT_FILES

    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(out_dir, "exists and is not a folder")
    above = next((p for p in out_dir.absolute().parents if p.exists()), None)
    if not out_dir.exists() and above is not None and not above.is_dir():
        raise OutputError(out_dir, f"cannot be created: {above} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputError(out_dir, "is not empty (use --overwrite to replace its files)")
    if folder := next((out_dir / n for n in REPORT_FILES if (out_dir / n).is_dir()), None):
        raise OutputError(folder, "is a folder where the report writes a file (remove or rename it)")


def _with_case(error: InputError, entry: CaseEntry) -> InputError:
    """The error with the case named (once)."""
    if f"case {entry.case}:" in error.cause:
        return error
    return InputError(error.path or entry.image, f"case {entry.case}: {error.cause}")


# --------------------------------------------------------------------------- per case

def _automated_mask(entry: CaseEntry, image: sitk.Image, bundle, predictions: Path | None,
                    device: str, label: Sequence[int] | None = None) -> tuple[sitk.Image, str, float | None]:
    """The automated mask on the image grid, where it came from, and the network's unsure
    fraction (None for a mask read from a file; ``label``: its liver label value(s))."""
    if predictions is not None:
        from LiverVolumetryLib.masks import MissingLabelError, read_mask

        path = prediction_file(predictions, entry.case, entry.image)
        try:
            return read_mask(path, reference=image, label=label), path.name, None
        except MissingLabelError:  # a label map in which the liver was missed: an empty automated mask
            empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
            empty.CopyInformation(image)
            return empty, f"{path.name}{NO_LIVER_LABEL}", None
    from LiverVolumetryLib.segment import segment_liver

    result = segment_liver(image, bundle, device=device)
    return result.mask, f"{result.model_name} {result.model_version} ({result.device})", result.unsure_fraction


def _features(image: sitk.Image, mask: sitk.Image, entry: CaseEntry, which: str, notes: list[str],
              log: Log) -> dict[str, float]:
    """The engine's radiomics features of ``mask`` (shape/first-order/texture columns only);
    empty, with a note, when pyradiomics refuses the mask (e.g. an empty or tiny one)."""
    try:
        row = measure(image, mask, radiomics=True)
    except InputError as error:
        notes.append(f"case {entry.case}: no radiomics for the {which} mask ({error.cause})")
        log(f"  {notes[-1]}")
        return {}
    return {k: float(v) for k, v in row.items() if k.startswith("original_")}


def evaluate_case(entry: CaseEntry, bundle=None, predictions: Path | None = None, radiomics: bool = True,
                  device: str = "auto", notes: list[str] | None = None, log: Log = print,
                  prediction_label: Sequence[int] | None = None) -> CaseResult:
    """Metrics of one case (see the module docstring); errors name the case."""
    notes = [] if notes is None else notes
    start = time.perf_counter()
    try:
        image, reference = load_entry(entry)
        automated, source, unsure = _automated_mask(entry, image, bundle, predictions, device, prediction_label)
        metrics = surface_metrics(automated, reference)
        result = CaseResult(case=entry.case, group=entry.group, dice=metrics.dice, hd95_mm=metrics.hd95_mm,
                            assd_mm=metrics.assd_mm, volume_auto_ml=liver_volume_ml(automated),
                            volume_ref_ml=liver_volume_ml(reference), source=source, seconds=0.0,
                            warnings="; ".join(confidence_warnings(unsure) + plausibility_warnings(image, automated)))
        if radiomics:
            result.features_auto = _features(image, automated, entry, "automated", notes, log)
            result.features_ref = _features(image, reference, entry, "reference", notes, log)
    except InputError as error:
        raise _with_case(error, entry) from None
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- over cases

def feature_iccs(cases: Sequence[CaseResult]) -> list[FeatureICC]:
    """ICC(2,1) per radiomics feature (automated vs reference), in column order; cases
    without a feature's value are left out of that feature's ICC."""
    names = list(dict.fromkeys(name for c in cases for name in (*c.features_ref, *c.features_auto)))
    out = []
    for name in names:
        auto = [c.features_auto.get(name, math.nan) for c in cases]
        ref = [c.features_ref.get(name, math.nan) for c in cases]
        icc = icc_agreement(auto, ref)
        if icc is not None:
            out.append(FeatureICC(name, icc.icc, icc.ci95_low, icc.ci95_high, icc.n))
    return out


def summarize(result: EvaluationResult) -> None:
    """Fill ``result``'s agreement statistics from its summary cases, noting what cannot be computed."""
    cases, notes = result.summary_cases, result.notes
    auto = [c.volume_auto_ml for c in cases]
    ref = [c.volume_ref_ml for c in cases]
    result.volume_icc = icc_agreement(auto, ref)
    result.volume_agreement = bland_altman(auto, ref)
    if result.volume_icc is None:
        notes.append(f"volume ICC not computed: needs at least {MIN_ICC_CASES} cases, got {len(cases)}")
    elif not math.isfinite(result.volume_icc.icc):
        notes.append("volume ICC undefined: the volumes do not vary at all")
    if result.volume_agreement is None:
        notes.append(f"Bland-Altman limits not computed: need at least 2 cases, got {len(cases)}")
    if result.radiomics:
        result.feature_iccs = feature_iccs(cases)
        if not result.feature_iccs:
            notes.append(f"radiomics ICCs not computed: need at least {MIN_ICC_CASES} cases with features")
        undefined = [f.feature for f in result.feature_iccs if not math.isfinite(f.icc)]
        if undefined:
            notes.append(f"ICC undefined (no variation) for {len(undefined)} feature(s): {', '.join(undefined)}")
    grouped = [c for c in cases if c.group]  # a case without a group belongs to none of them
    groups = sorted({c.group for c in grouped})
    if lost := sorted({c.group for c in result.cases if c.group} - set(groups)):
        notes.append(f"group(s) {', '.join(map(repr, lost))} left out of the group comparison: all their cases "
                     "trained the model")
    if groups and len(grouped) < len(cases):
        notes.append(f"{len(cases) - len(grouped)} case(s) without a group are left out of the group comparison")
    if len(groups) == 2:
        result.mann_whitney = test = mann_whitney([c.dice for c in grouped], [c.group for c in grouped])
        if test is not None and (floor := 2 / math.comb(test.n_a + test.n_b, test.n_a)) >= 0.05:
            # With no ties, the most extreme split of the ranks has this two-sided p.
            notes.append(f"with n = {test.n_a} and {test.n_b} the Mann-Whitney U test cannot reach p < 0.05 "
                         f"(its smallest possible p is {min(floor, 1.0):.3g}): too few cases to compare the groups")
    elif len(groups) == 1:
        notes.append(f"Mann-Whitney U not computed: every grouped case is in group {groups[0]!r}; it compares two")
    elif len(groups) > 2:
        notes.append(f"Mann-Whitney U not computed: {len(groups)} groups ({', '.join(map(repr, groups))}); "
                     "it compares exactly two")


def _load_model(model, device: str):
    from LiverVolumetryLib.bundle import load_bundle
    from LiverVolumetryLib.segment import resolve_device

    bundle = load_bundle(model)
    return bundle, resolve_device(device)


def evaluate(entries: Sequence[CaseEntry], out_dir: str | Path, model: str | Path | None = None,
             predictions: str | Path | None = None, radiomics: bool = True, device: str = "auto",
             log: Log = print, overwrite: bool = False,
             prediction_label: Sequence[int] | None = None) -> EvaluationResult:
    """Evaluate automated masks against the entries' reference masks and write the report.

    ``model``: bundle folder for the engine's segmentation (default: the bundled model);
    ``predictions``: folder of ready-made masks instead (not both), whose liver is
    ``prediction_label`` (one or more values; default any non-zero, if only one). ``out_dir`` must be
    empty or absent unless ``overwrite``. Bad entries raise a one-line error naming them.
    """
    from .evaluate_report import write_report

    start = time.perf_counter()
    out_dir = Path(out_dir)
    predictions = Path(predictions) if predictions is not None else None
    if predictions is not None and model is not None:
        raise LiverVolumetryError("give a model or a predictions folder, not both")
    _check_out_dir(out_dir, overwrite)
    _check_inputs(entries, predictions, prediction_label)
    bundle, training_cases, fingerprints, named_only, method = None, set(), set(), set(), None
    if predictions is None:
        bundle, device = _load_model(model, device)
        automated = f"model {bundle.name} {bundle.version} ({bundle.path}, sha256 {bundle.sha256[:12]}, {device})"
        training = bundle.metadata.get("training") or {}
        recorded = training.get("case_fingerprints") or {}
        fingerprints, method = {f for f in recorded.values() if f}, fingerprint_method(training, bundle.path)
        # By name: every training case of a bundle without fingerprints, else those whose image was unreadable.
        training_cases = {str(c) for c in training.get("cases", []) if not fingerprints or not recorded.get(c)}
        named_only = {str(c) for c in training.get("cases", [])} - training_cases
    else:
        labels = "" if prediction_label is None else f", label {','.join(str(v) for v in prediction_label)}"
        automated = f"predictions folder {predictions}{labels}"
    log(f"evaluating {len(entries)} case(s); automated masks: {automated}")
    result = EvaluationResult(cases=[], automated=automated, radiomics=radiomics)
    for number, entry in enumerate(entries, start=1):
        case = evaluate_case(entry, bundle, predictions, radiomics, device, result.notes, log, prediction_label)
        case.trained_on = case.case in training_cases or bool(  # by name, else by image content
            fingerprints and file_fingerprint(entry.image, method) in fingerprints)
        result.cases.append(case)
        log(f"[{number}/{len(entries)}] {case.case}: Dice {case.dice:.4f}, HD95 {case.hd95_mm:.2f} mm, "
            f"ASSD {case.assd_mm:.2f} mm, volume {case.volume_auto_ml:.0f} / {case.volume_ref_ml:.0f} mL "
            f"({case.seconds:.1f} s)" + (" - a training case of the model" if case.trained_on else ""))
    missed = [c.case for c in result.cases if c.source.endswith(NO_LIVER_LABEL)]
    if missed:
        shown = ",".join(str(v) for v in prediction_label or ())
        every = " (every case: is --prediction-label right?)" if len(missed) == len(result.cases) else ""
        result.notes.append(f"{len(missed)} prediction(s) hold other labels but no voxel of label {shown}, counted as "
                            f"empty automated masks{every}: {', '.join(missed)}")
        log(f"note: {result.notes[-1]}")
    renamed = [c.case for c in result.cases if not c.trained_on and c.case in named_only]
    if renamed:
        result.notes.append(f"case name(s) {', '.join(renamed)} are among the model's training cases, but their "
                            "images are not the ones it was trained on (another file, or the scan changed): "
                            "counted as held out")
    trained = [c.case for c in result.cases if c.trained_on]
    if trained:
        how = "their images are among the model's training images" if fingerprints else \
            "their names are among the model's training cases (matched by name only)"
        left_out = ("they are left out of the summary figures" if len(trained) < len(entries) else
                    "every case is one, so the summary figures are training-set figures, not validation")
        result.notes.append(f"{len(trained)} of {len(entries)} case(s) were used to train the model ({how}): "
                            f"{', '.join(trained)}; {left_out}")
    summarize(result)
    result.seconds = time.perf_counter() - start
    result.out_dir = out_dir
    result.files = write_report(result, out_dir)
    log(f"wrote {', '.join(p.name for p in result.files)} to {out_dir}")
    return result


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, SD (n − 1; NaN for one value) and count of the finite values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)
