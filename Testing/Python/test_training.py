"""Training package: pairs, cached preprocessing, a tiny run, resume, export to a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LiverVolumetryLib.bundle import load_bundle, sha256_file
from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryLib.phantom import make_phantom
from LiverVolumetryTraining.dataset import CaseEntry, cached_case, find_pairs, load_entry
from LiverVolumetryTraining.recipes import get_recipe
from LiverVolumetryTraining.train import train


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for k in range(3):
        phantom = make_phantom(k, shape=(48, 40, 16), spacing=(7.0, 7.0, 12.0), orientation="LPS", oblique_degrees=0)
        sitk.WriteImage(phantom.image, str(folder / f"image_{k}.nii.gz"))
        label = sitk.Cast(phantom.liver, sitk.sitkUInt8) * 6  # liver stored as 6, like AMOS
        sitk.WriteImage(label, str(folder / f"label_{k}.nii.gz"))
    return folder


def tiny_recipe() -> dict:
    recipe = get_recipe("liver-mri")
    recipe.pop("stages")  # one stage: tests/test_training_stages.py covers stages
    recipe["network"]["args"].update(channels=[4, 8], strides=[2], num_res_units=0)
    recipe["network"]["args"].pop("dropout")
    recipe["preprocessing"]["spacing_mm"] = [6.0, 6.0, 6.0]
    recipe.update(patch_size=[32, 32, 16], batch_size=2, phantom_fraction=0.0)
    recipe["inference"]["roi_size"] = [32, 32, 32]
    return recipe


def test_find_pairs_and_label_value(pairs_folder):
    entries = find_pairs(pairs_folder, liver_label=6)
    assert [e.case for e in entries] == ["0", "1", "2"]
    image, liver = load_entry(entries[0])
    assert set(np.unique(sitk.GetArrayViewFromImage(liver))) == {0, 1}
    with pytest.raises(InputError, match="no voxel has the liver label 1"):
        load_entry(CaseEntry("0", entries[0].image, entries[0].label, liver_label=1))


def test_grid_mismatch_names_the_entry(pairs_folder, tmp_path):
    entry = find_pairs(pairs_folder, liver_label=6)[0]
    label = sitk.ReadImage(str(entry.label))
    label.SetOrigin((5.0, 0.0, 0.0))
    moved = tmp_path / "moved_label.nii.gz"
    sitk.WriteImage(label, str(moved))
    with pytest.raises(InputError, match="case 0: label grid does not match"):
        load_entry(CaseEntry("0", entry.image, moved, 6))


def test_cache_gives_identical_arrays(pairs_folder, tmp_path):
    entry = find_pairs(pairs_folder, liver_label=6)[0]
    prep = __import__("LiverVolumetryLib.preprocess", fromlist=["Preprocessing"]).Preprocessing()
    first = cached_case(entry, prep, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3  # image, liver label, other tissues
    second = cached_case(entry, prep, tmp_path)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.label, second.label)
    assert first.tissues is None and second.tissues is None  # the phantom labels hold the liver only


def test_an_interrupted_cache_write_leaves_no_file_a_later_run_would_trust(pairs_folder, tmp_path, monkeypatch):
    entry = find_pairs(pairs_folder, liver_label=6)[0]
    prep = __import__("LiverVolumetryLib.preprocess", fromlist=["Preprocessing"]).Preprocessing()
    real_save, calls = np.save, []

    def save_then_stop(path, array):  # the second array is cut off half-way, as by Ctrl-C
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"\x93NUMPY")
            raise KeyboardInterrupt
        real_save(path, array)

    monkeypatch.setattr(np, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        cached_case(entry, prep, tmp_path)
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]  # no temporary file left behind
    assert len(list(tmp_path.glob("*.npy"))) == 1  # the one finished array; the cut one is gone
    monkeypatch.setattr(np, "save", real_save)
    again = cached_case(entry, prep, tmp_path)  # recomputed, not read from a truncated file
    assert len(list(tmp_path.glob("*.npy"))) == 3
    assert np.array_equal(again.image, cached_case(entry, prep, None).image)


def test_other_labelled_organs_are_cached_as_tissues_and_remapped_on_their_own(tmp_path):
    from LiverVolumetryLib.preprocess import Preprocessing
    from LiverVolumetryTraining.augment import remap_tissues

    phantom = make_phantom(3, shape=(48, 40, 16), spacing=(7.0, 7.0, 12.0), orientation="LPS", oblique_degrees=0)
    liver = sitk.GetArrayFromImage(phantom.liver) > 0
    labels = np.zeros(liver.shape, np.uint8)
    labels[liver] = 1
    labels[:, :5, :5] = 4  # a "spleen" and a "kidney" in corners, labelled 4 and 2
    labels[:, -5:, -5:] = 2
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(phantom.image)
    sitk.WriteImage(phantom.image, str(tmp_path / "image_0.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "label_0.nii.gz"))
    case = cached_case(find_pairs(tmp_path)[0], Preprocessing(spacing=(6.0, 6.0, 6.0)), tmp_path / "cache")
    assert set(np.unique(case.label)) == {0, 1}  # the target stays the liver alone
    assert set(np.unique(case.tissues)) == {0, 1, 2}  # label values 2 and 4, renumbered in order
    assert not (case.tissues.astype(bool) & case.label.astype(bool)).any()
    # Each organ gets its own random mean: its intensity moves independently of the clusters.
    image = np.zeros((10, 10, 10), np.float32)
    tissues = np.zeros_like(image, dtype=np.uint8)
    tissues[:5] = 1
    out = remap_tissues(image, np.zeros_like(tissues), np.random.default_rng(1), tissues=tissues)
    assert not np.isclose(out[:5].mean(), out[5:].mean())


def test_tiny_run_resumes_and_exports_a_bundle(pairs_folder, tmp_path):
    from LiverVolumetryTraining.export import export_run

    entries = find_pairs(pairs_folder, liver_label=6)
    run = tmp_path / "run"
    train(run, tiny_recipe(), entries[:2], entries[2:], phantoms=0, iterations=4, validate_every=2, log=lambda m: None)
    log_rows = (run / "log.csv").read_text().splitlines()
    assert len(log_rows) == 3 and (run / "last.pt").is_file()
    # Resume: a longer run continues from iteration 4 instead of starting again.
    messages = []
    train(run, tiny_recipe(), entries[:2], entries[2:], phantoms=0, iterations=6, validate_every=2,
          log=messages.append)
    assert any("resuming at iteration 4" in m for m in messages)
    assert (run / "log.csv").read_text().splitlines()[-1].startswith("6,")
    bundle = export_run(run, tmp_path / "bundle", "tiny", "0.1.0", log=lambda m: None)
    loaded = load_bundle(bundle.path)
    meta = json.loads((bundle.path / "model.json").read_text())
    assert loaded.name == "tiny" and meta["training"]["validation_cases"] == ["2"]
    assert set(meta["validation"]["dice_per_case"]) == {"2"}
    assert 0.0 <= meta["validation"]["dice_mean"] <= 1.0
    card = (bundle.path / "MODEL.md").read_text(encoding="utf-8")
    assert f"{meta['validation']['dice_mean']:.3f}" in card and meta["weights"]["sha256"] in card
    assert "optimistic" not in card
    # The card says what the weights saw, and model.json recognises the training scans by content.
    assert f"| data | 3 labelled case(s) from the folder(s) {pairs_folder.name}; their source and licence were not " \
           "given at export (--data-credit) |" in card and "CHAOS" not in card
    fingerprints = meta["training"]["case_fingerprints"]
    assert sorted(fingerprints) == ["0", "1"] and all(len(f) == 64 for f in fingerprints.values())
    assert fingerprints["0"] != fingerprints["1"]
    assert meta["training"]["fingerprint_method"] == "sha256 of pixel type, size and voxels"
    from LiverVolumetryTraining.fingerprint import file_fingerprint
    assert fingerprints["0"] == file_fingerprint(entries[0].image)
    # The best checkpoint was chosen on these same cases: its card says the figure is optimistic.
    best = export_run(run, tmp_path / "best", "tiny", "0.1.0", checkpoint="best", log=lambda m: None,
                      data_credit="chaos")
    card = (best.path / "MODEL.md").read_text(encoding="utf-8")
    assert "chose this checkpoint" in card and "| data | CHAOS challenge training data (Kavur AE" in card


def test_fine_tuning_starts_from_a_bundles_weights_and_needs_its_network(pairs_folder, tmp_path):
    from LiverVolumetryTraining.export import export_run
    from LiverVolumetryTraining.train import load_checkpoint

    entries = find_pairs(pairs_folder, liver_label=6)
    recipe = {**tiny_recipe(), "organ_targets": False}
    train(tmp_path / "a", recipe, entries[:2], [], phantoms=0, iterations=2, validate_every=2, log=lambda m: None)
    start = export_run(tmp_path / "a", tmp_path / "start", "start", "1.0.0", log=lambda m: None)
    frozen = {**recipe, "optimizer": {"name": "AdamW", "lr": 0.0, "weight_decay": 1e-5}}
    messages = []
    train(tmp_path / "b", frozen, entries[:2], [], phantoms=0, iterations=2, validate_every=2, log=messages.append,
          init_from=start.path)
    assert any("starting from the weights of start 1.0.0" in m for m in messages)
    tuned = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(tuned[k], v) for k, v in start.load_state_dict().items())  # lr 0: still the bundle's
    assert json.loads((tmp_path / "b" / "config.json").read_text())["init_from"]["sha256"] == start.sha256
    bundle = export_run(tmp_path / "b", tmp_path / "tuned", "tuned", "1.0.1", log=lambda m: None)
    assert json.loads((bundle.path / "model.json").read_text())["training"]["init_from"]["name"] == "start"
    card = (bundle.path / "MODEL.md").read_text()
    assert f"started from | start 1.0.0 (weights SHA-256 `{start.sha256}`)" in card
    assert f"`model.onnx` (the same network for ONNX Runtime on CPU), SHA-256 `{sha256_file(bundle.onnx_path)}`" in card
    train(tmp_path / "b", frozen, entries[:2], [], phantoms=0, iterations=3, validate_every=2, log=lambda m: None,
          init_from=start.path)  # resumed with the same starting bundle
    train(tmp_path / "d", recipe, entries[:2], [], phantoms=0, iterations=2, seed=1, log=lambda m: None)
    other = export_run(tmp_path / "d", tmp_path / "other", "other", "1.0.0", log=lambda m: None)
    with pytest.raises(InputError, match=r"other starting weights \(start recorded, --init-from other 1.0.0 now\)"):
        train(tmp_path / "b", frozen, entries[:2], [], phantoms=0, iterations=4, log=lambda m: None,
              init_from=other.path)
    with pytest.raises(InputError, match=r"other starting weights \(random recorded"):
        train(tmp_path / "a", recipe, entries[:2], [], phantoms=0, iterations=3, log=lambda m: None,
              init_from=start.path)
    wider = {**recipe, "network": {**recipe["network"], "args": {**recipe["network"]["args"], "channels": [8, 16]}}}
    with pytest.raises(InputError, match="fine-tuning needs the same network"):
        train(tmp_path / "c", wider, entries[:2], [], phantoms=0, iterations=2, log=lambda m: None, init_from=start.path)


def test_training_phantoms_take_the_recipes_contrasts_in_turn():
    from LiverVolumetryLib.preprocess import Preprocessing
    from LiverVolumetryTraining.train import _phantom_cases

    prep = Preprocessing(spacing=(6.0, 6.0, 6.0))
    mixed = _phantom_cases(2, prep, seed=7, contrasts=("t1_in_phase", "t2"))
    plain = _phantom_cases(2, prep, seed=7)
    assert [c.case for c in mixed] == ["phantom-7-t1_in_phase", "phantom-8-t2"]
    for m, p in zip(mixed, plain):
        assert np.array_equal(m.label, p.label)  # same anatomy
        assert not np.allclose(m.image, p.image)  # other contrast


def test_organ_targets_train_extra_classes_and_the_engine_reads_the_liver(tmp_path):
    from LiverVolumetryLib.segment import segment_liver
    from LiverVolumetryTraining.export import export_run
    from LiverVolumetryTraining.sampling import RandomPatchSampler

    for k in range(2):
        phantom = make_phantom(20 + k, shape=(48, 40, 16), spacing=(7.0, 7.0, 12.0), orientation="LPS",
                               oblique_degrees=0)
        labels = (sitk.GetArrayFromImage(phantom.liver) > 0).astype(np.uint8)
        labels[:, :6, :6] = 3  # one more organ, label value 3 -> tissue 1 -> class 2
        label = sitk.GetImageFromArray(labels)
        label.CopyInformation(phantom.image)
        sitk.WriteImage(phantom.image, str(tmp_path / f"image_{k}.nii.gz"))
        sitk.WriteImage(label, str(tmp_path / f"label_{k}.nii.gz"))
    entries = find_pairs(tmp_path)
    recipe = tiny_recipe()
    recipe.update(organ_targets=True, augmentation={"base": "mild", "remap": 1.0}, positive_fraction=0.0)
    recipe["inference"]["crop_to_body"] = False  # export's --crop-to-body sets it below
    assert recipe["network"]["args"]["out_channels"] == 2  # training sets it from the data
    cases = [cached_case(e, __import__("LiverVolumetryLib.preprocess", fromlist=["x"]).Preprocessing(
        spacing=(6.0, 6.0, 6.0)), tmp_path / "cache") for e in entries]
    sampler = RandomPatchSampler(recipe, cases, [], np.random.default_rng(0), 8)
    _, y = sampler.batch(0)
    assert set(np.unique(y.numpy())) <= {0, 1, 2} and (y == 2).any()
    train(tmp_path / "run", recipe, entries[:1], entries[1:], phantoms=0, iterations=2, validate_every=2,
          log=lambda m: None)
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["recipe"]["network"]["args"]["out_channels"] == 3  # background, liver, one organ
    bundle = export_run(tmp_path / "run", tmp_path / "bundle", "organs", "0.0.1", log=lambda m: None,
                        max_window_voxels=123_456, crop_to_body=True)
    assert bundle.network["args"]["out_channels"] == 3 and bundle.inference.max_window_voxels == 123_456
    assert bundle.inference.crop_to_body and not json.loads((tmp_path / "run" / "config.json").read_text(
        encoding="utf-8"))["recipe"]["inference"].get("crop_to_body")
    with pytest.raises(LiverVolumetryError, match="max_window_voxels"):
        export_run(tmp_path / "run", tmp_path / "bundle2", "organs", "0.0.1", log=lambda m: None, max_window_voxels=-1)
    assert not (tmp_path / "bundle2").exists()
    result = segment_liver(sitk.ReadImage(str(entries[1].image)), bundle, device="cpu")
    assert result.mask.GetSize() == sitk.ReadImage(str(entries[1].image)).GetSize()


@pytest.mark.parametrize("orientation", ["LPS", "RAI", "PIL"])
def test_phantom_organs_follow_the_chaos_numbering_in_any_orientation(orientation):
    from LiverVolumetryTraining.train import phantom_organs

    phantom = make_phantom(5, shape=(64, 56, 24), spacing=(6.0, 6.0, 10.0), orientation=orientation)
    organs = phantom_organs(phantom.tissues)
    assert organs.GetOrigin() == phantom.tissues.GetOrigin() and organs.GetDirection() == phantom.tissues.GetDirection()
    array = sitk.GetArrayFromImage(organs)

    def centre_x(mask: np.ndarray) -> float:  # physical LPS x: the patient's left is +x
        return organs.TransformContinuousIndexToPhysicalPoint(np.argwhere(mask)[:, ::-1].mean(0).tolist())[0]

    liver = sitk.GetArrayFromImage(phantom.liver) > 0
    assert all((array == value).any() for value in (1, 2, 3))
    assert not (liver & (array > 0)).any()
    # 1 right kidney (the liver's side), 2 left kidney, 3 spleen (left), as in CHAOS labels.
    assert centre_x(array == 1) < centre_x(array == 2)
    assert centre_x(liver) < centre_x(array == 3)


def test_bf16_precision_runs_the_forward_pass_in_bfloat16_and_records_it(pairs_folder, tmp_path, monkeypatch):
    import LiverVolumetryTraining.train as train_module
    from LiverVolumetryTraining.precision import autocast_dtype

    seen = []
    build = train_module.build_network

    def recording_network(recipe):
        network = build(recipe)
        first_conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv3d))
        first_conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype) if module.training else None)
        return network

    monkeypatch.setattr(train_module, "build_network", recording_network)
    entries = find_pairs(pairs_folder, liver_label=6)
    expected = autocast_dtype("bf16", torch.device("cpu"))
    for precision in ("fp32", "bf16"):
        seen.clear()
        run = tmp_path / precision
        train(run, {**tiny_recipe(), "precision": precision}, entries[:2], entries[2:], phantoms=0, iterations=2,
              validate_every=2, log=lambda m: None)
        config = json.loads((run / "config.json").read_text())
        want = torch.bfloat16 if precision == "bf16" and expected is not None else torch.float32
        assert seen == [want, want] and config["precision"] == ("bf16" if want == torch.bfloat16 else "fp32")
        assert all(p.dtype == torch.float32 for p in torch.load(run / "last.pt", weights_only=True)["model"].values())
    from LiverVolumetryTraining.export import export_run

    bundle = export_run(tmp_path / "bf16", tmp_path / "bundle", "tiny", "0.1.0", log=lambda m: None)
    meta = json.loads((bundle.path / "model.json").read_text())
    assert meta["training"]["precision"] == config["precision"]
    card = (bundle.path / "MODEL.md").read_text(encoding="utf-8")
    assert ("bfloat16 mixed precision" in card) == (config["precision"] == "bf16")


def test_precision_is_fp32_or_bf16():
    from LiverVolumetryTraining.precision import autocast_dtype

    assert autocast_dtype(None, torch.device("cpu")) is None and autocast_dtype("fp32", torch.device("cpu")) is None
    with pytest.raises(LiverVolumetryError, match="unknown precision 'fp16'"):
        autocast_dtype("fp16", torch.device("cpu"))
