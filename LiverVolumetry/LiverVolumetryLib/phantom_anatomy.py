"""Anatomy of the synthetic abdominal MRI phantom: organ shapes in physical coordinates.

Everything here is drawn from a seeded random generator and defined in physical patient
coordinates (LPS, millimetres: +x patient Left, +y Posterior, +z Superior), independent
of any voxel grid. ``_make_anatomy`` draws one patient (body wall, diaphragm, spine,
great vessels, kidneys, spleen, stomach, heart, gallbladder, liver with vessel trees and
lesions, bowel fields). The geometry helpers (``_Grid``, ``_Block``) evaluate affine
functions of position at voxel centres, so shapes can be rendered on any grid, only
inside their bounding boxes. Rendering and MRI signal live in ``phantom.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


# ----------------------------------------------------------------------------- geometry
class _Block:
    """A box of voxels of a grid; ``lin`` evaluates affine functions of position there."""

    def __init__(self, axes: np.ndarray, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        self.sl = tuple(slice(int(lo[m]), int(hi[m]) + 1) for m in (2, 1, 0))
        self.shape = tuple(int(hi[m] - lo[m]) + 1 for m in (2, 1, 0))
        self._axes, self._o = axes, origin + axes @ lo
        self._r = [np.arange(int(hi[m] - lo[m]) + 1, dtype=np.float32) for m in range(3)]

    def lin(self, v, c: float = 0.0) -> np.ndarray:
        """``v . p + c`` at every voxel centre p (numpy order k, j, i), float32."""
        v = np.asarray(v, float)
        a = self._axes.T @ v
        ci, cj, ck = (np.float32(a[m]) * self._r[m] for m in range(3))
        return (ck[:, None, None] + (cj[:, None] + np.float32(v @ self._o + c))) + ci

    def xyz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.lin((1, 0, 0)), self.lin((0, 1, 0)), self.lin((0, 0, 1))


@dataclass(frozen=True)
class _Grid:
    """Voxel grid: size (i, j, k), spacing, origin and direction (columns = index axes)."""

    size: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    @property
    def axes(self) -> np.ndarray:
        return self.direction * self.spacing[None, :]

    def block(self, lo, hi) -> _Block | None:
        """Voxels whose centres may lie in the physical box [lo, hi]; None when none do."""
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        idx = np.linalg.solve(self.axes, (corners - self.origin).T).T
        i0 = np.maximum(np.floor(idx.min(0)), 0).astype(int)
        i1 = np.minimum(np.ceil(idx.max(0)), self.size - 1).astype(int)
        return None if np.any(i0 > i1) else _Block(self.axes, self.origin, i0, i1)

    def full(self) -> _Block:
        return _Block(self.axes, self.origin, np.zeros(3, int), self.size - 1)


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K


def _rot_xyz(dx: float, dy: float, dz: float) -> np.ndarray:
    return _rotation((0, 0, 1), dz) @ _rotation((0, 1, 0), dy) @ _rotation((1, 0, 0), dx)


@dataclass(frozen=True)
class _Ellipsoid:
    """Rotated ellipsoid: centre ``c``, local axes = columns of ``rot``, half-axes ``a``."""

    c: np.ndarray
    rot: np.ndarray
    a: np.ndarray

    def q(self, blk: _Block) -> np.ndarray:
        """Normalised squared radius (1 on the surface)."""
        out = np.zeros(blk.shape, np.float32)
        for m in range(3):
            v = self.rot[:, m] / self.a[m]
            u = blk.lin(v, -float(v @ self.c))
            out += u * u
        return out

    def box(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        h = np.sqrt(((self.rot * self.a[None, :]) ** 2).sum(1)) + margin
        return self.c - h, self.c + h

    def scaled(self, s: float, about: np.ndarray) -> _Ellipsoid:
        return _Ellipsoid(about + s * (self.c - about), self.rot, self.a * s)


@dataclass(frozen=True)
class _Waves:
    """Smooth random field: a sum of plane waves in physical coordinates."""

    k: np.ndarray      # (n, 3) wave vectors, rad/mm
    phase: np.ndarray  # (n,)
    amp: np.ndarray    # (n,)

    @staticmethod
    def random(rng: np.random.Generator, n: int, lam_lo: float, lam_hi: float, std: float) -> _Waves:
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = rng.uniform(lam_lo, lam_hi, n)
        return _Waves(d * (2 * np.pi / lam)[:, None], rng.uniform(0, 2 * np.pi, n), np.full(n, std * math.sqrt(2 / n)))

    def __call__(self, blk: _Block) -> np.ndarray:
        out = np.zeros(blk.shape, np.float32)
        for k, p, a in zip(self.k, self.phase, self.amp):
            out += np.float32(a) * np.cos(blk.lin(k, p))
        return out

    def scaled(self, s: float, about: np.ndarray) -> _Waves:
        return _Waves(self.k / s, self.phase + (self.k @ about) * (1 - 1 / s), self.amp)


@dataclass(frozen=True)
class _Liver:
    """Smooth union of ellipsoids deformed by a smooth field; negative inside."""

    parts: tuple[_Ellipsoid, ...]
    waves: _Waves
    tau: float = 0.12

    def field(self, blk: _Block) -> np.ndarray:
        acc = np.zeros(blk.shape, np.float32)
        for e in self.parts:
            acc += np.exp((1 - np.sqrt(e.q(blk))) / np.float32(self.tau))
        return -np.float32(self.tau) * np.log(acc + np.float32(1e-30)) + self.waves(blk)

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        boxes = [e.box(15.0) for e in self.parts]
        return np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)

    def scaled(self, s: float, about: np.ndarray) -> _Liver:
        return _Liver(tuple(e.scaled(s, about) for e in self.parts), self.waves.scaled(s, about), self.tau)


# ----------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class _Anatomy:
    """Everything drawn from the seed; lengths in mm, positions relative to ``offset``."""

    offset: np.ndarray
    outer: np.ndarray    # body ellipse half-axes (lateral, anterior, posterior)
    muscle: np.ndarray   # outer edge of the muscle wall
    inner: np.ndarray    # abdominal/thoracic cavity
    dome: tuple[float, ...]  # xR, zR, xL, zL, y0, kx, k_ant, k_post (two paraboloid domes)
    spine: tuple[float, ...]  # y of vertebral body, rx, ry, disc period, phases (disc, 2 x liver room)
    ribs: tuple[float, ...]   # period, phase, anterior slope, lowest z
    aorta: tuple[float, ...]  # x, y, r
    ivc: tuple[float, ...]    # x, y, rx, ry
    kidneys: tuple[_Ellipsoid, ...]
    spleen: _Ellipsoid
    stomach: _Ellipsoid
    heart: _Ellipsoid
    gallbladder: _Ellipsoid | None
    liver: _Liver
    liver_pts: np.ndarray  # (n, 3) liver points on a 4 mm lattice, for framing the grid
    vessels: tuple[tuple[np.ndarray, np.ndarray, float], ...]
    portal: tuple[np.ndarray, np.ndarray, float]
    lesions: tuple[tuple[_Ellipsoid, str, bool], ...]
    bowel: tuple[_Waves, _Waves, _Waves]


def _ellipse_q(x: np.ndarray, y: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Axial body-shaped ellipse (different anterior/posterior half-depths), 1 on the edge."""
    b = np.where(y < 0, np.float32(half[1]), np.float32(half[2]))
    return (x / np.float32(half[0])) ** 2 + (y / b) ** 2


def _dome(d: tuple[float, ...], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the diaphragm above (x, y): right and left domes joined by the central tendon."""
    xr, zr, xl, zl, y0, kx, ka, kp = (np.float32(v) for v in d)
    yy = np.where(y < y0, ka, kp) * (y - y0) ** 2
    centre = np.float32(0.5) * (zr + zl) - np.float32(0.3) * kx * (x - np.float32(0.5) * (xr + xl)) ** 2
    return np.maximum(np.maximum(zr - kx * (x - xr) ** 2, zl - kx * (x - xl) ** 2), centre) - yy


def _liver_room(x: np.ndarray, y: np.ndarray, z: np.ndarray, inner: np.ndarray, spine: tuple) -> np.ndarray:
    """Where the liver may be: in the body cavity, anterior/lateral to spine and great vessels."""
    yv, ph1, ph2 = np.float32(spine[0]), np.float32(spine[5]), np.float32(spine[6])
    ax = np.float32(45) + np.float32(8) * np.cos(z * np.float32(2 * np.pi / 110) + ph1)
    ay = np.float32(40) + np.float32(8) * np.cos(z * np.float32(2 * np.pi / 80) + ph2)
    return (_ellipse_q(x, y, inner) < 1) & ((x / ax) ** 2 + ((y - yv - np.float32(10)) / ay) ** 2 > 1)


def _coarse_liver(liver: _Liver, inner: np.ndarray, spine: tuple) -> np.ndarray:
    """Liver points (n, 3) on a 4 mm axis-aligned lattice, clipped to the room it has."""
    lo, hi = liver.box()
    size = np.ceil((hi - lo) / 4.0).astype(int) + 1
    blk = _Grid(size, np.full(3, 4.0), lo, np.eye(3)).full()
    x, y, z = blk.xyz()
    inside = (liver.field(blk) < 0) & _liver_room(x, y, z, inner, spine)
    return np.stack([x[inside], y[inside], z[inside]], 1).astype(float)


def _tree(rng, a, d, r: float, length: float, depth: int, out: list) -> None:
    """Append a randomly branching vessel tree of capsules (start, end, radius) to ``out``."""
    d = np.asarray(d, float) / np.linalg.norm(d)
    b = a + d * length
    out.append((a, b, r))
    if depth > 0 and r > 1.2:
        for _ in range(2):
            child = d + rng.normal(0, 0.6, 3)
            _tree(rng, b, child, r * rng.uniform(0.6, 0.8), length * rng.uniform(0.6, 0.85), depth - 1, out)


def _make_liver(rng, inner: np.ndarray, spine: tuple) -> tuple[_Liver, np.ndarray, float]:
    """Liver of plausible volume in the right upper abdomen, its lattice points and scale."""
    u = rng.uniform
    ai, bi = inner[0], inner[1]
    c0 = np.array([-ai * u(0.45, 0.55), -bi * u(0.0, 0.15), 0.0])
    parts = [
        _Ellipsoid(c0, _rot_xyz(*rng.normal(0, 8, 3)), np.array([u(55, 70), u(65, 80), u(65, 85)])),
        _Ellipsoid(np.array([c0[0] + u(70, 100), -bi * u(0.35, 0.55), u(10, 30)]), _rot_xyz(0, u(-20, 5), u(-25, 5)),
                   np.array([u(50, 75), u(25, 40), u(28, 42)])),
        _Ellipsoid(c0 + [u(30, 50), -u(10, 30), u(0, 15)], np.eye(3), np.array([u(35, 50), u(35, 50), u(45, 60)])),
    ]
    if rng.random() < 0.5:  # Riedel-like inferior extension of the right lobe
        parts.append(_Ellipsoid(c0 + [-u(5, 20), u(0, 20), -u(45, 70)], np.eye(3),
                                np.array([u(25, 35), u(35, 50), u(35, 50)])))
    liver = _Liver(tuple(parts), _Waves.random(rng, 8, 40, 160, 0.06))
    target, s = u(1000, 2450) * 1000.0, 1.0
    for _ in range(3):  # scale about the right-lobe centre until the volume hits the target
        pts = _coarse_liver(liver.scaled(s, c0), inner, spine)
        s *= (target / max(len(pts) * 64.0, 1.0)) ** (1 / 3)
    liver = liver.scaled(s, c0)
    return liver, _coarse_liver(liver, inner, spine), s


def _make_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient's anatomy."""
    u = rng.uniform
    outer = np.array([u(140, 175), u(95, 125), 0.0])
    outer[2] = outer[1] * u(0.85, 1.0)
    tf = u(8, 30)
    muscle = outer - tf * np.array([1.0, u(0.5, 1.0), u(0.5, 0.9)])
    inner = muscle - np.array([u(8, 14), u(6, 10), 6.0])
    yv = inner[2] - u(50, 60)
    spine = (yv, u(18, 24), u(14, 19), u(28, 36), *u(0, 2 * np.pi, 3))
    liver, pts, s = _make_liver(rng, inner, spine)
    c0 = liver.parts[0].c
    top = pts[:, 2].max()
    zr = top + u(3, 10)
    dome = (c0[0], zr, inner[0] * u(0.35, 0.5), zr - u(5, 25), -0.1 * inner[1],
            u(0.005, 0.009), u(0.002, 0.004), u(0.008, 0.012))
    ribs = (u(30, 40), u(0, 2 * np.pi), u(0.3, 0.7), c0[2] - u(40, 70) * s)
    aorta = (u(8, 20), yv - u(25, 35), u(9, 13))
    ivc = (-u(15, 25), yv - u(15, 25), u(10, 15), u(8, 12))
    zs = dome[3] - u(45, 65)
    spleen = _Ellipsoid(np.array([inner[0] * u(0.5, 0.65), inner[2] * u(0.1, 0.4), zs]), _rot_xyz(0, 0, u(-50, -25)),
                        np.array([u(20, 30), u(45, 65), u(40, 55)]))
    kid = []
    for side, zk in ((-1, c0[2] - u(45, 75)), (1, zs - u(40, 60))):
        kid.append(_Ellipsoid(np.array([side * u(50, 70), yv + u(-5, 15), zk]),
                              _rot_xyz(0, -side * u(5, 20), side * u(20, 40)),
                              np.array([u(24, 30), u(20, 26), u(48, 60)])))
    stomach = _Ellipsoid(np.array([inner[0] * u(0.2, 0.4), -inner[1] * u(0.05, 0.3), dome[3] - u(50, 80)]),
                         _rot_xyz(0, 0, u(20, 50)), np.array([u(30, 45), u(28, 40), u(40, 60)]))
    heart = _Ellipsoid(np.array([u(0, 30), -0.3 * inner[1], zr + u(30, 60)]), _rot_xyz(0, 0, u(-30, 0)),
                       np.array([u(55, 70), u(45, 60), u(50, 65)]))
    gb = None
    if rng.random() < 0.85:
        gb = _Ellipsoid(np.array([c0[0] + u(20, 45) * s, -inner[1] * u(0.3, 0.5), c0[2] - u(30, 55) * s]),
                        _rot_xyz(u(10, 40), 0, u(-20, 20)), np.array([u(12, 20), u(25, 40), u(12, 20)]))
    hilum = c0 + np.array([35.0, 15.0, -15.0]) * s
    vessels: list = []
    for d, length in (((-1, 0.1, 0.25), 40), ((1, -0.7, 0.3), 50)):
        _tree(rng, hilum, d, u(4.5, 6.5), length * s, 4, vessels)
    hv_root = np.array([ivc[0], ivc[1] - 5, top - 20])
    for d in ((-1, -0.3, -0.3), (-0.2, -1, -0.3), (0.6, -1, 0.0)):
        _tree(rng, hv_root, d, u(4, 6), 45 * s, 3, vessels)
    portal = (np.array([u(0, 15), yv - 45, hilum[2] - 50]), hilum, u(6, 8))
    lesions = []
    dist = _lattice_depth(pts)
    for _ in range(int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15]))):
        r = math.exp(u(math.log(5), math.log(25)))
        kind, rim = ("hypo", bool(rng.random() < 0.5)) if rng.random() < 0.6 else ("hyper", False)
        cand = np.flatnonzero(dist > r + 4)
        if len(cand):
            c = pts[cand[rng.integers(len(cand))]]
            lesions.append((_Ellipsoid(c, _rot_xyz(*u(0, 180, 3)), r * u(0.8, 1.2, 3)), kind, rim))
    bowel = tuple(_Waves.random(rng, n, lo, hi, 1.0) for n, lo, hi in ((8, 30, 70), (4, 40, 100), (6, 60, 150)))
    offset = np.array([u(-20, 20), u(-20, 20), u(-150, 150)])
    return _Anatomy(offset, outer, muscle, inner, dome, spine, ribs, aorta, ivc, tuple(kid), spleen, stomach, heart, gb,
                    liver, pts, tuple(vessels), portal, tuple(lesions), bowel)


def _lattice_depth(pts: np.ndarray) -> np.ndarray:
    """Distance (mm) from each 4 mm lattice point to the outside of the point set."""
    idx = np.round((pts - pts.min(0)) / 4.0).astype(int)
    vol = np.zeros(idx.max(0) + 3, bool)
    vol[tuple((idx + 1).T)] = True
    return ndimage.distance_transform_edt(vol, sampling=4.0)[tuple((idx + 1).T)]
