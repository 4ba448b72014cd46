"""Liver volumetry and radiomics for one image + liver mask pair.

``measure`` returns one row of a results table: the liver volume (always counted on the
mask's own native grid) and, optionally, the pyradiomics features (shape, first-order and
texture classes of the original image) computed with the MRI parameter file bundled in
``resources/radiomics_mri.yaml`` (see the comments there for the reasons behind each
setting). ``describe_column`` gives the unit and a one-line description of a column.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

Progress = Callable[[float, str], None]

# Largest difference in spacing / origin (mm) and direction cosines accepted between an
# image and its mask: absorbs float32 round-off from file round trips, nothing more.
GRID_TOLERANCE = 1e-3

_PARAMS_FILE = "radiomics_mri.yaml"
_RADIOMICS_START = 0.05  # progress fraction when radiomics begins (volume is instant)
_LOADED = 0.3            # ... after normalization and resampling


def radiomics_params_path() -> Path:
    """Path of the bundled pyradiomics parameter file tuned for liver MRI."""
    return Path(__file__).resolve().parent / "resources" / _PARAMS_FILE


# --------------------------------------------------------------------------- volume

def _binary_mask(mask: sitk.Image) -> sitk.Image:
    """UInt8 image with 1 where ``mask`` is non-zero (any label counts as liver)."""
    if mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(None, "mask has several components per voxel: expected a scalar label map")
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def _voxel_count(binary: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(binary)))


def dice(mask_a: sitk.Image, mask_b: sitk.Image) -> float:
    """Dice overlap of two masks on the same grid (non-zero = inside); 1.0 if both are empty."""
    a, b = sitk.GetArrayViewFromImage(mask_a) > 0, sitk.GetArrayViewFromImage(mask_b) > 0
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def liver_volume_ml(mask: sitk.Image) -> float:
    """Liver volume in mL: non-zero voxels x voxel volume (mm^3) / 1000 on the mask's grid."""
    count = _voxel_count(_binary_mask(mask))
    return count * float(np.prod(mask.GetSpacing())) / 1000.0


# --------------------------------------------------------------------------- inputs

def _describe(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _grid_differences(image: sitk.Image, mask: sitk.Image) -> list[str]:
    """Human-readable list of what differs between the two grids (empty if they match)."""
    if image.GetDimension() != mask.GetDimension():
        return [f"dimension {image.GetDimension()} vs {mask.GetDimension()}"]
    if image.GetSize() != mask.GetSize():
        return [f"size {image.GetSize()} vs {mask.GetSize()}"]
    diffs = []
    for name in ("spacing", "origin", "direction"):
        a = getattr(image, f"Get{name.capitalize()}")()
        b = getattr(mask, f"Get{name.capitalize()}")()
        if np.max(np.abs(np.subtract(a, b))) > GRID_TOLERANCE:
            diffs.append(f"{name} {_describe(a)} vs {_describe(b)}")
    return diffs


def _check_inputs(image: sitk.Image, mask: sitk.Image) -> None:
    """Raise InputError unless image and mask are 3D scalar images on the same grid."""
    for name, value in (("image", image), ("mask", mask)):
        if not isinstance(value, sitk.Image):  # e.g. a file name: read it with read_image / read_mask
            raise InputError(None, f"expected a SimpleITK image as the {name}, got {type(value).__name__}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(None, f"image must be a 3D scalar image, got {image.GetDimension()}D with "
                               f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    diffs = _grid_differences(image, mask)
    if diffs:
        raise InputError(None, "mask and image grids differ: " + "; ".join(diffs) + " (image vs mask)")


# --------------------------------------------------------------------------- radiomics

def _not_sum_average_note(record: logging.LogRecord) -> bool:
    """False for pyradiomics' per-case GLCM note that Sum Average = 2 x Joint Average."""
    return "Sum Average = 2 * Joint Average" not in record.getMessage()


def _quiet_radiomics() -> None:
    """Keep pyradiomics' INFO/DEBUG chatter (and one harmless per-case note) out of the logs."""
    logging.getLogger("radiomics").setLevel(logging.WARNING)
    glcm_logger = logging.getLogger("radiomics.glcm")
    if _not_sum_average_note not in glcm_logger.filters:
        glcm_logger.addFilter(_not_sum_average_note)


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message collapsed onto one line (pyradiomics' are multi-line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def normalize_like_pyradiomics(image: sitk.Image, scale: float = 1.0,
                               outliers: float | None = None) -> sitk.Image | None:
    """pyradiomics' ``normalizeImage`` (z-score over the whole image, clip at +-``outliers``,
    times ``scale``) with the same float64 result, bit for bit, with fewer full-size float64
    copies alive at once. None for a constant image (no z-score; left to pyradiomics)."""
    statistics = sitk.StatisticsImageFilter()
    statistics.Execute(image)
    if not statistics.GetSigma() > 0:
        return None
    shift_scale = sitk.ShiftScaleImageFilter()  # (x - mean) / sigma in double, as sitk.Normalize
    shift_scale.SetShift(-statistics.GetMean())
    shift_scale.SetScale(1.0 / statistics.GetSigma())
    shift_scale.SetOutputPixelType(sitk.sitkFloat64)
    normalized = shift_scale.Execute(image)
    if outliers is not None:
        normalized = sitk.Clamp(normalized, sitk.sitkFloat64, -float(outliers), float(outliers))
    return sitk.Multiply(normalized, float(scale))


def _make_extractor(params: Path, progress: Progress):
    """A pyradiomics extractor for ``params`` that reports progress per feature class."""
    _quiet_radiomics()
    from radiomics import featureextractor

    class _Extractor(featureextractor.RadiomicsFeatureExtractor):
        """Same extraction, with a progress call after loading and after each class."""

        def loadImage(self, image, mask, generalInfo=None, **kwargs):  # noqa: N802 (pyradiomics' names)
            normalized = None
            if kwargs.get("normalize") and isinstance(image, sitk.Image):
                normalized = normalize_like_pyradiomics(image, kwargs.get("normalizeScale", 1),
                                                        kwargs.get("removeOutliers"))
            if normalized is not None:
                image, kwargs = normalized, {**kwargs, "normalize": False}
            loaded = featureextractor.RadiomicsFeatureExtractor.loadImage(image, mask, generalInfo, **kwargs)
            progress(_LOADED, "radiomics")
            return loaded

        def _step_done(self, done: int, classes: int) -> None:
            steps = classes + 1  # + 1: measure()'s final call after extraction
            progress(_LOADED + (1.0 - _LOADED) * done / steps, "radiomics")

        def computeShape(self, *args, **kwargs):  # noqa: N802
            features = super().computeShape(*args, **kwargs)
            self._step_done(1, len(self.enabledFeatures))
            return features

        def computeFeatures(self, image, mask, imageTypeName, **kwargs):  # noqa: N802
            enabled = self.enabledFeatures
            textures = [name for name in enabled if not name.startswith("shape")]
            first_step = len(enabled) - len(textures) + 1
            features: dict = {}
            try:
                for done, name in enumerate(textures, start=first_step):
                    self.enabledFeatures = {name: enabled[name]}
                    features.update(super().computeFeatures(image, mask, imageTypeName, **kwargs))
                    self._step_done(done, len(enabled))
            finally:
                self.enabledFeatures = enabled
            return features

    try:
        return _Extractor(str(params))
    except Exception as error:  # pykwalify schema errors have no common public base class
        raise InputError(params, f"invalid radiomics parameter file: {_one_line(error)}") from error


def _as_float(value) -> float:
    """A pyradiomics feature value (numpy scalar or 0-d array) as a Python float."""
    return float(np.asarray(value, dtype=float).reshape(()))


class RadiomicsError(InputError):
    """pyradiomics rejected the region (e.g. fewer voxels than its minimum)."""


def _radiomics_features(image: sitk.Image, binary: sitk.Image, params: Path,
                        progress: Progress) -> dict[str, float]:
    """All enabled pyradiomics features, diagnostics dropped, as Python floats."""
    extractor = _make_extractor(params, progress)
    try:
        raw = extractor.execute(image, binary, label=1)
    except (ValueError, AssertionError, RuntimeError) as error:
        raise RadiomicsError(None, f"radiomics failed: {_one_line(error)}") from error
    return {name: _as_float(value) for name, value in raw.items()
            if not name.startswith("diagnostics_")}


def measure(image: sitk.Image, mask: sitk.Image, radiomics: bool = True,
            params: str | Path | None = None,
            progress: Progress | None = None) -> dict[str, float | int | str]:
    """Volume (and radiomics) of the liver ``mask`` (non-zero voxels) on ``image``.

    Returns an ordered dict: ``volume_ml``, ``voxel_count``, then, when ``radiomics``,
    every feature as ``original_<class>_<feature>``. ``params`` overrides the bundled
    pyradiomics YAML. ``progress(fraction, stage)`` is called at start and end at least.
    Raises InputError when the grids differ, the mask is empty, or pyradiomics rejects
    the region (e.g. too small).
    """
    report = progress or (lambda fraction, stage: None)
    report(0.0, "volume")
    _check_inputs(image, mask)
    binary = _binary_mask(mask)
    count = _voxel_count(binary)
    if count == 0:
        raise InputError(None, "mask is empty: no liver voxels")
    row: dict[str, float | int | str] = {
        "volume_ml": count * float(np.prod(mask.GetSpacing())) / 1000.0,
        "voxel_count": count,
    }
    if radiomics:
        report(_RADIOMICS_START, "radiomics")
        binary.CopyInformation(image)  # grids match within tolerance: make them identical
        # sitk.Cast copies even to the same pixel type; a float32 image needs no copy.
        floating = image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)
        path = Path(params) if params is not None else radiomics_params_path()
        if not path.is_file():
            raise InputError(path, "radiomics parameter file not found")
        row.update(_radiomics_features(floating, binary, path, report))
    report(1.0, "radiomics" if radiomics else "volume")
    return row


def measure_keeping_volume(image: sitk.Image, mask: sitk.Image, radiomics: bool = True,
                           progress: Progress | None = None) -> tuple[dict[str, float | int | str], list[str]]:
    """:func:`measure`, and the warnings to record: where pyradiomics rejects the region
    (say a liver of a few slices), the volume is still measured and a warning says why the
    features are missing, instead of losing the whole case."""
    try:
        return measure(image, mask, radiomics=radiomics, progress=progress), []
    except RadiomicsError as error:
        values = measure(image, mask, radiomics=False, progress=progress)
        return values, [f"no radiomics features ({error.cause}); the volume is measured"]


# --------------------------------------------------------------------------- columns

_FIXED_COLUMNS = {
    "volume_ml": ("mL", "Liver volume: mask voxel count x voxel volume on the image's native grid"),
    "voxel_count": ("voxels", "Number of liver (non-zero) mask voxels on the image's native grid"),
}
_CLASS_TITLES = {
    "shape": "3D shape", "firstorder": "First-order intensity", "glcm": "GLCM texture",
    "glrlm": "GLRLM texture", "glszm": "GLSZM texture", "gldm": "GLDM texture",
    "ngtdm": "NGTDM texture",
}
_SHAPE_UNITS = {
    "MeshVolume": "mm³", "VoxelVolume": "mm³", "SurfaceArea": "mm²", "SurfaceVolumeRatio": "1/mm",
    "Maximum3DDiameter": "mm", "Maximum2DDiameterSlice": "mm", "Maximum2DDiameterColumn": "mm",
    "Maximum2DDiameterRow": "mm", "MajorAxisLength": "mm", "MinorAxisLength": "mm",
    "LeastAxisLength": "mm",
}  # every other shape feature (sphericity, elongation, ...) is a dimensionless ratio
_INTENSITY = "a.u."  # normalized MRI intensity (z-score x normalizeScale)
_FIRSTORDER_UNITS = {
    "Energy": f"{_INTENSITY}²", "TotalEnergy": f"{_INTENSITY}²·mm³", "Variance": f"{_INTENSITY}²",
    "Entropy": "bits", "Uniformity": "", "Skewness": "", "Kurtosis": "",
}  # every other first-order feature is in intensity units
_COLUMN = re.compile(r"^original_([a-z0-9]+)_([A-Za-z0-9]+)$")


def _unit(feature_class: str, feature: str) -> str:
    if feature_class == "shape":
        return _SHAPE_UNITS.get(feature, "")
    if feature_class == "firstorder":
        return _FIRSTORDER_UNITS.get(feature, _INTENSITY)
    return ""  # texture features are dimensionless


def _prose_paragraphs(docstring: str) -> list[str]:
    """Unindented paragraphs of an RST docstring, directive blocks (``.. math::``) skipped."""
    paragraphs, current, in_directive = [], [], False
    for line in inspect.cleandoc(docstring).splitlines() + [""]:
        if line.startswith(".. "):
            in_directive = True
        elif line and not line[0].isspace():
            in_directive = False
        if in_directive or not line.strip() or line[0].isspace():
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line.strip())
    return paragraphs


_LATEX = {r"\leq": "≤", r"\geq": "≥", r"\neq": "≠", r"\textbf": "", r"\textit": "", r"\text": ""}


def _inline_math(latex: str) -> str:
    """Readable text for simple inline LaTeX: '\\textbf{X}' -> 'X', '\\lambda_{a}' -> 'lambda_a'."""
    for command, replacement in _LATEX.items():
        latex = latex.replace(command, replacement)
    return re.sub(r"[{}\\]", "", latex)


def _plain(text: str) -> str:
    """RST/LaTeX markup removed: ':math:`\\textbf{X}`' -> 'X', '10\\ :sup:`th`' -> '10th'."""
    text = re.sub(r"\\ ?:sup:`([^`]*)`", r"\1", text)
    text = re.sub(r":math:`([^`]*)`", lambda m: _inline_math(m.group(1)), text)
    return " ".join(re.sub(r"[`*]", "", text).split())


_NOT_A_DESCRIPTION = ("**", ":math:", "Calculate and return", "Here", "Where", "N.B.", "Note")


def _doc_summary(docstring: str) -> tuple[str, str]:
    """(title, first sentence) of a pyradiomics feature docstring; either may be ''."""
    paragraphs = _prose_paragraphs(docstring)
    title = ""
    if paragraphs and paragraphs[0].startswith("**"):
        title = re.sub(r"^\d+\.\s*", "", paragraphs[0].strip("* "))
    for text in paragraphs:
        if text[0].islower() or text.startswith(_NOT_A_DESCRIPTION):
            continue
        # a sentence ends at '. ' before a capital, unless after an abbreviation (i.e., a.k.a.)
        first = re.split(r"(?<=[A-Za-z0-9)])(?<![a-z]\.[a-z])\.\s+(?=[A-Z])", _plain(text), maxsplit=1)[0]
        return title, first.rstrip(".:") + "."
    return title, ""


def _words(camel: str) -> str:
    """'MeshVolume' -> 'Mesh Volume', 'Maximum3DDiameter' -> 'Maximum 3D Diameter'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z0-9])|(?<=[0-9])(?=[A-Z][a-z])", " ", camel)


@cache
def _feature_doc(feature_class: str, feature: str) -> str | None:
    """The feature's pyradiomics docstring, or None if pyradiomics does not know it."""
    _quiet_radiomics()
    from radiomics import getFeatureClasses

    cls = getFeatureClasses().get(feature_class)
    if cls is None or feature not in cls.getFeatureNames():
        return None
    return getattr(cls, f"get{feature}FeatureValue").__doc__ or ""


def describe_column(name: str) -> tuple[str, str]:
    """(unit, one-line description) of a ``measure`` column; ("", "") if unknown."""
    if name in _FIXED_COLUMNS:
        return _FIXED_COLUMNS[name]
    match = _COLUMN.match(name)
    if not match or match.group(1) not in _CLASS_TITLES:
        return "", ""
    feature_class, feature = match.groups()
    doc = _feature_doc(feature_class, feature)
    if doc is None:
        return "", ""
    name_in_doc, sentence = _doc_summary(doc)
    title = f"{_CLASS_TITLES[feature_class]} feature '{name_in_doc or _words(feature)}'"
    return _unit(feature_class, feature), f"{title}: {sentence}" if sentence else title
