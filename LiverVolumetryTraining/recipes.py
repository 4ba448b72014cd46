"""Named training recipes: network, preprocessing, patches, optimiser, augmentation.

A recipe is plain data so that it can be recorded verbatim in the model bundle. A recipe
may also be given as a JSON file: ``{"base": "volumetry-net", ...}`` overrides the named
recipe's fields (nested dicts are merged), e.g. a smaller network for a smoke test.

Recipes:

* ``liver-mri``: the project's recipe (counted in iterations; own patch sampler and
  augmentation, phantoms; two stages, see ``expand_stages``): 5,500 + 1,200 iterations,
  about 70 minutes on a 2-core CPU; the bundled ``liver-mri-v2`` was trained with it.
* ``liver-mri-quick``: the same at 1,800 + 600 iterations (about 30 minutes), for
  experiments; 0.036 lower cross-validated Dice on the shared cases.
* ``volumetry-net``: the published Volumetry-Net recipe (Gross et al., Eur Radiol 2024):
  MONAI UNet (16-32-64-128, 2 residual units, batch norm, dropout 0.3), RAS 2 mm,
  25-75 percentile scaling, 64x64x32 patches from ``SpatialPadd`` +
  ``RandCropByPosNegLabeld`` (pos:neg 3:1, 2 per volume), 16 volumes per step, Dice
  loss, Adam 1e-4, no augmentation, 1000 epochs (an epoch is one pass over the training
  volumes, ceil(volumes / 16) steps); the last checkpoint is exported. Full run on the 14
  shared CHAOS T2 cases (3 held out for validation)::

      livervolumetry-train train --recipe volumetry-net --data /work/shared/data/chaos-t2 \\
          --run runs/volumetry-net --phantoms 0 --validate-every 50
      livervolumetry-train export runs/volumetry-net -o models/volumetry-net --name volumetry-net \\
          --checkpoint last

  With 11 training volumes an epoch is one step of 22 patches: about 7 s on a busy 2-core
  CPU (plus ~6 s per validation of 3 cases), i.e. roughly 2 hours for 1000 epochs. On
  several GPUs (the global batch of 16 volumes is split across the processes; torchrun's
  own ``--run-path`` option makes ``--run`` ambiguous there, so write ``--run-dir``)::

      torchrun --nproc_per_node=4 -m LiverVolumetryTraining.cli train --recipe volumetry-net \\
          --data /work/shared/data/chaos-t2 --run-dir runs/volumetry-net --phantoms 0

  ``--epochs N`` or ``--iterations N`` shorten a run (e.g. ``--iterations 2`` as a smoke test);
  ``--device auto|cpu|cuda`` (auto: CUDA when available); ``--no-progress`` hides the bar.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from LiverVolumetryLib.errors import InputError, LiverVolumetryError

from .recipe_check import check_recipe_values

_PAPER_PREPROCESSING = {
    "orientation": "RAS",
    "spacing_mm": [2.0, 2.0, 2.0],
    "intensity": {"method": "percentile", "lower": 25.0, "upper": 75.0, "b_min": -0.5, "b_max": 0.5, "clip": False},
}

RECIPES: dict[str, dict] = {
    # The project's recipe: a deeper UNet, Dice + cross-entropy, patches spanning the whole
    # axial field of view (160 x 2 mm = 32 cm, the left/right context that 96-voxel
    # patches lacked: false positives on the opposite body wall), mild augmentation and
    # phantoms in four MR contrasts, in two stages: 160x160x32 patches from random weights,
    # then 160x160x64 patches at a fifth of the learning rate. Measured on held-out CHAOS
    # cases on the 2-core CPU (tables in the README and the bundled model's card):
    # * Contrast ablation (800 iterations, fold 0: held-out cases 1, 8, 15, 21, 36, plus
    #   unseen phantoms of four contrasts): mild augmentation and phantoms in four
    #   contrasts lift T1-like phantoms from 0.08-0.62 to 0.79-0.84. Tissue remapping did
    #   not help. Case 15 (an unusually dark liver) and case 36 (a 1.4 L cyst beside an
    #   ordinary liver) fail when held out: the network segments something else.
    # * Kidneys and spleen as extra output classes (``organ_targets``, 3,000 iterations,
    #   fold 0): case 36 0.000 -> 0.764 but unseen phantoms 0.80-0.85 instead of
    #   0.83-0.92, and the loss converges more slowly; not in the recipe. ``out_channels``
    #   then follows the data (2 + the number of other labelled structures).
    # * Batch norm instead of instance norm solved case 15 but fell to 0.53-0.58 on unseen
    #   phantoms: running statistics learnt on T2 patches do not fit other contrasts.
    # * The second stage on 64-slice patches: held-out Dice 0.878 -> 0.905 for the shipped
    #   model's lineage, and the network can then run as one window over the body
    #   (``max_window_voxels``, ``crop_to_body``) at equal Dice: 0.31 s instead of 0.74 s.
    # * 3-fold cross-validation on the 14 shared cases (README), without cases 15 and 36
    #   (both in one fold: Dice 0): 0.912 +- 0.023 out of fold at 5,500 + 1,200
    #   iterations (volume ICC 0.89), 0.876 +- 0.035 at 1,800 + 600 (``liver-mri-quick``,
    #   0.75); threshold 0.7 chosen on the other folds in both (+0.012 over 0.5 for the
    #   shorter run).
    # * Distractor augmentation (cyst-like blobs outside the liver, fold 0): case 36 0.000
    #   -> 0.85 and a synthetic 70 mm cyst 0.00 -> 0.84-0.92, but unseen phantoms about
    #   0.035 lower in two variants; not in the recipe (README, "Large cysts").
    # For comparison, the paper's volumetry-net recipe on the v1 split reached 0.877
    # (0.914, 0.797, 0.919) through the engine after its 1,000 epochs (23 min of CPU).
    "liver-mri": {
        "network": {"class": "UNet", "args": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "instance", "dropout": 0.0}},
        "preprocessing": _PAPER_PREPROCESSING,
        "patch_size": [160, 160, 32],
        "batch_size": 2,
        "positive_fraction": 0.5,
        "loss": "dice_ce",
        "optimizer": {"name": "AdamW", "lr": 1e-3, "weight_decay": 1e-5},
        "schedule": "cosine",
        "iterations": 5500,
        "augmentation": "mild",
        "organ_targets": False,
        "phantom_fraction": 0.15,
        # Phantom contrasts, taken in turn.
        "phantom_contrasts": ["t1_portal_venous", "t1_in_phase", "t1_opposed_phase", "t2"],
        "stages": [
            {"patch_size": [160, 160, 32], "iterations": 5500},
            {"patch_size": [160, 160, 64], "iterations": 1200, "optimizer": {"lr": 2e-4}},
        ],
        "inference": {"roi_size": [224, 224, 128], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian",
                      "threshold": 0.7, "crop_to_body": True, "max_window_voxels": 8_000_000},
    },
    # Gross et al., Eur Radiol 2024 ("Volumetry-Net"), as published; epochs, not iterations.
    "volumetry-net": {
        "network": {"class": "UNet", "args": {
            "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2], "num_res_units": 2, "norm": "batch", "dropout": 0.3}},
        "preprocessing": _PAPER_PREPROCESSING,
        "sampler": "posneg-epochs",
        "patch_size": [64, 64, 32],
        "pos_neg": [3, 1],
        "volumes_per_batch": 16,
        "samples_per_volume": 2,
        "loss": "dice",
        "optimizer": {"name": "Adam", "lr": 1e-4},
        "schedule": "constant",
        "epochs": 1000,
        "augmentation": "none",
        "phantom_count": 0,
        "phantom_fraction": 0.0,
        "inference": {"roi_size": [224, 224, 128], "overlap": 0.25, "sw_batch_size": 4, "mode": "constant",
                      "threshold": 0.5},
    },
}
# ``liver-mri`` at a third of the budget: quicker experiments (the ablations and the first
# cross-validation in the README ran with it, then named ``liver-mri``).
RECIPES["liver-mri-quick"] = {
    **copy.deepcopy(RECIPES["liver-mri"]),
    "iterations": 1800,
    "stages": [
        {"patch_size": [160, 160, 32], "iterations": 1800},
        {"patch_size": [160, 160, 64], "iterations": 600, "optimizer": {"lr": 2e-4}},
    ],
}

# ``liver-mri`` on a 2 x 2 x 4 mm network grid with bfloat16 mixed precision: patches of
# the same physical size hold half the voxels, so training steps take about a third of the
# time, inference about 30 % less, and 8,000 + 1,800 iterations train in about the CPU
# time of liver-mri's 5,500 + 1,200. The z spacing loses nothing on 7.7 mm slices (a label resampled to the
# grid and back keeps Dice 0.99 either way). Cross-validated on the 14 shared cases in
# LiverVolumetryTraining/EXPERIMENTS.md: as good as liver-mri on ordinary livers (0.908
# against 0.912), better on all 14 (0.820 against 0.782), so not the bundled model's.
RECIPES["liver-mri-4mm"] = {
    **copy.deepcopy(RECIPES["liver-mri"]),
    "precision": "bf16",
    "preprocessing": {**copy.deepcopy(_PAPER_PREPROCESSING), "spacing_mm": [2.0, 2.0, 4.0]},
    "patch_size": [160, 160, 16],
    "iterations": 8000,
    "stages": [
        {"patch_size": [160, 160, 16], "iterations": 8000},
        {"patch_size": [160, 160, 32], "iterations": 1800, "optimizer": {"lr": 2e-4}},
    ],
}


def _merge(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s fields; nested dicts merged, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def expand_stages(recipe: dict) -> list[dict]:
    """One full recipe per stage of a staged recipe (``[recipe]`` when it has no stages).

    ``"stages": [{...}, {...}]`` trains one run after another, each stage starting from the
    weights the previous one ended with; a stage's fields override the recipe's (nested
    dicts merged), e.g. small patches and a high learning rate first, then larger patches
    and a low one. The network (and ``organ_targets``) must stay the same across stages.
    """
    stages = recipe.get("stages")
    if not stages:
        return [recipe]
    name = recipe.get("name", "?")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise LiverVolumetryError(f"recipe {name!r}: 'stages' must be a list of objects")
    common = {k: v for k, v in recipe.items() if k != "stages"}
    out = []
    for k, overrides in enumerate(stages):
        if "stages" in overrides:
            raise LiverVolumetryError(f"recipe {name!r}: stage {k + 1} has stages of its own")
        stage = _merge(common, overrides)
        stage["name"] = f"{name} stage {k + 1}/{len(stages)}"
        if "iterations" not in stage and "epochs" not in stage:
            raise LiverVolumetryError(f"recipe {name!r}: stage {k + 1} says neither iterations nor epochs")
        out.append(stage)
    for k, stage in enumerate(out[1:], start=2):
        for key in ("network", "organ_targets"):
            if stage.get(key) != out[0].get(key):
                raise LiverVolumetryError(f"recipe {name!r}: stage {k} changes {key!r}; each stage starts from the "
                                          "weights of the one before, so the network must stay the same")
    return out


#: How each kind of JSON value is named in an error, by :func:`_kind`.
_KIND_NAMES = {"boolean": "true or false", "whole number": "a whole number", "number": "a number", "text": "text",
               "list": "a list", "object": "an object", "null": "null"}
#: Kinds a field may take beyond those in the named recipes (augmentation: a name or probabilities).
_EXTRA_KINDS = {"augmentation": {"object"}, "name": {"text"}, "organ_tissues": {"boolean"}, "stages": {"list"}}


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "whole number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def _field_kinds() -> dict[str, set[str]]:
    """The kinds each field of the named recipes takes, by path ('optimizer.lr', 'patch_size[]')."""
    kinds: dict[str, set[str]] = {key: set(extra) for key, extra in _EXTRA_KINDS.items()}

    def walk(value, path: str) -> None:
        kinds.setdefault(path, set()).add(_kind(value))
        children = value.items() if isinstance(value, dict) else (("[]", v) for v in value) \
            if isinstance(value, list) else ()
        for key, child in children:
            walk(child, path + key if key == "[]" else f"{path}.{key}")

    for recipe in RECIPES.values():
        for key, value in recipe.items():
            if key != "stages":
                walk(value, key)
    return kinds


def check_recipe_types(recipe: dict, where: str | Path) -> None:
    """Refuse a field (of the recipe or of a stage) whose value is of another kind than in
    the named recipes, e.g. ``"lr": "x"``; the InputError names ``where`` and the field."""
    kinds = _field_kinds()

    def walk(value, path: str, shown: str) -> None:
        expected = kinds.get(path)
        kind = _kind(value)
        if expected and kind not in expected and not (kind == "whole number" and "number" in expected):
            wanted = " or ".join(_KIND_NAMES[k] for k in sorted(expected))
            raise InputError(where, f"recipe key {shown!r} must be {wanted}, not {json.dumps(value)}")
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}", f"{shown}.{key}")
        elif isinstance(value, list):
            for number, child in enumerate(value):
                walk(child, f"{path}[]", f"{shown}[{number}]")

    for key, value in recipe.items():
        if key == "stages" and isinstance(value, list):
            for number, stage in enumerate(value, start=1):
                for field, child in (stage.items() if isinstance(stage, dict) else ()):
                    walk(child, field, f"stages[{number}].{field}")
        else:
            walk(value, key, key)


def load_recipe(name_or_path: str) -> dict:
    """A named recipe, or a JSON file (``{"base": NAME, ...overrides}``, or a full recipe)."""
    if name_or_path in RECIPES:
        return get_recipe(name_or_path)
    path = Path(name_or_path)
    if path.suffix.lower() != ".json":
        raise LiverVolumetryError(f"unknown recipe {name_or_path!r} (known: {', '.join(RECIPES)}, or a .json file)")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read recipe ({error})") from None
    if not isinstance(spec, dict):
        raise InputError(path, "a recipe file must hold a JSON object")
    base = spec.pop("base", None)
    if base is None:
        recipe = {"name": path.stem, **spec}
    elif base not in RECIPES:
        raise InputError(path, f"unknown base recipe {base!r} (known: {', '.join(RECIPES)})")
    else:
        recipe = _merge(get_recipe(base), {"name": f"{base}+{path.stem}", **spec})
        if "stages" not in spec and (hidden := _overridden_by_every_stage(spec, recipe.get("stages") or [])):
            raise InputError(path, f"recipe key {hidden!r} is set by each stage of {base!r}, so this value would "
                                   "be ignored: give it in \"stages\" (a list with one object per stage)")
    name = recipe.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[^/\\\x00-\x1f]{1,80}", name):
        raise InputError(path, f"recipe 'name' must be text of 1-80 characters without / or \\, not "
                               f"{json.dumps(name)}")
    check_recipe_types(recipe, path)
    check_recipe_values(recipe, path)
    return recipe


def _overridden_by_every_stage(spec: dict, stages: list) -> str | None:
    """The first key path of ``spec`` (a recipe file's overrides) that every one of
    ``stages`` sets again, e.g. 'patch_size' or 'optimizer.lr'; None when there is none."""
    def leaves(value: dict, prefix: str = ""):
        for key, child in value.items():
            path = f"{prefix}{key}"
            yield from leaves(child, path + ".") if isinstance(child, dict) and child else [path]

    def sets(stage: dict, path: str) -> bool:
        for part in path.split("."):
            if not isinstance(stage, dict) or part not in stage:
                return False
            stage = stage[part]
        return True

    if not stages or not all(isinstance(stage, dict) for stage in stages):
        return None
    return next((path for path in leaves(spec) if all(sets(stage, path) for stage in stages)), None)


def get_recipe(name: str) -> dict:
    """A deep copy of a named recipe (callers may override fields)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return {"name": name, **copy.deepcopy(RECIPES[name])}
