"""``livervolumetry``: liver segmentation, volumetry and radiomics on MRI from the shell.

    livervolumetry segment scan.nii.gz dicom_folder/ cohort.csv -o results/
    livervolumetry measure scan.nii.gz corrected_liver.nii.gz -o results/
    livervolumetry demo
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from .atomic import interrupts_deferred, stop_signals_interrupt
from .errors import LiverVolumetryError, os_error_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def cmd_segment(args) -> int:
    from .batch import run_segmentation
    from .inputs import collect_inputs
    from .reporting import make_reporter

    cases = collect_inputs(args.inputs, series_uid=args.series)
    _refuse_output_among_inputs(args.inputs, cases, Path(args.output))
    reporter = make_reporter(args.progress)
    rows = run_segmentation(cases, args.output, model=args.model, device=args.device,
                            radiomics=not args.no_radiomics, overwrite=args.overwrite, reporter=reporter)
    failed = [r for r in rows if r.get("status") == "failed"]
    if args.progress != "json":
        for row in rows:
            if row.get("status") == "ok":
                print(f"{row['case']}: liver volume {row['volume_ml']:.1f} mL{_check_text(row)}")
        if len(rows) == 1 and failed:
            print(f"livervolumetry: error: {failed[0]['error']}", file=sys.stderr)
        elif failed and (Path(args.output) / "measurements.csv").is_file():
            print(f"livervolumetry: {len(failed)} of {len(rows)} cases failed; see "
                  f"{Path(args.output) / 'measurements.csv'}", file=sys.stderr)
        elif failed:  # nothing worked, so no table was written: say why here
            print(f"livervolumetry: all {len(rows)} cases failed:", file=sys.stderr)
            for row in failed:
                print(f"  {row['case']}: {row['error']}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _refuse_output_among_inputs(inputs: list[str], cases: list, output: Path) -> None:
    """An output folder that is also an input folder, or the folder of an input scan (also
    one a manifest names), would feed this run's masks back in as scans on the next run."""
    from .errors import OutputError

    if not output.is_dir():
        return
    for path in [Path(a).expanduser() for a in inputs] + [Path(case.path) for case in cases]:
        if path.is_dir() and path.resolve() == output.resolve():
            raise OutputError(output, "is also an input folder; the next run would take its masks for "
                                      "scans (choose another output folder)")
        if path.is_file() and path.suffix.lower() != ".csv" and path.parent.resolve() == output.resolve():
            raise OutputError(output, f"is the folder of the input {path.name}; a later run on that folder would "
                                      "take its masks for scans (choose another output folder)")


SERIES_HELP = ("the DICOM series to read when a folder holds several: its SeriesInstanceUID, or its "
               "SeriesDescription (one description picks that kind of series in every folder)")


def _check_text(row: dict) -> str:
    """'' or ' - check: <the row's plausibility warnings>' for a summary line."""
    return f" - check: {row['warnings']}" if row.get("warnings") else ""


def _check_replaced_row(table, case: str, image, series: str | None, overwrite: bool) -> None:
    """measure -o: this case's ``segment`` row is replaced by the corrected mask's measurement
    (the workflow), but a row measured from a mask, or of another scan or DICOM series, only
    with --overwrite."""
    from .batch import TABLE_CSV, _same_input

    row = table.rows.get(case) if table is not None else None
    if not row or overwrite:
        return
    where, recorded = table.out_dir / TABLE_CSV, row.get("input")
    if row.get("mask"):
        raise LiverVolumetryError(f"{where}: already has a row for case '{case}' measured from {row['mask']} (use "
                                  "--overwrite to replace it)")
    if recorded and not _same_input(str(recorded), Path(image)):
        raise LiverVolumetryError(f"{where}: already holds case '{case}' from another input ({recorded}); name this "
                                  "one with --case, or use another output folder or --overwrite")
    if series and row.get("series_uid") and series != row["series_uid"]:
        raise LiverVolumetryError(f"{where}: already holds case '{case}' from another DICOM series "
                                  f"({row['series_uid']}); name this one with --case, or use --overwrite")


def cmd_measure(args) -> int:
    from .batch import CaseOutputs, ResultsTable
    from .errors import InputError, OutputError
    from .imageio import case_id, read_image, series_uid_of
    from .inputs import _is_plain_name
    from .scan_files import input_stamp
    from .masks import read_mask, segment_name_warnings
    from .measure import measure_keeping_volume
    from .plausibility import plausibility_warnings
    from .reporting import make_reporter

    if str(args.image).lower().endswith(".seg.nrrd"):
        raise InputError(args.image, "is a Slicer segmentation (.seg.nrrd), not a scan: the image comes "
                                     "first (livervolumetry measure IMAGE MASK)")
    case = case_id(args.image) if args.case is None else args.case
    if not _is_plain_name(case.strip()) or case != case.strip():
        raise LiverVolumetryError(f"--case {case!r}: a case name must be a plain file name (not empty, no '/', "
                                  "'\\' or leading '.' or spaces)")
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():  # before the work
        raise OutputError(args.output, "is a file; the output must be a folder")
    table = ResultsTable(Path(args.output)) if args.output else None  # --overwrite: this row only
    _check_replaced_row(table, case, args.image, None, args.overwrite)  # before the work, not after
    reporter, start = make_reporter(args.progress), time.perf_counter()
    reporter.start(1)
    reporter.progress(case, 0.0, "load")
    stamp = input_stamp(args.image)  # before reading, as segment records it
    image = read_image(args.image, args.series)
    _check_replaced_row(table, case, args.image, series_uid_of(image), args.overwrite)
    mask = read_mask(args.mask, reference=image, label=args.label)
    try:
        values, measure_warnings = measure_keeping_volume(
            image, mask, radiomics=not args.no_radiomics,
            progress=lambda fraction, stage: reporter.progress(case, 0.05 + 0.9 * fraction, stage))
    except LiverVolumetryError as error:  # measure() knows no file names: add the mask's
        reporter.close()
        raise LiverVolumetryError(f"{args.mask}: {error}") from None
    reporter.progress(case, 1.0, "done")
    reporter.case_done(case, "ok", None, round(time.perf_counter() - start, 2))
    reporter.close()
    row = {"case": case, "input": os.path.abspath(args.image), "series_uid": series_uid_of(image),
           "mask": os.path.abspath(args.mask), "input_stamp": stamp,
           **values,
           "warnings": "; ".join(segment_name_warnings(args.mask) + measure_warnings
                                 + plausibility_warnings(image, mask)),
           "status": "ok", "error": None}
    say = (lambda text: print(text, file=sys.stderr)) if args.progress == "json" else print
    say(f"{case}: liver volume {values['volume_ml']:.1f} mL" +
        (f", {len(values) - 2} radiomics features" if len(values) > 2 else "") + _check_text(row))
    if table is not None:
        with interrupts_deferred():  # both table files, or neither
            table.put(row)
        say(f"wrote {Path(args.output) / 'measurements.csv'}")
        outputs = CaseOutputs.for_case(Path(args.output), case)
        # In a segment output folder this case's other files are the network's, not this mask
        # (nothing to tell when the mask measured is the network's mask itself).
        automatic = [p.name for p in outputs.all() if p.exists() and not os.path.samefile(p, args.mask)]
        if automatic and not (outputs.mask.exists() and os.path.samefile(outputs.mask, args.mask)):
            verb = "is" if len(automatic) == 1 else "are"
            say(f"note: {', '.join(automatic)} in that folder {verb} still the automatic segmentation; the row now "
                f"measures {args.mask} (and a later segment run keeps it)")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), args.seed, args.model, args.device, not args.no_radiomics, args.overwrite,
             args.progress, check_text=_check_text)
    return EXIT_OK


def cmd_model(args) -> int:
    import json

    from .bundle import load_bundle

    bundle = load_bundle(args.model)  # checks the weights' (and the ONNX graph's) SHA-256
    meta = bundle.metadata
    training, validation, cv = meta.get("training") or {}, meta.get("validation") or {}, meta.get("cross_validation")
    lines = [f"{bundle.name} {bundle.version} ({bundle.path})", f"weights: SHA-256 {bundle.sha256} (verified)"]
    if bundle.onnx_path is not None:
        lines.append(f"ONNX graph: SHA-256 {meta['onnx']['sha256']} (verified)")
    if meta.get("description"):
        lines.append(meta["description"])
    preprocessing = meta.get("preprocessing") or {}
    lines.append(f"network: {meta['network']['class']} {json.dumps(meta['network'].get('args', {}))}; input "
                 f"{preprocessing.get('orientation')}, {preprocessing.get('spacing_mm')} mm, intensity "
                 f"{json.dumps(preprocessing.get('intensity'))}")
    if training:
        cases = [str(c) for c in training.get("cases", [])]
        lines.append(f"trained on {len(cases)} case(s) ({', '.join(cases)}) and {training.get('phantoms', 0)} "
                     f"phantoms, {training.get('iterations')} iterations" +
                     (f"; data: {training['data']}" if training.get("data") else ""))
    if validation.get("dice_mean") is not None:
        held_out = len(validation.get("dice_per_case", {}))
        lines.append(f"held-out validation: Dice {validation['dice_mean']:.3f} on {held_out} case(s)")
    if cv:
        lines.append(f"cross-validation: out-of-fold Dice {cv['dice_mean']:.3f} ± {cv.get('dice_sd') or 0:.3f} on "
                     f"{len(cv.get('dice_per_case', {}))} cases, lowest {cv['dice_min']:.3f}")
    card = bundle.path / "MODEL.md"
    if card.is_file():
        lines.append(f"model card (figures, limitations, licence): {card}")
    print("\n".join(lines))
    return EXIT_OK


def path_text(text: str) -> str:
    """A path argument: never empty (an unset shell variable would mean the current folder), ``~`` expanded."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return os.path.expanduser(text)


def series_text(text: str) -> str:
    """``--series``: a UID or description, never blank (it would be silently ignored)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty series (an unset shell variable?)")
    return text


def label_values(text: str) -> tuple[int, ...]:
    """``--label``: one or more comma-separated integer label values."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a label value or comma-separated list of them, "
                                         "e.g. 6 or 1,2") from None
    if 0 in values:
        raise argparse.ArgumentTypeError(f"'{text}': 0 is the background value; give the liver's label value(s)")
    return values


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=path_text, help="model bundle folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "gpu"),
                        help="auto uses a CUDA GPU when present")
    parser.add_argument("--no-radiomics", action="store_true", help="only the liver volume, no radiomics features")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip finished cases)")
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "text", "json", "none"),
                        help="progress display; 'json' prints one JSON event per line on stdout")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="livervolumetry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one ends (a GUI's Cancel through a launcher)")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment the liver and measure it for one or many scans")
    seg.add_argument("inputs", nargs="+", type=path_text,
                     help="image files (.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd), DICOM series folders, folders of "
                          "images, or a CSV manifest (column 'image')")
    seg.add_argument("-o", "--output", required=True, type=path_text, help="output folder")
    seg.add_argument("--series", type=series_text, help=SERIES_HELP)
    _common(seg)
    seg.set_defaults(func=cmd_segment)
    mea = sub.add_parser("measure", help="volume and radiomics of a (hand-corrected) liver mask")
    mea.add_argument("image", type=path_text, help="the scan the mask was drawn on (image file or DICOM folder)")
    mea.add_argument("mask", type=path_text, help="liver mask on the image's grid (.nii.gz, .nrrd, .seg.nrrd, ...)")
    mea.add_argument("-o", "--output", type=path_text,
                     help="output folder for measurements.csv/json (default: none; the volume is printed)")
    mea.add_argument("--case", help="case name in the table (default: image file name)")
    mea.add_argument("--label", type=label_values, help="liver label value(s) in the mask, e.g. 6, or 1,2 for "
                                                        "liver plus lesions (default: any non-zero, if only one value)")
    mea.add_argument("--series", type=series_text, help="the DICOM series to read when the folder holds several: its "
                                       "SeriesInstanceUID or its SeriesDescription")
    mea.add_argument("--no-radiomics", action="store_true")
    mea.add_argument("--overwrite", action="store_true",
                     help="replace a row of this case measured before from a mask (a segment row is replaced anyway)")
    mea.add_argument("--progress", default="none", choices=("none", "text", "json"),
                     help="'json' prints one JSON progress event per line on stdout")
    mea.set_defaults(func=cmd_measure)
    demo = sub.add_parser("demo", help="generate a phantom MRI and run everything on it (no data needed)")
    demo.add_argument("-o", "--output", type=path_text, default="livervolumetry-demo",
                      help="output folder (default: livervolumetry-demo)")
    demo.add_argument("--seed", type=int, default=0, help="which phantom to generate (default 0)")
    _common(demo)
    demo.set_defaults(func=cmd_demo)
    model = sub.add_parser("model", help="show the model bundle's card (and verify its checksum)")
    model.add_argument("--model", type=path_text, help="model bundle folder (default: the bundled model)")
    model.set_defaults(func=cmd_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        from .parent_watch import exit_with_parent

        exit_with_parent()
    _quiet_libraries()
    try:
        with stop_signals_interrupt():  # `timeout`, SLURM, a closed terminal: cleaned up as after Ctrl-C
            return args.func(args)
    except LiverVolumetryError as error:
        print(f"livervolumetry: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("livervolumetry: interrupted; finished cases are kept, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): stop quietly, as on SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_FAILED
    except OSError as error:  # a file or folder the checks did not reach (unreadable, vanished, disk full)
        print(f"livervolumetry: error: {os_error_text(error)}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:
        print("livervolumetry: error: out of memory while processing (try a smaller image or a machine with more memory)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
