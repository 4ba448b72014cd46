"""Patch sampling and augmentation on network-grid arrays (x, y, z).

Intensity augmentations aim at contrast robustness: the real labelled cases are T2, the
product serves portal-venous T1, so the network must not learn one sequence's contrast.
No left-right flips: the liver's side is anatomical information.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def sample_patch(image: np.ndarray, label: np.ndarray, size: tuple[int, int, int], positive: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch centred on a liver voxel (``positive``) or anywhere; padded at the borders."""
    if positive and label.any():
        coords = np.flatnonzero(label)
        centre = np.unravel_index(coords[rng.integers(coords.size)], label.shape)
    else:
        centre = tuple(int(rng.integers(s)) for s in image.shape)
    pad_value = float(image.min())
    out_img = np.full(size, pad_value, dtype=np.float32)
    out_lab = np.zeros(size, dtype=np.uint8)
    src, dst = [], []
    for c, s, n in zip(centre, size, image.shape):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out_img[tuple(dst)] = image[tuple(src)]
    out_lab[tuple(dst)] = label[tuple(src)]
    return out_img, out_lab


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth random multiplicative field (low-resolution noise, upsampled)."""
    coarse = rng.normal(0.0, strength, size=(3, 3, 3))
    field = ndimage.zoom(coarse, [s / 3 for s in shape], order=3, mode="nearest")
    return np.exp(field[: shape[0], : shape[1], : shape[2]]).astype(np.float32)


def remap_tissues(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, classes: int = 5) -> np.ndarray:
    """SynthSeg-style contrast randomisation: intensity clusters and the liver get new means.

    Unlabelled tissue is grouped into intensity clusters (quantiles); each cluster and the
    liver receive a random mean while keeping within-tissue texture.
    """
    edges = np.quantile(image, np.linspace(0, 1, classes + 1)[1:-1])
    clusters = np.digitize(image, edges).astype(np.int16)
    clusters[label > 0] = classes  # the liver is its own class
    means = rng.uniform(-1.0, 1.0, size=classes + 1).astype(np.float32)
    centres = np.array([image[clusters == k].mean() if (clusters == k).any() else 0 for k in range(classes + 1)],
                       dtype=np.float32)
    texture = rng.uniform(0.3, 1.2)
    return means[clusters] + texture * (image - centres[clusters])


def augment_intensity(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast changes of a normalised patch (returns a new float32 array)."""
    img = image.astype(np.float32, copy=True)
    if rng.random() < 0.25:
        img = remap_tissues(img, label, rng)
    if rng.random() < 0.15:
        img = -img
    if rng.random() < 0.4:  # gamma on the patch's own range
        lo, hi = img.min(), img.max()
        if hi > lo:
            unit = (img - lo) / (hi - lo)
            img = unit ** np.float32(np.exp(rng.uniform(-0.7, 0.7))) * (hi - lo) + lo
    if rng.random() < 0.4:
        img *= _smooth_field(img.shape, rng, 0.3)
    if rng.random() < 0.5:
        img = img * np.float32(rng.uniform(0.7, 1.4)) + np.float32(rng.uniform(-0.3, 0.3))
    if rng.random() < 0.2:
        img = ndimage.gaussian_filter(img, sigma=rng.uniform(0.3, 1.2)).astype(np.float32)
    if rng.random() < 0.3:
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


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The augmentation named in a recipe ('none' or 'contrast_robust')."""
    if kind == "none":
        return image, label
    if rng.random() < 0.3:
        image, label = augment_spatial(image, label, rng)
    if rng.random() < 0.2:
        image = augment_resolution(image, rng)
    return augment_intensity(image, label, rng), label
