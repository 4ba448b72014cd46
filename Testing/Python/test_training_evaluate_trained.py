"""evaluate --model on cases the model was trained on: found by image fingerprint or by name,
marked, and left out of the summary figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_training_evaluate import _rows, cases  # noqa: F401  (cases is a fixture)

from LiverVolumetryTraining.agreement import icc_agreement
from LiverVolumetryTraining.cli import main


def _bundle_trained_on(tiny_bundle: Path, folder: Path, training: dict) -> Path:
    """A copy of the tiny bundle whose model.json records ``training``."""
    shutil.copytree(tiny_bundle, folder)
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    spec["training"] = training
    (folder / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


@pytest.mark.parametrize("recorded", ["fingerprints", "grid fingerprints", "names only"])
def test_cli_evaluate_leaves_the_models_training_cases_out_of_the_summary(cases, tiny_bundle, tmp_path, recorded):
    from LiverVolumetryTraining.fingerprint import VOXELS, VOXELS_AND_GRID, file_fingerprint

    manifest = tmp_path / "renamed.csv"  # the same scans under other names than the model was trained with
    manifest.write_text("image,label,case\n" + "".join(f"{cases}/data/image_{k}.nii.gz,{cases}/data/label_{k}.nii.gz,"
                                                       f"scan-{k}\n" for k in range(4)))
    if recorded != "names only":  # the training record names case "0", but its image is this manifest's scan-2
        method = VOXELS if recorded == "fingerprints" else VOXELS_AND_GRID  # a bundle that records no method
        training = {"cases": ["0"], "case_fingerprints": {"0": file_fingerprint(cases / "data" / "image_2.nii.gz",
                                                                                method)}}
        training.update({"fingerprint_method": VOXELS} if method == VOXELS else {})
        flagged, says = "scan-2", "their images are among the model's training images"
    else:
        training, flagged, says = {"cases": ["scan-1"]}, "scan-1", "matched by name only"
    bundle = _bundle_trained_on(tiny_bundle, tmp_path / "bundle", training)
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(manifest), "--model", str(bundle), "--no-radiomics", "--device", "cpu",
                 "-o", str(out)]) == 0
    rows = _rows(out / "cases.csv")
    assert [c for c, row in rows.items() if row["trained_on"] == "yes"] == [flagged]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    held_out = [c for c in rows if c != flagged]
    assert summary["n_cases"] == 4 and summary["training_cases"] == [flagged]
    assert summary["dice"]["n"] == 3 and summary["dice"]["mean"] == pytest.approx(
        np.mean([float(rows[c]["dice"]) for c in held_out]), abs=1e-4)
    volumes = [[float(rows[c][k]) for c in held_out] for k in ("volume_auto_ml", "volume_ref_ml")]
    assert summary["volume"]["icc"] == pytest.approx(icc_agreement(*volumes).icc, abs=1e-4)
    assert summary["summary_covers"] == "the 3 held-out cases (1 training case(s) of the model left out)"
    assert any(says in note and "left out of the summary figures" in note for note in summary["notes"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"| {flagged} (training case) |" in report and "cover the 3 held-out cases" in report


def test_cli_evaluate_on_the_models_training_cases_only_says_so(cases, tiny_bundle, tmp_path):
    bundle = _bundle_trained_on(tiny_bundle, tmp_path / "bundle", {"cases": ["0", "1", "2", "3"]})
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(cases / "data"), "--model", str(bundle), "--no-radiomics", "--device",
                 "cpu", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["dice"]["n"] == 4 and summary["training_cases"] == ["0", "1", "2", "3"]
    assert "training-set figures, not validation" in summary["summary_covers"]


def test_cli_evaluate_names_a_training_name_whose_image_differs_and_matches_unreadable_ones_by_name(
        cases, tiny_bundle, tmp_path):
    from LiverVolumetryTraining.fingerprint import VOXELS, file_fingerprint

    manifest = tmp_path / "renamed.csv"
    manifest.write_text("image,label,case\n" + "".join(f"{cases}/data/image_{k}.nii.gz,{cases}/data/label_{k}.nii.gz,"
                                                       f"scan-{k}\n" for k in range(4)))
    # scan-0 was trained on image 2 (so this scan-0 is another scan); scan-3's image was unreadable at export.
    training = {"cases": ["scan-0", "scan-3"], "fingerprint_method": VOXELS,
                "case_fingerprints": {"scan-0": file_fingerprint(cases / "data" / "image_2.nii.gz"), "scan-3": None}}
    bundle = _bundle_trained_on(tiny_bundle, tmp_path / "bundle", training)
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(manifest), "--model", str(bundle), "--no-radiomics", "--device", "cpu",
                 "-o", str(out)]) == 0
    assert [c for c, row in _rows(out / "cases.csv").items() if row["trained_on"] == "yes"] == ["scan-2", "scan-3"]
    notes = json.loads((out / "summary.json").read_text(encoding="utf-8"))["notes"]
    assert any(note.startswith("case name(s) scan-0 are among the model's training cases, but their images are "
                               "not the ones it was trained on") for note in notes)


def test_a_group_whose_cases_all_trained_the_model_is_named_as_left_out(cases, tiny_bundle, tmp_path):
    bundle = _bundle_trained_on(tiny_bundle, tmp_path / "bundle", {"cases": ["2", "3"]})  # group B of the manifest
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(cases / "manifest.csv"), "--model", str(bundle), "--no-radiomics",
                 "--device", "cpu", "-o", str(out)]) == 0
    notes = json.loads((out / "summary.json").read_text(encoding="utf-8"))["notes"]
    assert "group(s) 'B' left out of the group comparison: all their cases trained the model" in notes


def test_cli_evaluate_refuses_a_bundle_whose_fingerprint_method_it_does_not_know(cases, tiny_bundle, tmp_path, capsys):
    training = {"cases": ["0"], "case_fingerprints": {"0": "ab" * 32}, "fingerprint_method": "sha3 of everything"}
    bundle = _bundle_trained_on(tiny_bundle, tmp_path / "bundle", training)
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(cases / "manifest.csv"), "--model", str(bundle), "--no-radiomics",
                 "--device", "cpu", "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fingerprint_method 'sha3 of everything'" in err[0] and "Traceback" not in err[0]
    assert not out.exists()
