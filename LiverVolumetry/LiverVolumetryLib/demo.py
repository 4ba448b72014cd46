"""``livervolumetry demo``: a synthetic phantom segmented and measured, no data needed.

The phantom (``phantom.nii.gz``, named so that its case name is the demo's, ``phantom``)
and its true liver are written into the output folder together with the usual outputs. A
re-run resumes with the same seed's phantom; everything that could refuse the run (the
output path, the model, the folder's table) is checked before the phantom is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, LiverVolumetryError, OutputError

CASE = "phantom"


def _phantom_files(out: Path, seed: int, overwrite: bool, say) -> tuple[Path, Path]:
    """The phantom scan and true liver in ``out``, made unless this seed's scan is there
    (another seed's is refused without ``overwrite``; a missing true liver is made again)."""
    from .atomic import atomic_path
    from .imageio import read_image
    from .outputs import write_mask
    from .phantom import make_phantom

    image_path, truth_path = out / f"{CASE}.nii.gz", out / f"{CASE}_reference_liver.nii.gz"
    phantom = None
    if image_path.exists() and not overwrite:  # resumed: only with this seed's phantom
        try:
            held = read_image(image_path)
        except LiverVolumetryError as error:
            raise InputError(image_path, f"{getattr(error, 'cause', error)}; use --overwrite to make the demo's "
                                         "phantom again") from None
        phantom = make_phantom(seed)
        if not np.array_equal(sitk.GetArrayViewFromImage(held), sitk.GetArrayViewFromImage(phantom.image)):
            raise LiverVolumetryError(f"{image_path}: is another phantom than seed {seed}'s (use --overwrite "
                                      "to replace it, or another output folder)")
    else:
        say(f"generating a synthetic portal-venous MRI phantom (seed {seed}) in {out}/")
        phantom = make_phantom(seed)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(image_path) as tmp:
            sitk.WriteImage(phantom.image, str(tmp), True)
    if not truth_path.exists() or overwrite:
        write_mask(phantom.liver, truth_path)
    return image_path, truth_path


def run_demo(out: Path, seed: int, model, device: str, radiomics: bool, overwrite: bool, progress: str,
             check_text=lambda row: "") -> dict:
    """Make (or reuse) the phantom in ``out``, segment and measure it, print the figures;
    returns the table row."""
    from .batch import ResultsTable, check_output_folder, run_segmentation
    from .bundle import load_bundle
    from .inputs import InputCase
    from .masks import read_mask
    from .measure import dice, liver_volume_ml
    from .reporting import make_reporter

    say = (lambda text: print(text, file=sys.stderr)) if progress == "json" else print  # stdout: JSON only
    if out.exists() and not out.is_dir():
        raise OutputError(out, "is a file; the output must be a folder")
    bundle = load_bundle(model)  # before anything is written: a bad model, or a table of another model
    case = InputCase(CASE, out / f"{CASE}.nii.gz")
    check_output_folder([case], out, ResultsTable(out, overwrite), overwrite, bundle)
    image_path, truth_path = _phantom_files(out, seed, overwrite, say)
    mask_path = out / f"{CASE}_liver.nii.gz"
    before = mask_path.stat().st_mtime_ns if mask_path.exists() else None
    row = run_segmentation([case], out, model=bundle, device=device, radiomics=radiomics, overwrite=overwrite,
                           reporter=make_reporter(progress))[0]
    if row.get("status") == "failed":
        raise LiverVolumetryError(row["error"])
    reference = read_mask(truth_path)
    overlap = dice(read_mask(mask_path, reference=reference), reference)
    features = sum(1 for k in row if k.startswith("original_"))
    when = " (the earlier run's)" if before == mask_path.stat().st_mtime_ns else ""  # resumed, not redone
    say(f"liver volume {row['volume_ml']:.1f} mL (phantom truth {liver_volume_ml(reference):.1f} mL), "
        f"Dice {overlap:.3f} against the phantom's true liver, {features} radiomics features, "
        f"{row['seconds']:.1f} s on {row['device']}{when}{check_text(row)}")
    say(f"in {out}/: the scan {CASE}.nii.gz and its true liver {CASE}_reference_liver.nii.gz; outputs "
        f"{CASE}_liver.nii.gz, {CASE}_liver.seg.nrrd, {CASE}_qc.png, measurements.csv/.json")
    return row
