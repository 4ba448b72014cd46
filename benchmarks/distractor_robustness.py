"""Does a large fluid-bright structure outside the liver make a model lose the liver?

    python benchmarks/distractor_robustness.py --data ../shared/data/chaos-t2 --cases 1,5,8
    python benchmarks/distractor_robustness.py --model runs/mine/bundle --radii 0,40,55,70

Large renal or hepatic cysts, ascites and fluid-filled bowel are common in the patients
who get liver volumetry. This paints one synthetic cyst (an ellipsoid of ``--radii`` mm,
four times the liver's median brightness, 5 % noise) into each labelled case, mirrored from
the liver's centre across the body's centre along the first image axis (left-right on
axial scans) and a quarter of the liver's height below it along the slices,
never over the liver itself, and segments the result through the engine. Printed per
case and radius: Dice against the unchanged liver label, the share of the liver found, the
volume segmented outside it and the network's unsure fraction (warned above 0.3, see
``LiverVolumetryLib.confidence``). Radius 0 is the untouched image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LiverVolumetry"), str(ROOT)]

from LiverVolumetryLib.bundle import load_bundle  # noqa: E402
from LiverVolumetryLib.segment import segment_liver  # noqa: E402
from LiverVolumetryTraining.dataset import find_pairs, load_entry  # noqa: E402


def with_cyst(image: sitk.Image, liver: np.ndarray, radius_mm: float) -> sitk.Image:
    """``image`` with a synthetic fluid-bright cyst of ``radius_mm`` painted outside ``liver``."""
    if radius_mm <= 0:
        return image
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # z, y, x
    spacing = np.array(image.GetSpacing())[::-1]
    zz, yy, xx = np.indices(array.shape)
    cz, cy, cx = (float(v[liver].mean()) for v in (zz, yy, xx))
    body_x = float(xx[array > np.percentile(array, 30)].mean())
    centre = (cz - 0.25 * np.ptp(zz[liver]), cy, 2 * body_x - cx)
    distance = sum(((g - c) * s / radius_mm) ** 2 for g, c, s in zip((zz, yy, xx), centre, spacing))
    cyst = (distance < 1.0) & ~liver
    noise = np.random.default_rng(0).standard_normal(int(cyst.sum())).astype(np.float32)
    array[cyst] = 4.0 * float(np.median(array[liver])) * (1.0 + 0.05 * noise)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chaos-t2"),
                        help="folder of image_N / label_N pairs")
    parser.add_argument("--label-value", type=int, default=1, help="the liver's value in the labels")
    parser.add_argument("--cases", default="", help="comma-separated cases (default: all)")
    parser.add_argument("--model", default=None, help="model bundle folder (default: the bundled model)")
    parser.add_argument("--radii", default="0,55,70", help="cyst radii in mm; 0 = untouched image")
    args = parser.parse_args(argv)
    wanted = [c for c in args.cases.split(",") if c]
    entries = [e for e in find_pairs(args.data, args.label_value) if not wanted or e.case in wanted]
    radii = [float(r) for r in args.radii.split(",")]
    bundle = load_bundle(args.model)  # read and checksum the weights once, not per segmentation
    dice: dict[float, list[float]] = {r: [] for r in radii}
    for entry in entries:
        image, reference = load_entry(entry)
        liver = sitk.GetArrayFromImage(reference) > 0
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        cells = []
        for radius in radii:
            result = segment_liver(with_cyst(image, liver, radius), bundle)
            mask = sitk.GetArrayFromImage(result.mask) > 0
            overlap = int((mask & liver).sum())
            dice[radius].append(2.0 * overlap / (mask.sum() + liver.sum()))
            cells.append(f"{radius:.0f} mm: Dice {dice[radius][-1]:.3f}, liver found {overlap / liver.sum():.2f}, "
                         f"outside {(mask & ~liver).sum() * voxel_ml:.0f} mL, unsure {result.unsure_fraction:.2f}")
        print(f"case {entry.case}: " + " | ".join(cells), flush=True)
    print("mean Dice: " + ", ".join(f"{r:.0f} mm {np.mean(d):.3f}" for r, d in dice.items()))


if __name__ == "__main__":
    main()
