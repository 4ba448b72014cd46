"""A run folder's checkpoints and ``config.json``, the record of what a run was trained on.

``config.json`` holds the recipe, the training and validation cases (absolute paths),
the phantoms and the run's length; ``export`` builds the model card from it. It is
written only once every input has been checked. Resuming a run (its ``last.pt``) with
other cases, another validation split, another recipe, other phantoms or another seed would
train one model partly on what its record does not name, so it is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from LiverVolumetryLib.errors import InputError, LiverVolumetryError

from .dataset import CaseEntry
from .manifest import refuse_duplicates

CONFIG_NAME = "config.json"
_ENTRY_KEYS = {"case": str, "image": str, "label": str, "liver_label": int}


def entry_dicts(entries: Sequence[CaseEntry]) -> list[dict]:
    """Entries as recorded in ``config.json``, with absolute paths (export may run elsewhere)."""
    return [{**asdict(e), "image": str(Path(e.image).resolve()), "label": str(Path(e.label).resolve())}
            for e in entries]


def load_checkpoint(path: Path) -> dict:
    """A checkpoint saved by training (a dict: model, optimizer, iteration, best_dice), read with
    ``weights_only=True``; a missing or unreadable one is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found (the run has not saved one)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:160]
        raise InputError(path, f"cannot be read as a checkpoint (damaged, or not a checkpoint: {reason})") from None
    if not isinstance(state, dict) or not {"model", "iteration", "best_dice"} <= set(state):
        raise InputError(path, "is not a checkpoint of this trainer (needs model, iteration and best_dice)")
    return state


def _config_problem(config) -> str | None:
    """What makes ``config`` unusable as a run's record, or None."""
    if not isinstance(config, dict):
        return "not a JSON object"
    recipe = config.get("recipe")
    if not isinstance(recipe, dict):
        return "no 'recipe' object"
    for key in ("network", "preprocessing", "inference"):
        if not isinstance(recipe.get(key), dict):
            return f"its recipe has no {key!r} object"
    for key in ("train", "validation"):
        cases = config.get(key)
        if not isinstance(cases, list) or not all(
                isinstance(c, dict) and all(isinstance(c.get(k), t) for k, t in _ENTRY_KEYS.items()) for c in cases):
            return f"{key!r} is not a list of cases with case, image, label and liver_label"
    if not isinstance(config.get("iterations_per_epoch") or 0, int):
        return "'iterations_per_epoch' is not a whole number"
    return None


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``; a missing, unreadable or malformed one is a one-line InputError."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise InputError(path, "not found (is this a training run folder?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise InputError(path, "is not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON (line {error.lineno}: {error.msg})") from None
    problem = _config_problem(config)
    if problem:
        raise InputError(path, f"is not a training run's record ({problem})")
    return config


def _identity(config: dict) -> dict:
    """What must not change when a run is resumed. Paths are compared resolved; with
    ``organ_targets`` the network's output channels follow the data, already compared."""
    def cases(key: str) -> list[tuple]:
        return [(c["case"], str(Path(c["image"]).resolve()), str(Path(c["label"]).resolve()), int(c["liver_label"]))
                for c in config[key]]

    recipe = json.loads(json.dumps(config["recipe"]))
    if recipe.get("organ_targets") and isinstance(recipe["network"].get("args"), dict):
        recipe["network"]["args"].pop("out_channels", None)
    return {"training cases": cases("train"), "validation cases": cases("validation"), "recipe": recipe,
            "phantoms": config.get("phantoms")}


def _difference(what: str, old, new) -> str:
    """``what`` and how it differs, briefly."""
    if what == "recipe":
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        return f"another recipe (differs in {', '.join(keys[:5])}{more})"
    if what == "phantoms":
        return f"other phantoms ({old} recorded, {new} now)"
    names_old, names_new = [c[0] for c in old], [c[0] for c in new]
    if names_old == names_new:
        return f"other {what} (same names, other files or liver labels)"
    return f"other {what} ({', '.join(names_old) or 'none'} recorded; {', '.join(names_new) or 'none'} now)"


def check_resume(run_dir: Path, recipe: dict, train_entries: Sequence[CaseEntry], val_entries: Sequence[CaseEntry],
                 phantoms: int, seed: int | None = None, start_bundle=None) -> dict | None:
    """The recorded config of a run that ``run_dir`` would resume (None when it holds no
    ``last.pt``); refuses a run recorded for other cases, split, recipe, phantoms or seed
    (the record would name the new seed for iterations drawn with the old one), and a
    ``start_bundle`` (``--init-from``) other than the one the run started from."""
    if not (run_dir / "last.pt").is_file():
        return None
    if not (run_dir / CONFIG_NAME).is_file():
        raise InputError(run_dir, f"holds last.pt but no {CONFIG_NAME}, so what it was trained on is unknown; "
                                  "use a new --run folder")
    old = read_config(run_dir)
    now = {"recipe": recipe, "phantoms": phantoms, "train": entry_dicts(train_entries),
           "validation": entry_dicts(val_entries)}
    recorded, given = _identity(old), _identity(now)
    changed = [_difference(what, recorded[what], given[what]) for what in recorded if recorded[what] != given[what]]
    if seed is not None and old.get("seed") is not None and old["seed"] != seed:
        changed.append(f"another seed ({old['seed']} recorded, {seed} now)")
    began = old.get("init_from") or {}
    if start_bundle is not None and began.get("sha256") != start_bundle.sha256:
        changed.append(f"other starting weights ({began.get('name', 'random')} recorded, "
                       f"--init-from {start_bundle.name} {start_bundle.version} now)")
    if changed:
        raise InputError(run_dir / CONFIG_NAME, f"this run was trained with {'; '.join(changed)}; resuming it "
                                                "would mix the two in one model: use a new --run folder")
    return old


def check_trained_on(run_dir: Path, train_entries: Sequence[CaseEntry], val_entries: Sequence[CaseEntry]) -> None:
    """Refuse a trained run (a fold model used as it is) whose record names other training
    or validation cases than these: its "held-out" cases could be ones it trained on."""
    recorded = _identity(read_config(run_dir))
    given = _identity({"recipe": {}, "train": entry_dicts(train_entries), "validation": entry_dicts(val_entries)})
    changed = [_difference(what, recorded[what], given[what]) for what in ("training cases", "validation cases")
               if recorded[what] != given[what]]
    if changed:
        raise InputError(run_dir / CONFIG_NAME, f"this model was trained with {'; '.join(changed)}, so its held-out "
                                                "cases are not these: train it again (without --no-train)")


def check_length(run_dir: Path, iterations: int) -> None:
    """Refuse to resume a run whose ``last.pt`` has trained more than ``iterations``: its
    record would name fewer iterations than made its weights."""
    last = Path(run_dir) / "last.pt"
    done = int(load_checkpoint(last)["iteration"]) if last.is_file() else 0
    if done > iterations:
        raise InputError(run_dir, f"has trained {done} iterations, more than the {iterations} asked for now "
                                  f"(--iterations, --epochs or the recipe's length): give at least {done}, or use a "
                                  "new --run folder")


def check_stage_lengths(run_dir: Path, counts: Sequence[int]) -> dict[int, int]:
    """Refuse new stage lengths (``counts``) that a staged run cannot take: a stage the next
    one has started from keeps its length, and no stage may have trained beyond its new one.
    Returns the iterations each stage with a checkpoint has trained, by stage index."""
    trained, planned = {}, {}
    for k in range(len(counts)):
        last = Path(run_dir) / f"stage{k}" / "last.pt"
        if last.is_file():
            trained[k], planned[k] = int(load_checkpoint(last)["iteration"]), read_config(last.parent).get("iterations")
    advice = "resume with the --iterations the run was started with, or use a new --run folder"
    for k in range(len(counts)):
        if k not in trained:
            break  # the stages after a missing one are not checked against it
        if trained[k] > counts[k]:
            raise InputError(run_dir, f"stage {k + 1} has trained {trained[k]} iterations, more than the {counts[k]} "
                                      f"these settings give it: {advice}")
        if k + 1 in trained and planned[k] != counts[k]:
            raise InputError(run_dir, f"stage {k + 1} was planned as {planned[k]} iterations and stage {k + 2} has "
                                      f"begun from its weights; these settings would make it {counts[k]}: {advice}")
    return trained


def remove_unstarted_run(run_dir: Path, created: bool) -> None:
    """After a failure: empty a run folder that was new (``created``, or empty before), and
    remove it if ``created``, unless a checkpoint was written into it (a started run is
    kept, to be resumed)."""
    if not run_dir.is_dir() or any(run_dir.rglob("*.pt")):
        return
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def check_run_folder(run_dir: Path, cache_dir: Path | None) -> None:
    """Refuse a ``--run`` that is a file, or a folder holding files of something else than a
    run (a new run would write among them, and a failed one would empty it), and a
    ``--cache`` that is a file."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "is a file, not a run folder: give a new or empty folder for --run")
    if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise InputError(cache_dir, "is a file, not a folder for the preprocessing cache (--cache)")
    if run_dir.is_dir():
        names = {child.name for child in run_dir.iterdir()}
        # A run writes config.json once its inputs are checked; before that only its cache.
        if names and CONFIG_NAME not in names and "stage0" not in names and names != {"cache"}:
            shown = ", ".join(sorted(names)[:3]) + (" ..." if len(names) > 3 else "")
            raise InputError(run_dir, f"holds other files ({shown}) but no training run ({CONFIG_NAME}): give a new "
                                      "or empty folder for --run")


def check_train_arguments(train_entries: Sequence[CaseEntry], val_entries: Sequence[CaseEntry], phantoms: int | None,
                          iterations: int | None, epochs: int | None, validate_every: int) -> None:
    """Refuse, before any work, what :func:`train` cannot run with (one line each)."""
    if not train_entries:
        raise LiverVolumetryError("no training cases: at least one case must remain for training")
    refuse_duplicates([*train_entries, *val_entries])
    for name, value, least in (("iterations", iterations, 1), ("epochs", epochs, 1),
                               ("validate_every", validate_every, 1), ("phantoms", phantoms, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise LiverVolumetryError(f"{name} must be a whole number of at least {least}, got {value!r}")


class RunInUseError(LiverVolumetryError):
    """Another process is training in the run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (created if needed) for this process while it trains: a second
    training started in the same folder is refused, since both would write ``last.pt`` and
    the log and the weights would come from two runs. The lock (``flock`` on the folder) goes
    with the process, so a killed run leaves none behind; without ``fcntl`` (Windows), or on
    a file system without folder locks (NFS), there is no lock."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    handle = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunInUseError(f"{run_dir}: another training is running in this run folder (two would mix "
                                    "their checkpoints); wait for it to end, or use another --run folder") from None
            # No folder locks on this file system (NFS, Lustre without flock): train unguarded.
        yield
    finally:
        os.close(handle)  # releases the lock

