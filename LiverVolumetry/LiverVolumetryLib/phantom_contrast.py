"""MR contrast of the synthetic phantom: tissue appearance table and signal model.

The renderer in ``phantom.py`` paints every voxel with an appearance class (fat, muscle,
liver, lesion rim, ...). This module turns those classes into MR intensities for one of
the ``CONTRASTS``:

- ``t1_portal_venous``: fat-saturated T1 gradient echo in the portal-venous phase after
  gadolinium (enhancing vessels, spleen slightly brighter than liver, dark fat).
- ``t2``: T2-weighted, with or without fat saturation (fluid, spleen and lesions bright).
- ``t1_in_phase`` and ``t1_opposed_phase``: the two echoes of an unenhanced dual-echo T1
  gradient echo without fat saturation (as CHAOS "T1-DUAL"). Each class has a fat
  fraction; the in-phase echo sees water + fat, the opposed-phase echo |water - fat|.
  Partial volume mixes water and fat signals at fat/water boundaries, which cancel
  there in opposed phase ("India ink" rims), and a fatty liver (steatosis, a random
  liver fat fraction of 0-0.2 per case) loses signal in opposed phase. Both echoes of
  one seed share every random draw, so they are two echoes of one acquisition.

Intensities are relative to liver parenchyma = 1 before per-case jitter, texture,
partial-volume blur, bias field, Rician noise and a random global scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONTRASTS: tuple[str, ...] = ("t1_portal_venous", "t2", "t1_in_phase", "t1_opposed_phase")

# Appearance classes: name -> (tissue label, T1 portal-venous, T2, T1 in-phase (unenhanced,
# no fat saturation), fat fraction, texture amplitude). The liver's fat fraction is drawn
# per case (steatosis); the spleen's T1 values are drawn per case too (see _values).
_APPEARANCE: dict[str, tuple[int, float, float, float, float, float]] = {
    "air": (0, 0.0, 0.0, 0.0, 0.0, 0.0), "gas": (0, 0.03, 0.03, 0.02, 0.0, 0.5),
    "lung": (12, 0.08, 0.06, 0.05, 0.0, 0.4), "fat": (9, 0.32, 0.85, 1.6, 0.9, 0.06),
    "muscle": (10, 0.5, 0.45, 0.65, 0.0, 0.05), "heart": (11, 1.5, 0.7, 0.6, 0.0, 0.08),
    "bowel_wall": (11, 1.05, 0.95, 0.8, 0.0, 0.08), "bowel_fluid": (11, 0.35, 2.0, 0.3, 0.0, 0.12),
    "stomach_wall": (11, 1.1, 0.9, 0.8, 0.0, 0.05), "liver": (1, 1.0, 1.0, 1.0, 0.0, 0.03),
    "lesion_hypo": (2, 0.45, 2.2, 0.6, 0.0, 0.06), "lesion_rim": (2, 1.2, 1.3, 0.8, 0.0, 0.05),
    "lesion_hyper": (3, 1.45, 1.9, 1.1, 0.0, 0.04), "vessel": (4, 1.65, 1.6, 0.55, 0.0, 0.03),
    "spleen": (5, 1.12, 1.7, 0.75, 0.0, 0.03), "kidney_cortex": (6, 1.7, 1.5, 0.8, 0.0, 0.03),
    "kidney_medulla": (6, 1.25, 2.0, 0.6, 0.0, 0.04), "kidney_sinus": (6, 0.35, 0.9, 1.3, 0.6, 0.08),
    "marrow": (7, 0.7, 0.75, 1.2, 0.5, 0.08), "cortical_bone": (7, 0.12, 0.1, 0.1, 0.0, 0.05),
    "disc": (11, 0.6, 1.4, 0.5, 0.0, 0.05), "csf": (11, 0.25, 2.6, 0.25, 0.0, 0.03),
    "blood": (8, 1.8, 1.2, 0.5, 0.0, 0.03), "gallbladder": (13, 0.2, 2.8, 0.35, 0.0, 0.02),
}
_C = {name: code for code, name in enumerate(_APPEARANCE)}
_COLUMN = {"t1_portal_venous": 1, "t2": 2, "t1_in_phase": 3, "t1_opposed_phase": 3}
LIVER_FAT_RANGE = (0.0, 0.2)  # random liver fat fraction (steatosis) of the dual-echo contrasts


def _values(contrast: str, rng: np.random.Generator,
            liver_fat: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-case intensity of each appearance class and, for dual-echo T1, its fat fraction."""
    col = _COLUMN[contrast]
    vals = np.array([v[col] for v in _APPEARANCE.values()], np.float32)
    vals *= rng.uniform(0.9, 1.1, len(_C)).astype(np.float32)
    vals[_C["liver"]] = 1.0
    if col == 1:
        vals[_C["spleen"]] = rng.uniform(1.03, 1.2)
    elif col == 2:  # with or without fat saturation
        vals[_C["fat"]] = rng.uniform(0.3, 0.9)
    if col != 3:
        return vals, None
    vals[_C["spleen"]] = rng.uniform(0.65, 0.9)
    fat = np.array([v[4] for v in _APPEARANCE.values()], np.float32)
    fat = np.minimum(fat * rng.uniform(0.9, 1.1, len(_C)).astype(np.float32), 1.0)
    drawn = rng.uniform(*LIVER_FAT_RANGE)  # drawn even when overridden: same stream either way
    fat[_C["liver"]] = drawn if liver_fat is None else liver_fat
    return vals, fat


def _blur(img: np.ndarray) -> np.ndarray:
    """Partial-volume blur (half a voxel)."""
    return ndimage.gaussian_filter(img, 0.5, truncate=2.5)


def _signal(app: np.ndarray, contrast: str, rng: np.random.Generator, spacing: np.ndarray,
            liver_fat: float | None = None) -> np.ndarray:
    """MR intensities: tissue values with texture, partial-volume blur, bias, Rician noise, scale.

    ``app`` holds appearance codes (numpy order k, j, i), ``spacing`` the grid spacing
    (i, j, k) in mm; ``liver_fat`` overrides the random liver fat fraction (dual-echo only).
    """
    vals, fat = _values(contrast, rng, liver_fat)
    amp = np.array([v[5] for v in _APPEARANCE.values()], np.float32)
    tex = rng.standard_normal(app.shape, dtype=np.float32)
    tex = ndimage.gaussian_filter(tex, np.maximum(1.5 / spacing[::-1], 0.4), truncate=3.0)
    tex /= max(float(tex[::2, ::3, ::3].std()), 1e-6)
    s = vals[app] * (1 + amp[app] * tex)  # in-phase signal: water + fat
    img = _blur(s)  # W + F summed over each voxel's partial-volume neighbourhood
    if contrast == "t1_opposed_phase":
        # F = blurred fat signal, i.e. W + F times the blurred (signal-weighted) fat fraction;
        # water and fat cancel in the magnitude image |W - F|.
        img = np.abs(img - 2 * _blur(s * fat[app]))
    elif contrast == "t1_in_phase":
        img = np.abs(img)  # magnitude image, like the opposed-phase echo
    bias = [np.polynomial.polynomial.polyval(np.linspace(-1, 1, n), [0, *rng.uniform(-0.1, 0.1, 2)]).astype(np.float32)
            for n in app.shape]
    img *= np.exp(bias[0][:, None, None] + bias[1][None, :, None] + bias[2][None, None, :])
    sigma = np.float32(rng.uniform(0.02, 0.06))
    n1 = rng.standard_normal(app.shape, dtype=np.float32)
    n2 = rng.standard_normal(app.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    return img * np.float32(rng.uniform(100, 2000))
