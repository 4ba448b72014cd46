"""Named training recipes: network, preprocessing, patches, optimiser, augmentation.

A recipe is plain data so that it can be recorded verbatim in the model bundle.
"""

from __future__ import annotations

import copy

_PAPER_PREPROCESSING = {
    "orientation": "RAS",
    "spacing_mm": [2.0, 2.0, 2.0],
    "intensity": {"method": "percentile", "lower": 25.0, "upper": 75.0, "b_min": -0.5, "b_max": 0.5, "clip": False},
}

RECIPES: dict[str, dict] = {
    # The project's recipe: a deeper UNet with instance normalisation (robust to the
    # intensity shifts between MRI sequences), Dice + cross-entropy, larger patches for
    # context, and intensity/contrast augmentation so the network does not learn one
    # sequence's contrast.
    "liver-mri": {
        "network": {"class": "UNet", "args": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "instance", "dropout": 0.1}},
        "preprocessing": _PAPER_PREPROCESSING,
        "patch_size": [96, 96, 64],
        "batch_size": 2,
        "positive_fraction": 0.67,
        "loss": "dice_ce",
        "optimizer": {"name": "AdamW", "lr": 1e-3, "weight_decay": 1e-5},
        "schedule": "cosine",
        "iterations": 6000,
        "augmentation": "contrast_robust",
        "phantom_fraction": 0.25,
        "inference": {"roi_size": [160, 160, 128], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian", "threshold": 0.5},
    },
}


def get_recipe(name: str) -> dict:
    """A deep copy of a named recipe (callers may override fields)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return copy.deepcopy(RECIPES[name])
