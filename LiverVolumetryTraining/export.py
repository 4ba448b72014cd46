"""Export a training run as an engine model bundle, with validation measured on the
held-out cases through the engine's own full pipeline (native-grid Dice)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from LiverVolumetryLib.bundle import write_bundle
from LiverVolumetryLib.errors import LiverVolumetryError
from LiverVolumetryLib.measure import dice
from LiverVolumetryLib.segment import segment_liver

from .dataset import CaseEntry, load_entry
from .train import load_checkpoint


def evaluate_bundle(bundle, entries: list[CaseEntry], log=print) -> dict:
    """Native-grid Dice of the engine's segmentation for each entry."""
    per_case = {}
    for entry in entries:
        image, liver = load_entry(entry)
        result = segment_liver(image, bundle, device="cpu")
        per_case[entry.case] = round(dice(result.mask, liver), 4)
        log(f"  {entry.case}: Dice {per_case[entry.case]:.4f} ({result.seconds:.1f} s)")
    values = list(per_case.values())
    return {"dice_per_case": per_case, "dice_mean": round(float(np.mean(values)), 4) if values else None,
            "dice_sd": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else None,
            "dice_min": round(float(np.min(values)), 4) if values else None}


def bundle_spec(config: dict, state: dict, name: str, version: str, checkpoint: str = "last",
                description: str = "") -> dict:
    """``model.json`` fields (weights excepted) for a run's ``config.json`` and checkpoint."""
    recipe = config["recipe"]
    spec = {
        "name": name, "version": version, "description": description,
        "created": _dt.date.today().isoformat(),
        "network": recipe["network"], "preprocessing": recipe["preprocessing"], "inference": recipe["inference"],
        "postprocessing": {"largest_component": True, "fill_holes": True},
        "labels": {"0": "background", "1": "liver"},
        "training": {"recipe": {"name": "liver-mri", **recipe}, "iterations": state["iteration"],
                     "checkpoint": checkpoint, "phantoms": config.get("phantoms", 0),
                     "precision": config.get("precision", "fp32"),
                     "cases": [e["case"] for e in config["train"]],
                     "validation_cases": [e["case"] for e in config["validation"]]},
    }
    if config.get("init_from"):  # fine-tuned from another bundle
        spec["training"]["init_from"] = config["init_from"]
    if config.get("iterations_per_epoch"):  # epoch-based recipes (volumetry-net)
        spec["training"]["epochs"] = round(state["iteration"] / config["iterations_per_epoch"], 2)
    return spec


def export_run(run_dir: str | Path, out_dir: str | Path, name: str, version: str, checkpoint: str = "last",
               description: str = "", overwrite: bool = False, log=print, card_notes: str = "",
               threshold: float | None = None, crossval: str | Path | None = None,
               max_window_voxels: int | None = None, crop_to_body: bool | None = None):
    """Write ``out_dir`` as a bundle from ``run_dir``'s checkpoint and measure validation.

    ``threshold`` replaces the recipe's probability threshold (e.g. the one chosen by
    cross-validation), ``max_window_voxels`` its one-window limit, ``crop_to_body``
    whether the network sees only the box around the body; ``crossval``: a
    cross-validation folder whose ``crossval.json`` is recorded in ``model.json`` and the
    model card.
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    state = load_checkpoint(run_dir / f"{checkpoint}.pt")
    spec = bundle_spec(config, state, name, version, checkpoint, description)
    if threshold is not None:
        if not 0.0 < threshold < 1.0:
            raise LiverVolumetryError(f"threshold must lie between 0 and 1, got {threshold}")
        spec["inference"] = {**spec["inference"], "threshold": float(threshold)}
    if max_window_voxels is not None:
        if max_window_voxels < 0:
            raise LiverVolumetryError(f"max_window_voxels must be 0 or more, got {max_window_voxels}")
        spec["inference"] = {**spec["inference"], "max_window_voxels": int(max_window_voxels)}
    if crop_to_body is not None:
        spec["inference"] = {**spec["inference"], "crop_to_body": bool(crop_to_body)}
    if crossval is not None:
        from .crossval import read_summary

        spec["cross_validation"] = read_summary(crossval)
    bundle = write_bundle(out_dir, state["model"], spec, overwrite=overwrite)
    val_entries = [CaseEntry(e["case"], Path(e["image"]), Path(e["label"]), e["liver_label"], e.get("group", ""))
                   for e in config["validation"]]
    if val_entries:
        log(f"measuring validation Dice on {len(val_entries)} held-out cases (native grid) ...")
        spec["validation"] = {"protocol": "held-out cases never used for training; engine pipeline; "
                                          "Dice on the native image grid", **evaluate_bundle(bundle, val_entries, log)}
        bundle = write_bundle(out_dir, state["model"], spec, overwrite=True)
    if bundle.onnx_path is None:
        log("no model.onnx written (needs the onnx and onnxruntime packages): the engine will run the network "
            "with PyTorch, about 1.7x slower on CPU")
    from .model_card import write_model_card

    write_model_card(out_dir, notes=card_notes)
    return bundle
