"""Contrast-robustness ablation: one recipe choice changed at a time, same split, same budget.

Each variant is a set of recipe overrides (augmentation, phantoms and their contrasts)
trained for the same number of iterations on the same cases (``RUN/<variant>``,
resumable). Every variant's last checkpoint then goes through the engine's pipeline on

* the held-out real cases (native-grid Dice), and
* test phantoms of every MR contrast in :data:`LiverVolumetryLib.phantom_contrast.CONTRASTS`
  (seeds never used for training phantoms), which stand in for sequences without
  labelled real data.

``RUN/ablation.json`` and ``RUN/ablation.md`` hold the table. Run with
``python -m LiverVolumetryTraining.ablation --data FOLDER --val-cases 1,8,... --run DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from LiverVolumetryLib.atomic import write_text_atomic
from LiverVolumetryLib.bundle import write_bundle
from LiverVolumetryLib.errors import LiverVolumetryError
from LiverVolumetryLib.measure import dice
from LiverVolumetryLib.phantom import make_phantom
from LiverVolumetryLib.phantom_contrast import CONTRASTS
from LiverVolumetryLib.segment import segment_liver

from .dataset import CaseEntry, load_entry
from .recipes import load_recipe

Log = Callable[[str], None]
ALL_CONTRASTS = ["t1_portal_venous", "t1_in_phase", "t1_opposed_phase", "t2"]
#: Variant name -> recipe overrides. Each row adds one choice to the row above it.
VARIANTS: dict[str, dict] = {
    "no augmentation, no phantoms": {"augmentation": "none", "phantom_fraction": 0.0},
    "+ mild augmentation": {"augmentation": "mild", "phantom_fraction": 0.0},
    "+ portal-venous T1 phantoms": {"augmentation": "mild", "phantom_fraction": 0.15,
                                    "phantom_contrasts": ["t1_portal_venous"]},
    "+ phantoms in 4 contrasts": {"augmentation": "mild", "phantom_fraction": 0.15, "phantom_contrasts": ALL_CONTRASTS},
    "+ tissue remapping in 30 % of patches": {"augmentation": {"base": "mild", "remap": 0.3}, "phantom_fraction": 0.15,
                                              "phantom_contrasts": ALL_CONTRASTS},
    # Cyst-like blobs outside the liver instead of remapping (README, "Large cysts").
    "+ distractors in 30 % of patches (instead of remapping)": {
        "augmentation": {"base": "mild", "distract": 0.3}, "phantom_fraction": 0.15, "phantom_contrasts": ALL_CONTRASTS},
    # Kidneys and spleen (when the label file has them) remapped as their own classes.
    "+ organ-aware remapping (30 %)": {"augmentation": {"base": "mild", "remap": 0.3}, "phantom_fraction": 0.15,
                                       "phantom_contrasts": ALL_CONTRASTS, "organ_tissues": True},
    # Kidneys and spleen as extra output classes (liver stays class 1; the engine reads
    # its probability), organ-aware remapping, no phantoms (scored before the training
    # phantoms carried organ labels, see train.phantom_organs).
    "organs as targets, organ-aware remapping, no phantoms": {
        "augmentation": {"base": "mild", "remap": 0.3}, "phantom_fraction": 0.0, "organ_targets": True,
        "network": {"args": {"out_channels": 5}}},
}
TEST_PHANTOM_SEEDS = (7001, 7002, 7003, 7004)  # training phantoms use seeds 1000 and up


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def phantom_dice_by_contrast(bundle, seeds: Sequence[int] = TEST_PHANTOM_SEEDS,
                             phantom_args: dict | None = None) -> dict[str, float]:
    """Mean engine Dice of ``bundle`` on the test phantoms of every MR contrast."""
    out = {}
    for contrast in CONTRASTS:
        scores = []
        for seed in seeds:
            phantom = make_phantom(seed, contrast=contrast, **(phantom_args or {}))
            scores.append(dice(segment_liver(phantom.image, bundle, device="cpu").mask, phantom.liver))
        out[contrast] = round(float(np.mean(scores)), 4)
    return out


def score_variant(run_dir: Path, val_entries: Sequence[CaseEntry], seeds: Sequence[int], log: Log,
                  phantom_args: dict | None = None) -> dict:
    """Native-grid Dice of the run's last checkpoint on real held-out cases and test phantoms."""
    from .export import bundle_spec
    from .run_folder import load_checkpoint, read_config

    config = read_config(run_dir)
    state = load_checkpoint(run_dir / "last.pt")
    bundle = write_bundle(run_dir / "bundle", state["model"], bundle_spec(config, state, run_dir.name, "0.0.0"),
                          overwrite=True)
    real = {}
    for entry in val_entries:
        image, liver = load_entry(entry)
        real[entry.case] = round(dice(segment_liver(image, bundle, device="cpu").mask, liver), 4)
    phantoms = phantom_dice_by_contrast(bundle, seeds, phantom_args)
    log(f"{run_dir.name}: real {real}, phantoms {phantoms}")
    return {"real_per_case": real, "real_mean": round(float(np.mean(list(real.values()))), 4) if real else None,
            "phantom_mean_by_contrast": phantoms, "iterations": int(state["iteration"])}


def markdown(results: dict[str, dict], iterations: int, val_cases: Sequence[str]) -> str:
    short = {"t1_portal_venous": "T1 portal-venous", "t2": "T2", "t1_in_phase": "T1 in-phase",
             "t1_opposed_phase": "T1 opposed-phase"}
    lines = [f"Each variant trained for {iterations} iterations on the same cases; Dice of the last checkpoint "
             f"through the engine (native grid) on the held-out real T2-SPIR cases and on "
             f"{len(TEST_PHANTOM_SEEDS)} unseen test phantoms per contrast.", "",
             "| variant | real mean | " + " | ".join(f"case {c}" for c in val_cases) + " | "
             + " | ".join(f"phantoms {short.get(c, c)}" for c in CONTRASTS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in val_cases) + " | " + " | ".join("---:" for _ in CONTRASTS) + " |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['real_mean']:.3f} | "
                     + " | ".join(f"{r['real_per_case'][c]:.3f}" for c in val_cases) + " | "
                     + " | ".join(f"{r['phantom_mean_by_contrast'][c]:.3f}" for c in CONTRASTS) + " |")
    return "\n".join(lines) + "\n"


def run_ablation(entries: Sequence[CaseEntry], val_cases: Sequence[str], run_dir: str | Path, recipe: str | dict,
                 iterations: int, variants: dict[str, dict] = VARIANTS, seeds: Sequence[int] = TEST_PHANTOM_SEEDS,
                 phantoms: int = 40, cache_dir: Path | None = None, seed: int = 0, log: Log = print,
                 phantom_args: dict | None = None) -> dict:
    """Train every variant (resuming finished ones) and score it; writes ablation.json/.md.

    ``recipe``: the base recipe (name, JSON file or dict) that the variants override;
    ``phantom_args``: extra :func:`make_phantom` arguments for the test phantoms.
    """
    from .recipes import _merge
    from .train import train

    run_dir = Path(run_dir)
    unknown = set(val_cases) - {e.case for e in entries}
    if unknown:
        raise LiverVolumetryError(f"--val-cases names unknown cases: {', '.join(sorted(unknown))}")
    training = [e for e in entries if e.case not in val_cases]
    held_out = [e for e in entries if e.case in val_cases]
    results: dict[str, dict] = {}
    for name, overrides in variants.items():
        variant_dir = run_dir / _slug(name)
        score_path = variant_dir / "scores.json"
        scores = json.loads(score_path.read_text(encoding="utf-8")) if score_path.is_file() else {}
        if scores.get("iterations") != iterations or scores.get("seeds") != list(seeds):
            base = load_recipe(recipe) if isinstance(recipe, str) else recipe
            variant = _merge(base, {**overrides, "name": f"{base.get('name', 'recipe')} ({name})"})
            train(variant_dir, variant, training, held_out, cache_dir=cache_dir or run_dir / "cache",
                  phantoms=phantoms, iterations=iterations, validate_every=max(iterations // 4, 1), seed=seed,
                  log=log, progress=False)
            scores = {**score_variant(variant_dir, held_out, seeds, log, phantom_args), "seeds": list(seeds)}
            write_text_atomic(score_path, json.dumps(scores, indent=2))
        results[name] = scores
    write_text_atomic(run_dir / "ablation.json", json.dumps(results, indent=2))
    write_text_atomic(run_dir / "ablation.md", markdown(results, iterations, list(val_cases)))
    return results


def main(argv: list[str] | None = None) -> int:
    from .dataset import find_pairs

    parser = argparse.ArgumentParser(prog="python -m LiverVolumetryTraining.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder of image_N/label_N pairs")
    parser.add_argument("--label-value", type=int, default=1)
    parser.add_argument("--val-cases", required=True, help="comma-separated held-out case names")
    parser.add_argument("--run", required=True, help="folder for the variants' runs and the table")
    parser.add_argument("--recipe", default="liver-mri")
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--cache", help="preprocessing cache folder (default RUN/cache)")
    args = parser.parse_args(argv)
    try:
        run_ablation(find_pairs(args.data, args.label_value), [c for c in args.val_cases.split(",") if c],
                     args.run, args.recipe, args.iterations, cache_dir=Path(args.cache) if args.cache else None,
                     log=lambda m: print(m, flush=True))
    except LiverVolumetryError as error:
        print(f"ablation: error: {error}", file=sys.stderr)
        return 1
    print((Path(args.run) / "ablation.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
