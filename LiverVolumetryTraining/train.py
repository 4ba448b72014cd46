"""Training loop: patches from cached cases, validation on held-out cases, checkpoints.

A run folder holds ``config.json`` (recipe + data + split), ``log.csv``, and the
checkpoints ``last.pt``/``best.pt`` (plain dicts of tensors and numbers, loaded with
``weights_only=True``). Re-running the same command resumes from ``last.pt``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from LiverVolumetryLib.bundle import InferenceSettings
from LiverVolumetryLib.preprocess import Preprocessing

from .augment import augment, sample_patch
from .dataset import CachedCase, CaseEntry, cached_case, preprocess_case


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


def _phantom_cases(count: int, prep: Preprocessing, seed: int = 1000) -> list[CachedCase]:
    from LiverVolumetryLib.phantom import make_phantom

    cases = []
    for k in range(count):
        phantom = make_phantom(seed + k)
        cases.append(preprocess_case(phantom.image, phantom.liver, prep, f"phantom-{seed + k}"))
    return cases


def dice_on_grid(probability: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> float:
    pred = probability >= threshold
    truth = label > 0
    denominator = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / denominator) if denominator else 1.0


def validate(network: torch.nn.Module, cases: Sequence[CachedCase], recipe: dict) -> dict[str, float]:
    """Sliding-window Dice on the network grid for each held-out case (model selection)."""
    from monai.inferers import sliding_window_inference

    settings = InferenceSettings.from_dict(recipe["inference"])
    network.eval()
    scores = {}
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(case.image)[None, None]
            logits = sliding_window_inference(x, settings.roi_size, 1, network, overlap=settings.overlap,
                                              mode="gaussian", cval=float(case.image.min()))
            scores[case.case] = dice_on_grid(torch.softmax(logits, 1)[0, 1].numpy(), case.label)
    network.train()
    return scores


def _save_checkpoint(path: Path, network, optimizer, iteration: int, best: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                "iteration": iteration, "best_dice": best}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train(run_dir: str | Path, recipe: dict, train_entries: Sequence[CaseEntry], val_entries: Sequence[CaseEntry],
          cache_dir: Path | None = None, phantoms: int | None = None, iterations: int | None = None,
          validate_every: int = 250, seed: int = 0, log=print) -> Path:
    """Train (or resume) a run; returns the path of the last checkpoint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    iterations = iterations or recipe["iterations"]
    phantoms = recipe.get("phantom_count", 40) if phantoms is None else phantoms
    prep = Preprocessing.from_dict(recipe["preprocessing"])
    config = {"recipe": recipe, "iterations": iterations, "phantoms": phantoms, "seed": seed,
              "train": [{**asdict(e), "image": str(e.image), "label": str(e.label)} for e in train_entries],
              "validation": [{**asdict(e), "image": str(e.image), "label": str(e.label)} for e in val_entries]}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    log(f"preprocessing {len(train_entries)} training and {len(val_entries)} validation cases ...")
    train_cases = [cached_case(e, prep, cache_dir) for e in train_entries]
    val_cases = [cached_case(e, prep, cache_dir) for e in val_entries]
    phantom_cases = _phantom_cases(phantoms, prep) if phantoms and recipe.get("phantom_fraction", 0) > 0 else []
    log(f"{len(phantom_cases)} phantoms ready")

    network = build_network(recipe)
    opt_spec = recipe["optimizer"]
    optimizer = getattr(torch.optim, opt_spec["name"])(network.parameters(), lr=opt_spec["lr"],
                                                      weight_decay=opt_spec.get("weight_decay", 0.0))
    start, best = 0, -1.0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.is_file():
        state = load_checkpoint(last_path)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best = int(state["iteration"]), float(state["best_dice"])
        rng = np.random.default_rng([seed, start])
        log(f"resuming at iteration {start}")
    loss_fn = _loss(recipe["loss"])
    patch = tuple(recipe["patch_size"])
    log_path = run_dir / "log.csv"
    new_log = not log_path.is_file()
    with open(log_path, "a", newline="") as log_stream:
        writer = csv.writer(log_stream)
        if new_log:
            writer.writerow(["iteration", "loss", "lr", "val_dice_mean", "seconds"])
        network.train()
        began, running = time.time(), []
        for iteration in range(start, iterations):
            lr = opt_spec["lr"] * (0.5 * (1 + math.cos(math.pi * iteration / iterations))
                                   if recipe.get("schedule") == "cosine" else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = [], []
            for _ in range(recipe["batch_size"]):
                pool = phantom_cases if phantom_cases and rng.random() < recipe.get("phantom_fraction", 0) else train_cases
                case = pool[rng.integers(len(pool))]
                img, lab = sample_patch(case.image, case.label, patch, rng.random() < recipe["positive_fraction"], rng)
                img, lab = augment(img, lab, rng, recipe.get("augmentation", "none"))
                images.append(img)
                labels.append(lab)
            x = torch.from_numpy(np.stack(images)[:, None])
            y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
            loss = loss_fn(network(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(loss.item())
            done = iteration + 1
            if done % validate_every == 0 or done == iterations:
                scores = validate(network, val_cases, recipe) if val_cases else {}
                mean = float(np.mean(list(scores.values()))) if scores else float("nan")
                if scores and mean > best:
                    best = mean
                    _save_checkpoint(best_path, network, optimizer, done, best)
                _save_checkpoint(last_path, network, optimizer, done, best)
                elapsed = time.time() - began
                writer.writerow([done, f"{np.mean(running):.4f}", f"{lr:.2e}", f"{mean:.4f}", f"{elapsed:.0f}"])
                log_stream.flush()
                log(f"it {done}/{iterations} loss {np.mean(running):.4f} lr {lr:.1e} val dice {mean:.4f} "
                    f"({', '.join(f'{k}={v:.3f}' for k, v in scores.items())}) {elapsed:.0f}s")
                running = []
    return last_path
