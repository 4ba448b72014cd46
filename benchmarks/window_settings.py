"""Sliding-window settings against accuracy, on out-of-fold cases of a cross-validation.

    python benchmarks/window_settings.py runs/cv --data ../shared/data/chaos-t2

Each case of a ``livervolumetry-train crossval`` folder is segmented by its own fold's
model (``RUN/fold<k>/bundle``, so never by a model that saw it) under several inference
settings: the paper's sliding windows, one window over the whole grid, and one window over
the grid cropped to the body. For each setting the table gives the mean out-of-fold Dice
(native grid), its change against sliding windows, and the median network time. A faster setting is
worth shipping only when its Dice is not lower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "LiverVolumetry")]

#: Setting name -> InferenceSettings overrides; the first is the baseline.
SETTINGS = {
    "sliding windows 224x224x128, overlap 0.25": {"roi_size": (224, 224, 128), "overlap": 0.25,
                                                  "crop_to_body": False, "max_window_voxels": 0},
    "one window (<= 8 M voxels)": {"crop_to_body": False, "max_window_voxels": 8_000_000},
    "body crop + one window": {"crop_to_body": True, "max_window_voxels": 8_000_000},
}
BASELINE = next(iter(SETTINGS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="crossval folder (folds.json, fold<k>/bundle)")
    parser.add_argument("--data", required=True, help="folder of image_N/label_N pairs used by crossval")
    parser.add_argument("--label-value", type=int, default=1)
    parser.add_argument("--threshold", type=float, help="probability threshold (default: each bundle's)")
    parser.add_argument("--out", help="write the table as Markdown here")
    parser.add_argument("--folds", type=lambda t: [int(v) for v in t.split(",")], help="only these folds, e.g. 0,2")
    args = parser.parse_args(argv)

    from LiverVolumetryLib.bundle import load_bundle
    from LiverVolumetryLib.measure import dice
    from LiverVolumetryLib.segment import network_probability, probability_to_mask
    from LiverVolumetryTraining.dataset import find_pairs, load_entry

    run = Path(args.run)
    try:
        folds = json.loads((run / "folds.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"window_settings: {run / 'folds.json'}: cannot read the folds ({error})", file=sys.stderr)
        return 1
    entries = {e.case: e for e in find_pairs(args.data, args.label_value)}
    scores = {name: {} for name in SETTINGS}
    seconds = {name: [] for name in SETTINGS}
    for k, fold in enumerate(folds):
        if args.folds is not None and k not in args.folds:
            continue
        base = load_bundle(run / f"fold{k}" / "bundle")
        for case in fold:
            image, reference = load_entry(entries[case])
            for name, overrides in SETTINGS.items():
                bundle = replace(base, inference=replace(base.inference, **overrides))
                timings = {}
                probability, grid = network_probability(image, bundle, "cpu", timings=timings)
                mask = probability_to_mask(probability, grid, image, bundle, args.threshold)
                scores[name][case] = dice(mask, reference)
                seconds[name].append(timings["network"])
            print(f"fold {k} case {case}: " + ", ".join(f"{n} {scores[n][case]:.4f}" for n in SETTINGS), flush=True)
    base_mean = statistics.mean(scores[BASELINE].values())
    lines = ["| setting | mean Dice | change | lowest change | median network s |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in SETTINGS:
        values = scores[name]
        changes = [values[c] - scores[BASELINE][c] for c in values]
        lines.append(f"| {name} | {statistics.mean(values.values()):.4f} | {statistics.mean(values.values()) - base_mean:+.4f}"
                     f" | {min(changes):+.4f} | {statistics.median(seconds[name]):.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
