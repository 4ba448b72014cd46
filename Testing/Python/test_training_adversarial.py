"""Bad input to the training package, as a lab user might give it: one-line errors naming
the file and the cause, no traceback, nothing left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryTraining import cli
from LiverVolumetryTraining.dataset import CaseEntry, find_pairs
from LiverVolumetryTraining.recipes import RECIPES, get_recipe, load_recipe

from conftest import TINY_VOLUMETRY_NET

TINY_LIVER_MRI = {"base": "liver-mri", "network": {"args": {"channels": [4, 8], "strides": [2], "num_res_units": 0}},
                  "stages": [], "patch_size": [16, 16, 16], "inference": {"roi_size": [32, 32, 32]}}


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("livervolumetry-train: error:") and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("base, override, says", [
    (TINY_VOLUMETRY_NET, {"patchsize": [16, 16, 16]}, "unknown key(s) 'patchsize'"),
    (TINY_VOLUMETRY_NET, {"optimizer": {"momentum": 0.9}}, "'optimizer.momentum'"),
    (TINY_VOLUMETRY_NET, {"loss": "focal"}, "'loss' must be one of dice, dice_ce"),
    (TINY_VOLUMETRY_NET, {"optimizer": {"name": "Adamm"}}, "'optimizer.name' 'Adamm'"),
    (TINY_VOLUMETRY_NET, {"optimizer": {"lr": -1}}, "'optimizer.lr' must be a number above 0"),
    (TINY_VOLUMETRY_NET, {"patch_size": [17, 16, 16]}, "multiples of the network's stride 2"),
    (TINY_VOLUMETRY_NET, {"patch_size": [16, 16]}, "'patch_size' must be 3 whole numbers"),
    (TINY_VOLUMETRY_NET, {"sampler": "random"}, "'sampler' must be one of"),
    (TINY_VOLUMETRY_NET, {"network": {"class": "ResNet"}}, "'network.class' must be one of UNet"),
    (TINY_VOLUMETRY_NET, {"network": {"args": {"chanels": [4, 8]}}}, "'network' cannot be built"),
    (TINY_VOLUMETRY_NET, {"network": {"args": {"in_channels": 2}}}, "'network.args.in_channels' must be 1"),
    (TINY_VOLUMETRY_NET, {"network": {"args": {"spatial_dims": 2}}}, "'network.args.spatial_dims' must be 3"),
    (TINY_VOLUMETRY_NET, {"network": {"args": {"out_channels": 1}}}, "'network.args.out_channels' must be 2"),
    (TINY_VOLUMETRY_NET, {"network": {"class": "SegResNet", "args": {"in_channels": 3}}},
     "'network.args.in_channels' must be 1"),
    (TINY_VOLUMETRY_NET, {"preprocessing": {"spacing_mm": [0.01, 2, 2]}}, "'preprocessing.spacing_mm' must be"),
    (TINY_VOLUMETRY_NET, {"preprocessing": {"spacing_mm": [2, 2, 40]}}, "from 0.5 to 16 mm"),
    (TINY_LIVER_MRI, {"augmentation": "medium"}, "'augmentation' must be none"),
    (TINY_LIVER_MRI, {"augmentation": {"gamma": 5}}, "'augmentation.gamma' is a probability"),
    (TINY_LIVER_MRI, {"augmentation": {"gama": 0.5}}, "unknown augmentation(s) gama"),
    (TINY_LIVER_MRI, {"sampler": "posneg-epochs"}, "needs 'volumes_per_batch'"),
    (TINY_LIVER_MRI, {"phantom_contrasts": ["t1"]}, "'phantom_contrasts' must be a list of"),
    (TINY_LIVER_MRI, {"inference": {"threshold": 5}}, "'inference.threshold' must lie between 0 and 1"),
    (TINY_LIVER_MRI, {"inference": {"mode": "mean"}}, "'inference.mode' must be one of"),
    (TINY_LIVER_MRI, {"positive_fraction": 1.5}, "'positive_fraction' must lie between 0 and 1"),
    (TINY_VOLUMETRY_NET, {"preprocessing": {"intensity": {"lower": 80}}}, "'preprocessing.intensity' needs"),
    ({}, {"patch_size": [16, 16, 16]}, "lacks 'network', 'preprocessing'"),
    ({"base": "liver-mri"}, {"stages": [{"iterations": 5}, {"iterations": 5, "optimizer": {"lr": 0}}]},
     "stage 2: 'optimizer.lr'"),
    ({"base": "liver-mri"}, {"augmentation": {"gama": 0.5}}, "recipe unknown augmentation(s) gama"),  # not stage 1's
    ({"base": "liver-mri"}, {"patch_size": [96, 96, 32]}, "recipe key 'patch_size' is set by each stage of "
                                                          "'liver-mri', so this value would be ignored"),
    ({"base": "liver-mri"}, {"name": "../../elsewhere"}, "recipe 'name' must be text of 1-80 characters"),
    ({"base": "liver-mri"}, {"organ_tissues": "yes"}, "recipe key 'organ_tissues' must be true or false"),
])
def test_a_recipe_file_with_an_unknown_key_or_unusable_value_is_refused_naming_it(tmp_path, base, override, says):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**base, **override}))
    with pytest.raises(InputError) as caught:
        load_recipe(str(path))
    message = str(caught.value)
    assert "mine.json" in message and says in message and "\n" not in message


def test_every_named_recipe_and_the_tiny_ones_pass_the_recipe_check(tmp_path):
    from LiverVolumetryTraining.recipe_check import check_recipe_values

    for name in RECIPES:
        check_recipe_values(get_recipe(name), name)
    for number, spec in enumerate((TINY_VOLUMETRY_NET, TINY_LIVER_MRI)):
        path = tmp_path / f"tiny{number}.json"
        path.write_text(json.dumps(spec))
        load_recipe(str(path))


def test_train_with_a_misspelt_recipe_key_stops_before_any_work(tiny_cases, tmp_path, capsys):
    recipe = tmp_path / "typo.json"
    recipe.write_text(json.dumps({**TINY_LIVER_MRI, "augmentation": "milde"}))
    run = tmp_path / "run"
    code = cli.main(["train", "--data", str(tiny_cases), "--run", str(run), "--recipe", str(recipe),
                     "--iterations", "1", "--phantoms", "0", "--val-count", "1", "--no-progress"])
    assert code == 1 and not run.exists()
    _one_line_error(capsys, "typo.json", "'augmentation'")


@pytest.mark.parametrize("command", ["train", "crossval"])
def test_a_negative_seed_is_a_usage_error(tiny_cases, tmp_path, capsys, command):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        cli.main([command, "--data", str(tiny_cases), "--run", str(run), "--seed", "-1"])
    assert stopped.value.code == 2 and not run.exists()
    assert "argument --seed: must be a whole number of at least 0" in capsys.readouterr().err


def test_crossval_thresholds_that_are_not_numbers_are_a_one_line_error(tiny_cases, tmp_path, capsys):
    run = tmp_path / "cv"
    code = cli.main(["crossval", "--data", str(tiny_cases), "--run", str(run), "--thresholds", "0.5,high",
                     "--iterations", "1", "--phantoms", "0"])
    assert code == 1 and not run.exists()
    _one_line_error(capsys, "--thresholds", "'high'")


def _tiny_recipe(tmp_path: Path) -> dict:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_VOLUMETRY_NET))
    return load_recipe(str(path))


def test_a_crossval_stopped_by_bad_input_leaves_no_folds_record_to_refuse_the_fixed_input(tiny_cases, tmp_path):
    from LiverVolumetryTraining.crossval import crossval

    entries = find_pairs(tiny_cases)
    image_9 = shutil.copy(entries[0].image, tmp_path / "image_9.nii.gz")
    broken = [*entries, CaseEntry("9", Path(image_9), tmp_path / "missing.nii.gz")]
    run = tmp_path / "cv"
    folds = [["0", "9"], ["1", "2"]]
    with pytest.raises(InputError, match="missing.nii.gz"):
        crossval(broken, run, _tiny_recipe(tmp_path), folds, iterations=1, phantoms=0, log=lambda m: None,
                 device="cpu")
    assert not run.exists()  # no folds.json: the corrected manifest's other folds are accepted
    with pytest.raises(InputError, match="missing.nii.gz"):  # --fold: sibling folds may share the new folder
        crossval(broken, run, _tiny_recipe(tmp_path), folds, iterations=1, phantoms=0, log=lambda m: None,
                 device="cpu", only_fold=0)
    assert (run / "folds.json").is_file()
    shutil.rmtree(run)
    duplicated = [*entries, CaseEntry("0", entries[1].image, entries[1].label)]
    with pytest.raises(LiverVolumetryError, match="case 0: duplicated case name"):
        crossval(duplicated, run, _tiny_recipe(tmp_path), [["0", "1"], ["2"]], iterations=1, phantoms=0,
                 log=lambda m: None, device="cpu")
    assert not run.exists()


@pytest.mark.parametrize("case", ["sub/1", "../../escape", "a\\b", ".."])
def test_a_case_name_that_is_a_path_is_refused_naming_the_manifest_line(tiny_cases, tmp_path, case):
    from LiverVolumetryTraining.manifest import read_manifest

    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image,label\n1,{tiny_cases}/image_1.nii.gz,{tiny_cases}/label_1.nii.gz\n"
                        f"\"{case}\",{tiny_cases}/image_0.nii.gz,{tiny_cases}/label_0.nii.gz\n")
    with pytest.raises(InputError) as caught:
        read_manifest(manifest)  # it would name cache files and masks outside their folders
    assert "cases.csv: line 3: case name" in str(caught.value)


@pytest.mark.parametrize("content", ["{}", "[1]", '{"protocol": "3-fold"}'])
def test_export_refuses_a_crossval_file_that_crossval_did_not_write(tmp_path, content):
    from LiverVolumetryTraining.crossval import read_summary

    (tmp_path / "crossval.json").write_text(content)
    with pytest.raises(InputError, match="is not a cross-validation summary"):
        read_summary(tmp_path)


def _case(name: str, group: str, volume: float):
    from LiverVolumetryTraining.evaluate import CaseResult

    return CaseResult(case=name, group=group, dice=0.9, hd95_mm=2.0, assd_mm=1.0, volume_auto_ml=volume,
                      volume_ref_ml=volume, source="test", seconds=0.0)


def test_evaluate_says_why_the_volume_icc_and_group_test_are_missing():
    from LiverVolumetryTraining.evaluate import EvaluationResult, summarize

    result = EvaluationResult(cases=[_case(str(k), "internal", 1500.0) for k in range(4)], automated="test",
                              radiomics=False)
    summarize(result)
    assert "volume ICC undefined: the volumes do not vary at all" in result.notes
    assert any("Mann-Whitney U not computed: every grouped case is in group 'internal'" in n for n in result.notes)


def test_the_background_value_0_as_liver_label_is_refused_not_trained_on(tiny_cases, tmp_path, capsys):
    from LiverVolumetryTraining.manifest import check_entries

    problems = check_entries(find_pairs(tiny_cases, liver_label=0))
    assert len(problems) == 3 and all("liver label 0 is the background value" in p for p in problems)
    assert cli.main(["check", "--data", str(tiny_cases), "--label-value", "0"]) == 1


@pytest.mark.parametrize("column", ["Liver_Label", "liver_value", "labels", "Image", "label_value"])
def test_a_manifest_column_meant_as_a_known_one_is_refused_not_ignored(tiny_cases, tmp_path, column):
    from LiverVolumetryTraining.manifest import read_manifest

    row = {"image": f"{tiny_cases}/image_0.nii.gz", "label": f"{tiny_cases}/label_0.nii.gz", column: "6"}
    csv_file = tmp_path / "cases.csv"
    csv_file.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    json_file = tmp_path / "cases.json"
    json_file.write_text(json.dumps([row]))
    for manifest in (csv_file, json_file):  # ignored, liver label 1 would be trained: another organ in AMOS
        with pytest.raises(InputError, match=f"column '{column}' is not a manifest column"):
            read_manifest(manifest)


def test_a_manifest_row_with_more_values_than_columns_is_refused_naming_the_line(tiny_cases, tmp_path):
    """csv would drop the surplus value: here the AMOS liver label 6, so label 1 (the spleen) would be trained."""
    from LiverVolumetryTraining.manifest import read_manifest

    manifest = tmp_path / "cases.csv"
    first = f"a,{tiny_cases}/image_0.nii.gz,{tiny_cases}/label_0.nii.gz"
    manifest.write_text(f"case,image,label\n{first},\n{first.replace('a,', 'b,', 1)},6\n")  # a trailing comma is fine
    with pytest.raises(InputError, match=r"cases.csv: line 3: more values than the header has columns "
                                         r"\(case, image, label\)"):
        read_manifest(manifest)


def test_other_extra_manifest_columns_are_ignored(tiny_cases, tmp_path):
    from LiverVolumetryTraining.manifest import read_manifest

    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image,label,liver_label,group,age,site,notes\n"
                        f"a,{tiny_cases}/image_0.nii.gz,{tiny_cases}/label_0.nii.gz,1,x,54,b,none\n")
    assert [(e.case, e.liver_label, e.group) for e in read_manifest(manifest)] == [("a", 1, "x")]


@pytest.mark.parametrize("extra", ["image_7.nii.gz", "label_7.nii.gz"])
@pytest.mark.parametrize("command", [["check"], ["convert", "pairs"], ["train", "--iterations", "1"]])
def test_a_scan_or_label_without_its_pair_is_refused_naming_it_not_left_out(tiny_cases, tmp_path, capsys, extra,
                                                                            command):
    folder = tmp_path / "pairs"
    shutil.copytree(tiny_cases, folder)
    shutil.copy(folder / extra.replace("7", "0"), folder / extra)
    out = tmp_path / "out"
    where = ["--data", str(folder)] if command[0] != "convert" else [str(folder), "-o", str(out)]
    run = ["--run", str(out)] if command[0] == "train" else []
    code = cli.main([*command, *where, *run])
    assert code == 1 and not out.exists()
    _one_line_error(capsys, str(folder), f"{extra} without a matching image or label file")


def test_files_that_name_neither_an_image_nor_a_label_are_left_alone(tiny_cases, tmp_path):
    folder = tmp_path / "pairs"
    shutil.copytree(tiny_cases, folder)
    shutil.copy(folder / "image_0.nii.gz", folder / "notes.nii.gz")
    assert [e.case for e in find_pairs(folder)] == ["0", "1", "2"]


@pytest.mark.parametrize("arguments, says", [
    (["export", "RUN", "-o", "OUT", "--name", " "], "argument --name: must be 1-80 printable characters"),
    (["export", "RUN", "-o", "OUT", "--version", "1/2"], "argument --version: must be 1-80 printable characters"),
    (["export", "RUN", "-o", "OUT", "--threshold", "2"], "argument --threshold: must be a number between 0 and 1"),
    (["export", "RUN", "-o", "OUT", "--max-window-voxels", "-5"], "argument --max-window-voxels: must be a whole"),
    (["crossval", "--data", "DATA", "--run", "OUT", "-k", "1"], "argument -k: must be a whole number of at least 2"),
])
def test_option_values_out_of_range_are_usage_errors_naming_the_option(tiny_cases, tmp_path, capsys, arguments,
                                                                       says):
    paths = {"RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out"), "DATA": str(tiny_cases)}
    with pytest.raises(SystemExit) as stopped:
        cli.main([paths.get(a, a) for a in arguments])
    assert stopped.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, says", [
    (["crossval", "--thresholds", ","], ["--thresholds ','", "names no threshold"]),
    (["crossval", "--thresholds", "0.5,1.5"], ["--thresholds: '1.5' is not a number between 0 and 1"]),
    (["crossval", "--folds", "0,0;1,2"], ["--folds: case(s) named twice in one fold: 0"]),
    (["crossval", "--folds", "0;;1,2"], ["--folds: fold(s) 2 name no case"]),
    (["train", "--val-cases", ","], ["--val-cases ','", "names no case"]),
])
def test_option_lists_that_name_nothing_or_repeat_are_one_line_errors(tiny_cases, tmp_path, capsys, arguments, says):
    run = tmp_path / "run"
    code = cli.main([*arguments, "--data", str(tiny_cases), "--run", str(run), "--iterations", "1"])
    assert code == 1 and not run.exists()
    _one_line_error(capsys, *says)


def test_folds_with_a_trailing_semicolon_are_read_as_written():
    from LiverVolumetryTraining.crossval import parse_folds

    assert parse_folds("0,1;2;", ["0", "1", "2"]) == [["0", "1"], ["2"]]


@pytest.mark.parametrize("where, says", [
    ("run-file", "is a file, not a run folder"),
    ("cache-file", "is a file, not a folder for the preprocessing cache (--cache)"),
    ("user-folder", "holds other files (notes.txt) but no training run (config.json)"),
])
def test_a_run_or_cache_that_cannot_be_a_run_is_refused_before_any_work(tiny_cases, tmp_path, capsys, where, says):
    run, cache = tmp_path / "run", tmp_path / "cache"
    if where == "run-file":
        run.write_text("x")
    elif where == "cache-file":
        cache.write_text("x")
    else:
        run.mkdir()
        (run / "notes.txt").write_text("mine")
    code = cli.main(["train", "--data", str(tiny_cases), "--run", str(run), "--cache", str(cache),
                     "--iterations", "1", "--phantoms", "0", "--val-count", "1", "--no-progress"])
    assert code == 1
    _one_line_error(capsys, says)
    assert where != "user-folder" or [p.name for p in run.iterdir()] == ["notes.txt"]
    assert where == "cache-file" or not cache.exists()


@pytest.mark.parametrize("dataset", ["chaos", "amos", "liverhccseg", "totalseg", "pairs"])
@pytest.mark.parametrize("source, says", [("missing", "does not exist"), ("file.txt", "is not a folder")])
def test_every_converter_says_the_same_of_a_source_that_is_not_a_folder(tmp_path, capsys, dataset, source, says):
    (tmp_path / "file.txt").write_text("x")
    assert cli.main(["convert", dataset, str(tmp_path / source), "-o", str(tmp_path / "out")]) == 1
    _one_line_error(capsys, f"{tmp_path / source}: {says}")
    assert not (tmp_path / "out").exists()


def test_export_names_a_missing_crossval_folder_or_summary(tmp_path):
    from LiverVolumetryTraining.crossval import read_summary

    with pytest.raises(InputError, match="nope: is not a cross-validation folder"):
        read_summary(tmp_path / "nope")
    with pytest.raises(InputError, match="crossval.json: not found: the cross-validation has not finished"):
        read_summary(tmp_path)
    (tmp_path / "crossval.json").write_text("{")
    with pytest.raises(InputError, match="crossval.json: is not valid JSON"):
        read_summary(tmp_path)


def test_init_from_a_file_that_is_not_model_json_says_it_is_a_file(tiny_cases, tmp_path, capsys):
    (tmp_path / "weights.json").write_text("{}")
    run = tmp_path / "run"
    code = cli.main(["train", "--data", str(tiny_cases), "--run", str(run), "--init-from",
                     str(tmp_path / "weights.json"), "--val-count", "1"])
    assert code == 1 and not run.exists()
    _one_line_error(capsys, "weights.json: is a file, not a model bundle")


@pytest.mark.parametrize("arguments", [["train", "--data", "x", "--run", ""], ["evaluate", "--data", "", "-o", "e"],
                                       ["export", "", "-o", "b"], ["crossval", "--data", "x", "--run", " "]])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, capsys, arguments):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main(arguments)
    assert stopped.value.code == 2 and "an empty path (an unset shell variable?)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_label_value_with_only_a_manifest_is_refused_not_ignored(tiny_cases, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"image,label\n{tiny_cases}/image_0.nii.gz,{tiny_cases}/label_0.nii.gz\n")
    assert cli.main(["check", "--manifest", str(manifest), "--label-value", "7"]) == 1
    assert ("--label-value applies to --data folders; a manifest gives each case's liver label in its liver_label "
            "column") in capsys.readouterr().err
    assert cli.main(["check", "--manifest", str(manifest)]) == 0
