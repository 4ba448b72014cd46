"""k-fold cross-validation: every case is segmented by a model that never saw it.

For each fold a run is trained on the other folds' cases (``RUN/fold<k>``, resumable like
any run) and exported as a bundle (``RUN/fold<k>/bundle``). Each held-out case then goes
through the engine's own pipeline with its fold's model; the probability map is computed
once and thresholded at every candidate threshold. The threshold is chosen on the
out-of-fold Dice; so that the reported figures never rest on a choice made on the case
itself, each case's mask uses the threshold chosen on the *other* folds (nested
selection). Those masks (``RUN/predictions``) go through :func:`.evaluate.evaluate`
(``RUN/evaluation``: Dice, HD95, ASSD, volume ICC, Bland–Altman, radiomics ICC), and
``RUN/crossval.json`` records folds, per-case Dice per threshold and the summary.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LiverVolumetryLib.atomic import write_text_atomic
from LiverVolumetryLib.bundle import write_bundle
from LiverVolumetryLib.confidence import unsure_fraction
from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryLib.measure import dice
from LiverVolumetryLib.segment import network_probability, probability_to_mask, resolve_device

from .dataset import CaseEntry, load_entry

Log = Callable[[str], None]
SUMMARY_NAME = "crossval.json"


def make_folds(cases: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` folds of nearly equal size from a seeded shuffle of ``cases``."""
    if not 2 <= k <= len(cases):
        raise LiverVolumetryError(f"cross-validation needs 2 to {len(cases)} folds for {len(cases)} cases, got {k}")
    order = np.random.default_rng(seed).permutation(len(cases))
    return [[cases[i] for i in order[fold::k]] for fold in range(k)]


def parse_folds(text: str, cases: Sequence[str]) -> list[list[str]]:
    """Folds written as ``"1,8,15;3,10;5,13"``: each case in exactly one fold, all cases used."""
    parts = text.split(";")
    if len(parts) > 1 and not parts[-1].strip():
        parts = parts[:-1]  # a trailing ';'
    folds = [[c.strip() for c in part.split(",") if c.strip()] for part in parts]
    named = [c for fold in folds for c in fold]
    problems = []
    if empty := [str(k) for k, fold in enumerate(folds, start=1) if not fold]:
        problems.append(f"fold(s) {', '.join(empty)} name no case")
    if len(folds) < 2:
        problems.append("at least 2 folds are needed")
    if unknown := sorted(set(named) - set(cases)):
        problems.append(f"unknown case(s) {', '.join(unknown)}")
    if repeated := sorted({c for fold in folds for c in fold if fold.count(c) > 1}):
        problems.append(f"case(s) named twice in one fold: {', '.join(repeated)}")
    if twice := sorted({c for c in named if sum(c in fold for fold in folds) > 1}):
        problems.append(f"case(s) in more than one fold: {', '.join(twice)}")
    if missing := sorted(set(cases) - set(named)):
        problems.append(f"case(s) in no fold: {', '.join(missing)}")
    if problems:
        raise LiverVolumetryError(f"--folds: {'; '.join(problems)}")
    return folds


def _check_run_folds(run_dir: Path, folds: list[list[str]]) -> None:
    """A run folder keeps its folds: resuming with other folds would mix models."""
    path = run_dir / "folds.json"
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(path, f"cannot be read as the run's folds ({error.__class__.__name__}); "
                                   "use a new --run folder") from None
        if recorded != folds:
            raise InputError(path, f"this run was made with other folds ({recorded}); use a new --run folder")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(folds))


def _fold_bundle(fold_dir: Path, name: str):
    """Export the fold's last checkpoint as a bundle (replaced on every call)."""
    from .export import bundle_spec
    from .run_folder import load_checkpoint, read_config

    config = read_config(fold_dir)
    state = load_checkpoint(fold_dir / "last.pt")
    spec = bundle_spec(config, state, f"{name}-{fold_dir.name}", "0.0.0",
                       description=f"cross-validation model {fold_dir.name}")
    return write_bundle(fold_dir / "bundle", state["model"], spec, overwrite=True)


def choose_threshold(dice_by_threshold: dict[float, list[float]]) -> float:
    """The threshold of highest mean Dice; ties go to the one nearest 0.5."""
    return max(dice_by_threshold, key=lambda t: (round(float(np.mean(dice_by_threshold[t])), 6), -abs(t - 0.5)))


def nested_thresholds(per_case: dict[str, dict[float, float]], folds: list[list[str]]) -> dict[str, float]:
    """For each case, the threshold chosen on the out-of-fold Dice of the other folds only."""
    chosen = {}
    for fold in folds:
        others = [c for c in per_case if c not in fold]
        table = {t: [per_case[c][t] for c in others] for t in next(iter(per_case.values()))}
        threshold = choose_threshold(table)
        chosen.update({case: threshold for case in fold})
    return chosen


def _mask_path(run_dir: Path, threshold: float, case: str) -> Path:
    """``RUN/masks/threshold-T/CASE.nii.gz``; T is the shortest text that reads back as the
    same number, so two thresholds never share a folder (0.5 stays ``threshold-0.5``)."""
    return run_dir / "masks" / f"threshold-{float(threshold)!r}" / f"{case}.nii.gz"


def predict_out_of_fold(entries: Sequence[CaseEntry], folds: list[list[str]], run_dir: Path,
                        thresholds: Sequence[float], device: str, name: str, log: Log) -> dict:
    """Dice of every case at every threshold with its fold's model.

    Masks at every threshold go to ``RUN/masks/threshold-T/``; the nested-threshold mask
    of each case is copied to ``RUN/predictions/``. Each case's network uncertainty
    (:func:`LiverVolumetryLib.confidence.unsure_fraction`) is kept beside its Dice.
    """
    by_case = {e.case: e for e in entries}
    per_case, unsure = {}, {}
    for k, fold in enumerate(folds):
        bundle = _fold_bundle(run_dir / f"fold{k}", name)
        for case in fold:
            image, reference = load_entry(by_case[case])
            probability, grid = network_probability(image, bundle, device)
            unsure[case] = round(unsure_fraction(probability), 3)
            per_case[case] = {}
            for t in thresholds:
                mask = probability_to_mask(probability, grid, image, bundle, t)
                per_case[case][t] = round(dice(mask, reference), 4)
                _mask_path(run_dir, t, case).parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(mask, str(_mask_path(run_dir, t, case)), True)
            log(f"fold {k} case {case}: Dice " + ", ".join(f"{d:.4f} @ {t!r}" for t, d in per_case[case].items())
                + f"; unsure fraction {unsure[case]:.3f}")
    chosen = nested_thresholds(per_case, folds) if len(thresholds) > 1 else {c: thresholds[0] for c in per_case}
    out = run_dir / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    for case, threshold in chosen.items():
        shutil.copyfile(_mask_path(run_dir, threshold, case), out / f"{case}.nii.gz")
    return {"per_case": per_case, "nested_threshold": chosen, "unsure_fraction": unsure}


def crossval(entries: Sequence[CaseEntry], run_dir: str | Path, recipe: dict, folds: list[list[str]], *,
             thresholds: Sequence[float] = (0.5,), phantoms: int | None = None, iterations: int | None = None,
             epochs: int | None = None, validate_every: int = 500, seed: int = 0, cache_dir: Path | None = None,
             radiomics: bool = True, device: str = "auto", log: Log = print, train_folds: bool = True,
             only_fold: int | None = None) -> dict:
    """Train (or resume) every fold, segment the held-out cases, evaluate; returns the summary.

    With ``only_fold`` k, train fold k alone and return ``{"trained_fold": k}``: folds can
    then train side by side (processes, machines, GPUs), and a last call without it finds
    them trained and segments and evaluates.
    """
    from .manifest import refuse_duplicates
    from .run_folder import remove_unstarted_run

    run_dir = Path(run_dir)
    thresholds = sorted({float(t) for t in thresholds})
    if not thresholds or any(not 0.0 < t < 1.0 for t in thresholds):
        raise LiverVolumetryError(f"thresholds must lie between 0 and 1, got {thresholds}")
    if only_fold is not None and not 0 <= only_fold < len(folds):
        raise LiverVolumetryError(f"--fold {only_fold}: the folds are numbered 0 to {len(folds) - 1}")
    refuse_duplicates(entries)  # folds go by case name
    created = not run_dir.exists()
    fresh = created or (run_dir.is_dir() and not any(run_dir.iterdir()))
    try:
        return _crossval(entries, run_dir, recipe, folds, thresholds, phantoms, iterations, epochs, validate_every,
                         seed, cache_dir, radiomics, device, log, train_folds, only_fold)
    except Exception:
        # Nothing trained yet: leave no folds.json that would refuse the corrected inputs. Not
        # with --fold, whose sibling processes may be starting in the same new folder.
        if fresh and only_fold is None:
            remove_unstarted_run(run_dir, created)
        raise


def _crossval(entries, run_dir: Path, recipe: dict, folds, thresholds, phantoms, iterations, epochs, validate_every,
              seed, cache_dir, radiomics, device, log, train_folds, only_fold) -> dict:
    from .evaluate import evaluate
    from .run_folder import check_trained_on
    from .train import train

    _check_run_folds(run_dir, folds)
    cache_dir = cache_dir or run_dir / "cache"
    for k, fold in enumerate(folds):
        if only_fold is not None and k != only_fold:
            continue
        held_out = [e for e in entries if e.case in fold]
        training = [e for e in entries if e.case not in fold]
        fold_dir = run_dir / f"fold{k}"
        if train_folds:
            log(f"fold {k}: training on {len(training)} cases, holding out {', '.join(fold)}")
            train(fold_dir, recipe, training, held_out, cache_dir=cache_dir, phantoms=phantoms, iterations=iterations,
                  epochs=epochs, validate_every=validate_every, seed=seed + k, log=log, device=device)
        elif not (fold_dir / "last.pt").is_file():
            raise InputError(fold_dir, "no trained fold model (last.pt); run without --no-train first")
        else:
            check_trained_on(fold_dir, training, held_out)
    if only_fold is not None:
        return {"trained_fold": only_fold}
    device = resolve_device(device)
    oof = predict_out_of_fold(entries, folds, run_dir, thresholds, device, recipe.get("name", "liver-mri"), log)
    evaluation = evaluate(entries, run_dir / "evaluation", predictions=run_dir / "predictions", radiomics=radiomics,
                          log=log, overwrite=True)
    summary = _summary(oof, folds, thresholds, recipe, run_dir)
    summary["evaluation"] = json.loads((run_dir / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    summary["evaluation_seconds"] = round(evaluation.seconds, 1)
    write_text_atomic(run_dir / SUMMARY_NAME, json.dumps(summary, indent=2))
    log(f"cross-validation: out-of-fold Dice {summary['dice_mean']:.4f} ± {summary['dice_sd']:.4f} "
        f"(nested threshold); threshold chosen on all folds: {summary['threshold']:g}; see {run_dir / SUMMARY_NAME}")
    return summary


def _summary(oof: dict, folds: list[list[str]], thresholds: list[float], recipe: dict, run_dir: Path) -> dict:
    per_case, nested = oof["per_case"], oof["nested_threshold"]
    table = {t: [per_case[c][t] for c in per_case] for t in thresholds}
    nested_dice = [per_case[c][nested[c]] for c in per_case]
    iterations = [json.loads((run_dir / f"fold{k}" / "config.json").read_text(encoding="utf-8"))["iterations"]
                  for k in range(len(folds))]
    return {
        "protocol": f"{len(folds)}-fold cross-validation: each case segmented by the model of the fold that held it "
                    "out (engine pipeline, native grid); the threshold of each case chosen on the other folds",
        "recipe": recipe.get("name"), "iterations": iterations, "folds": folds,
        "thresholds": thresholds, "threshold": choose_threshold(table),
        "dice_mean_by_threshold": {str(t): round(float(np.mean(v)), 6) for t, v in table.items()},
        "dice_per_case": {c: {str(t): d for t, d in v.items()} for c, v in per_case.items()},
        "nested_threshold": nested,
        "unsure_fraction_per_case": oof["unsure_fraction"],
        "dice_mean": round(float(np.mean(nested_dice)), 6),
        "dice_sd": round(float(np.std(nested_dice, ddof=1)), 6) if len(nested_dice) > 1 else None,
        "dice_min": round(float(np.min(nested_dice)), 4),
    }


def read_summary(run_dir: str | Path) -> dict:
    """``crossval.json`` of a cross-validation folder (one-line error when absent)."""
    path = Path(run_dir) / SUMMARY_NAME
    if not Path(run_dir).is_dir():
        raise InputError(run_dir, "is not a cross-validation folder (--crossval names the folder crossval wrote)")
    if not path.is_file():
        raise InputError(path, "not found: the cross-validation has not finished (crossval writes it last)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise InputError(path, f"is not valid JSON ({str(error).splitlines()[0][:120]})") from None
    kinds = {"protocol": str, "folds": list, "thresholds": list, "threshold": (int, float), "dice_mean": (int, float),
             "dice_min": (int, float), "dice_per_case": dict, "nested_threshold": dict, "dice_mean_by_threshold": dict}
    wrong = [key for key, kind in kinds.items()
             if not isinstance(summary, dict) or not isinstance(summary.get(key), kind)]
    if wrong:
        raise InputError(path, f"is not a cross-validation summary written by crossval (no usable {', '.join(wrong)})")
    return summary
