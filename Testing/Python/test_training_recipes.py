"""Training recipes: the published volumetry-net recipe, its MONAI patch sampler, a CLI
smoke run + export + engine inference, resume after an interruption, and a 2-process
DistributedDataParallel run (gloo, CPU) under torchrun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY_VOLUMETRY_NET, same_grid
from LiverVolumetryLib.errors import LiverVolumetryError
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.dataset import CachedCase, find_pairs
from LiverVolumetryTraining.recipes import expand_stages, get_recipe, load_recipe
from LiverVolumetryTraining.sampling import PosNegEpochSampler, posneg_patches, total_iterations
from LiverVolumetryTraining.train import build_network, load_checkpoint, train

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def tiny_recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.json"
    path.write_text(json.dumps(TINY_VOLUMETRY_NET), encoding="utf-8")
    return path


def _log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_volumetry_net_builds_the_papers_network():
    recipe = get_recipe("volumetry-net")
    network = build_network(recipe)
    batch_norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    others = [m for m in network.modules() if isinstance(m, (torch.nn.InstanceNorm3d, torch.nn.GroupNorm))]
    dropouts = [m for m in network.modules() if isinstance(m, torch.nn.Dropout3d | torch.nn.Dropout)]
    assert batch_norms and not others
    assert dropouts and {m.p for m in dropouts} == {0.3}
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)]
    assert {c.out_channels for c in convs} == {16, 32, 64, 128, 2}  # 4 levels, 2 output classes
    assert sorted({b.num_features for b in batch_norms}) == [2, 16, 32, 64, 128]  # MONAI norms the top up-block too
    assert tuple(network.strides) == (2, 2, 2) and network.num_res_units == 2
    assert recipe["patch_size"] == [64, 64, 32] and recipe["pos_neg"] == [3, 1]
    assert (recipe["volumes_per_batch"], recipe["samples_per_volume"], recipe["epochs"]) == (16, 2, 1000)
    assert recipe["loss"] == "dice" and recipe["optimizer"] == {"name": "Adam", "lr": 1e-4}
    assert recipe["augmentation"] == "none" and recipe["preprocessing"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert recipe["preprocessing"]["intensity"]["lower"] == 25.0 and recipe["preprocessing"]["intensity"]["upper"] == 75.0
    assert recipe["inference"]["roi_size"] == [224, 224, 128] and recipe["inference"]["threshold"] == 0.5


def test_posneg_sampler_draws_three_positive_centres_to_one_negative():
    label = np.zeros((96, 96, 48), np.uint8)
    label[40:56, 40:56, 20:28] = 1  # far enough from the borders that centres are never shifted
    case = CachedCase("c", np.random.default_rng(0).normal(size=label.shape).astype(np.float32), label)
    state = np.random.RandomState(7)
    centres = []
    for _ in range(40):
        for image, lab in posneg_patches(case, (64, 64, 32), 8, 3, 1, state):
            assert image.shape == (64, 64, 32) and lab.shape == (64, 64, 32)
            centres.append(lab[32, 32, 16])
    fraction = float(np.mean(centres))
    assert 0.68 < fraction < 0.82, fraction  # 0.75 expected; 320 draws, SD 0.024


def test_posneg_patches_are_reproducible_from_the_random_state():
    # A monai Compose around the crop re-seeded it from an unseeded stream: runs differed.
    label = np.zeros((64, 64, 32), np.uint8)
    label[20:40, 20:40, 10:20] = 1
    case = CachedCase("c", np.random.default_rng(0).normal(size=label.shape).astype(np.float32), label)
    first = posneg_patches(case, (32, 32, 16), 6, 1, 1, np.random.RandomState(3))
    second = posneg_patches(case, (32, 32, 16), 6, 1, 1, np.random.RandomState(3))
    other = posneg_patches(case, (32, 32, 16), 6, 1, 1, np.random.RandomState(4))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_posneg_patches_from_a_volume_smaller_than_the_patch():
    image = np.random.default_rng(1).uniform(-0.5, 0.5, size=(40, 40, 24)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[10:20, 15:25, 8:16] = 1
    patches = posneg_patches(CachedCase("s", image, label), (64, 64, 32), 2, 3, 1, np.random.RandomState(0))
    assert len(patches) == 2
    for patch, lab in patches:
        assert patch.shape == (64, 64, 32) and lab.shape == (64, 64, 32)
        assert lab.sum() == label.sum()  # the whole (padded) volume is inside the patch
        assert patch[0, 0, 0] == pytest.approx(image.min())  # padded with air, not 0
        assert patch[12:52, 12:52, 4:28] == pytest.approx(image)  # symmetric padding


def test_epochs_iterations_and_rank_split():
    recipe = get_recipe("volumetry-net")
    assert total_iterations(recipe, 11) == 1000  # 11 volumes in one batch of 16: one step per epoch
    assert total_iterations(recipe, 40) == 3000 and total_iterations(recipe, 40, epochs=2) == 6
    assert total_iterations(recipe, 40, iterations=5, epochs=2) == 5
    assert [total_iterations(stage, 11) for stage in expand_stages(get_recipe("liver-mri"))] == [5500, 1200]
    assert [total_iterations(stage, 11) for stage in expand_stages(get_recipe("liver-mri-quick"))] == [1800, 600]
    with pytest.raises(LiverVolumetryError, match="not epochs"):
        total_iterations(get_recipe("liver-mri"), 11, epochs=3)
    recipe["volumes_per_batch"] = 2
    cases = [CachedCase(str(k), np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)) for k in range(5)]
    single = PosNegEpochSampler(recipe, cases, seed=3)
    epoch = [single.volumes(i) for i in range(3)]
    assert single.per_epoch == 3 and sorted(sum(epoch, [])) == [0, 1, 2, 3, 4]  # each volume once per epoch
    assert [single.volumes(i) for i in range(3, 6)] != epoch  # reshuffled next epoch
    ranks = [PosNegEpochSampler(recipe, cases, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(ranks[0].volumes(0) + ranks[1].volumes(0)) == sorted(epoch[0])
    assert ranks[0].volumes(0) != ranks[1].volumes(0)


def test_recipe_file_overrides_a_named_recipe(tiny_recipe_file, tmp_path):
    recipe = load_recipe(str(tiny_recipe_file))
    assert recipe["network"]["args"]["channels"] == [4, 8] and recipe["network"]["args"]["norm"] == "batch"
    assert recipe["inference"]["sw_batch_size"] == 4 and recipe["patch_size"] == [16, 16, 16]
    with pytest.raises(LiverVolumetryError, match="unknown recipe"):
        load_recipe("no-such-recipe")


def test_volumetry_net_smoke_run_export_and_engine_inference(tiny_cases, tmp_path, capsys):
    from LiverVolumetryLib.bundle import load_bundle
    from LiverVolumetryLib.segment import segment_liver

    run, out = tmp_path / "run", tmp_path / "bundle"
    assert main(["train", "--recipe", "volumetry-net", "--data", str(tiny_cases), "--run", str(run), "--phantoms", "0",
                 "--epochs", "1", "--val-cases", "2", "--no-progress"]) == 0  # 2 volumes: 1 step per epoch
    rows = _log_rows(run)
    assert [r["iteration"] for r in rows] == ["1"] and rows[-1]["epoch"] == "1.00"
    assert rows[-1]["val_dice_cases"].startswith("2=")
    assert not (run / "tensorboard").exists() or any((run / "tensorboard").iterdir())
    assert main(["export", str(run), "-o", str(out), "--name", "volumetry-net-smoke"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["network"] == get_recipe("volumetry-net")["network"]
    assert meta["training"]["iterations"] == 1 and meta["training"]["epochs"] == 1
    bundle = load_bundle(out)
    network = bundle.load_network()
    assert not network.training and any(isinstance(m, torch.nn.BatchNorm3d) for m in network.modules())
    image = sitk.ReadImage(str(tiny_cases / "image_2.nii.gz"))
    result = segment_liver(image, bundle, device="cpu")
    assert same_grid(result.mask, image)
    assert "volumetry-net" in (out / "MODEL.md").read_text(encoding="utf-8")


def test_resume_after_interruption(tiny_cases, tiny_recipe_file, tmp_path):
    recipe = load_recipe(str(tiny_recipe_file))
    entries = find_pairs(tiny_cases)
    run = tmp_path / "run"

    def interrupt(message: str) -> None:
        if message.startswith("it 2/"):
            raise KeyboardInterrupt  # as Ctrl-C right after the checkpoint at iteration 2

    with pytest.raises(KeyboardInterrupt):
        train(run, recipe, entries[:2], entries[2:], phantoms=0, iterations=4, validate_every=1, log=interrupt,
              device="cpu")
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    messages: list[str] = []
    train(run, recipe, entries[:2], entries[2:], phantoms=0, iterations=4, validate_every=1, log=messages.append,
          device="cpu")
    assert "resuming at iteration 2" in messages
    assert [r["iteration"] for r in _log_rows(run)] == ["1", "2", "3", "4"]
    state = load_checkpoint(run / "last.pt")
    assert set(state) == {"model", "optimizer", "iteration", "best_dice"} and state["iteration"] == 4


def _torchrun(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    """``livervolumetry-train train ARGS`` under torchrun with 2 processes; on a timeout the
    whole process group (launcher and workers) is killed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "-m", "LiverVolumetryTraining.cli", "train", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s: {stdout[-2000:]} {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_two_process_ddp_run_writes_once_and_resumes(tiny_cases, tiny_recipe_file, tmp_path):
    run = tmp_path / "ddp"
    first = _torchrun(["--recipe", str(tiny_recipe_file), "--data", str(tiny_cases), "--run-dir", str(run),
                       "--phantoms", "0", "--val-cases", "2", "--validate-every", "1", "--device", "cpu",
                       "--no-progress", "--iterations", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training on") == 1 and "on 2 process(es)" in first.stdout
    assert [r["iteration"] for r in _log_rows(run)] == ["1", "2"]  # one writer: no duplicated rows
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["device"] == "cpu"
    state = load_checkpoint(run / "last.pt")
    assert state["iteration"] == 2 and not any(k.startswith("module.") for k in state["model"])
    build_network(load_recipe(str(tiny_recipe_file))).load_state_dict(state["model"])
    assert sorted(p.name for p in run.iterdir() if p.suffix in (".pt", ".tmp")) == ["best.pt", "last.pt"]

    # The DDP checkpoint resumes in a single process (a DDP launch costs ~10 s here).
    entries = find_pairs(tiny_cases)
    messages: list[str] = []
    train(run, load_recipe(str(tiny_recipe_file)), entries[:2], entries[2:], phantoms=0, iterations=3,
          validate_every=1, log=messages.append, device="cpu")
    assert "resuming at iteration 2" in messages
    assert [r["iteration"] for r in _log_rows(run)] == ["1", "2", "3"]


def test_run_log_writes_csv_tensorboard_and_a_progress_bar(tmp_path, monkeypatch, capsys):
    import types

    from LiverVolumetryTraining.run_log import COLUMNS, RunLog

    scalars: list[tuple[str, float, int]] = []

    class FakeWriter:  # stands in for tensorboard's SummaryWriter (not installed here)
        def __init__(self, log_dir):
            Path(log_dir).mkdir(parents=True)

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    printed: list[str] = []
    with RunLog(tmp_path, total=4, start=2, progress=True, message=printed.append) as run_log:
        run_log.step(3, 0.5, 1e-4)
        run_log.validation({"iteration": 3, "loss": "0.5000", "lr": "1.00e-04", "val_dice_mean": "0.7000",
                            "seconds": "1", "epoch": "3.00"}, {"a": 0.7})
        run_log.message("hello")
    assert printed == ["hello"] and "training" in capsys.readouterr().err  # the tqdm bar
    assert (tmp_path / "tensorboard").is_dir()
    assert {("train/loss", 0.5, 3), ("val/dice_mean", 0.7, 3), ("val/dice/a", 0.7, 3)} <= set(scalars)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == ",".join(COLUMNS) and rows[1].endswith(",a=0.7000")
    # A log.csv begun by an older version keeps its columns when a run resumes.
    old = tmp_path / "old"
    old.mkdir()
    (old / "log.csv").write_text("iteration,loss,lr,val_dice_mean,seconds\n1,0.9,1e-3,0.1,5\n")
    with RunLog(old, total=4, start=1, progress=False, message=printed.append) as run_log:
        run_log.validation({"iteration": 2, "loss": "0.8", "lr": "1e-3", "val_dice_mean": "0.2", "seconds": "9",
                            "epoch": ""}, {})
    assert (old / "log.csv").read_text().splitlines()[-1] == "2,0.8,1e-3,0.2,9"


def test_tensorboard_is_optional_and_silent(tmp_path, monkeypatch):
    from LiverVolumetryTraining.run_log import RunLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without tensorboard
    with RunLog(tmp_path, total=2, start=0, message=lambda m: None) as run_log:
        run_log.step(1, 0.5, 1e-4)
        run_log.validation({"iteration": 1, "loss": "0.5", "lr": "1e-4", "val_dice_mean": "nan", "seconds": "0",
                            "epoch": ""}, {})
    assert not (tmp_path / "tensorboard").exists() and len((tmp_path / "log.csv").read_text().splitlines()) == 2


def test_augmentation_can_override_a_named_set():
    from LiverVolumetryTraining.augment import PROBABILITIES, augment, probabilities

    p = probabilities({"base": "mild", "remap": 0.3})
    assert p["remap"] == 0.3 and p["gamma"] == PROBABILITIES["mild"]["gamma"]
    assert probabilities("strong") == PROBABILITIES["strong"]
    with pytest.raises(ValueError, match="unknown augmentation"):
        probabilities({"base": "mild", "remapp": 0.3})
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 8, 8)).astype(np.float32)
    label = (image > 0).astype(np.uint8)
    out, lab = augment(image, label, rng, {"base": "mild", "remap": 1.0})
    assert out.shape == image.shape and not np.allclose(out, image)


def test_distractors_change_only_tissue_outside_the_liver():
    from LiverVolumetryTraining.augment import PROBABILITIES, add_distractors, augment

    image = np.full((48, 48, 24), 0.5, np.float32)  # "body" everywhere
    label = np.zeros(image.shape, np.uint8)
    label[10:30, 10:30, 5:15] = 1
    changed = np.zeros(image.shape, bool)
    for seed in range(10):
        out = add_distractors(image, label, np.random.default_rng(seed))
        assert out.dtype == np.float32 and np.array_equal(out[label == 1], image[label == 1])
        changed |= out != image
    assert changed[label == 0].mean() > 0.2  # ellipsoids of 16-80 mm land across the body
    image[label == 1] = 2.0  # a liver brighter than its surroundings: room for dark distractors too
    painted = []
    for seed in range(20):
        out = add_distractors(image, label, np.random.default_rng(seed))
        painted.append(out[out != image])
    levels = np.concatenate(painted)
    assert levels.max() > 3.0 and levels.min() < 0.0  # fluid-bright and dark structures
    assert (np.abs(levels - 2.0) < 0.5).mean() < 1e-4  # no flat region as bright as the liver (noise aside)
    assert np.array_equal(add_distractors(image, np.zeros_like(label), np.random.default_rng(0)), image)
    # Off in the named sets, so existing recipes train as before; on when a recipe asks.
    assert PROBABILITIES["mild"]["distract"] == PROBABILITIES["strong"]["distract"] == 0.0
    only = {"base": "mild", **{name: 0.0 for name in PROBABILITIES["mild"]}}
    plain, _ = augment(image, label, np.random.default_rng(0), only)
    assert np.array_equal(plain, image)
    with_distractors, lab = augment(image, label, np.random.default_rng(0), {**only, "distract": 1.0})
    assert np.array_equal(lab, label) and not np.array_equal(with_distractors, image)


def test_the_named_recipe_is_the_one_the_bundled_model_was_trained_with():
    """`--recipe liver-mri` reproduces the bundled model: same network, data handling and stages."""
    from LiverVolumetryLib.bundle import load_bundle

    bundle = load_bundle(None)
    trained = json.loads((bundle.path / "model.json").read_text(encoding="utf-8"))["training"]
    recipe = get_recipe("liver-mri")
    keys = ("network", "preprocessing", "batch_size", "positive_fraction", "loss", "schedule", "augmentation",
            "organ_targets", "phantom_fraction", "phantom_contrasts", "stages")
    assert {k: recipe[k] for k in keys} == {k: trained["recipe"][k] for k in keys}
    last = expand_stages(recipe)[-1]
    assert last["patch_size"] == trained["recipe"]["patch_size"] and last["optimizer"] == trained["recipe"]["optimizer"]
    assert sum(stage["iterations"] for stage in recipe["stages"]) == trained["iterations"]
    assert recipe["inference"]["threshold"] == bundle.inference.threshold


def test_the_4mm_recipe_is_liver_mri_on_a_coarser_grid_in_bf16(tmp_path):
    from LiverVolumetryTraining.recipes import load_recipe

    fast, base = get_recipe("liver-mri-4mm"), get_recipe("liver-mri")
    assert fast["preprocessing"]["spacing_mm"] == [2.0, 2.0, 4.0] and base["preprocessing"]["spacing_mm"] == [2.0] * 3
    assert fast["precision"] == "bf16" and "precision" not in base
    assert [s["patch_size"] for s in expand_stages(fast)] == [[160, 160, 16], [160, 160, 32]]
    assert [total_iterations(s, 11) for s in expand_stages(fast)] == [8000, 1800]
    different = {k for k in fast if fast[k] != base.get(k)}
    assert different == {"name", "precision", "preprocessing", "patch_size", "iterations", "stages"}
    # The same recipe as the override file its cross-validation was run with.
    override = tmp_path / "liver-mri-4mm.json"
    override.write_text(json.dumps({
        "base": "liver-mri", "precision": "bf16", "preprocessing": {"spacing_mm": [2.0, 2.0, 4.0]},
        "patch_size": [160, 160, 16],
        "stages": [{"patch_size": [160, 160, 16], "iterations": 8000},
                   {"patch_size": [160, 160, 32], "iterations": 1800, "optimizer": {"lr": 0.0002}}]}))
    from_file = load_recipe(str(override))
    assert {k: v for k, v in from_file.items() if k not in ("name", "iterations")} == \
        {k: v for k, v in fast.items() if k not in ("name", "iterations")}
