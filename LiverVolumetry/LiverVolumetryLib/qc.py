"""Quality-control picture: the liver contour over the image, for a quick visual check.

A 2 x 4 montage: six axial slices spread over the liver's cranio-caudal extent (cranial
first) and two coronal slices through the liver, in radiological convention (axial:
patient's right on the picture's left, anterior up; coronal: superior up, patient's
right on the left), with the physical aspect ratio of the voxels. Matplotlib is used
through its Agg canvas directly, so the global matplotlib backend is never changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import OutputError
from .outputs import LIVER_COLOR_RGB

_N_AXIAL = 6
_N_CORONAL = 2
_GRID = (2, 4)
_FIGSIZE_IN = (16.0, 8.6)
_DPI = 100
_MAX_PERCENTILE_SAMPLES = 1_000_000
_BACKGROUND = "black"
_TEXT = "#e8e8e8"
_WARNING = "#ffb000"


@dataclass(frozen=True)
class _Panel:
    """One 2D picture: slice pixels (row 0 at the top), its mask, pixel size and labels."""

    pixels: np.ndarray
    mask: np.ndarray
    pixel_size: tuple[float, float]  # (width, height) of one pixel in mm
    label: str
    corners: tuple[str, str, str]  # letters for the left, right and top edges


# ------------------------------------------------------------------ volume handling


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True when both images have the same voxel grid in physical space."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )


def _lps_images(image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Float32 image and uint8 0/1 mask on the image grid, both reoriented to LPS.

    In their [z, y, x] arrays x then runs to the patient's left, y to posterior and z to
    superior (oblique grids: approximately, to the closest such axes).
    """
    if not _same_grid(image, mask):
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    image_lps = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    mask_lps = sitk.DICOMOrient(sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8), "LPS")
    return image_lps, mask_lps


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Display window: the 1st and 99th percentiles of the (subsampled) finite intensities."""
    flat = volume.ravel()
    step = max(1, flat.size // _MAX_PERCENTILE_SAMPLES)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, [1, 99]))
    return (low, high) if high > low else (low, low + 1.0)


def _spread(first: int, last: int, count: int) -> list[int]:
    """``count`` indices spread evenly inside [first, last], ends slightly inset."""
    if last <= first:
        return [first] * count
    positions = np.linspace(first, last, count + 2)[1:-1] if count > 1 else [(first + last) / 2]
    return [int(round(p)) for p in positions]


def _axial_indices(mask: np.ndarray) -> list[int]:
    """z indices of the axial slices, cranial (high z in LPS) first."""
    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    first, last = (occupied[0], occupied[-1]) if occupied.size else (0, mask.shape[0] - 1)
    return sorted(_spread(int(first), int(last), _N_AXIAL), reverse=True)


def _coronal_indices(mask: np.ndarray) -> list[int]:
    """y indices of the coronal slices: through the liver's anterior and posterior parts."""
    per_row = mask.sum(axis=(0, 2)).astype(float)
    if per_row.sum() == 0:
        return _spread(0, mask.shape[1] - 1, _N_CORONAL)
    cumulative = np.cumsum(per_row) / per_row.sum()
    fractions = np.linspace(0, 1, _N_CORONAL + 2)[1:-1]
    return [int(np.searchsorted(cumulative, f)) for f in fractions]


def _physical(image_lps: sitk.Image, axis: int, index: int) -> float:
    """LPS coordinate ``axis`` (mm) of the centre of the slice ``index`` along that axis."""
    centre = [(n - 1) / 2 for n in image_lps.GetSize()]
    centre[axis] = index
    return float(image_lps.TransformContinuousIndexToPhysicalPoint(centre)[axis])


def _panels(image: sitk.Image, mask: sitk.Image) -> tuple[list[_Panel], tuple[float, float], bool]:
    """The montage's panels in display order, the intensity window, and whether any liver."""
    image_lps, mask_lps = _lps_images(image, mask)
    # Views into the images (no volume copies); each panel copies its own slice.
    volume = sitk.GetArrayViewFromImage(image_lps)
    liver = sitk.GetArrayViewFromImage(mask_lps)
    sx, sy, sz = image_lps.GetSpacing()
    panels = []
    for z in _axial_indices(liver):
        label = f"axial  z = {round(_physical(image_lps, 2, z))} mm"
        panels.append(_Panel(volume[z].copy(), liver[z] > 0, (sx, sy), label, ("R", "L", "A")))
    for y in _coronal_indices(liver):
        label = f"coronal  y = {round(_physical(image_lps, 1, y))} mm"
        panels.append(_Panel(volume[::-1, y, :].copy(), liver[::-1, y, :] > 0, (sx, sz), label, ("R", "L", "S")))
    return panels, _window(volume), bool(liver.any())


# ------------------------------------------------------------------------- drawing


def _draw_panel(ax, panel: _Panel, window: tuple[float, float]) -> None:
    """Draw one slice with the liver fill and contour; axes in mm, aspect 1:1."""
    rows, cols = panel.pixels.shape
    width, height = cols * panel.pixel_size[0], rows * panel.pixel_size[1]
    extent = (0.0, width, height, 0.0)
    ax.imshow(panel.pixels, cmap="gray", vmin=window[0], vmax=window[1], extent=extent,
              interpolation="bilinear", origin="upper")
    color = np.array(LIVER_COLOR_RGB) / 255.0
    if panel.mask.any():
        fill = np.zeros((rows, cols, 4))
        fill[panel.mask] = (*color, 0.22)
        ax.imshow(fill, extent=extent, interpolation="nearest", origin="upper")
        xs = (np.arange(cols) + 0.5) * panel.pixel_size[0]
        ys = (np.arange(rows) + 0.5) * panel.pixel_size[1]
        ax.contour(xs, ys, panel.mask.astype(float), levels=[0.5], colors=[color], linewidths=1.3)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_facecolor(_BACKGROUND)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(panel.label, color=_TEXT, fontsize=10)
    style = {"color": "#ffd24d", "fontsize": 11, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.01, 0.5, panel.corners[0], ha="left", va="center", **style)
    ax.text(0.99, 0.5, panel.corners[1], ha="right", va="center", **style)
    ax.text(0.5, 0.99, panel.corners[2], ha="center", va="top", **style)


def _figure(panels: list[_Panel], window: tuple[float, float], title: str, warnings: Sequence[str] = ()):
    """The matplotlib figure (Agg canvas attached) of the montage; ``warnings`` go under the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGSIZE_IN, dpi=_DPI, facecolor=_BACKGROUND)
    FigureCanvasAgg(figure)
    axes = figure.subplots(*_GRID)
    for ax, panel in zip(axes.ravel(), panels):
        _draw_panel(ax, panel, window)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title, color=_TEXT, fontsize=15)
    if warnings:
        figure.text(0.5, 0.935, "Check: " + " | ".join(warnings), color=_WARNING, fontsize=10, ha="center",
                    va="center", wrap=True)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.91, wspace=0.03, hspace=0.12)
    return figure


def _check_3d(image: sitk.Image, what: str, path: Path) -> None:
    """Raise OutputError unless ``image`` is a 3D single-component image."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise OutputError(path, f"QC picture needs a 3D single-component {what}")


def write_qc_png(
    image: sitk.Image,
    mask: sitk.Image,
    path: str | os.PathLike,
    title: str = "",
    overwrite: bool = True,
    warnings: Sequence[str] = (),
) -> Path:
    """Write the QC montage of ``image`` with the liver ``mask`` outlined as a PNG.

    ``title`` (e.g. case name and volume) heads the picture; an empty mask adds
    "no liver found"; ``warnings`` (plausibility findings) are printed under the title.
    The mask may be on another grid (it is resampled onto the image's). Returns the
    written path.
    """
    path = Path(path)
    _check_3d(image, "image", path)
    _check_3d(mask, "mask", path)
    panels, window, has_liver = _panels(image, mask)
    if not has_liver:
        title = f"{title}  —  no liver found" if title else "no liver found"
    figure = _figure(panels, window, title, warnings)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            figure.savefig(tmp, format="png", dpi=_DPI, facecolor=_BACKGROUND, pil_kwargs={"compress_level": 3})
        except (OSError, ValueError) as error:
            raise OutputError(path, f"cannot write the QC picture ({error})") from None
    return path
