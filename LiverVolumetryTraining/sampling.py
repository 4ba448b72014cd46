"""Per-step training batches drawn from cached network-grid cases.

Two samplers, chosen by the recipe's ``"sampler"``:

* ``"random-patches"`` (the default; recipe "liver-mri"): ``batch_size`` patches per step,
  each from a random case (or phantom), centred on liver with ``positive_fraction``,
  augmented as the recipe says (``augment.py``).
* ``"posneg-epochs"`` (recipe "volumetry-net", Gross et al. 2024): epochs over the training
  volumes, shuffled each epoch, ``volumes_per_batch`` volumes per step; from each volume
  MONAI's ``SpatialPadd`` + ``RandCropByPosNegLabeld`` take ``samples_per_volume`` patches
  with positive:negative centres ``pos_neg`` (3:1).

Under DDP the global batch is split across ranks and each rank draws from its own random
stream (seed + rank); the epoch order is the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from LiverVolumetryLib.errors import LiverVolumetryError

from .augment import augment, cut, patch_window
from .dataset import CachedCase
from .distributed import split_count, split_items


def iterations_per_epoch(recipe: dict, train_count: int) -> int:
    """Steps in one pass over ``train_count`` volumes (last batch may be smaller)."""
    return max(1, math.ceil(train_count / int(recipe["volumes_per_batch"])))


def total_iterations(recipe: dict, train_count: int, iterations: int | None = None,
                     epochs: int | None = None) -> int:
    """Training steps: ``iterations`` if given, else ``epochs`` (or the recipe's) in steps."""
    if iterations is not None:
        return int(iterations)
    epoch_based = "volumes_per_batch" in recipe
    if epochs is not None:
        if not epoch_based:
            raise LiverVolumetryError(f"recipe {recipe.get('name', '?')!r} counts iterations, not epochs: "
                                      "use --iterations")
        return int(epochs) * iterations_per_epoch(recipe, train_count)
    if epoch_based and "epochs" in recipe:
        return int(recipe["epochs"]) * iterations_per_epoch(recipe, train_count)
    return int(recipe["iterations"])


def _stack(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack(images)[:, None].astype(np.float32, copy=False))
    y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
    return x, y


class RandomPatchSampler:
    """The "liver-mri" sampler: random cases, liver-centred or random patches, augmentation."""

    def __init__(self, recipe: dict, cases: Sequence[CachedCase], phantoms: Sequence[CachedCase],
                 rng: np.random.Generator, count: int):
        self.recipe, self.cases, self.phantoms, self.rng, self.count = recipe, cases, phantoms, rng, count
        self.patch = tuple(recipe["patch_size"])

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` patches (N, 1, x, y, z) and labels; ``iteration`` is not used."""
        recipe, rng = self.recipe, self.rng
        images, labels = [], []
        for _ in range(self.count):
            pool = self.phantoms if self.phantoms and rng.random() < recipe.get("phantom_fraction", 0) else self.cases
            case = pool[rng.integers(len(pool))]
            window = patch_window(case.label, self.patch, rng.random() < recipe["positive_fraction"], rng)
            img = cut(case.image, window, self.patch, float(case.image.min()), np.float32)
            lab = cut(case.label, window, self.patch, 0, np.uint8)
            tissues = None  # other labelled organs: remapped on their own, or extra targets
            if case.tissues is not None and (recipe.get("organ_tissues") or recipe.get("organ_targets")):
                tissues = cut(case.tissues, window, self.patch, 0, np.uint8)
            if recipe.get("organ_targets") and tissues is not None:
                # Kidneys, spleen... as classes 2..n+1: the network must learn what they are.
                lab, tissues = np.where(tissues > 0, tissues + 1, lab).astype(np.uint8), None
            img, lab = augment(img, lab, rng, recipe.get("augmentation", "none"), tissues)
            images.append(img)
            labels.append(lab)
        return _stack(images, labels)


def posneg_patches(case: CachedCase, patch_size: Sequence[int], samples: int, pos: float, neg: float,
                   state: np.random.RandomState) -> list[tuple[np.ndarray, np.ndarray]]:
    """``samples`` (image, label) patches of ``patch_size`` from one case, MONAI-style.

    The volume is first padded to at least ``patch_size`` (``SpatialPadd``, symmetric; the
    image with its darkest value, i.e. air, as the engine pads sliding windows; the label
    with 0); each patch centre is a liver voxel with probability pos / (pos + neg), else a
    background voxel (``RandCropByPosNegLabeld``), shifted inwards so the patch fits.
    """
    from monai.transforms import RandCropByPosNegLabeld, SpatialPadd

    size = tuple(int(s) for s in patch_size)
    # Applied one by one, not in a monai Compose: Compose re-seeds its random transforms
    # from an unseeded stream, which would make a run's patches irreproducible.
    crop = RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=size, pos=pos, neg=neg,
                                  num_samples=samples)
    crop.set_random_state(state=state)
    data = SpatialPadd(keys="image", spatial_size=size, value=float(case.image.min()))(
        {"image": case.image[None], "label": case.label[None]})
    out = crop(SpatialPadd(keys="label", spatial_size=size, value=0)(data))
    return [(np.asarray(p["image"])[0], np.asarray(p["label"])[0]) for p in out]


class PosNegEpochSampler:
    """The "volumetry-net" sampler: shuffled epochs over volumes, pos:neg patch centres."""

    def __init__(self, recipe: dict, cases: Sequence[CachedCase], seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        self.recipe, self.cases, self.seed = recipe, list(cases), seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = iterations_per_epoch(recipe, len(self.cases))
        # Own stream per rank; re-derived on resume so a resumed run does not repeat patches.
        state_seed = int(np.random.SeedSequence([seed + rank, start]).generate_state(1)[0])
        self.state = np.random.RandomState(state_seed)

    def volumes(self, iteration: int) -> list[int]:
        """Indices of this rank's volumes at ``iteration`` (same epoch order on every rank)."""
        epoch, step = divmod(iteration, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.cases))
        per_step = int(self.recipe["volumes_per_batch"])
        return [int(i) for i in split_items(list(order[step * per_step:(step + 1) * per_step]),
                                            self.rank, self.world_size)]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches of this rank's volumes: (volumes x samples_per_volume, 1, x, y, z)."""
        pos, neg = self.recipe["pos_neg"]
        images, labels = [], []
        for index in self.volumes(iteration):
            for img, lab in posneg_patches(self.cases[index], self.recipe["patch_size"],
                                           int(self.recipe["samples_per_volume"]), pos, neg, self.state):
                images.append(img)
                labels.append(lab)
        return _stack(images, labels)


def build_sampler(recipe: dict, cases: Sequence[CachedCase], phantoms: Sequence[CachedCase], seed: int,
                  rank: int = 0, world_size: int = 1, start: int = 0):
    """The recipe's sampler for this rank, positioned for a run starting at ``start``."""
    kind = recipe.get("sampler", "random-patches")
    if kind == "posneg-epochs":
        return PosNegEpochSampler(recipe, cases, seed, rank, world_size, start)
    if kind == "random-patches":
        rng = np.random.default_rng(seed + rank) if start == 0 else np.random.default_rng([seed + rank, start])
        return RandomPatchSampler(recipe, cases, phantoms, rng, split_count(recipe["batch_size"], rank, world_size))
    raise ValueError(f"unknown sampler {kind!r}")
