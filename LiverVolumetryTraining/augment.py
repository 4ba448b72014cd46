"""Patch sampling and augmentation on network-grid arrays (x, y, z).

Intensity augmentations aim at contrast robustness: the real labelled cases are T2, the
product serves portal-venous T1, so the network must not learn one sequence's contrast.
No left-right flips: the liver's side is anatomical information.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def patch_window(label: np.ndarray, size: tuple[int, int, int], positive: bool,
                 rng: np.random.Generator) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source and destination slices of a patch centred on a liver voxel (``positive``) or
    anywhere; the patch may reach past the borders (the destination is then partial)."""
    if positive and label.any():
        coords = np.flatnonzero(label)
        centre = np.unravel_index(coords[rng.integers(coords.size)], label.shape)
    else:
        centre = tuple(int(rng.integers(s)) for s in label.shape)
    src, dst = [], []
    for c, s, n in zip(centre, size, label.shape):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    return tuple(src), tuple(dst)


def cut(array: np.ndarray, window: tuple[tuple[slice, ...], tuple[slice, ...]], size: tuple[int, int, int],
        fill: float, dtype) -> np.ndarray:
    """The patch of ``array`` in ``window`` (from :func:`patch_window`), padded with ``fill``."""
    src, dst = window
    out = np.full(size, fill, dtype=dtype)
    out[dst] = array[src]
    return out


def sample_patch(image: np.ndarray, label: np.ndarray, size: tuple[int, int, int], positive: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch centred on a liver voxel (``positive``) or anywhere; padded at the borders
    with the image's darkest value (air)."""
    window = patch_window(label, size, positive, rng)
    return cut(image, window, size, float(image.min()), np.float32), cut(label, window, size, 0, np.uint8)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth random multiplicative field (low-resolution noise, upsampled)."""
    coarse = np.exp(rng.normal(0.0, strength, size=(3, 3, 3))).astype(np.float32)
    # Trilinear upsampling as separable per-axis interpolation (cheap on big patches).
    axes = [np.interp(np.linspace(0, 2, n), [0, 1, 2], [0, 1, 2]) for n in shape]
    i, j, k = (np.clip(a.astype(int), 0, 1) for a in axes)
    fi, fj, fk = (a - b for a, b in zip(axes, (i, j, k)))
    field = coarse
    field = field[i] * (1 - fi)[:, None, None] + field[i + 1] * fi[:, None, None]
    field = field[:, j] * (1 - fj)[None, :, None] + field[:, j + 1] * fj[None, :, None]
    field = field[:, :, k] * (1 - fk)[None, None, :] + field[:, :, k + 1] * fk[None, None, :]
    return field.astype(np.float32)


def remap_tissues(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, classes: int = 5,
                  tissues: np.ndarray | None = None) -> np.ndarray:
    """SynthSeg-style contrast randomisation: intensity clusters and the liver get new means.

    Unlabelled tissue is grouped into intensity clusters (quantiles); each cluster, the
    liver and each other labelled structure in ``tissues`` (1..n, e.g. kidneys and
    spleen) receive a random mean while keeping within-tissue texture, so that no organ
    can be told from the liver by its brightness alone. ``label``: 1 = liver; values
    above 1 (organ targets) count as further structures too.
    """
    if label.max() > 1:
        organs = np.where(label > 1, label - 1, 0).astype(np.uint8)
        tissues = organs if tissues is None else np.maximum(tissues, organs)
    edges = np.quantile(image, np.linspace(0, 1, classes + 1)[1:-1])
    clusters = np.digitize(image, edges).astype(np.int16)
    extra = 0
    if tissues is not None and tissues.any():
        extra = int(tissues.max())
        inside = tissues > 0
        clusters[inside] = classes + tissues[inside].astype(np.int16)
    clusters[label == 1] = classes  # the liver is its own class
    total = classes + 1 + extra
    means = rng.uniform(-1.0, 1.0, size=total).astype(np.float32)
    centres = np.array([image[clusters == k].mean() if (clusters == k).any() else 0 for k in range(total)],
                       dtype=np.float32)
    texture = rng.uniform(0.3, 1.2)
    return means[clusters] + texture * (image - centres[clusters])


def add_distractors(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint 1-3 random homogeneous ellipsoids (cyst- or fluid-like) outside the liver of a
    patch that shows liver (returns a new float32 array; the label is unchanged).

    A large bright structure elsewhere in the body (a renal cyst, ascites) can make an
    instance-normalised network lose the whole liver; these teach it not to. Their level
    keeps clear of the patch's liver (at least 1 above or below its median, mostly above,
    as fluid is on T2), so that no flat region as bright as the liver is taught as
    background. Either way the phantoms' smooth livers lost about 0.035 Dice in fold 0,
    which is why no named recipe uses this yet (README, "Large cysts beside the liver").
    """
    img = image.astype(np.float32, copy=True)
    liver = label == 1
    if not liver.any():
        return img
    level_liver = float(np.median(img[liver]))
    body = np.flatnonzero(img > -0.25)  # centres in the body, not in air (near -0.5 after scaling)
    grid = np.ogrid[tuple(slice(0, n) for n in img.shape)]
    for _ in range(int(rng.integers(1, 4))):
        centre = np.unravel_index(body[rng.integers(body.size)], img.shape) if body.size else \
            [rng.uniform(0, n) for n in img.shape]
        radii = rng.uniform(8, 40, size=3)  # voxels: 16-80 mm on the 2 mm grid
        inside = (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1.0) & ~liver
        if not inside.any():
            continue
        if rng.random() < 0.7 or level_liver - 1.0 <= -0.5:
            level = level_liver + rng.uniform(1.0, 5.0)
        else:
            level = rng.uniform(-0.5, level_liver - 1.0)
        noise = rng.standard_normal(int(inside.sum())).astype(np.float32)
        img[inside] = np.float32(level) + np.float32(rng.uniform(0.0, 0.15)) * noise
    return img


# Probability of each augmentation, per named strength. "strong" randomises contrast hard
# (tissue remapping, inversion); "mild" keeps the image's contrast mostly intact and
# converges within a few thousand CPU iterations.
PROBABILITIES = {
    "strong": {"spatial": 0.3, "resolution": 0.2, "remap": 0.25, "invert": 0.15, "gamma": 0.4, "bias": 0.4,
               "contrast": 0.5, "blur": 0.2, "noise": 0.3, "distract": 0.0},
    "mild": {"spatial": 0.2, "resolution": 0.1, "remap": 0.05, "invert": 0.0, "gamma": 0.3, "bias": 0.3,
             "contrast": 0.3, "blur": 0.1, "noise": 0.2, "distract": 0.0},
}


def augment_intensity(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                      p: dict[str, float] = PROBABILITIES["strong"]) -> np.ndarray:
    """Random contrast changes of a normalised patch (returns a new float32 array)."""
    img = image.astype(np.float32, copy=True)
    if rng.random() < p["remap"]:
        img = remap_tissues(img, label, rng)
    if rng.random() < p["invert"]:
        img = -img
    if rng.random() < p["gamma"]:  # gamma on the patch's own range
        lo, hi = img.min(), img.max()
        if hi > lo:
            unit = (img - lo) / (hi - lo)
            img = unit ** np.float32(np.exp(rng.uniform(-0.7, 0.7))) * (hi - lo) + lo
    if rng.random() < p["bias"]:
        img *= _smooth_field(img.shape, rng, 0.3)
    if rng.random() < p["contrast"]:
        img = img * np.float32(rng.uniform(0.7, 1.4)) + np.float32(rng.uniform(-0.3, 0.3))
    if rng.random() < p["blur"]:
        img = ndimage.gaussian_filter(img, sigma=rng.uniform(0.3, 1.2)).astype(np.float32)
    if rng.random() < p["noise"]:
        img += rng.normal(0.0, rng.uniform(0.01, 0.1), size=img.shape).astype(np.float32)
    return img


def augment_resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate thick slices: blur and subsample along one axis, then interpolate back."""
    axis = int(rng.integers(3))
    factor = rng.uniform(1.5, 4.0)
    sigma = [0.0, 0.0, 0.0]
    sigma[axis] = factor / 2.5
    blurred = ndimage.gaussian_filter(image, sigma)
    zoom = [1.0, 1.0, 1.0]
    zoom[axis] = 1.0 / factor
    small = ndimage.zoom(blurred, zoom, order=1)
    back = ndimage.zoom(small, [o / s for o, s in zip(image.shape, small.shape)], order=1)
    out = np.empty_like(image)
    out[...] = back[: image.shape[0], : image.shape[1], : image.shape[2]]
    return out


def augment_spatial(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Small random rotation (about the cranio-caudal axis) and isotropic scaling."""
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.88, 1.12)
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) / scale
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre
    img = ndimage.affine_transform(image, matrix, offset, order=1, mode="nearest")
    lab = ndimage.affine_transform(label, matrix, offset, order=0, mode="constant")
    return img.astype(np.float32), lab


def probabilities(kind: str | dict) -> dict[str, float]:
    """Probabilities for a recipe's ``augmentation``: a name ('mild', 'strong') or a dict
    ``{"base": NAME, "remap": 0.3, ...}`` that overrides some of a named set."""
    if isinstance(kind, dict):
        spec = dict(kind)
        base = spec.pop("base", "mild")
        unknown = set(spec) - set(PROBABILITIES[base])
        if unknown:
            raise ValueError(f"unknown augmentation(s) {sorted(unknown)} (known: {sorted(PROBABILITIES[base])})")
        return {**PROBABILITIES[base], **{k: float(v) for k, v in spec.items()}}
    return PROBABILITIES[kind]


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, kind: str | dict,
            tissues: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The augmentation named in a recipe: 'none', 'mild', 'strong' or a dict (:func:`probabilities`).

    ``tissues``: other labelled structures of the patch (see :func:`remap_tissues`); the
    tissue remapping runs first, while they still line up with the patch.
    """
    if kind == "none":
        return image, label
    p = probabilities(kind)
    if rng.random() < p["remap"]:
        image = remap_tissues(image, label, rng, tissues=tissues)
    p = {**p, "remap": 0.0}
    if rng.random() < p["spatial"]:
        image, label = augment_spatial(image, label, rng)
    if rng.random() < p["resolution"]:
        image = augment_resolution(image, rng)
    if p["distract"] > 0 and rng.random() < p["distract"]:  # no draw when off: older runs replay exactly
        image = add_distractors(image, label, rng)
    return augment_intensity(image, label, rng, p), label
