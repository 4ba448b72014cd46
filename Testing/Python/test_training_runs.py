"""Training runs and their export refuse what would leave a false record: resuming a run
with other inputs, argument values a run cannot use, duplicated case names, a missing or
damaged checkpoint or config.json; a failed train or export leaves no partial run folder
or bundle. Tiny runs (a 2-level network, 2 iterations) on 24^3 cases."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.bundle import load_bundle
from LiverVolumetryLib.errors import LiverVolumetryError
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.dataset import find_pairs
from LiverVolumetryTraining.recipes import load_recipe
from LiverVolumetryTraining.train import train

# The volumetry-net recipe made tiny; one window per batch (ONNX graphs take one window).
TINY = {"base": "volumetry-net", "network": {"args": {"channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "patch_size": [16, 16, 16], "inference": {"roi_size": [32, 32, 32], "sw_batch_size": 1}, "epochs": 1}


def write_case(folder: Path, k: int, liver: bool = True) -> None:
    """``image_k``/``label_k``: 24^3 voxels of 1.5 x 1.5 x 3 mm, a bright box liver."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(k).normal(100, 10, (24, 24, 24)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    if liver:
        label[6:16, 5:17, 6:18] = 1
    image[label > 0] += 80
    for name, array in (("image", image), ("label", label)):
        item = sitk.GetImageFromArray(array)
        item.SetSpacing((1.5, 1.5, 3.0))
        sitk.WriteImage(item, str(folder / f"{name}_{k}.nii.gz"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for k in (1, 2, 3):
        write_case(folder, k)
    return folder


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    return path


def train_args(data, run: Path, recipe_file: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--run", str(run), "--recipe", str(recipe_file), "--phantoms", "0",
            "--no-progress", "--iterations", "2", *extra]


@pytest.fixture(scope="module")
def trained_run(pairs, recipe_file, tmp_path_factory) -> Path:
    """A finished 2-iteration run: cases 1 and 2 trained on, case 3 held out."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_args(pairs, run, recipe_file, "--val-cases", "3")) == 0
    return run


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- train


def test_resuming_with_other_cases_split_recipe_phantoms_or_seed_is_refused_and_keeps_the_record(
        trained_run, pairs, recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = files_of(run)
    other_recipe = tmp_path / "other.json"
    other_recipe.write_text(json.dumps({**TINY, "optimizer": {"lr": 1e-3}}), encoding="utf-8")
    for extra, says in ((["--val-cases", "2"], "other training cases (1, 2 recorded; 1, 3 now); "
                                               "other validation cases (3 recorded; 2 now)"),
                        (["--val-cases", "3", "--recipe", str(other_recipe)], "another recipe (differs in name, "
                                                                              "optimizer)"),
                        (["--val-cases", "3", "--phantoms", "1"], "other phantoms (0 recorded, 1 now)"),
                        (["--val-cases", "3", "--seed", "5"], "another seed (0 recorded, 5 now)")):
        assert main(train_args(pairs, run, recipe_file, *extra)) == 1
        err = one_line_error(capsys)
        assert f"{run / 'config.json'}: this run was trained with {says}" in err and "use a new --run folder" in err
    assert files_of(run) == before  # neither config.json nor the checkpoints were touched
    assert main(train_args(pairs, run, recipe_file, "--val-cases", "3", "--iterations", "3")) == 0
    assert "resuming at iteration 2" in capsys.readouterr().out


def test_a_failed_new_run_leaves_nothing_behind(pairs, recipe_file, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(pairs, data)
    write_case(data, 4, liver=False)  # cases 1-3 are cached before case 4 fails
    run = tmp_path / "runs" / "bad1"
    assert main(train_args(data, run, recipe_file, "--val-count", "0")) == 1
    assert "case 4: no voxel has the liver label 1" in one_line_error(capsys)
    assert not run.exists()  # no config.json, no partial cache
    run.mkdir()  # a run folder made empty beforehand stays empty
    assert main(train_args(data, run, recipe_file, "--val-count", "0")) == 1
    assert run.is_dir() and not any(run.iterdir())


def test_config_records_absolute_paths_so_export_runs_anywhere(pairs, recipe_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(pairs.parent)
    assert main(train_args(pairs.name, tmp_path / "run", recipe_file, "--val-cases", "3")) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["validation"][0]["image"] == str(pairs / "image_3.nii.gz")
    assert all(Path(e["image"]).is_absolute() and Path(e["label"]).is_absolute() for e in config["train"])
    monkeypatch.chdir(tmp_path)
    assert main(["export", "run", "-o", "bundle"]) == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "bundle" / "model.json").read_text(encoding="utf-8"))
    assert list(meta["validation"]["dice_per_case"]) == ["3"]


def test_duplicated_case_names_are_refused_as_check_refuses_them(pairs, recipe_file, tmp_path, capsys):
    rows = [f"a,{pairs / f'image_{k}.nii.gz'},{pairs / f'label_{k}.nii.gz'}" for k in (1, 2, 3)]
    rows[2] = "b" + rows[2][1:]
    (tmp_path / "m.csv").write_text("case,image,label\n" + "\n".join(rows) + "\n")
    says = f"{pairs / 'image_2.nii.gz'}: case a: duplicated case name (also used for {pairs / 'image_1.nii.gz'})"
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(tmp_path / "m.csv"), "--run", str(run), "--recipe", str(recipe_file),
                 "--iterations", "1", "--val-count", "1"]) == 1
    assert one_line_error(capsys) == f"livervolumetry-train: error: {says}"
    entries = find_pairs(pairs)
    with pytest.raises(LiverVolumetryError, match="duplicated case name"):
        train(run, load_recipe(str(recipe_file)), entries[:2], entries[1:], iterations=1, log=lambda m: None)
    assert not run.exists()


@pytest.mark.parametrize("extra, says", [
    (["--iterations", "0"], "argument --iterations: must be a whole number of at least 1, got '0'"),
    (["--iterations", "-5"], "argument --iterations: must be a whole number of at least 1, got '-5'"),
    (["--val-count", "-1"], "argument --val-count: must be a whole number of at least 0, got '-1'"),
    (["--validate-every", "0"], "argument --validate-every: must be a whole number of at least 1, got '0'"),
])
def test_counts_out_of_range_are_usage_errors(pairs, recipe_file, tmp_path, capsys, extra, says):
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(pairs, tmp_path / "run", recipe_file, *extra))
    assert exit_info.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_needs_a_training_case_a_usable_recipe_and_positive_lengths(pairs, recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(pairs, run, recipe_file, "--val-count", "3")) == 1
    assert "--val-count 3 holds out every one of the 3 case(s): at least one training case must remain" \
        in one_line_error(capsys)
    assert main(train_args(pairs, run, recipe_file, "--val-cases", "1,2,3")) == 1
    assert "at least one training case must remain" in one_line_error(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": "volumetry-net", "optimizer": {"name": "Adam", "lr": "x"}}))
    assert main(train_args(pairs, run, bad)) == 1
    assert one_line_error(capsys).endswith(f"{bad}: recipe key 'optimizer.lr' must be a number, not \"x\"")
    assert not run.exists()
    entries = find_pairs(pairs)  # 0 is not "the recipe's length" (1 epoch here), nor is a negative count
    for arguments in ({"iterations": 0}, {"epochs": 0}, {"validate_every": 0}, {"phantoms": -1}):
        with pytest.raises(LiverVolumetryError, match="must be a whole number of at least"):
            train(run, load_recipe(str(recipe_file)), entries[:2], entries[2:], log=lambda m: None,
                  **{"phantoms": 0, **arguments})
    assert not run.exists()


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("damage, names, says", [
    ("no last.pt", "last.pt", "checkpoint not found"),
    ("no best.pt", "best.pt", "checkpoint not found: the run has not validated yet"),
    ("no config.json", "config.json", "not found (is this a training run folder?)"),
    ("damaged last.pt", "last.pt", "cannot be read as a checkpoint"),
    ("config.json not JSON", "config.json", "is not valid JSON (line 1"),
    ("config.json without cases", "config.json", "is not a training run's record ('train' is not a list"),
])
def test_export_of_an_unusable_run_is_a_one_line_error_naming_the_file(trained_run, tmp_path, capsys, damage,
                                                                        names, says):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = run / names
    if damage.startswith("no "):
        path.unlink()
    elif damage == "damaged last.pt":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "config.json not JSON":
        path.write_text('{"recipe": ')
    else:
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "train": "1,2"}))
    extra = ["--checkpoint", "best"] if names == "best.pt" else []
    assert main(["export", str(run), "-o", str(tmp_path / "bundle"), *extra]) == 1
    assert one_line_error(capsys).startswith(f"livervolumetry-train: error: {path}: {says}")
    assert not (tmp_path / "bundle").exists()


def test_export_moves_only_a_complete_bundle_into_place(trained_run, tmp_path, capsys):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    good = json.dumps(config)
    config["validation"][0]["image"] = str(tmp_path / "gone.nii.gz")  # validation fails after the weights
    (run / "config.json").write_text(json.dumps(config))
    assert main(["export", str(run), "-o", str(bundle)]) == 1
    assert "case 3: image file not found" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no bundle, no hidden staging folder
    (run / "config.json").write_text(good)
    assert main(["export", str(run), "-o", str(bundle), "--name", "first"]) == 0
    before = files_of(bundle)
    assert {"model.json", "MODEL.md", "model.safetensors"} <= set(before)
    (run / "config.json").write_text(json.dumps(config))
    assert main(["export", str(run), "-o", str(bundle), "--name", "second", "--overwrite"]) == 1
    assert "case 3: image file not found" in one_line_error(capsys)
    assert files_of(bundle) == before  # the old bundle is whole and unchanged
    (run / "config.json").write_text(good)
    assert main(["export", str(run), "-o", str(bundle), "--name", "second"]) == 1
    assert "already exists (use --overwrite" in one_line_error(capsys)
    assert main(["export", str(run), "-o", str(bundle), "--name", "second", "--overwrite"]) == 0
    assert load_bundle(bundle).name == "second" and "second" in (bundle / "MODEL.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "run"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["export", str(run), "-o", str(tmp_path / "other"), "--overwrite"]) == 1
    assert "is not a model bundle" in one_line_error(capsys) and (tmp_path / "other" / "notes.txt").is_file()


def test_export_threshold_goes_into_the_bundle_and_a_bad_one_is_refused(trained_run, tmp_path, capsys):
    default = load_recipe(str(TINY["base"]))["inference"].get("threshold", 0.5)
    assert main(["export", str(trained_run), "-o", str(tmp_path / "bundle"), "--threshold", "0.65"]) == 0
    assert load_bundle(tmp_path / "bundle").inference.threshold == 0.65 != default
    for bad in ("1.5", "0"):
        with pytest.raises(SystemExit) as stopped:
            main(["export", str(trained_run), "-o", str(tmp_path / f"bad{bad}"), "--threshold", bad])
        assert stopped.value.code == 2
        assert f"argument --threshold: must be a number between 0 and 1, got '{bad}'" in capsys.readouterr().err
        assert not (tmp_path / f"bad{bad}").exists()
    from LiverVolumetryTraining.export import export_run  # the function checks it too

    with pytest.raises(LiverVolumetryError, match="threshold must lie between 0 and 1, got 1.5"):
        export_run(trained_run, tmp_path / "bad", "x", "1", threshold=1.5, log=lambda m: None)
    assert not (tmp_path / "bad").exists()


def test_a_run_without_validation_cases_says_so_instead_of_a_nan_dice(pairs, recipe_file, tmp_path, capsys):
    assert main(train_args(pairs, tmp_path / "run", recipe_file, "--val-count", "0")) == 0
    out = capsys.readouterr().out
    assert "it 2/2 loss" in out and "no validation cases" in out and "nan" not in out


@pytest.mark.skipif(sys.platform == "win32", reason="the run lock is flock, which Windows lacks")
@pytest.mark.parametrize("folder", ["new and empty", "trained"])
def test_a_second_training_in_a_run_folder_in_use_is_refused_and_leaves_it_alone(pairs, recipe_file, trained_run,
                                                                                  tmp_path, capsys, folder):
    from LiverVolumetryTraining.run_folder import run_lock

    run = tmp_path / "empty" if folder == "new and empty" else tmp_path / "run"
    if folder == "trained":
        shutil.copytree(trained_run, run)
    before = files_of(run) if run.exists() else None
    with run_lock(run):  # a training in progress, as another process holds it
        assert main(train_args(pairs, run, recipe_file, "--val-cases", "3", "--iterations", "3")) == 1
    assert one_line_error(capsys).endswith(f"{run}: another training is running in this run folder (two would mix "
                                           "their checkpoints); wait for it to end, or use another --run folder")
    assert run.is_dir() and files_of(run) == (before or {})
    assert main(train_args(pairs, run, recipe_file, "--val-cases", "3", "--iterations", "3")) == 0  # free again


@pytest.mark.skipif(sys.platform == "win32", reason="the run lock is flock, which Windows lacks")
def test_a_file_system_without_folder_locks_trains_unguarded(tmp_path, monkeypatch):
    """NFS refuses flock on a folder (EBADF): that is no lock, not another training."""
    import errno
    import fcntl

    from LiverVolumetryTraining.run_folder import run_lock

    def nfs_flock(handle, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run").is_dir()
