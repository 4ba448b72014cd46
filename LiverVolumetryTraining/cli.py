"""``livervolumetry-train``: train a liver model and export it as an engine bundle."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from LiverVolumetryLib.cli import label_values, path_text
from LiverVolumetryLib.errors import InputError, LiverVolumetryError, os_error_text
from .recipes import RECIPES


def _whole_number(least: int):
    """An argparse type: a whole number of at least ``least`` (else a usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least}, got {text!r}")
        return value

    return parse


at_least_one, zero_or_more = _whole_number(1), _whole_number(0)


def model_label(text: str) -> str:
    """An argparse type for a bundle's name or version: 1-80 characters, no path separators."""
    if not text.strip() or len(text) > 80 or any(c in text for c in "/\\") or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be 1-80 printable characters without / or \\, got {text!r}")
    return text.strip()


def device_name(text: str) -> str:
    """An argparse type: auto, cpu, cuda (gpu) or cuda:N."""
    if not re.fullmatch(r"auto|cpu|gpu|cuda(:\d+)?", text.lower()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text.lower()


def probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a probability threshold)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


def _entries(args) -> list:
    from .dataset import find_pairs, read_manifest

    if args.label_value is not None and not args.data:  # it would be ignored: a manifest says each case's
        raise LiverVolumetryError("--label-value applies to --data folders; a manifest gives each case's liver "
                                  "label in its liver_label column")
    entries = []
    for folder in args.data or []:
        entries += find_pairs(folder, 1 if args.label_value is None else args.label_value)
    for manifest in args.manifest or []:
        entries += read_manifest(manifest)
    if not entries:
        raise LiverVolumetryError("no cases: give --data FOLDER or --manifest FILE")
    return entries


def _split(entries: list, val_cases: str | None, val_count: int, seed: int) -> tuple[list, list]:
    import numpy as np

    if val_cases is not None:
        names = [n.strip() for n in val_cases.split(",") if n.strip()]
        if not names:
            raise LiverVolumetryError(f"--val-cases {val_cases!r} names no case (e.g. --val-cases 1,5,8; "
                                      "--val-count 0 for no validation)")
        unknown = set(names) - {e.case for e in entries}
        if unknown:
            raise LiverVolumetryError(f"--val-cases names unknown cases: {', '.join(sorted(unknown))}")
    else:
        if val_count >= len(entries):
            raise LiverVolumetryError(f"--val-count {val_count} holds out every one of the {len(entries)} case(s): "
                                      "at least one training case must remain")
        order = np.random.default_rng(seed).permutation(len(entries))
        names = [entries[i].case for i in order[:val_count]]
    train_entries = [e for e in entries if e.case not in names]
    if not train_entries:
        raise LiverVolumetryError("--val-cases names every case: at least one training case must remain")
    return train_entries, [e for e in entries if e.case in names]


def cmd_train(args) -> int:
    from .distributed import is_main_process
    from .manifest import refuse_duplicates
    from .recipes import load_recipe
    from .train import train

    recipe = load_recipe(args.recipe)
    entries = _entries(args)
    refuse_duplicates(entries)  # the split goes by case name
    train_entries, val_entries = _split(entries, args.val_cases, args.val_count, args.seed)
    if is_main_process():  # under torchrun, rank 0 speaks for all
        print(f"training on {[e.case for e in train_entries]}; validating on {[e.case for e in val_entries]}",
              flush=True)
    cache = Path(args.cache) if args.cache else Path(args.run) / "cache"
    train(args.run, recipe, train_entries, val_entries, cache_dir=cache, phantoms=args.phantoms,
          iterations=args.iterations, validate_every=args.validate_every, seed=args.seed,
          log=lambda m: print(m, flush=True), epochs=args.epochs, device=args.device,
          progress=not args.no_progress, init_from=args.init_from)
    return 0


def _thresholds(text: str) -> list[float]:
    """``--thresholds 0.4,0.5``: numbers, else a one-line error naming the bad one."""
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values.append(probability(part))
        except argparse.ArgumentTypeError:
            raise LiverVolumetryError(f"--thresholds: {part!r} is not a number between 0 and 1 "
                                      "(e.g. 0.4,0.5,0.6)") from None
    if not values:
        raise LiverVolumetryError(f"--thresholds {text!r} names no threshold (e.g. 0.4,0.5,0.6)")
    return values


def cmd_crossval(args) -> int:
    from .crossval import crossval, make_folds, parse_folds
    from .recipes import load_recipe

    if args.no_train and args.fold is not None:
        raise LiverVolumetryError("--fold trains one fold and --no-train trains none: give one of them")
    entries = _entries(args)
    cases = [e.case for e in entries]
    folds = parse_folds(args.folds, cases) if args.folds else make_folds(cases, args.k, args.seed)
    thresholds = _thresholds(args.thresholds) if args.thresholds is not None else [0.5]
    crossval(entries, args.run, load_recipe(args.recipe), folds, thresholds=thresholds, phantoms=args.phantoms,
             iterations=args.iterations, epochs=args.epochs, validate_every=args.validate_every, seed=args.seed,
             cache_dir=Path(args.cache) if args.cache else None, radiomics=not args.no_radiomics,
             device=args.device, log=lambda m: print(m, flush=True), train_folds=not args.no_train,
             only_fold=args.fold)
    if args.fold is not None:
        print(f"fold {args.fold} trained; once every fold is, run the same command without --fold to segment "
              "and evaluate")
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    try:
        notes = Path(args.card_notes).read_text(encoding="utf-8") if args.card_notes else ""
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(args.card_notes, f"cannot read the card notes ({getattr(error, 'strerror', None) or error})") \
            from None
    bundle = export_run(args.run, args.out, args.name, args.version, args.checkpoint, args.description,
                        overwrite=args.overwrite, log=lambda m: print(m, flush=True), card_notes=notes,
                        threshold=args.threshold, crossval=args.crossval, max_window_voxels=args.max_window_voxels,
                        crop_to_body=args.crop_to_body, data_credit=args.data_credit)
    print(f"wrote bundle {bundle.path} (sha256 {bundle.sha256[:12]}...)")
    return 0


def cmd_convert(args) -> int:
    from .converters import MANIFEST_NAME, convert

    entries = convert(args.dataset, args.source, args.out, sequences=args.sequences, label_value=args.label_value,
                      keep_organs=args.keep_organs, overwrite=args.overwrite, log=lambda m: print(m, flush=True))
    manifest = Path(args.out) / MANIFEST_NAME
    print(f"wrote {len(entries)} case{'' if len(entries) == 1 else 's'} to {manifest}; check them with: "
          f"livervolumetry-train check --manifest {manifest}")
    return 0


def cmd_check(args) -> int:
    from .manifest import check_entries

    entries = _entries(args)
    problems = check_entries(entries)
    for problem in problems:
        print(problem, flush=True)
    print(f"checked {len(entries)} cases: " + (f"{len(problems)} problem(s)" if problems else "all usable"))
    return 1 if problems else 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    if args.model and args.predictions:
        raise LiverVolumetryError("give --model or --predictions, not both")
    if args.prediction_label and not args.predictions:
        raise LiverVolumetryError("--prediction-label needs --predictions")
    result = evaluate(_entries(args), args.out, model=args.model, predictions=args.predictions,
                      radiomics=not args.no_radiomics, device=args.device, log=lambda m: print(m, flush=True),
                      overwrite=args.overwrite, prediction_label=args.prediction_label)
    print(f"evaluated {len(result.cases)} cases in {result.seconds:.0f} s: see {Path(args.out) / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livervolumetry-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume) a run")
    t.add_argument("--data", type=path_text, action="append", help="folder of image_N/label_N pairs (repeatable)")
    t.add_argument("--manifest", type=path_text, action="append", help="CSV with image,label[,case,liver_label,group]")
    t.add_argument("--label-value", type=int, help="liver label value in --data folders (default 1)")
    t.add_argument("--run", "--run-dir", type=path_text, dest="run", required=True,
                   help="run folder (config, log, checkpoints); re-run to resume (under torchrun: --run-dir)")
    t.add_argument("--recipe", default="liver-mri",
                   help=f"{', '.join(RECIPES)}, or a JSON file ({{\"base\": NAME, ...overrides}})")
    t.add_argument("--val-cases", help="comma-separated case names held out for validation")
    t.add_argument("--val-count", type=zero_or_more, default=3, help="held-out cases when --val-cases is not given")
    t.add_argument("--iterations", type=at_least_one, help="optimiser steps (overrides the recipe's length)")
    t.add_argument("--epochs", type=at_least_one, help="passes over the training volumes (epoch-based recipes)")
    t.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu or cuda")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--phantoms", type=zero_or_more,
                   help="synthetic phantoms added to training (contrasts: the recipe's phantom_contrasts)")
    t.add_argument("--validate-every", type=at_least_one, default=250)
    t.add_argument("--cache", type=path_text, help="preprocessing cache folder (default RUN/cache)")
    t.add_argument("--seed", type=zero_or_more, default=0)
    t.add_argument("--init-from", type=path_text, metavar="BUNDLE",
                   help="start from this model bundle's weights (fine-tuning); its network must be the recipe's")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("export", help="write a model bundle from a run")
    e.add_argument("run", type=path_text)
    e.add_argument("-o", "--out", type=path_text, required=True)
    e.add_argument("--name", type=model_label, default="liver-mri")
    e.add_argument("--version", type=model_label, default="0.0.1")
    e.add_argument("--description", default="")
    e.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="last (default) or best; best is chosen on the run's validation cases, so its validation "
                        "Dice is optimistic")
    e.add_argument("--card-notes", type=path_text,
                   help="Markdown file appended to the generated MODEL.md (history, ablations)")
    e.add_argument("--threshold", type=probability,
                   help="probability threshold (default: the recipe's), e.g. the one crossval chose")
    e.add_argument("--crossval", type=path_text,
                   help="cross-validation folder whose crossval.json goes into model.json and MODEL.md")
    e.add_argument("--data-credit", help="where the training data comes from and its licence, for the model card "
                                         "('chaos': the CHAOS T2-SPIR credit; default: the number of cases and "
                                         "their folders)")
    e.add_argument("--max-window-voxels", type=zero_or_more,
                   help="run grids up to this many voxels as one window (0: the recipe's sliding windows), e.g. as "
                        "benchmarks/window_settings.py chose")
    e.add_argument("--crop-to-body", action=argparse.BooleanOptionalAction, default=None,
                   help="run the network only on the box around the body (default: the recipe's)")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)
    x = sub.add_parser("crossval", help="k-fold cross-validation: train per fold, evaluate out-of-fold masks")
    x.add_argument("--data", type=path_text, action="append", help="folder of image_N/label_N pairs (repeatable)")
    x.add_argument("--manifest", type=path_text, action="append", help="CSV or JSON manifest (repeatable)")
    x.add_argument("--label-value", type=int, help="liver label value in --data folders (default 1)")
    x.add_argument("--run", type=path_text, required=True,
                   help="folder for fold runs, masks, evaluation; re-run to resume")
    x.add_argument("--recipe", default="liver-mri", help=f"{', '.join(RECIPES)}, or a JSON file")
    x.add_argument("-k", type=_whole_number(2), default=3, help="number of folds from a seeded shuffle (default 3)")
    x.add_argument("--folds", help='explicit folds, e.g. "1,8,15;3,10,19;5,13" (instead of -k)')
    x.add_argument("--thresholds", help="candidate probability thresholds, e.g. 0.4,0.5,0.6,0.7 (default 0.5); "
                                        "each case uses the one chosen on the other folds")
    x.add_argument("--iterations", type=at_least_one, help="optimiser steps per fold (overrides the recipe's length)")
    x.add_argument("--epochs", type=at_least_one, help="passes over the training volumes (epoch-based recipes)")
    x.add_argument("--phantoms", type=zero_or_more, help="synthetic phantoms added to each fold's training")
    x.add_argument("--validate-every", type=at_least_one, default=500)
    x.add_argument("--cache", type=path_text, help="preprocessing cache folder (default RUN/cache)")
    x.add_argument("--seed", type=zero_or_more, default=0)
    x.add_argument("--no-train", action="store_true", help="only segment and evaluate with existing fold runs")
    x.add_argument("--fold", type=int, help="train only this fold (0-based) and stop, e.g. to train folds side by "
                                            "side in separate processes")
    x.add_argument("--no-radiomics", action="store_true", help="skip the radiomics agreement")
    x.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu or cuda")
    x.set_defaults(func=cmd_crossval)
    c = sub.add_parser("convert", help="write a manifest (and NIfTI files where needed) for a public dataset")
    c.add_argument("dataset", choices=("chaos", "amos", "liverhccseg", "totalseg", "pairs"))
    c.add_argument("source", type=path_text, help="the dataset's folder as downloaded")
    c.add_argument("-o", "--out", type=path_text, required=True,
                   help="output folder: manifest.csv and converted NIfTI files")
    c.add_argument("--sequences", nargs="+", choices=("t2spir", "t1-in", "t1-out"),
                   help="chaos: series to convert (default all three)")
    c.add_argument("--label-value", type=int, help="liver value in the source labels (default: amos 6, totalseg "
                                                   "combined map 5, otherwise 1)")
    c.add_argument("--keep-organs", action="store_true", help="chaos: keep kidneys and spleen as labels 2, 3, 4")
    c.add_argument("--overwrite", action="store_true", help="replace an existing manifest and converted files")
    c.set_defaults(func=cmd_convert)
    k = sub.add_parser("check", help="validate cases: files, case names, label grid, liver voxels")
    k.add_argument("--data", type=path_text, action="append", help="folder of image_N/label_N pairs (repeatable)")
    k.add_argument("--manifest", type=path_text, action="append", help="CSV or JSON manifest (repeatable)")
    k.add_argument("--label-value", type=int, help="liver label value in --data folders (default 1)")
    k.set_defaults(func=cmd_check)
    v = sub.add_parser("evaluate", help="Dice/HD95/ASSD, volume ICC and Bland-Altman, radiomics ICC vs reference masks")
    v.add_argument("--data", type=path_text, action="append", help="folder of image_N/label_N pairs (repeatable)")
    v.add_argument("--manifest", type=path_text, action="append",
                   help="CSV or JSON manifest (repeatable; its 'group' column "
                                                       "enables the Mann-Whitney test of Dice between two groups)")
    v.add_argument("--label-value", type=int, help="liver label value in --data folders (default 1)")
    v.add_argument("--model", type=path_text, help="model bundle folder (default: the bundled model)")
    v.add_argument("--predictions", type=path_text,
                   help="folder of ready-made masks instead of running a model: <case>.nii.gz, <case>_liver.nii.gz "
                        "or <image name>_liver.nii.gz (also .nii, .nrrd, .mha; a .seg.nrrd where there is no other)")
    v.add_argument("--prediction-label", type=label_values, help="liver label value(s) in the --predictions masks, "
                                                                "e.g. 5 for TotalSegmentator (default: any non-zero, "
                                                                "if only one value)")
    v.add_argument("--no-radiomics", action="store_true", help="skip the radiomics agreement (much faster)")
    v.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu or cuda")
    v.add_argument("-o", "--out", type=path_text, required=True,
                   help="output folder (cases.csv, summary.json, report.md, plots)")
    v.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    v.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LiverVolumetryError as error:
        print(f"livervolumetry-train: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): stop quietly
        try:  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (captured, replaced)
            pass
        return 1
    except OSError as error:  # a file or folder the checks did not reach (unreadable, vanished, disk full)
        print(f"livervolumetry-train: error: {os_error_text(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livervolumetry-train: interrupted (resume by running the same command)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
