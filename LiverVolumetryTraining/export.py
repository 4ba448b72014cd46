"""Export a training run as an engine model bundle, with validation measured on the
held-out cases through the engine's own full pipeline (native-grid Dice).

The bundle is built whole (weights, ``model.json`` with the validation figures, ONNX
graph, ``MODEL.md``) in a hidden folder beside the destination and moved into place only
when complete; with ``overwrite`` it then replaces the old bundle. A failure leaves the
destination as it was.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from LiverVolumetryLib.atomic import _umask
from LiverVolumetryLib.bundle import MODEL_JSON, load_bundle, write_bundle
from LiverVolumetryLib.errors import InputError, LiverVolumetryError, OutputError
from LiverVolumetryLib.measure import dice
from LiverVolumetryLib.segment import segment_liver

from .dataset import CaseEntry, load_entry
from .fingerprint import VOXELS, file_fingerprint
from .run_folder import load_checkpoint, read_config


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
               max_window_voxels: int | None = None, crop_to_body: bool | None = None,
               data_credit: str | None = None):
    """Write ``out_dir`` as a bundle from ``run_dir``'s checkpoint and measure validation.

    ``threshold`` replaces the recipe's probability threshold (e.g. the one chosen by
    cross-validation), ``max_window_voxels`` its one-window limit, ``crop_to_body``
    whether the network sees only the box around the body; ``crossval``: a
    cross-validation folder whose ``crossval.json`` is recorded in ``model.json`` and the
    model card; ``data_credit``: the training data's source and licence ('chaos' for the CHAOS
    credit), else the card names the number of cases and their folders.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = read_config(run_dir)
    if checkpoint not in ("last", "best"):
        raise LiverVolumetryError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if checkpoint == "best" and not (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file():
        raise InputError(run_dir / "best.pt", "checkpoint not found: the run has not validated yet (a run without "
                                              "validation cases never does); use --checkpoint last")
    state = load_checkpoint(run_dir / f"{checkpoint}.pt")
    spec = bundle_spec(config, state, name, version, checkpoint, description)
    spec["training"]["data"] = _data_text(config, data_credit)
    spec["training"]["case_fingerprints"] = _fingerprints(config, log)
    spec["training"]["fingerprint_method"] = VOXELS
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
        cv_recipe, run_recipe = spec["cross_validation"].get("recipe"), config["recipe"].get("name")
        if cv_recipe is not None and run_recipe is not None and cv_recipe != run_recipe:
            raise InputError(Path(crossval) / "crossval.json", f"cross-validates recipe {cv_recipe!r}, but the run "
                                                               f"was trained with {run_recipe!r}; the model card "
                                                               "would give it another recipe's figures")
        _check_same_cases(Path(crossval), spec["cross_validation"], config)
    from .model_card import write_model_card

    val_entries = [CaseEntry(e["case"], Path(e["image"]), Path(e["label"]), e["liver_label"], str(e.get("group", "")))
                   for e in config["validation"]]
    with _staged_bundle(out_dir, overwrite) as staging:
        bundle = write_bundle(staging, state["model"], spec)
        if val_entries:
            log(f"measuring validation Dice on {len(val_entries)} held-out cases (native grid) ...")
            figures = evaluate_bundle(bundle, val_entries, log)
            protocol = "held-out cases never used for training; engine pipeline; Dice on the native image grid"
            if checkpoint == "best":
                protocol += ("; the same cases chose this checkpoint (best validation Dice), so the figure is "
                             "optimistic")
            spec["validation"] = {"protocol": protocol, **figures}
            bundle = write_bundle(staging, state["model"], spec, overwrite=True)
        if bundle.onnx_path is None:
            log("no model.onnx written (needs the onnx and onnxruntime packages): the engine will run the network "
                "with PyTorch, about 1.7x slower on CPU")
        write_model_card(staging, notes=card_notes)
    return load_bundle(out_dir)


def _fingerprints(config: dict, log) -> dict[str, str | None]:
    """The fingerprint of every training image (``evaluate`` recognises them by it); None,
    with a warning, for an image that cannot be read any more (matched by name instead)."""
    fingerprints = {e["case"]: file_fingerprint(e["image"]) for e in config["train"]}
    lost = [case for case, value in fingerprints.items() if value is None]
    if lost:
        log(f"warning: training image(s) of case(s) {', '.join(lost)} cannot be read any more: evaluate will "
            "recognise them by case name only")
    return fingerprints


def _data_text(config: dict, credit: str | None) -> str:
    """What the model card says about the training data."""
    from .model_card import CHAOS_CREDIT

    if credit and credit.strip():
        return CHAOS_CREDIT if credit.strip().lower() == "chaos" else " ".join(credit.split())
    entries = [*config["train"], *config["validation"]]
    folders = sorted({Path(e["image"]).parent.name or str(Path(e["image"]).parent) for e in entries})
    shown = ", ".join(folders[:4]) + (f" and {len(folders) - 4} more" if len(folders) > 4 else "")
    return (f"{len(entries)} labelled case(s) from the folder(s) {shown}; their source and licence were not given "
            "at export (--data-credit)")


def _case_files(configs) -> set[tuple]:
    """(case, image, label, liver label) of every case the run records name, paths resolved."""
    return {(c["case"], str(Path(c["image"]).resolve()), str(Path(c["label"]).resolve()), int(c["liver_label"]))
            for config in configs for c in (*config["train"], *config["validation"])}


def _check_same_cases(crossval: Path, summary: dict, config: dict) -> None:
    """Refuse a cross-validation of other cases (or of other files under the same names) than
    the run's own: the model card would present its figures as this model's data."""
    folds = []
    for k in range(len(summary["folds"])):
        try:
            folds.append(read_config(crossval / f"fold{k}"))
        except InputError as error:
            raise InputError(error.path, f"{error.cause}; the folds' records tell which cases the cross-validation "
                                         "covers, so keep the fold folders beside crossval.json") from None
    validated, trained = _case_files(folds), _case_files([config])
    if validated != trained:
        names = sorted({c[0] for c in validated ^ trained})
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise InputError(crossval / "crossval.json", f"cross-validates other cases than the run was trained on "
                                                     f"(differing: {shown}); the model card would give it another "
                                                     "data set's figures")


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    """Refuse a destination that exists (without ``overwrite``), or that is not a bundle
    nor an empty folder (never replaced, even with ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(out_dir, "exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise OutputError(out_dir, "already exists (use --overwrite to replace the bundle)")
    if not (out_dir / MODEL_JSON).is_file():
        raise OutputError(out_dir, f"is not a model bundle (no {MODEL_JSON}): it is not replaced; choose another -o")


@contextlib.contextmanager
def _staged_bundle(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to build the bundle in; moved onto ``out_dir``
    when the block finishes (the old bundle swapped out, then removed), removed on failure."""
    _check_destination(out_dir, overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    except OSError as error:
        raise OutputError(out_dir, f"cannot write here ({error.strerror or error})") from None
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes an owner-only folder
        _move_into_place(staging, out_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out_dir``; an old bundle there is renamed aside first (and
    back if the rename fails), then removed."""
    _check_destination(out_dir, overwrite)  # still as checked before the bundle was built
    old = None
    try:
        if out_dir.is_dir() and any(out_dir.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old)
        elif out_dir.is_dir():
            out_dir.rmdir()
        try:
            os.replace(staging, out_dir)
        except OSError:
            if old is not None:
                os.replace(old, out_dir)
                old = None
            raise
    except OSError as error:
        raise OutputError(out_dir, f"cannot move the new bundle into place ({error.strerror or error})") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
