"""``livervolumetry-train``: train a liver model and export it as an engine bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from LiverVolumetryLib.errors import LiverVolumetryError


def _entries(args) -> list:
    from .dataset import find_pairs, read_manifest

    entries = []
    for folder in args.data or []:
        entries += find_pairs(folder, args.label_value)
    for manifest in args.manifest or []:
        entries += read_manifest(manifest)
    if not entries:
        raise LiverVolumetryError("no training data: give --data FOLDER or --manifest CSV")
    return entries


def _split(entries: list, val_cases: str | None, val_count: int, seed: int) -> tuple[list, list]:
    import numpy as np

    if val_cases:
        names = [n.strip() for n in val_cases.split(",") if n.strip()]
        unknown = set(names) - {e.case for e in entries}
        if unknown:
            raise LiverVolumetryError(f"--val-cases names unknown cases: {', '.join(sorted(unknown))}")
    else:
        order = np.random.default_rng(seed).permutation(len(entries))
        names = [entries[i].case for i in order[:val_count]]
    return [e for e in entries if e.case not in names], [e for e in entries if e.case in names]


def cmd_train(args) -> int:
    from .recipes import get_recipe
    from .train import train

    recipe = get_recipe(args.recipe)
    train_entries, val_entries = _split(_entries(args), args.val_cases, args.val_count, args.seed)
    print(f"training on {[e.case for e in train_entries]}; validating on {[e.case for e in val_entries]}", flush=True)
    cache = Path(args.cache) if args.cache else Path(args.run) / "cache"
    train(args.run, recipe, train_entries, val_entries, cache_dir=cache, phantoms=args.phantoms,
          iterations=args.iterations, validate_every=args.validate_every, seed=args.seed,
          log=lambda m: print(m, flush=True))
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    notes = Path(args.card_notes).read_text(encoding="utf-8") if args.card_notes else ""
    bundle = export_run(args.run, args.out, args.name, args.version, args.checkpoint, args.description,
                        overwrite=args.overwrite, log=lambda m: print(m, flush=True), card_notes=notes)
    print(f"wrote bundle {bundle.path} (sha256 {bundle.sha256[:12]}...)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livervolumetry-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume) a run")
    t.add_argument("--data", action="append", help="folder of image_N/label_N pairs (repeatable)")
    t.add_argument("--manifest", action="append", help="CSV with image,label[,case,liver_label,group]")
    t.add_argument("--label-value", type=int, default=1, help="liver label value in --data folders (default 1)")
    t.add_argument("--run", required=True, help="run folder (config, log, checkpoints); re-run to resume")
    t.add_argument("--recipe", default="liver-mri")
    t.add_argument("--val-cases", help="comma-separated case names held out for validation")
    t.add_argument("--val-count", type=int, default=3, help="held-out cases when --val-cases is not given")
    t.add_argument("--iterations", type=int)
    t.add_argument("--phantoms", type=int, help="synthetic T1 phantoms added to training")
    t.add_argument("--validate-every", type=int, default=250)
    t.add_argument("--cache", help="preprocessing cache folder (default RUN/cache)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("export", help="write a model bundle from a run")
    e.add_argument("run")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--name", default="liver-mri")
    e.add_argument("--version", default="0.0.1")
    e.add_argument("--description", default="")
    e.add_argument("--checkpoint", choices=("last", "best"), default="last")
    e.add_argument("--card-notes", help="Markdown file appended to the generated MODEL.md (history, ablations)")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LiverVolumetryError as error:
        print(f"livervolumetry-train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livervolumetry-train: interrupted (resume by running the same command)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
