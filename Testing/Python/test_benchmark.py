"""The benchmark's reference pipeline and tables (the timed runs themselves are not tests)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import dice, ellipsoid_image, rotation_direction, same_grid

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("nibabel")
from benchmark_report import markdown_summary, summary  # noqa: E402
from reference_pipeline import paper_network, run_reference  # noqa: E402


class BrightIsLiver(torch.nn.Module):
    """A stand-in 'network': class 1 wherever the scaled intensity is high."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 10 * (x - 2.0)], dim=1)


@pytest.mark.parametrize("direction", [None, rotation_direction((0, 0, 0), flips=(-1, 1, -1)),
                                       rotation_direction((0, 0, 0), permutation=(1, 0, 2))])
def test_reference_mask_lines_up_with_its_input(tmp_path, direction):
    image, truth = ellipsoid_image(size=(50, 44, 18), spacing=(4.0, 4.0, 9.0), direction=direction)
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    run_reference(path, tmp_path / "mask.nii.gz", BrightIsLiver())
    mask = sitk.ReadImage(str(tmp_path / "mask.nii.gz"))
    assert same_grid(mask, image)
    assert dice(mask, truth) > 0.85


def test_paper_network_is_the_published_architecture():
    network, weights = paper_network(None)
    assert weights == "untrained"
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and not network.training
    assert network(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_summary_puts_engine_and_reference_side_by_side():
    def row(pipeline, seconds, cold, dice_value):
        return {"input": "case", "size": "8x8x8", "pipeline": pipeline, "weights": "w", "median_s": seconds,
                "cold_s": cold, "process_s": cold, "peak_mb": 100.0, "dice": dice_value}

    rows = [row("engine", 1.0, 3.0, 0.95), row("engine+radiomics", 2.5, 5.0, 0.95),
            row("reference", 4.0, 6.0, float("nan"))]
    line = summary(rows)[0]
    assert line["speed_up"] == pytest.approx(4.0)
    assert line["speed_up_cold"] == pytest.approx(2.0)
    assert line["engine+radiomics_s"] == 2.5
    assert math.isnan(line["reference_dice"])
    text = markdown_summary(rows, "test machine")
    assert "| case | 8x8x8 | 1.00 | 2.50 | 4.00 | 4.0x |" in text
    assert "n/a" in text


def test_largest_component_keeps_the_biggest_blob():
    from reference_pipeline import _largest_component

    label = np.zeros((10, 10, 10), np.uint8)
    label[0:4, 0:4, 0:4] = 1
    label[7:9, 7:9, 7:9] = 1
    out = _largest_component(label)
    assert out.sum() == 64 and out[8, 8, 8] == 0


def test_crossval_folds_pick_the_model_that_never_saw_the_case(tmp_path):
    import json

    from benchmark import _fold_models

    (tmp_path / "folds.json").write_text(json.dumps([["1", "8"], ["3"]]), encoding="utf-8")
    for k in (0, 1):
        (tmp_path / f"fold{k}" / "bundle").mkdir(parents=True)
        (tmp_path / f"fold{k}" / "bundle" / "model.json").write_text("{}", encoding="utf-8")
    models = _fold_models(str(tmp_path))
    assert models == {"1": tmp_path / "fold0" / "bundle", "8": tmp_path / "fold0" / "bundle",
                      "3": tmp_path / "fold1" / "bundle"}
    (tmp_path / "fold1" / "bundle" / "model.json").unlink()
    with pytest.raises(SystemExit, match="fold1"):
        _fold_models(str(tmp_path))
    assert _fold_models(None) == {}


def test_distractor_benchmark_paints_a_bright_cyst_beside_the_liver_only():
    from distractor_robustness import with_cyst
    from LiverVolumetryLib.phantom import make_phantom

    phantom = make_phantom(5, shape=(64, 56, 24), spacing=(6.0, 6.0, 10.0), orientation="LPS", oblique_degrees=0)
    liver = sitk.GetArrayFromImage(phantom.liver) > 0
    assert with_cyst(phantom.image, liver, 0) is phantom.image
    out = with_cyst(phantom.image, liver, 60.0)
    assert same_grid(out, phantom.image)
    before, after = sitk.GetArrayFromImage(phantom.image), sitk.GetArrayFromImage(out)
    changed = ~np.isclose(before, after)
    assert np.array_equal(before[liver], after[liver])  # never painted over the liver
    assert changed.sum() * 6 * 6 * 10 / 1000 > 100  # a cyst of over 100 mL
    assert np.median(after[changed]) > 3 * np.median(before[liver])  # fluid-bright


def test_phantom_contrast_table_scores_a_bundle_on_every_contrast(capsys, monkeypatch):
    import phantom_contrasts

    from LiverVolumetryLib.phantom_contrast import CONTRASTS

    monkeypatch.setattr(phantom_contrasts, "TEST_PHANTOM_SEEDS", (7001,))  # one phantom per contrast: quick
    phantom_contrasts.main(["--threshold", "0.5"])
    out = capsys.readouterr().out
    header, rule, row = out.strip().splitlines()[-3:]
    assert header.count("|") == len(CONTRASTS) + 3 and "T1 portal-venous" in header
    scores = [float(v) for v in row.split("|")[2:-1]]
    # The bundled model finds the liver of every contrast's phantom; the last column is their mean.
    assert all(0.6 < s <= 1.0 for s in scores) and scores[-1] == pytest.approx(np.mean(scores[:-1]), abs=1e-3)
