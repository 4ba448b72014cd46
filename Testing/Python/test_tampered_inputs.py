"""Inputs altered by hand or by mistake: a model bundle whose model.json or weights were
edited, one scan listed under two case names, manifests saved with another separator or
encoding, and contradictory cross-validation options. Each is refused in one line."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest

from LiverVolumetryLib.bundle import load_bundle, sha256_file
from LiverVolumetryLib.errors import InputError, ModelBundleError
from LiverVolumetryTraining import cli
from LiverVolumetryTraining.dataset import find_pairs


def _edited(bundle: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``bundle`` whose model.json ``edit`` changed (given the copy's folder)."""
    copy = tmp_path / "edited"
    shutil.copytree(bundle, copy)
    spec = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    edit(spec, copy)
    (copy / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    return copy


def _outside_weights(spec: dict, copy: Path) -> None:
    shutil.copy(copy / spec["weights"]["file"], copy.parent / "outside.safetensors")
    spec["weights"]["file"] = "../outside.safetensors"


def _pickled_weights(spec: dict, copy: Path) -> None:
    (copy / "model.pt").write_bytes(pickle.dumps({"not": "tensors", "but": print}))
    spec["weights"] = {"file": "model.pt", "sha256": sha256_file(copy / "model.pt")}


def _fake_safetensors(spec: dict, copy: Path) -> None:
    path = copy / spec["weights"]["file"]
    path.write_bytes(pickle.dumps({"x": 1}))
    spec["weights"]["sha256"] = sha256_file(path)


@pytest.mark.parametrize("edit, says", [
    (lambda spec, copy: spec["network"].update({"class": "os.system"}), "network class 'os.system' is not allowed"),
    (_outside_weights, "names outside.safetensors outside the bundle folder"),
])
def test_a_bundle_naming_a_foreign_class_or_a_file_outside_it_is_refused_on_loading(tiny_bundle, tmp_path, edit,
                                                                                     says):
    with pytest.raises(ModelBundleError, match=says):
        load_bundle(_edited(tiny_bundle, tmp_path, edit))


@pytest.mark.parametrize("edit", [_pickled_weights, _fake_safetensors])
def test_weights_that_are_not_tensors_are_a_one_line_bundle_error(tiny_bundle, tmp_path, edit):
    bundle = load_bundle(_edited(tiny_bundle, tmp_path, edit))  # checksums match: it loads
    with pytest.raises(ModelBundleError, match="cannot be read as tensors") as caught:
        bundle.load_network()
    assert "\n" not in str(caught.value) and "edited" in str(caught.value)


def test_network_arguments_the_class_refuses_are_blamed_on_the_bundle(tiny_bundle, tmp_path):
    bundle = load_bundle(_edited(tiny_bundle, tmp_path, lambda spec, copy: spec["network"]["args"].update(
        act="__import__('os')")))
    with pytest.raises(ModelBundleError, match="bad network arguments") as caught:
        bundle.build_network()
    assert "edited" in str(caught.value)


def test_one_scan_under_two_case_names_is_refused_in_check_and_train(tiny_cases, tmp_path, capsys):
    entries = find_pairs(tiny_cases)
    manifest = tmp_path / "twice.csv"
    rows = [f"{e.case},{e.image},{e.label}" for e in entries]
    rows.append(f"copy_of_0,{entries[0].image},{entries[0].label}")
    manifest.write_text("case,image,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert cli.main(["check", "--manifest", str(manifest)]) == 1
    assert f"{entries[0].image}: case copy_of_0: the same image as case 0" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli.main(["train", "--manifest", str(manifest), "--run", str(run), "--val-cases", "0"]) == 1
    assert "case copy_of_0: the same image as case 0" in capsys.readouterr().err and not run.exists()


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_manifest_with_another_separator_says_so(tiny_cases, tmp_path, separator):
    from LiverVolumetryLib.inputs import collect_inputs
    from LiverVolumetryTraining.manifest import read_manifest

    entry = find_pairs(tiny_cases)[0]
    path = tmp_path / "m.csv"
    path.write_text(separator.join(["case", "image", "label"]) + "\n"
                    + separator.join([entry.case, str(entry.image), str(entry.label)]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"separated by {separator!r}, not commas")):
        read_manifest(path)
    with pytest.raises(InputError, match=re.escape(f"separated by {separator!r}, not commas")):
        collect_inputs([path])


def test_a_utf16_manifest_is_asked_for_as_utf8(tiny_cases, tmp_path):
    from LiverVolumetryLib.inputs import collect_inputs
    from LiverVolumetryTraining.manifest import read_manifest

    entry = find_pairs(tiny_cases)[0]
    path = tmp_path / "m.csv"
    path.write_text(f"case,image,label\n{entry.case},{entry.image},{entry.label}\n", encoding="utf-16")
    with pytest.raises(InputError, match="save it as UTF-8 CSV"):
        read_manifest(path)
    with pytest.raises(InputError, match="save it as UTF-8 CSV"):
        collect_inputs([path])


def test_crossval_fold_and_no_train_together_are_refused_before_anything_is_written(tiny_cases, tmp_path, capsys):
    run = tmp_path / "cv"
    assert cli.main(["crossval", "--data", str(tiny_cases), "--run", str(run), "--no-train", "--fold", "0"]) == 1
    assert "--fold trains one fold and --no-train trains none" in capsys.readouterr().err and not run.exists()

