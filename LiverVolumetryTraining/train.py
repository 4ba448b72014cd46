"""Training loop: patches from cached cases, validation on held-out cases, checkpoints.

A run folder holds ``config.json`` (recipe + data + split), ``log.csv`` (optionally
``tensorboard/``), and ``last.pt``/``best.pt`` (dicts of tensors, read with ``weights_only=True``).
Re-running the same command resumes from ``last.pt`` (see ``run_folder.py``).

One process, or several under torchrun (DistributedDataParallel, see ``distributed.py``):
the recipe's per-step batch is split across the ranks; rank 0 alone validates and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from LiverVolumetryLib.bundle import InferenceSettings, load_bundle
from LiverVolumetryLib.atomic import write_text_atomic
from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryLib.preprocess import Preprocessing
from LiverVolumetryLib.segment import stride_product, window_roi

from .dataset import CachedCase, CaseEntry, cached_case, preprocess_case
from .distributed import DistContext, distributed_session, is_main_process, unwrap, wrap_model
from .precision import autocast_dtype, guard_bf16_convolutions, precision_name
from .recipes import expand_stages
from .run_folder import (RunInUseError, check_length, check_resume, check_run_folder, check_stage_lengths,
                         check_train_arguments, entry_dicts, load_checkpoint, remove_unstarted_run, run_lock)
from .run_log import RunLog
from .sampling import build_sampler, iterations_per_epoch, total_iterations


def build_network(recipe: dict) -> torch.nn.Module:
    import monai.networks.nets as nets

    spec = recipe["network"]
    return getattr(nets, spec["class"])(**spec["args"])


def _loss(name: str):
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    raise ValueError(f"unknown loss {name!r}")


def _phantom_cases(count: int, prep: Preprocessing, seed: int = 1000,
                   contrasts: Sequence[str] = ("t1_portal_venous",)) -> list[CachedCase]:
    """``count`` seeded phantoms, their contrasts taken in turn from ``contrasts``."""
    from LiverVolumetryLib.phantom import make_phantom

    cases = []
    for k in range(count):
        contrast = contrasts[k % len(contrasts)]
        phantom = make_phantom(seed + k, contrast=contrast)
        cases.append(preprocess_case(phantom.image, phantom.liver, prep, f"phantom-{seed + k}-{contrast}",
                                     phantom_organs(phantom.tissues)))
    return cases


def phantom_organs(tissues: sitk.Image) -> sitk.Image:
    """A phantom's kidneys and spleen numbered as CHAOS labels them after the liver:
    1 right kidney, 2 left kidney, 3 spleen (the ``tissues`` of a real CHAOS case).

    Sides come from physical space (LPS: the patient's left is +x), relative to the
    spine, so they hold whatever the phantom's orientation.
    """
    from LiverVolumetryLib.phantom import TISSUE_NAMES

    code = {name: value for value, name in TISSUE_NAMES.items()}
    array = sitk.GetArrayViewFromImage(tissues)  # (z, y, x)
    out = np.zeros(array.shape, np.uint8)
    out[array == code["spleen"]] = 3

    def physical_x(mask: np.ndarray) -> np.ndarray:
        index = np.argwhere(mask)[:, ::-1].astype(np.float64)  # (x, y, z) indices
        matrix = np.asarray(tissues.GetDirection()).reshape(3, 3) * np.asarray(tissues.GetSpacing())
        return (index @ matrix.T + np.asarray(tissues.GetOrigin()))[:, 0]

    kidney = array == code["kidney"]
    spine = array == code["spine/bone"]
    if kidney.any() and spine.any():
        left = physical_x(kidney) > physical_x(spine).mean()
        out[kidney] = np.where(left, 2, 1)
    organs = sitk.GetImageFromArray(out)
    organs.CopyInformation(tissues)
    return organs


def dice_on_grid(probability: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> float:
    pred = probability >= threshold
    truth = label > 0
    denominator = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / denominator) if denominator else 1.0


def validate(network: torch.nn.Module, cases: Sequence[CachedCase], recipe: dict,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Sliding-window Dice on the network grid for each held-out case (model selection).

    Windows are chosen as the engine chooses them (``window_roi``).
    """
    from monai.inferers import sliding_window_inference

    settings = InferenceSettings.from_dict(recipe["inference"])
    multiple = stride_product(recipe["network"])
    network.eval()
    scores = {}
    with torch.inference_mode():
        for case in cases:
            roi = window_roi(case.image.shape, settings, multiple)
            x = torch.from_numpy(case.image)[None, None].to(device)
            logits = sliding_window_inference(x, roi, settings.sw_batch_size, network, overlap=settings.overlap,
                                              mode=settings.mode, cval=float(case.image.min()))
            prob = torch.softmax(logits.float(), 1)[0, 1].cpu().numpy()
            scores[case.case] = dice_on_grid(prob, case.label, settings.threshold)
    network.train()
    return scores


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _save_checkpoint(path: Path, network, optimizer, iteration: int, best: float) -> None:
    _save_state(path, {"model": unwrap(network).state_dict(), "optimizer": optimizer.state_dict(),
                       "iteration": iteration, "best_dice": best})


def _learning_rate(recipe: dict, iteration: int, iterations: int) -> float:
    base = recipe["optimizer"]["lr"]
    if recipe.get("schedule") == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * iteration / iterations))
    return base


def _load_cases(entries, prep, cache_dir, ctx: DistContext) -> list[CachedCase]:
    """Rank 0 preprocesses and fills the cache first; the other ranks then read it."""
    if ctx.distributed and cache_dir is not None and not ctx.is_main:
        ctx.barrier()
    cases = [cached_case(e, prep, cache_dir) for e in entries]
    if ctx.distributed and cache_dir is not None and ctx.is_main:
        ctx.barrier()
    return cases


def _make_optimizer(network: torch.nn.Module, recipe: dict) -> torch.optim.Optimizer:
    spec = recipe["optimizer"]
    return getattr(torch.optim, spec["name"])(network.parameters(), lr=spec["lr"],
                                              weight_decay=spec.get("weight_decay", 0.0))


def train(run_dir: str | Path, recipe: dict, train_entries: Sequence[CaseEntry], val_entries: Sequence[CaseEntry],
          cache_dir: Path | None = None, phantoms: int | None = None, iterations: int | None = None,
          validate_every: int = 250, seed: int = 0, log=print, epochs: int | None = None, device: str = "auto",
          progress: bool = False, init_from: str | Path | None = None) -> Path:
    """Train (or resume) a run; returns the path of the last checkpoint.

    ``iterations`` (optimiser steps) or ``epochs`` (passes over the training volumes, for
    epoch-based recipes) override the recipe's length. ``device``: auto, cpu or cuda.
    ``init_from``: a model bundle whose weights start the run (fine-tuning, e.g. the
    bundled model on a hospital's own cases); its network must be the recipe's.
    Under torchrun every rank calls this; only rank 0 logs (``log``) and writes files.
    A failure leaves a new run folder (absent or empty before) as it was, unless a
    checkpoint was saved.
    """
    check_train_arguments(train_entries, val_entries, phantoms, iterations, epochs, validate_every)
    run_dir = Path(run_dir)
    check_run_folder(run_dir, cache_dir)
    created = not run_dir.exists()
    fresh = created or (run_dir.is_dir() and not any(run_dir.iterdir()))
    try:
        with run_lock(run_dir) if is_main_process() else contextlib.nullcontext():
            if recipe.get("stages"):
                if epochs is not None:
                    raise LiverVolumetryError(f"recipe {recipe.get('name', '?')!r} has stages: set each stage's "
                                              "length in the recipe, or the total with --iterations")
                stages = expand_stages(recipe)  # checks the stages before any work
                counts = stage_iterations(stages, len(train_entries), iterations)
                with distributed_session(device) as ctx:
                    return _train_stages(ctx, run_dir, recipe, stages, counts, list(train_entries),
                                         list(val_entries), cache_dir, phantoms, validate_every, seed, log, progress,
                                         init_from)
            with distributed_session(device) as ctx:
                return _train(ctx, run_dir, recipe, list(train_entries), list(val_entries), cache_dir, phantoms,
                              total_iterations(recipe, len(train_entries), iterations, epochs), validate_every, seed,
                              log, progress, init_from)
    except RunInUseError:
        raise  # the folder is the other training's: leave it alone
    except Exception:
        if fresh and is_main_process():
            remove_unstarted_run(run_dir, created)
        raise


def stage_iterations(stages: list[dict], train_count: int, iterations: int | None = None) -> list[int]:
    """Each stage's length; ``iterations`` (a total) shares the recipe's proportions."""
    counts = [total_iterations(stage, train_count) for stage in stages]
    if iterations is None:
        return counts
    if iterations < len(stages):
        raise LiverVolumetryError(f"{iterations} iteration(s) cannot be shared among {len(stages)} stages")
    scaled = []
    for k, c in enumerate(counts[:-1]):  # at least 1 each, and 1 left for every later stage
        later = len(counts) - k - 1
        scaled.append(min(max(1, round(c * iterations / sum(counts))), iterations - sum(scaled) - later))
    return scaled + [iterations - sum(scaled)]


def _train_stages(ctx: DistContext, run_dir: Path, recipe: dict, stages: list[dict], counts: list[int],
                  train_entries: list[CaseEntry], val_entries: list[CaseEntry], cache_dir: Path | None,
                  phantoms: int | None, validate_every: int, seed: int, log, progress: bool,
                  init_from: str | Path | None) -> Path:
    """Each stage a run of its own (``RUN/stage<k>``), started from the previous stage's
    last weights; ``RUN/config.json`` and ``RUN/last.pt`` are then the final stage's, so
    that export and cross-validation treat the whole as one run."""
    say = log if ctx.is_main else (lambda message: None)
    phantom_count = [stage.get("phantom_count", 40) if phantoms is None else phantoms for stage in stages]
    whole = {**stages[-1], "name": recipe.get("name", "liver-mri"), "stages": recipe["stages"]}  # RUN's record
    check_resume(run_dir, whole, train_entries, val_entries, phantom_count[-1], seed)
    for k, stage in enumerate(stages):  # a finished stage is not trained again: check them all first
        check_resume(run_dir / f"stage{k}", stage, train_entries, val_entries, phantom_count[k], seed + 10 * k)
    trained = check_stage_lengths(run_dir, counts)
    previous = None
    for k, (stage, count) in enumerate(zip(stages, counts)):
        stage_dir = run_dir / f"stage{k}"
        last = stage_dir / "last.pt"
        if trained.get(k, -1) >= count:
            say(f"stage {k + 1} of {len(stages)} already trained (in {stage_dir})")
        else:
            say(f"stage {k + 1} of {len(stages)}, in {stage_dir}")
            _train(ctx, stage_dir, stage, train_entries, val_entries, cache_dir, phantoms, count, validate_every,
                   seed + 10 * k, log, progress, init_from if k == 0 else None, init_checkpoint=previous)
        previous = last
    if ctx.is_main:
        config = json.loads((previous.parent / "config.json").read_text(encoding="utf-8"))
        first = json.loads((run_dir / "stage0" / "config.json").read_text(encoding="utf-8"))
        config["recipe"] = {**config["recipe"], "name": whole["name"], "stages": whole["stages"]}
        config.update(iterations=sum(counts), stage_iterations=counts, seed=seed)
        config.pop("init_from", None)
        if first.get("init_from"):
            config["init_from"] = first["init_from"]
        state = load_checkpoint(previous)
        _save_state(run_dir / "last.pt", {**state, "iteration": sum(counts)})
        write_text_atomic(run_dir / "config.json", json.dumps(config, indent=2))
    ctx.barrier()
    return run_dir / "last.pt"


def _with_organ_classes(recipe: dict, cases: Sequence[CachedCase]) -> dict:
    """With ``organ_targets``, as many output channels as the data has classes:
    background, liver, and each other labelled structure (kidneys, spleen, ...)."""
    if not recipe.get("organ_targets"):
        return recipe
    organs = max((int(c.tissues.max()) for c in cases if c.tissues is not None), default=0)
    args = recipe["network"].get("args", {})
    if args.get("out_channels") == organs + 2:
        return recipe
    return {**recipe, "network": {**recipe["network"], "args": {**args, "out_channels": organs + 2}}}


def _check_same_network(bundle, recipe: dict) -> None:
    ours, theirs = json.loads(json.dumps(recipe["network"])), json.loads(json.dumps(bundle.network))
    if ours != theirs:
        raise InputError(bundle.path, f"its network {theirs} is not the recipe's {ours}; fine-tuning needs the same "
                                      "network (with organ_targets, the same number of output classes)")


def _train(ctx: DistContext, run_dir: Path, recipe: dict, train_entries: list[CaseEntry],
           val_entries: list[CaseEntry], cache_dir: Path | None, phantoms: int | None, iterations: int,
           validate_every: int, seed: int, log, progress: bool, init_from: str | Path | None = None,
           init_checkpoint: Path | None = None) -> Path:
    say = log if ctx.is_main else (lambda message: None)
    start_bundle = load_bundle(init_from) if init_from is not None else None  # checks its SHA-256 early
    phantoms = recipe.get("phantom_count", 40) if phantoms is None else phantoms
    recorded = check_resume(run_dir, recipe, train_entries, val_entries, phantoms, seed, start_bundle)  # first
    check_length(run_dir, iterations)
    amp = autocast_dtype(recipe.get("precision"), ctx.device)
    if recipe.get("precision", "fp32") != precision_name(amp):
        say(f"no fast bfloat16 on {ctx.device}: training in float32")
    prep = Preprocessing.from_dict(recipe["preprocessing"])
    per_epoch = iterations_per_epoch(recipe, len(train_entries)) if "volumes_per_batch" in recipe else None

    torch.manual_seed(seed)
    say(f"preprocessing {len(train_entries)} training and {len(val_entries)} validation cases ...")
    train_cases = _load_cases(train_entries, prep, cache_dir, ctx)
    val_cases = [cached_case(e, prep, cache_dir) for e in val_entries] if ctx.is_main else []  # rank 0 validates
    contrasts = recipe.get("phantom_contrasts", ["t1_portal_venous"])
    phantom_cases = (_phantom_cases(phantoms, prep, contrasts=contrasts)
                     if phantoms and recipe.get("phantom_fraction", 0) > 0 else [])
    say(f"{len(phantom_cases)} phantoms ready")
    recipe = _with_organ_classes(recipe, train_cases + phantom_cases)
    if start_bundle is not None:
        _check_same_network(start_bundle, recipe)
    if ctx.is_main:  # every input checked: only now is the run's record (re)written
        config = {"recipe": recipe, "iterations": iterations, "phantoms": phantoms, "seed": seed,
                  "iterations_per_epoch": per_epoch, "world_size": ctx.world_size, "device": str(ctx.device),
                  "train": entry_dicts(train_entries), "validation": entry_dicts(val_entries),
                  "precision": precision_name(amp)}
        if recorded is not None and recorded.get("init_from"):  # resumed: weights began as recorded
            config["init_from"] = recorded["init_from"]
        elif recorded is None and start_bundle is not None:
            config["init_from"] = {"name": start_bundle.name, "version": start_bundle.version,
                                   "sha256": start_bundle.sha256}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", json.dumps(config, indent=2))

    network = build_network(recipe)
    if ctx.rank:
        torch.manual_seed(seed + ctx.rank)  # own dropout stream; weights come from rank 0
    start, best = 0, -1.0
    last_path = run_dir / "last.pt"
    ctx.barrier()  # rank 0 has created the run folder
    state = load_checkpoint(last_path) if last_path.is_file() else None
    if state is not None:
        network.load_state_dict(state["model"])
        start, best = int(state["iteration"]), float(state["best_dice"])
        # Dropout's stream re-derived for the resumed span, not repeated (and not the sampler's).
        torch.manual_seed(int(np.random.SeedSequence([seed + ctx.rank, start, 1]).generate_state(1)[0]))
        say(f"resuming at iteration {start}")
    elif start_bundle is not None:
        network.load_state_dict(start_bundle.load_state_dict())
        say(f"starting from the weights of {start_bundle.name} {start_bundle.version}")
    elif init_checkpoint is not None:
        network.load_state_dict(load_checkpoint(init_checkpoint)["model"])
        say(f"starting from the weights of {init_checkpoint}")
    if amp is not None and ctx.device.type == "cpu":
        guard_bf16_convolutions(network)  # PyTorch's wrong CPU bf16 conv3d shapes run in float32
    network = wrap_model(network, ctx)
    optimizer = _make_optimizer(unwrap(network), recipe)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])  # its state follows the parameters' device
    sampler = build_sampler(recipe, train_cases, phantom_cases, seed, ctx.rank, ctx.world_size, start)
    loss_fn = _loss(recipe["loss"])
    say(f"{iterations} iterations" + (f" ({per_epoch} per epoch)" if per_epoch else "")
        + f" on {ctx.world_size} process(es), device {ctx.device}, {precision_name(amp)}")
    with RunLog(run_dir, iterations, start, enabled=ctx.is_main, progress=progress, message=log) as run_log:
        network.train()
        began, running = time.time(), []
        for iteration in range(start, iterations):
            lr = _learning_rate(recipe, iteration, iterations)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = sampler.batch(iteration)
            with torch.autocast(ctx.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = network(x.to(ctx.device))
            loss = loss_fn(logits.float(), y.to(ctx.device))
            value = loss.item()
            # A diverged step would spoil every later checkpoint (all ranks decide together).
            if not math.isfinite(ctx.mean(value)):
                raise LiverVolumetryError(f"{run_dir}: the training loss is not finite ({value}) at iteration "
                                          f"{iteration + 1}; the run stops, its last checkpoint kept (try a lower "
                                          "learning rate, or precision fp32)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(value)
            run_log.step(done := iteration + 1, running[-1], lr)
            if done % validate_every == 0 or done == iterations:
                loss_mean = ctx.mean(float(np.mean(running)))
                if ctx.is_main:
                    best = _checkpoint(run_dir, network, optimizer, val_cases, recipe, ctx, (done, iterations), best,
                                       loss_mean, lr, time.time() - began, per_epoch, run_log)
                ctx.barrier()
                running = []
    return last_path


def _checkpoint(run_dir: Path, network, optimizer, val_cases, recipe, ctx: DistContext, at: tuple[int, int],
                best: float, loss: float, lr: float, elapsed: float, per_epoch: int | None, run_log: RunLog) -> float:
    """Rank 0: validate, save best/last, log; returns the best validation Dice so far.

    ``at``: (completed iterations, total); ``loss``: mean training loss since the last row.
    """
    done, total = at
    scores = validate(unwrap(network), val_cases, recipe, ctx.device) if val_cases else {}
    mean = float(np.mean(list(scores.values()))) if scores else float("nan")
    if scores and mean > best:
        best = mean
        _save_checkpoint(run_dir / "best.pt", network, optimizer, done, best)
    _save_checkpoint(run_dir / "last.pt", network, optimizer, done, best)
    epoch = f"{done / per_epoch:.2f}" if per_epoch else ""
    run_log.validation({"iteration": done, "loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "val_dice_mean": f"{mean:.4f}",
                        "seconds": f"{elapsed:.0f}", "epoch": epoch}, scores)
    validated = (f"val dice {mean:.4f} ({', '.join(f'{k}={v:.3f}' for k, v in scores.items())})" if scores
                 else "no validation cases")
    run_log.message(f"it {done}/{total} loss {loss:.4f} lr {lr:.1e} {validated} {elapsed:.0f}s")
    return best
