"""Staged recipes: one run after another, each starting from the weights the previous ended with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from LiverVolumetryLib.errors import LiverVolumetryError
from LiverVolumetryLib.phantom import make_phantom
from LiverVolumetryTraining.dataset import find_pairs
from LiverVolumetryTraining.recipes import expand_stages, get_recipe
from LiverVolumetryTraining.train import load_checkpoint, stage_iterations, train


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    for k in range(2):
        phantom = make_phantom(k, shape=(48, 40, 16), spacing=(7.0, 7.0, 12.0), orientation="LPS", oblique_degrees=0)
        sitk.WriteImage(phantom.image, str(folder / f"image_{k}.nii.gz"))
        sitk.WriteImage(sitk.Cast(phantom.liver, sitk.sitkUInt8), str(folder / f"label_{k}.nii.gz"))
    return find_pairs(folder)


def staged_recipe(second_lr: float = 0.0) -> dict:
    recipe = get_recipe("liver-mri")
    recipe["network"]["args"].update(channels=[4, 8], strides=[2], num_res_units=0)
    recipe["preprocessing"]["spacing_mm"] = [6.0, 6.0, 6.0]
    recipe.update(batch_size=2, phantom_fraction=0.0, organ_targets=False)
    recipe["inference"]["roi_size"] = [32, 32, 32]
    recipe["stages"] = [{"patch_size": [32, 32, 16], "iterations": 3},
                        {"patch_size": [32, 32, 32], "iterations": 2, "optimizer": {"lr": second_lr}}]
    return recipe


def test_stages_override_the_recipes_fields_and_keep_the_rest():
    first, second = expand_stages(staged_recipe(second_lr=2e-4))
    assert first["patch_size"] == [32, 32, 16] and second["patch_size"] == [32, 32, 32]
    assert first["optimizer"]["lr"] == 1e-3 and second["optimizer"] == {"name": "AdamW", "lr": 2e-4,
                                                                          "weight_decay": 1e-5}
    assert "stages" not in first and second["name"] == "liver-mri stage 2/2"
    assert first["loss"] == second["loss"] == "dice_ce"
    assert expand_stages(get_recipe("volumetry-net")) == [get_recipe("volumetry-net")]  # no stages: itself


@pytest.mark.parametrize("stage, message", [
    ({"network": {"args": {"channels": [8, 16]}}}, "stage 2 changes 'network'"),
    ({"organ_targets": True}, "stage 2 changes 'organ_targets'"),
    ({"stages": [{}]}, "stage 2 has stages of its own"),
])
def test_a_stage_that_cannot_start_from_the_previous_weights_is_refused_before_any_work(entries, tmp_path, stage,
                                                                                         message):
    recipe = staged_recipe()
    recipe["stages"][1].update(stage)
    with pytest.raises(LiverVolumetryError, match=message):
        train(tmp_path / "run", recipe, entries[:1], [], phantoms=0, log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_iterations_on_the_command_line_are_shared_among_the_stages(entries, tmp_path):
    stages = expand_stages(staged_recipe())  # 3 + 2 iterations
    assert stage_iterations(stages, 1) == [3, 2]
    assert stage_iterations(stages, 1, 10) == [6, 4] and stage_iterations(stages, 1, 2) == [1, 1]
    # The total is what was asked for, also where the first stage's share rounds up to all of it.
    lopsided = expand_stages({**staged_recipe(), "stages": [{"iterations": 8000}, {"iterations": 1800}]})
    assert stage_iterations(lopsided, 1, 2) == [1, 1] and stage_iterations(lopsided, 1, 3) == [2, 1]
    three = expand_stages({**staged_recipe(), "stages": [{"iterations": 90}, {"iterations": 5}, {"iterations": 5}]})
    for total in range(3, 30):
        counts = stage_iterations(three, 1, total)
        assert sum(counts) == total and min(counts) >= 1, (total, counts)
    with pytest.raises(LiverVolumetryError, match="1 iteration.s. cannot be shared among 2 stages"):
        stage_iterations(stages, 1, 1)
    with pytest.raises(LiverVolumetryError, match="has stages: set each stage's length"):
        train(tmp_path / "run", staged_recipe(), entries[:1], [], phantoms=0, epochs=5, log=lambda m: None)


def test_staged_run_chains_weights_resumes_and_exports_as_one_run(entries, tmp_path):
    from LiverVolumetryTraining.export import export_run

    run = tmp_path / "run"
    messages = []
    last = train(run, staged_recipe(second_lr=0.0), entries[:1], entries[1:], phantoms=0, validate_every=100,
                 log=messages.append)
    assert last == run / "last.pt"
    stage0, stage1 = (load_checkpoint(run / f"stage{k}" / "last.pt") for k in range(2))
    assert stage0["iteration"] == 3 and stage1["iteration"] == 2
    # Stage 2 ran at learning rate 0: its weights are still those stage 1 ended with.
    assert all(torch.equal(stage1["model"][k], v) for k, v in stage0["model"].items())
    assert any(f"starting from the weights of {run / 'stage0' / 'last.pt'}" in m for m in messages)
    combined = load_checkpoint(run / "last.pt")
    assert combined["iteration"] == 5 and all(torch.equal(combined["model"][k], v)
                                              for k, v in stage1["model"].items())
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["iterations"] == 5 and config["stage_iterations"] == [3, 2]
    assert config["recipe"]["patch_size"] == [32, 32, 32] and len(config["recipe"]["stages"]) == 2
    assert [len((run / f"stage{k}" / "log.csv").read_text(encoding="utf-8").splitlines()) for k in range(2)] == [2, 2]

    again = []  # re-running finds both stages done and trains nothing
    train(run, staged_recipe(second_lr=0.0), entries[:1], entries[1:], phantoms=0, validate_every=100,
          log=again.append)
    assert sum("already trained" in m for m in again) == 2 and not any("iterations on" in m for m in again)

    bundle = export_run(run, tmp_path / "bundle", "staged", "0.1.0", log=lambda m: None)
    meta = json.loads((Path(bundle.path) / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["iterations"] == 5 and len(meta["training"]["recipe"]["stages"]) == 2
    card = (Path(bundle.path) / "MODEL.md").read_text(encoding="utf-8")
    assert '| stages | 1. {"patch_size": [32, 32, 16], "iterations": 3}; 2. ' in card


def test_a_staged_run_refuses_new_lengths_for_a_stage_the_next_one_started_from(entries, tmp_path):
    import shutil

    from LiverVolumetryLib.errors import InputError

    run = tmp_path / "run"
    quiet = dict(phantoms=0, validate_every=100, log=lambda m: None)
    train(run, staged_recipe(), entries[:1], entries[1:], **quiet)  # stages of 3 + 2 iterations
    before = (run / "config.json").read_bytes()
    with pytest.raises(InputError, match="stage 1 was planned as 3 iterations and stage 2 has begun from its "
                                         "weights; these settings would make it 6"):
        train(run, staged_recipe(), entries[:1], entries[1:], iterations=10, **quiet)
    with pytest.raises(InputError, match="stage 1 has trained 3 iterations, more than the 2 these settings give it"):
        train(run, staged_recipe(), entries[:1], entries[1:], iterations=4, **quiet)
    assert (run / "config.json").read_bytes() == before  # the record is untouched
    # Before the second stage has begun, the first may still be lengthened.
    shutil.rmtree(run / "stage1")
    train(run, staged_recipe(), entries[:1], entries[1:], iterations=10, **quiet)
    assert [load_checkpoint(run / f"stage{k}" / "last.pt")["iteration"] for k in range(2)] == [6, 4]
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["stage_iterations"] == [6, 4]


def test_a_run_is_not_resumed_with_fewer_iterations_than_it_has_trained(entries, tmp_path):
    from LiverVolumetryLib.errors import InputError

    recipe = expand_stages(staged_recipe())[0]
    run = tmp_path / "run"
    train(run, recipe, entries[:1], [], phantoms=0, iterations=3, log=lambda m: None)
    with pytest.raises(InputError, match="has trained 3 iterations, more than the 2 asked for now"):
        train(run, recipe, entries[:1], [], phantoms=0, iterations=2, log=lambda m: None)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["iterations"] == 3
