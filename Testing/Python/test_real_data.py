"""The real-data path on the shared CHAOS T2 cases (skipped when ../shared is absent)."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA, dice, same_grid

from LiverVolumetryLib.bundle import load_bundle

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent "
                                "(only on the project's machines; the tests stand on synthetic phantoms)")


def _real_case() -> tuple[str, bool]:
    """A held-out case of the bundled model if it has one (recorded in its model.json),
    else one of its training cases; and whether it was held out."""
    training = load_bundle().metadata["training"]
    held_out = training.get("validation_cases") or []
    return (held_out[0], True) if held_out else (training["cases"][0], False)


def test_bundled_model_segments_a_real_case_through_the_cli(tmp_path):
    """A pipeline check on real data. Accuracy on unseen cases is the model card's
    (held-out or cross-validated figures), not this test's: a model trained on every
    shared case is checked on one of its training cases here."""
    from LiverVolumetryLib.cli import main

    case, held_out = _real_case()
    assert (case in load_bundle().metadata["training"]["cases"]) is not held_out
    image_path = SHARED_DATA / f"image_{case}.nii.gz"
    assert main(["segment", str(image_path), "-o", str(tmp_path), "--progress", "none"]) == 0
    mask = sitk.ReadImage(str(tmp_path / f"image_{case}_liver.nii.gz"))
    image = sitk.ReadImage(str(image_path))
    label = sitk.ReadImage(str(SHARED_DATA / f"label_{case}.nii.gz"))
    assert same_grid(mask, image)
    assert dice(mask, sitk.Equal(sitk.Cast(label, sitk.sitkInt32), 1)) > 0.85
    row = json.loads((tmp_path / "measurements.json").read_text())[0]
    assert 500 < row["volume_ml"] < 4000
    assert sum(k.startswith("original_") for k in row) >= 100


def test_training_finds_the_shared_pairs():
    from LiverVolumetryTraining.dataset import find_pairs, load_entry

    entries = find_pairs(SHARED_DATA, liver_label=1)
    assert len(entries) == 14
    image, liver = load_entry(entries[0])
    assert same_grid(image, liver) and sitk.GetArrayViewFromImage(liver).any()


def test_the_bundled_model_recognises_its_training_scans_by_content_under_any_name(tmp_path):
    """evaluate --model marks a training case by its image's fingerprint: the shared scans
    are the bundled model's training cases, whatever a manifest calls them or however they
    are saved; a scan changed in one voxel is not one."""
    from functools import partial

    from LiverVolumetryTraining.fingerprint import VOXELS_AND_GRID, fingerprint_method
    from LiverVolumetryTraining.fingerprint import file_fingerprint as fingerprint

    training = load_bundle().metadata["training"]
    assert fingerprint_method(training) == VOXELS_AND_GRID  # bundled before the method was recorded
    file_fingerprint = partial(fingerprint, method=VOXELS_AND_GRID)
    recorded = set(training["case_fingerprints"].values())
    assert len(recorded) == len(training["cases"]) == 14
    case = training["cases"][0]
    image = sitk.ReadImage(str(SHARED_DATA / f"image_{case}.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "renamed scan.nrrd"))
    assert file_fingerprint(SHARED_DATA / f"image_{case}.nii.gz") in recorded
    assert file_fingerprint(tmp_path / "renamed scan.nrrd") in recorded
    image[0, 0, 0] = image[0, 0, 0] + 1
    sitk.WriteImage(image, str(tmp_path / "edited.nrrd"))
    assert file_fingerprint(tmp_path / "edited.nrrd") not in recorded
