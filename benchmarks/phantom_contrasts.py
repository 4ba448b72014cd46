"""Dice of model bundles on the unseen test phantoms of every MR contrast.

    python benchmarks/phantom_contrasts.py                       # the bundled model
    python benchmarks/phantom_contrasts.py runs/a/bundle runs/b/bundle --threshold 0.5

The phantoms (seeds 7001-7004, never used for training phantoms, which start at 1000)
stand in for MR sequences without labelled real data: T1 portal-venous, T1 in-phase, T1
opposed-phase and T2. Each is segmented through the engine and scored against its true
liver; the table gives the mean per contrast and over all contrasts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LiverVolumetry"), str(ROOT)]

from LiverVolumetryLib.bundle import load_bundle  # noqa: E402
from LiverVolumetryTraining.ablation import TEST_PHANTOM_SEEDS, phantom_dice_by_contrast  # noqa: E402

SHORT = {"t1_portal_venous": "T1 portal-venous", "t2": "T2", "t1_in_phase": "T1 in-phase",
         "t1_opposed_phase": "T1 opposed-phase"}


def table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per contrast, then the mean."""
    contrasts = list(next(iter(rows.values())))
    lines = ["| model | " + " | ".join(SHORT.get(c, c) for c in contrasts) + " | mean |",
             "| --- | " + " | ".join("---:" for _ in contrasts) + " | ---: |"]
    for name, scores in rows.items():
        mean = sum(scores.values()) / len(scores)
        lines.append(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in contrasts) + f" | {mean:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="model bundle folders (default: the bundled model)")
    parser.add_argument("--threshold", type=float, default=None, help="probability threshold (default: each bundle's)")
    args = parser.parse_args(argv)
    rows = {}
    for path in args.models or [None]:
        bundle = load_bundle(path)
        if args.threshold is not None:
            bundle = dataclasses.replace(bundle, inference=dataclasses.replace(bundle.inference,
                                                                               threshold=args.threshold))
        name = f"{bundle.name} {bundle.version}"
        rows[name] = phantom_dice_by_contrast(bundle, TEST_PHANTOM_SEEDS)
        print(f"{name}: " + ", ".join(f"{SHORT.get(c, c)} {d:.3f}" for c, d in rows[name].items()), flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
