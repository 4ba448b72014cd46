"""Seeded synthetic abdominal MRI volumes with an exactly aligned liver mask.

The anatomy (body wall, lungs and diaphragm, liver with vessels and lesions, spleen,
kidneys, stomach, bowel, spine, great vessels) is a set of implicit shapes defined in
physical patient coordinates (LPS, millimetres: +x patient Left, +y Posterior, +z
Superior). It is drawn from the seed alone and then evaluated at the voxel centres of
the chosen grid, so the same seed gives the same anatomy in physical space whatever the
grid's spacing, orientation or obliquity, and the liver mask always lines up with the
image. Shapes are only evaluated inside their bounding boxes to keep rendering fast.
The anatomy itself lives in ``phantom_anatomy``; this module chooses the grid and renders
the anatomy into appearance classes, which ``phantom_contrast`` turns into MR intensities
of the chosen contrast (``CONTRASTS``). Anatomy, grid and liver mask do not depend on the
contrast: for one seed, only the intensities change.

Used by the tests, the ``livervolumetry demo`` command and as extra training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .phantom_anatomy import (_Anatomy, _Block, _Ellipsoid, _Grid, _dome, _ellipse_q, _liver_room, _make_anatomy,
                              _rotation)
from .phantom_contrast import _APPEARANCE, _C, CONTRASTS, _signal

TISSUE_NAMES: dict[int, str] = {
    0: "air/outside", 1: "liver parenchyma", 2: "liver lesion (hypointense)",
    3: "liver lesion (hyperintense)", 4: "hepatic/portal vessel (intrahepatic)", 5: "spleen",
    6: "kidney", 7: "spine/bone", 8: "aorta/IVC/extrahepatic portal vein",
    9: "fat (subcutaneous and visceral)", 10: "muscle", 11: "other soft tissue/bowel",
    12: "lung", 13: "gallbladder",
}
LIVER_TISSUES: tuple[int, ...] = (1, 2, 3, 4)  # tissue labels making up the liver mask
ORIENTATIONS: tuple[str, ...] = ("LPS", "RAS", "LAS", "RPS", "LPI", "RPI", "RAI", "PIL", "LIP", "RSA")
MAX_RANDOM_VOXELS = 4_000_000

_TISSUE_OF = np.array([v[0] for v in _APPEARANCE.values()], np.uint8)
_LIVER_CODES = [_C[n] for n in ("liver", "vessel", "lesion_hypo", "lesion_rim", "lesion_hyper")]


@dataclass(frozen=True)
class Phantom:
    """One synthetic case; the three images share one grid (origin, spacing, direction)."""

    image: sitk.Image    # float32 MRI intensities (arbitrary global scale)
    liver: sitk.Image    # uint8, 1 = liver incl. intrahepatic vessels and lesions
    tissues: sitk.Image  # uint8 tissue labels, see TISSUE_NAMES


# ----------------------------------------------------------------------------- rendering
def _paint(app: np.ndarray, blk: _Block | None, mask, code: str, only: list[int] | None = None) -> None:
    """Set appearance ``code`` where ``mask`` holds in the block (and the voxel is in ``only``)."""
    if blk is None:
        return
    sub = app[blk.sl]
    if only is not None:
        mask = mask & np.isin(sub, only)
    sub[mask] = _C[code]


def _capsule(g: _Grid, a: np.ndarray, b: np.ndarray, r: float) -> tuple[_Block | None, np.ndarray | None]:
    """Voxels within ``r`` of the segment a-b."""
    blk = g.block(np.minimum(a, b) - r, np.maximum(a, b) + r)
    if blk is None:
        return None, None
    d = b - a
    t = np.clip(blk.lin(d / (d @ d), -(a @ d) / (d @ d)), 0, 1)
    dist2 = np.zeros(blk.shape, np.float32)
    for m in range(3):
        e = np.eye(3)[m]
        w = blk.lin(e, -a[m]) - np.float32(d[m]) * t
        dist2 += w * w
    return blk, dist2 < np.float32(r * r)


def _render(an: _Anatomy, g: _Grid) -> np.ndarray:
    """Appearance codes (numpy order k, j, i) of the anatomy on the grid."""
    app = np.zeros(g.size[::-1], np.uint8)
    full = g.full()
    x, y, z = full.xyz()
    app[_ellipse_q(x, y, an.outer) < 1] = _C["fat"]
    wall = _ellipse_q(x, y, an.muscle) < 1
    app[wall] = _C["muscle"]
    inner = _ellipse_q(x, y, an.inner) < 1
    dome = _dome(an.dome, x, y)
    period, phase, slope, zlow = an.ribs
    rib = np.cos((z - np.float32(slope) * y) * np.float32(2 * np.pi / period) + np.float32(phase)) > 0.75
    app[rib & wall & ~inner & (z > zlow) & ((np.abs(x) > 40) | (y > 0))] = _C["marrow"]
    app[inner & (z < dome - 5)] = _C["fat"]
    app[inner & (z > dome)] = _C["lung"]
    yv = an.spine[0]
    blk = g.block(*an.heart.box())
    if blk is not None:
        _paint(app, blk, (an.heart.q(blk) < 1) & inner[blk.sl] & (z[blk.sl] > dome[blk.sl]), "heart")
    _paint_bowel(app, an, full, inner & (z < dome - 5) & (y < yv - 15))
    _paint_spine(app, an, g, x, y, z, dome)
    for e in an.kidneys:
        blk = g.block(*e.box(12))
        if blk is None:
            continue
        big = _Ellipsoid(e.c, e.rot, e.a + 10)
        _paint(app, blk, big.q(blk) < 1, "fat", only=[_C["fat"], _C["bowel_wall"], _C["bowel_fluid"], _C["gas"]])
        q = e.q(blk)
        hilum = blk.lin(e.rot[:, 0] * np.sign(e.c[0]), -float(e.rot[:, 0] @ e.c) * np.sign(e.c[0]))
        _paint(app, blk, q < 1, "kidney_cortex")
        _paint(app, blk, q < 0.55, "kidney_medulla")
        _paint(app, blk, (q < 0.22) | ((q < 0.6) & (hilum < -0.5 * e.a[0])), "kidney_sinus")
    cav = inner & (z < dome - 6)
    for e, code in ((an.spleen, "spleen"), (an.stomach, "stomach_wall")):
        blk = g.block(*e.box())
        if blk is not None:
            _paint(app, blk, (e.q(blk) < 1) & cav[blk.sl], code)
    blk = g.block(*an.stomach.box())
    if blk is not None:
        e = an.stomach
        inside = (e.q(blk) < 0.7) & cav[blk.sl]
        _paint(app, blk, inside, "bowel_fluid")
        _paint(app, blk, inside & (y[blk.sl] < e.c[1] - 0.6 * e.a[1]), "gas")
    ax, ay, ar = an.aorta
    blk = g.block((ax - ar, ay - ar, -1e4), (ax + ar, ay + ar, 1e4))
    if blk is not None:
        _paint(app, blk, ((x[blk.sl] - ax) ** 2 + (y[blk.sl] - ay) ** 2 < ar * ar) & inner[blk.sl], "blood")
    _paint_liver(app, an, g, cav)
    return app


def _paint_bowel(app: np.ndarray, an: _Anatomy, full: _Block, region: np.ndarray) -> None:
    """Bowel loops (enhancing wall, fluid, gas) separated by mesenteric fat."""
    n1, n2, n3 = (w(full) for w in an.bowel)
    loops = n1 + 0.5 * n3
    _paint(app, full, region & (loops > 0.1), "bowel_wall")
    lumen = region & (loops > 0.45)
    _paint(app, full, lumen, "bowel_fluid")
    _paint(app, full, lumen & (n2 > 0.9), "gas")


def _paint_spine(app, an: _Anatomy, g: _Grid, x, y, z, dome) -> None:
    """Vertebral bodies with discs, canal, posterior arch, paraspinal and psoas muscles."""
    yv, rx, ry, period, phase = an.spine[:5]
    blk = g.block((-70, yv - ry - 5, -1e4), (70, an.outer[2], 1e4))
    if blk is None:
        return
    bx, by, bz = x[blk.sl], y[blk.sl], z[blk.sl]
    in_muscle = _ellipse_q(bx, by, an.muscle) < 1
    kz = an.kidneys[0].c[2]
    for side in (-1, 1):
        _paint(app, blk, (((bx - side * 35) / 26) ** 2 + ((by - yv - ry - 30) / 22) ** 2 < 1) & in_muscle, "muscle")
        rp = np.clip(8 + 0.18 * (kz - bz), 0, 30)
        psoas = (bx - side * (rx + rp * 0.8)) ** 2 + (by - yv + 4) ** 2 < rp * rp
        _paint(app, blk, psoas & (bz < dome[blk.sl] - 20), "muscle")
    q = (bx / rx) ** 2 + ((by - yv) / ry) ** 2
    disc = np.cos(bz * np.float32(2 * np.pi / period) + np.float32(phase)) > 0.72
    _paint(app, blk, q < 1, "cortical_bone")
    _paint(app, blk, (q < 0.75) & ~disc, "marrow")
    _paint(app, blk, (q < 1) & disc, "disc")
    yc = yv + ry + 10
    arch = ((bx / 20) ** 2 + ((by - yc - 4) / 12) ** 2 < 1) | ((bx / 6) ** 2 + ((by - yc - 25) / 16) ** 2 < 1)
    _paint(app, blk, arch, "marrow")
    _paint(app, blk, bx ** 2 + (by - yc) ** 2 < 64, "csf")


def _paint_liver(app: np.ndarray, an: _Anatomy, g: _Grid, cav: np.ndarray) -> None:
    """Liver (overrides neighbours it touches), then IVC and gallbladder carving it, vessels, lesions."""
    blk = g.block(*an.liver.box())
    if blk is not None:
        room = _liver_room(*blk.xyz(), an.inner, an.spine)
        _paint(app, blk, (an.liver.field(blk) < 0) & cav[blk.sl] & room, "liver")
    ix, iy, irx, iry = an.ivc
    blk = g.block((ix - irx, iy - iry, -1e4), (ix + irx, iy + iry, an.dome[1]))
    if blk is not None:
        bx, by, _ = blk.xyz()
        _paint(app, blk, (((bx - ix) / irx) ** 2 + ((by - iy) / iry) ** 2 < 1) & cav[blk.sl], "blood")
    if an.gallbladder is not None:
        blk = g.block(*an.gallbladder.box())
        if blk is not None:
            _paint(app, blk, (an.gallbladder.q(blk) < 1) & cav[blk.sl], "gallbladder")
    blk, m = _capsule(g, *an.portal)
    outside = [c for c in range(len(_C)) if c not in _LIVER_CODES + [_C["cortical_bone"], _C["marrow"]]]
    _paint(app, blk, m, "blood", only=outside)
    for a, b, r in an.vessels:
        blk, m = _capsule(g, a, b, r)
        _paint(app, blk, m, "vessel", only=_LIVER_CODES)
    for e, kind, rim in an.lesions:
        blk = g.block(*e.box())
        if blk is None:
            continue
        q = e.q(blk)
        if kind == "hyper":
            _paint(app, blk, q < 1, "lesion_hyper", only=_LIVER_CODES)
        else:
            _paint(app, blk, q < 1, "lesion_rim" if rim else "lesion_hypo", only=_LIVER_CODES)
            _paint(app, blk, q < (1 - 3.0 / e.a.min()) ** 2, "lesion_hypo", only=_LIVER_CODES)


# ----------------------------------------------------------------------------- grid choice
def _direction(orientation: str) -> np.ndarray:
    o = orientation.upper() if isinstance(orientation, str) else ""
    if len(o) != 3 or sorted(o.translate(str.maketrans("RAI", "LPS"))) != ["L", "P", "S"]:
        raise ValueError(f"orientation must be 3 letters with one of L/R, P/A, S/I each, got {orientation!r}")
    return np.array(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(o), float).reshape(3, 3)


def _make_grid(rng: np.random.Generator, an: _Anatomy, shape, spacing, orientation, oblique) -> _Grid:
    """Grid of the requested (or random) geometry framing the abdomen and the whole liver."""
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))] if orientation is None else orientation
    axis, oblique_draw = rng.normal(size=3), rng.uniform(0, 15) if rng.random() < 0.4 else 0.0
    d = _rotation(axis, oblique_draw if oblique is None else float(oblique)) @ _direction(orientation)
    patient_axis = np.abs(d).argmax(0)
    lr = rng.uniform(350, 420)
    ext = an.liver_pts.max(0) - an.liver_pts.min(0)
    ap = max(lr * rng.uniform(0.75, 1.0), an.outer[1] + an.outer[2] + 20)
    fov = np.array([lr, ap, max(rng.uniform(180, 300), ext[2] + 30)])  # along L, P, S
    for _ in range(100):  # random spacing: redraw until the volume stays under MAX_RANDOM_VOXELS
        in_plane = rng.uniform(0.7, 2.0)
        sp = np.array([in_plane, in_plane, rng.uniform(2, 8)]) if spacing is None else np.asarray(spacing, float)
        size = np.ceil(fov[patient_axis] / sp).astype(int) if shape is None else np.asarray(shape, int)
        if shape is not None or np.prod(size) <= MAX_RANDOM_VOXELS or spacing is not None:
            break
    if shape is None and np.prod(size) > MAX_RANDOM_VOXELS:
        size = np.maximum(np.floor(size * (MAX_RANDOM_VOXELS / np.prod(size)) ** (1 / 3)), 1).astype(int)
    u = an.liver_pts @ d  # liver in grid-axis coordinates
    lo, hi = u.min(0), u.max(0)
    centre = np.array([0.0, (an.outer[2] - an.outer[1]) / 2, (an.liver_pts[:, 2].min() + an.liver_pts[:, 2].max()) / 2])
    c = centre @ d + rng.normal(0, 8, 3)
    half, margin = size * sp / 2, sp + 4  # keep a background voxel around the liver
    low, high = hi - half + margin, lo + half - margin
    c = np.where(low <= high, np.clip(c, low, high), (lo + hi) / 2)
    origin = d @ c - d @ (sp * (size - 1) / 2)
    return _Grid(size, sp, origin, d)


def _check(shape, spacing, contrast: str, liver_fat: float | None) -> None:
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if liver_fat is not None and not 0.0 <= float(liver_fat) <= 1.0:
        raise ValueError(f"liver_fat_fraction must be between 0 and 1, got {liver_fat!r}")
    if shape is not None and (len(shape) != 3 or min(int(s) for s in shape) < 1):
        raise ValueError(f"shape must be 3 positive sizes (i, j, k), got {shape!r}")
    if spacing is not None and (len(spacing) != 3 or not all(float(s) > 0 for s in spacing)):
        raise ValueError(f"spacing must be 3 positive millimetre values, got {spacing!r}")


def make_phantom(seed: int = 0, *, shape: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None, orientation: str | None = None,
                 oblique_degrees: float | None = None, contrast: str = "t1_portal_venous",
                 liver_fat_fraction: float | None = None) -> Phantom:
    """Synthetic abdominal MRI and its liver mask, fully determined by the arguments.

    The anatomy depends on ``seed`` only; geometry arguments left as None are drawn from
    the seed too. ``shape`` and ``spacing`` are in SimpleITK (i, j, k) order; spacing's
    third value is the slice spacing. ``orientation`` is a DICOMOrient code (direction
    each index axis points to, e.g. "LPS", "RAS", "PIL"); ``oblique_degrees`` rotates
    the grid by that angle about a random axis (None: 0-15 degrees in 40 % of seeds).
    ``contrast`` (see ``phantom_contrast``): "t1_portal_venous" (fat-saturated T1,
    portal-venous phase), "t2", or the two echoes of an unenhanced dual-echo T1 gradient
    echo without fat saturation (CHAOS T1-DUAL): "t1_in_phase" (water + fat) and
    "t1_opposed_phase" (|water - fat|: dark rims at fat/water boundaries, signal drop of
    a fatty liver). The anatomy, grid and liver mask of a seed are the same for every
    contrast, and the two echoes of a seed share all random draws (one acquisition).
    ``liver_fat_fraction`` sets the liver's fat fraction for the dual-echo contrasts
    (None: drawn from the seed in ``phantom_contrast.LIVER_FAT_RANGE``, 0-0.2; other
    contrasts ignore it).
    """
    _check(shape, spacing, contrast, liver_fat_fraction)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    an = _make_anatomy(np.random.default_rng([int(seed), 1]))
    g = _make_grid(np.random.default_rng([int(seed), 2]), an, shape, spacing, orientation, oblique_degrees)
    app = _render(an, g)
    img = _signal(app, contrast, np.random.default_rng([int(seed), 3]), g.spacing, liver_fat_fraction)
    tissues = _TISSUE_OF[app]
    liver = np.isin(tissues, LIVER_TISSUES).astype(np.uint8)
    out = []
    for arr in (img, liver, tissues):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing([float(v) for v in g.spacing])
        im.SetOrigin([float(v) for v in g.origin + an.offset])
        im.SetDirection([float(v) for v in g.direction.ravel()])
        out.append(im)
    return Phantom(*out)
