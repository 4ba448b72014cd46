"""Training reproducibility: the same recipe, data and seed train the same weights, and a
resumed run continues its random streams (patches and dropout) instead of repeating them."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_VOLUMETRY_NET
from LiverVolumetryTraining import train as train_module
from LiverVolumetryTraining.dataset import find_pairs
from LiverVolumetryTraining.recipes import load_recipe
from LiverVolumetryTraining.run_folder import load_checkpoint


@pytest.fixture(scope="module")
def setup(tiny_cases, tmp_path_factory):
    recipe_file = tmp_path_factory.mktemp("repro-recipe") / "tiny.json"
    recipe_file.write_text(json.dumps(TINY_VOLUMETRY_NET), encoding="utf-8")  # keeps dropout 0.3 and batch norm
    return find_pairs(tiny_cases), load_recipe(str(recipe_file))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact CPU results
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dropout_masks(monkeypatch):
    """The dropout masks of each training forward pass, in order (eval passes left out)."""
    masks: list[torch.Tensor] = []
    build = train_module.build_network

    def begin(network, inputs):
        if network.training:
            masks.append(torch.zeros(0, dtype=torch.bool))

    def record(module, inputs, output):
        if module.training:
            masks[-1] = torch.cat([masks[-1], ((output == 0) & (inputs[0] != 0)).flatten()])

    def build_network(recipe):
        network = build(recipe)
        network.register_forward_pre_hook(begin)
        dropouts = [m for m in network.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout3d)]
        assert dropouts
        for module in dropouts:
            module.register_forward_hook(record)
        return network

    monkeypatch.setattr(train_module, "build_network", build_network)
    return masks


def _train(run, recipe, entries, stop_at: int | None = None) -> None:
    def log(message: str) -> None:
        if stop_at is not None and message.startswith(f"it {stop_at}/"):
            raise KeyboardInterrupt  # as Ctrl-C right after a checkpoint

    try:
        train_module.train(run, recipe, entries[:2], entries[2:], phantoms=0, iterations=4, validate_every=1,
                           log=log, device="cpu")
    except KeyboardInterrupt:
        assert stop_at is not None


def _weights(path):
    return load_checkpoint(path)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_trains_the_same_weights(setup, tmp_path, one_thread, dropout_masks):
    entries, recipe = setup
    _train(tmp_path / "a", recipe, entries)
    first = list(dropout_masks)
    dropout_masks.clear()
    _train(tmp_path / "b", recipe, entries)
    assert len(first) == len(dropout_masks) == 4 and all(torch.equal(x, y) for x, y in zip(first, dropout_masks))
    assert _same(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))
    assert _same(_weights(tmp_path / "a" / "best.pt"), _weights(tmp_path / "b" / "best.pt"))


def test_a_resumed_run_does_not_repeat_its_first_dropout_masks_and_is_reproducible(setup, tmp_path, one_thread,
                                                                                 dropout_masks):
    entries, recipe = setup
    _train(tmp_path / "a", recipe, entries, stop_at=2)
    _train(tmp_path / "a", recipe, entries)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["iteration"] == 4 and len(dropout_masks) == 4
    before, after = dropout_masks[:2], dropout_masks[2:]
    assert not any(torch.equal(x, y) for x, y in zip(before, after))  # resumed: no repeat of iterations 1-2
    resumed = list(dropout_masks)
    dropout_masks.clear()
    _train(tmp_path / "b", recipe, entries, stop_at=2)
    _train(tmp_path / "b", recipe, entries)
    assert all(torch.equal(x, y) for x, y in zip(resumed, dropout_masks))
    assert _same(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))
