"""Speed, memory and accuracy of the engine against the paper's inference pipeline.

    python benchmarks/benchmark.py                    # shared real cases + 3 phantoms
    python benchmarks/benchmark.py --quick            # one small phantom, a smoke run

Every (input, pipeline) pair runs in a fresh child process, so that its peak resident
memory is its own and its first run pays what a user's first case pays. Pipelines:

- ``engine``: read -> preprocess -> network -> postprocess -> write mask (NIfTI);
- ``engine+radiomics``: the same plus volume and the 107 pyradiomics features;
- ``reference``: the paper's configuration (``reference_pipeline.py``).

Reported per pair: the median wall time of ``--repeats`` runs in one process (the first
run included), the cold time (interpreter start and imports plus the first run), the
stages, the peak resident memory, and the Dice against the reference mask of the input
(real label or phantom truth). Results go to ``--out`` as CSV and Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "chaos-t2"
# Phantom sizes (voxels) and spacings (mm) typical of abdominal MRI protocols.
DEFAULT_PHANTOMS = {"256x256x40": (1.5, 1.5, 6.0), "320x320x100": (1.2, 1.2, 3.0), "512x512x200": (0.8, 0.8, 2.0)}
PIPELINES = ("engine", "engine+radiomics", "reference")


def _child_main(args: argparse.Namespace) -> None:
    """Run one pipeline ``--repeats`` times on one image; print a JSON line."""
    import warnings

    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    if args.threads or args.child == "reference" or args.device != "cpu":
        import torch  # (import time is part of the cold start; the engine's CPU path does not need it)

        if args.threads:
            torch.set_num_threads(args.threads)
    runs = []
    out_dir = Path(args.workdir)
    if args.child == "reference":
        sys.path.insert(0, str(HERE))
        from reference_pipeline import paper_network, run_reference

        network, weights = paper_network(None if args.reference_model == "untrained" else args.reference_model)
        network = network.to(args.device)
        imported = time.perf_counter() - began
        for _ in range(args.repeats):
            t = time.perf_counter()
            stages = run_reference(args.image, out_dir / "mask.nii.gz", network, args.device)
            runs.append({"total": time.perf_counter() - t, **stages})
    else:
        from LiverVolumetryLib.bundle import load_bundle
        from LiverVolumetryLib.imageio import read_image
        from LiverVolumetryLib.measure import measure
        from LiverVolumetryLib.outputs import write_mask
        from LiverVolumetryLib.segment import segment_liver

        bundle = load_bundle(args.model)
        weights = f"{bundle.name} {bundle.version}"
        imported = time.perf_counter() - began
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            image = read_image(args.image)
            t1 = time.perf_counter()
            result = segment_liver(image, bundle, args.device)
            weights = f"{bundle.name} {bundle.version} ({result.backend})"
            t2 = time.perf_counter()
            write_mask(result.mask, out_dir / "mask.nii.gz")
            t3 = time.perf_counter()
            run = {"load": t1 - t0, **result.timings, "write": t3 - t2}
            if args.child == "engine+radiomics":
                measure(image, result.mask, radiomics=True)
                run["radiomics"] = time.perf_counter() - t3
            run["total"] = time.perf_counter() - t0
            runs.append(run)
    print(json.dumps({"imports": imported, "runs": runs, "peak_mb": _peak_mb(), "weights": weights}))


def _peak_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec;
    ru_maxrss would also count the parent's memory at fork time."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _dice(mask_path: Path, truth_path: Path) -> float:
    import numpy as np
    import SimpleITK as sitk

    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path))) == 1
    if mask.shape != truth.shape:
        return float("nan")
    total = mask.sum() + truth.sum()
    return float(2 * np.logical_and(mask, truth).sum() / total) if total else 1.0


def _fold_models(crossval: str | None) -> dict[str, Path]:
    """Case name -> bundle of the cross-validation fold that left the case out."""
    if not crossval:
        return {}
    run = Path(crossval)
    try:
        folds = json.loads((run / "folds.json").read_text(encoding="utf-8"))  # [[case, ...], ...]
        models = {str(case): run / f"fold{k}" / "bundle" for k, fold in enumerate(folds) for case in fold}
    except (OSError, ValueError, TypeError) as error:
        raise SystemExit(f"benchmark: {run / 'folds.json'}: cannot read the folds ({error})") from None
    missing = sorted({str(path) for path in models.values() if not (path / "model.json").is_file()})
    if missing:
        raise SystemExit(f"benchmark: {missing[0]}: fold bundle not found (run crossval first)")
    return models


def _run_child(pipeline: str, image: Path, workdir: Path, args: argparse.Namespace, model: Path | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", pipeline, "--image", str(image),
               "--workdir", str(workdir), "--repeats", str(args.repeats), "--device", args.device,
               "--threads", str(args.threads)]
    if model or args.model:
        command += ["--model", str(model or args.model)]
    command += ["--reference-model", str(args.reference_model)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"benchmark: {pipeline} on {image.name} failed: {tail[0]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_wall"] = wall
    return report


def _inputs(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Path, Path]]:
    """(name, image file, truth file) for every benchmark input."""
    import SimpleITK as sitk

    inputs = []
    data = Path(args.data)
    if not args.quick and data.is_dir():
        cases = sorted(data.glob("image_*.nii.gz"), key=lambda p: int(p.name[6:-7]))
        for image in cases[: args.max_cases or None]:
            inputs.append((f"chaos-t2 {image.name[6:-7]}", image, data / image.name.replace("image_", "label_")))
    elif not args.quick:
        print(f"benchmark: {data} not found; phantoms only", file=sys.stderr)
    from LiverVolumetryLib.phantom import make_phantom

    sizes = {"96x96x32": (3.5, 3.5, 8.0)} if args.quick else {k: DEFAULT_PHANTOMS[k] for k in args.phantoms}
    for size, spacing in sizes.items():
        shape = tuple(int(v) for v in size.split("x"))
        # The seed belongs to the size, so a run of some sizes gets the same phantoms as a full run.
        seed = 100 + (list(DEFAULT_PHANTOMS).index(size) if size in DEFAULT_PHANTOMS else 0)
        phantom = make_phantom(seed, shape=shape, spacing=spacing, orientation="LPS", oblique_degrees=0.0)
        image, truth = workdir / f"phantom-{size}.nii.gz", workdir / f"phantom-{size}-truth.nii.gz"
        sitk.WriteImage(phantom.image, str(image))
        sitk.WriteImage(phantom.liver, str(truth))
        inputs.append((f"phantom {size}", image, truth))
    return inputs


def _row(name: str, image: Path, pipeline: str, report: dict, dice: float) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image))
    reader.ReadImageInformation()
    runs = report["runs"]
    row = {"input": name, "size": "x".join(map(str, reader.GetSize())), "pipeline": pipeline,
           "weights": report["weights"], "median_s": _median([r["total"] for r in runs]),
           "cold_s": report["imports"] + runs[0]["total"], "process_s": report["process_wall"]}
    for stage in sorted({k for r in runs for k in r} - {"total"}):
        row[f"{stage}_s"] = _median([r.get(stage, 0.0) for r in runs])
    row["peak_mb"] = report["peak_mb"]
    row["dice"] = dice
    return row


def _machine(args: argparse.Namespace) -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    return f"{cpu}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of image_N/label_N NIfTI pairs")
    parser.add_argument("--max-cases", type=int, default=0, help="use only the first N real cases")
    parser.add_argument("--phantoms", nargs="*", default=list(DEFAULT_PHANTOMS), choices=list(DEFAULT_PHANTOMS))
    parser.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--model", help="engine bundle (default: the bundled model)")
    parser.add_argument("--crossval", help="crossval folder (folds.json, fold<k>/bundle): each real case runs "
                                           "through the fold model that never saw it, so its Dice is out-of-fold")
    parser.add_argument("--reference-model", default=str(HERE / "reference-model"),
                        help="volumetry-net bundle for the reference (default: benchmarks/reference-model; "
                             "'untrained' for random weights, timing only)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for benchmark.csv / benchmark.md")
    parser.add_argument("--quick", action="store_true", help="one tiny phantom, one repeat (smoke test)")
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child_main(args)
        return 0
    if args.quick:
        args.repeats = 1
    from benchmark_report import print_table, write_results

    rows = []
    with tempfile.TemporaryDirectory(prefix="livervolumetry-bench-") as tmp:
        workdir = Path(tmp)
        fold_models = _fold_models(args.crossval)
        for name, image, truth in _inputs(args, workdir):
            model = fold_models.get(name.removeprefix("chaos-t2 ")) if name.startswith("chaos-t2 ") else None
            for pipeline in args.pipelines:
                report = _run_child(pipeline, image, workdir, args, None if pipeline == "reference" else model)
                dice = _dice(workdir / "mask.nii.gz", truth)
                if pipeline == "reference" and report["weights"] == "untrained":
                    dice = float("nan")
                rows.append(_row(name, image, pipeline, report, dice))
                print(f"{name:24s} {pipeline:17s} median {rows[-1]['median_s']:6.2f} s  "
                      f"peak {rows[-1]['peak_mb']:6.0f} MB  Dice {dice:.4f}", flush=True)
    machine = _machine(args)
    print_table(rows, machine)
    write_results(rows, machine, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
