"""Checks of a recipe file's keys and values, before any work.

:func:`check_recipe_values` refuses, in one line naming the file and the key, what the
trainer would otherwise ignore (a misspelt key) or fail on only after preprocessing, as a
traceback (an unknown loss, optimiser, sampler or augmentation; a learning rate of 0; a
patch the network cannot take). It checks each stage of a staged recipe as trained.
The kinds of the values (number, text, list) are checked by
:func:`.recipes.check_recipe_types` first.
"""

from __future__ import annotations

import math
from pathlib import Path

from LiverVolumetryLib.errors import InputError

#: Keys a recipe may hold beyond those of the named recipes.
_OPTIONAL_KEYS = {"name", "stages", "precision", "organ_tissues", "organ_targets", "sampler", "phantom_count",
                  "epochs", "iterations", "pos_neg", "volumes_per_batch", "samples_per_volume", "batch_size",
                  "positive_fraction"}
#: Keys of the nested objects the trainer reads (network "args" go to the network class).
_NESTED_KEYS = {"network": {"class", "args"}, "optimizer": {"name", "lr", "weight_decay"},
                "preprocessing": {"orientation", "spacing_mm", "intensity"},
                "preprocessing.intensity": {"method", "lower", "upper", "b_min", "b_max", "clip"},
                "inference": {"roi_size", "overlap", "sw_batch_size", "mode", "threshold", "crop_to_body",
                              "max_window_voxels"}}
_CHOICES = {"loss": ("dice", "dice_ce"), "schedule": ("cosine", "constant"),
            "sampler": ("random-patches", "posneg-epochs"), "precision": ("fp32", "bf16"),
            "inference.mode": ("gaussian", "constant")}
#: Keys each sampler needs.
_SAMPLER_KEYS = {"random-patches": ("batch_size", "positive_fraction", "patch_size"),
                 "posneg-epochs": ("volumes_per_batch", "samples_per_volume", "pos_neg", "patch_size")}


#: Training grid spacings (mm) that fit in memory and still show a liver: a 0.5 mm grid
#: of a 40 cm abdomen is already 8e8 voxels; above 16 mm the liver is a few voxels wide.
_SPACING_RANGE_MM = (0.5, 16.0)


def _known_keys() -> set[str]:
    from .recipes import RECIPES

    return {key for recipe in RECIPES.values() for key in recipe} | _OPTIONAL_KEYS


def _whole(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def _problem(recipe: dict) -> str | None:
    """The first problem of one (stage's) recipe, as 'key ...: why', or None."""
    from .augment import PROBABILITIES

    unknown = sorted(set(recipe) - _known_keys())
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))}"
    missing = [k for k in ("network", "preprocessing", "inference", "optimizer", "loss") if k not in recipe]
    if missing:
        return f"lacks {', '.join(map(repr, missing))} (give \"base\": a named recipe, to take the rest from it)"
    for path, allowed in _NESTED_KEYS.items():
        value = recipe
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict) and (extra := sorted(set(value) - allowed)):
            return f"unknown key(s) {', '.join(repr(f'{path}.{k}') for k in extra)}"
    inference = recipe.get("inference", {})
    for key, choices in _CHOICES.items():
        where, name = (inference, key.split(".")[1]) if key.startswith("inference.") else (recipe, key)
        if name in where and where[name] not in choices:
            return f"{key!r} must be one of {', '.join(choices)}, not {where[name]!r}"
    sampler = recipe.get("sampler", "random-patches")
    missing = [k for k in _SAMPLER_KEYS[sampler] if k not in recipe]
    if missing:
        return f"sampler {sampler!r} needs {', '.join(map(repr, missing))}"
    if "iterations" not in recipe and not ("epochs" in recipe and "volumes_per_batch" in recipe):
        return "says neither 'iterations' nor (for the posneg-epochs sampler) 'epochs'"
    for key, least in (("batch_size", 1), ("volumes_per_batch", 1), ("samples_per_volume", 1), ("iterations", 1),
                       ("epochs", 1), ("phantom_count", 0)):
        if key in recipe and not _whole(recipe[key], least):
            return f"{key!r} must be a whole number of at least {least}, not {recipe[key]!r}"
    for key in ("positive_fraction", "phantom_fraction"):
        if key in recipe and not _number(recipe[key], 0.0, 1.0):
            return f"{key!r} must lie between 0 and 1, not {recipe[key]!r}"
    pos_neg = recipe.get("pos_neg", [1, 1])
    if not (isinstance(pos_neg, list) and len(pos_neg) == 2 and all(_number(v, 0, math.inf) for v in pos_neg)
            and sum(pos_neg) > 0):
        return f"'pos_neg' must be two numbers of at least 0, not both 0, not {pos_neg!r}"
    optimizer = recipe.get("optimizer", {})
    if not _number(optimizer.get("lr"), 0.0, math.inf, low_open=True):
        return f"'optimizer.lr' must be a number above 0, not {optimizer.get('lr')!r}"
    if not _number(optimizer.get("weight_decay", 0.0), 0.0, math.inf):
        return f"'optimizer.weight_decay' must be a number of at least 0, not {optimizer['weight_decay']!r}"
    if not _is_optimizer(optimizer.get("name")):
        return f"'optimizer.name' {optimizer.get('name')!r} is not an optimiser of torch.optim (e.g. Adam, AdamW)"
    augmentation = recipe.get("augmentation", "none")
    if isinstance(augmentation, dict):
        spec = dict(augmentation)
        base = spec.pop("base", "mild")
        if base not in PROBABILITIES:
            return f"'augmentation.base' must be one of {', '.join(PROBABILITIES)}, not {base!r}"
        if extra := sorted(set(spec) - set(PROBABILITIES[base])):
            return f"unknown augmentation(s) {', '.join(extra)} (known: {', '.join(PROBABILITIES[base])})"
        if bad := [k for k, v in spec.items() if not _number(v, 0.0, 1.0)]:
            return f"'augmentation.{bad[0]}' is a probability: it must lie between 0 and 1, not {spec[bad[0]]!r}"
    elif augmentation not in ("none", *PROBABILITIES):
        return f"'augmentation' must be none, {', '.join(PROBABILITIES)} or an object, not {augmentation!r}"
    return _contrast_problem(recipe) or _grid_problem(recipe)


def _is_optimizer(name) -> bool:
    import torch

    kind = getattr(torch.optim, name, None) if isinstance(name, str) and not name.startswith("_") else None
    return isinstance(kind, type) and issubclass(kind, torch.optim.Optimizer)


def _contrast_problem(recipe: dict) -> str | None:
    from LiverVolumetryLib.phantom_contrast import CONTRASTS

    contrasts = recipe.get("phantom_contrasts", ["t1_portal_venous"])
    if not contrasts or any(c not in CONTRASTS for c in contrasts):
        return f"'phantom_contrasts' must be a list of {', '.join(CONTRASTS)}, not {contrasts!r}"
    return None


def _channels_problem(recipe: dict) -> str | None:
    """The engine feeds one 3D image and reads background and liver (with ``organ_targets``,
    one more class per labelled organ, set from the data) from the network's outputs."""
    import inspect

    import monai.networks.nets as nets

    args = recipe["network"].get("args", {})
    if not isinstance(args, dict):
        return f"'network.args' must be an object, not {args!r}"
    parameters = inspect.signature(getattr(nets, recipe["network"]["class"])).parameters
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    args = {**defaults, **args}
    if args.get("spatial_dims", 3) != 3:
        return f"'network.args.spatial_dims' must be 3 (the network segments volumes), not {args['spatial_dims']!r}"
    if args.get("in_channels") != 1:
        return f"'network.args.in_channels' must be 1 (one image per case), not {args.get('in_channels')!r}"
    if not recipe.get("organ_targets") and args.get("out_channels") != 2:
        return ("'network.args.out_channels' must be 2 (background and liver; more only with organ_targets), "
                f"not {args.get('out_channels')!r}")
    return None


def _grid_problem(recipe: dict) -> str | None:
    """Problems of the network, patch, preprocessing and inference settings."""
    from LiverVolumetryLib.bundle import ALLOWED_NETWORKS, InferenceSettings
    from LiverVolumetryLib.preprocess import Preprocessing
    from LiverVolumetryLib.segment import stride_product

    from .train import build_network

    network = recipe.get("network", {})
    if network.get("class") not in ALLOWED_NETWORKS:
        return f"'network.class' must be one of {', '.join(ALLOWED_NETWORKS)}, not {network.get('class')!r}"
    if problem := _channels_problem(recipe):
        return problem
    try:
        build_network(recipe)
        multiple = stride_product(network)
    except Exception as error:  # the network class's own complaint about its arguments
        return f"'network' cannot be built ({(str(error).splitlines() or [type(error).__name__])[0]})"
    patch = recipe["patch_size"]
    if len(patch) != 3 or not all(_whole(v, 1) and v % multiple == 0 for v in patch):
        return f"'patch_size' must be 3 whole numbers, multiples of the network's stride {multiple}, not {patch!r}"
    try:
        prep = Preprocessing.from_dict(recipe["preprocessing"])
        settings = InferenceSettings.from_dict(recipe["inference"])
    except (TypeError, ValueError, KeyError) as error:
        return f"'preprocessing' or 'inference' is not usable ({error})"
    scaling = prep.intensity
    if not (_number(scaling.lower, 0.0, 100.0) and _number(scaling.upper, 0.0, 100.0) and scaling.lower < scaling.upper
            and _number(scaling.b_min, -math.inf, math.inf) and _number(scaling.b_max, -math.inf, math.inf)
            and scaling.b_min < scaling.b_max):
        return ("'preprocessing.intensity' needs percentiles 0 <= lower < upper <= 100 and b_min < b_max, not "
                f"{scaling.to_dict()}")
    if len(prep.spacing) != 3 or not all(_number(s, *_SPACING_RANGE_MM) for s in prep.spacing):
        return (f"'preprocessing.spacing_mm' must be 3 numbers from {_SPACING_RANGE_MM[0]:g} to "
                f"{_SPACING_RANGE_MM[1]:g} mm, not {list(prep.spacing)!r}")
    if len(settings.roi_size) != 3 or min(settings.roi_size) < 1:
        return f"'inference.roi_size' must be 3 whole numbers of at least 1, not {list(settings.roi_size)!r}"
    for key, ok, wanted in (("threshold", _number(settings.threshold, 0.0, 1.0, True, True), "lie between 0 and 1"),
                            ("overlap", _number(settings.overlap, 0.0, 1.0, high_open=True), "lie in [0, 1)"),
                            ("sw_batch_size", _whole(settings.sw_batch_size, 1), "be a whole number of at least 1"),
                            ("max_window_voxels", _whole(settings.max_window_voxels, 0),
                             "be a whole number of at least 0")):
        if not ok:
            return f"'inference.{key}' must {wanted}, not {getattr(settings, key)!r}"
    return None


def check_recipe_values(recipe: dict, where: str | Path) -> None:
    """Refuse a recipe (each of its stages, as trained) with an unknown key or an unusable
    value; the one-line InputError names ``where`` and the key."""
    from .recipes import expand_stages

    stages = expand_stages(recipe)
    common = None
    for number, stage in enumerate(stages, start=1):
        problem = _problem(stage)
        if problem:
            if len(stages) > 1 and common is None:
                common = _problem({k: v for k, v in recipe.items() if k != "stages"}) or ""
            # A bad value every stage inherits is the recipe's, not its first stage's.
            prefix = f"stage {number}: " if len(stages) > 1 and problem != common else ""
            raise InputError(where, f"recipe {prefix}{problem}")
