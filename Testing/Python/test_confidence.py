"""Network confidence: the unsure fraction and its warning, through the API, the CLI table and Slicer's columns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from conftest import ellipsoid_image
from scipy import ndimage

from LiverVolumetryLib import confidence
from LiverVolumetryLib.confidence import confidence_warnings, unsure_fraction
from LiverVolumetryLib.segment import segment_liver


def _ball(radius: float = 20.0, size: int = 56) -> np.ndarray:
    grid = np.indices((size, size, size)) - (size - 1) / 2
    return (np.sqrt((grid ** 2).sum(axis=0)) <= radius).astype(np.float32)


def test_a_sure_network_has_no_unsure_voxels_and_blur_raises_the_fraction():
    sharp = _ball()
    assert unsure_fraction(sharp) == 0.0
    fractions = [unsure_fraction(ndimage.gaussian_filter(sharp, sigma)) for sigma in (0.7, 1.5, 3.0)]
    assert 0.0 < fractions[0] < fractions[1] < fractions[2]
    assert fractions[0] < confidence.MAX_UNSURE_FRACTION < fractions[2]


def test_a_hesitant_region_is_counted_against_the_liver_size():
    probability = _ball() * 0.95
    probability[:, :, :8] = 0.4  # a slab the network hesitates about, outside the liver
    expected = np.count_nonzero(probability == np.float32(0.4)) / np.count_nonzero(probability >= 0.5)
    assert unsure_fraction(probability) == expected
    assert unsure_fraction(np.full((4, 4, 4), 0.4, np.float32)) == 64  # nothing reaches 0.5: per one voxel


def test_the_warning_names_the_fraction_only_above_the_limit():
    assert confidence_warnings(None) == [] and confidence_warnings(confidence.MAX_UNSURE_FRACTION) == []
    (warning,) = confidence_warnings(0.79)
    assert "79 % of the liver's size" in warning and "check the whole mask" in warning


def test_segment_liver_reports_the_fraction_of_its_own_probability(tiny_bundle):
    image, _ = ellipsoid_image()
    result = segment_liver(image, tiny_bundle, device="cpu")
    assert isinstance(result.unsure_fraction, float) and result.unsure_fraction >= 0.0


def test_the_segment_command_writes_the_fraction_and_warns_when_it_is_high(tmp_path, tiny_bundle, monkeypatch):
    import SimpleITK as sitk

    from LiverVolumetryLib.cli import main

    image, _ = ellipsoid_image()
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(path))
    assert main(["segment", str(path), "-o", str(tmp_path / "a"), "--model", str(tiny_bundle), "--no-radiomics",
                 "--progress", "none"]) == 0
    row = json.loads((tmp_path / "a" / "measurements.json").read_text(encoding="utf-8"))[0]
    header = (tmp_path / "a" / "measurements.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header.index("seconds") < header.index("unsure_fraction") < header.index("warnings")
    assert isinstance(row["unsure_fraction"], float)
    # The table rounds the fraction to 3 decimals: only a limit more than 0.0005 below the
    # rounded figure is surely below the network's own fraction, whatever the CPU's rounding.
    monkeypatch.setattr(confidence, "MAX_UNSURE_FRACTION", row["unsure_fraction"] - 0.001)
    assert main(["segment", str(path), "-o", str(tmp_path / "b"), "--model", str(tiny_bundle), "--no-radiomics",
                 "--progress", "none"]) == 0
    row = json.loads((tmp_path / "b" / "measurements.json").read_text(encoding="utf-8"))[0]
    assert row["warnings"].startswith("the network was unsure")


def test_slicer_columns_keep_the_fraction_of_an_automatic_row_only():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverVolumetry"))
    from LiverVolumetrySlicerLib import engine_cli

    row = {"case": "c", "volume_ml": 1500.0, "voxel_count": 10, "seconds": 2.0, "unsure_fraction": 0.15, "warnings": ""}
    columns = engine_cli.table_columns(row, (1, 1, 1), "automatic")
    assert columns["unsure_fraction"] == 0.15 and list(columns).index("unsure_fraction") > list(columns).index("seconds")
    assert engine_cli.column_metadata("unsure_fraction")[1].startswith("Network voxels")
    assert "unsure_fraction" not in engine_cli.table_columns({**row, "unsure_fraction": None}, (1, 1, 1), "edited")


def test_a_fraction_just_over_the_limit_is_not_shown_as_the_limit():
    assert "45 % of the liver's size" in confidence_warnings(0.45)[0]
    assert "30.04 % of the liver's size, usually under 30 %" in confidence_warnings(0.3004)[0]
    assert confidence_warnings(0.3) == []
