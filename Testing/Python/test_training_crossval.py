"""Cross-validation: folds, nested threshold choice, an end-to-end tiny run, export with its summary."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from LiverVolumetryLib.bundle import load_bundle
from LiverVolumetryLib.errors import InputError, LiverVolumetryError
from LiverVolumetryLib.measure import dice
from LiverVolumetryLib.phantom import make_phantom
from LiverVolumetryLib.segment import network_probability, probability_to_mask
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.crossval import (_mask_path, choose_threshold, crossval, make_folds,
                                             nested_thresholds, parse_folds)
from LiverVolumetryTraining.dataset import find_pairs, load_entry
from test_training import tiny_recipe


def test_make_folds_partition_the_cases_and_follow_the_seed():
    cases = [str(c) for c in range(14)]
    folds = make_folds(cases, 3, seed=0)
    assert sorted(c for f in folds for c in f) == sorted(cases)
    assert sorted(len(f) for f in folds) == [4, 5, 5]
    assert make_folds(cases, 3, seed=0) == folds and make_folds(cases, 3, seed=1) != folds
    with pytest.raises(LiverVolumetryError, match="2 to 14 folds"):
        make_folds(cases, 1)


def test_parse_folds_names_every_problem():
    assert parse_folds("1,2; 3", ["1", "2", "3"]) == [["1", "2"], ["3"]]
    with pytest.raises(LiverVolumetryError, match="unknown case.*9.*more than one fold: 2.*in no fold: 3"):
        parse_folds("1,2;2,9", ["1", "2", "3"])


def test_threshold_choice_is_nested():
    # Fold A's cases prefer 0.7, fold B's prefer 0.5: each fold gets the other fold's choice.
    per_case = {"a1": {0.5: 0.80, 0.7: 0.90}, "a2": {0.5: 0.80, 0.7: 0.92},
                "b1": {0.5: 0.95, 0.7: 0.85}, "b2": {0.5: 0.96, 0.7: 0.80}}
    chosen = nested_thresholds(per_case, [["a1", "a2"], ["b1", "b2"]])
    assert chosen == {"a1": 0.5, "a2": 0.5, "b1": 0.7, "b2": 0.7}
    assert choose_threshold({0.4: [0.9], 0.5: [0.9], 0.7: [0.8]}) == 0.5  # tie: nearest 0.5


def test_near_thresholds_get_mask_folders_of_their_own(tmp_path):
    # Six significant digits (":g") named both of these "threshold-0.5": one overwrote the other.
    paths = {t: _mask_path(tmp_path, t, "1") for t in (0.5, 0.5000001, 0.7, 0.70000001)}
    assert len(set(paths.values())) == 4
    assert paths[0.5] == tmp_path / "masks" / "threshold-0.5" / "1.nii.gz"  # earlier runs' folders keep their names
    assert {float(p.parent.name.removeprefix("threshold-")) for p in paths.values()} == set(paths)


@pytest.fixture(scope="module")
def four_cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv-pairs")
    for k in range(4):
        phantom = make_phantom(10 + k, shape=(40, 36, 14), spacing=(8.0, 8.0, 12.0), orientation="LPS",
                               oblique_degrees=0)
        sitk.WriteImage(phantom.image, str(folder / f"image_{k}.nii.gz"))
        sitk.WriteImage(sitk.Cast(phantom.liver, sitk.sitkUInt8), str(folder / f"label_{k}.nii.gz"))
    return folder


def test_tiny_crossval_segments_every_case_out_of_fold_and_exports(four_cases, tmp_path):
    entries = find_pairs(four_cases, liver_label=1)
    run = tmp_path / "cv"
    folds = [["0", "2"], ["1", "3"]]
    summary = crossval(entries, run, tiny_recipe(), folds, thresholds=(0.5, 0.3), phantoms=0, iterations=2,
                       validate_every=2, radiomics=False, device="cpu", log=lambda m: None)
    for k, fold in enumerate(folds):  # each fold's model never saw its held-out cases
        config = json.loads((run / f"fold{k}" / "config.json").read_text(encoding="utf-8"))
        assert {e["case"] for e in config["train"]}.isdisjoint(fold)
        assert {e["case"] for e in config["validation"]} == set(fold)
    assert sorted(summary["dice_per_case"]) == ["0", "1", "2", "3"]
    assert sorted(summary["unsure_fraction_per_case"]) == ["0", "1", "2", "3"]
    assert all(v >= 0 for v in summary["unsure_fraction_per_case"].values())
    assert summary["thresholds"] == [0.3, 0.5]
    means = {t: np.mean([summary["dice_per_case"][c][str(t)] for c in "0123"]) for t in (0.3, 0.5)}
    best = max(means.values())
    assert summary["threshold"] == (0.5 if means[0.5] >= best - 1e-6 else 0.3)  # ties go to 0.5
    nested = [summary["dice_per_case"][c][str(summary["nested_threshold"][c])] for c in "0123"]
    assert summary["dice_mean"] == pytest.approx(np.mean(nested), abs=1e-4)
    assert summary["evaluation"]["n_cases"] == 4
    # Each evaluated mask is its fold model's (the model that held the case out) at the case's
    # nested threshold, on the image's grid, and scores the Dice recorded for it.
    for k, fold in enumerate(folds):
        bundle = load_bundle(run / f"fold{k}" / "bundle")
        for case in fold:
            image, reference = load_entry(next(e for e in entries if e.case == case))
            probability, grid = network_probability(image, bundle, "cpu")
            threshold = summary["nested_threshold"][case]
            expected = probability_to_mask(probability, grid, image, bundle, threshold)
            mask = sitk.ReadImage(str(run / "predictions" / f"{case}.nii.gz"))
            assert mask.GetSize() == image.GetSize() and mask.GetOrigin() == pytest.approx(image.GetOrigin())
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(expected))
            assert summary["dice_per_case"][case][str(threshold)] == pytest.approx(dice(mask, reference), abs=1e-4)
    # Re-running with other folds in the same folder is refused.
    with pytest.raises(InputError, match="other folds"):
        crossval(entries, run, tiny_recipe(), [["0", "1"], ["2", "3"]], phantoms=0, iterations=2,
                 radiomics=False, device="cpu", log=lambda m: None, train_folds=False)
    # --no-train on other files under the same case names (fold 0 trained on case 1's files, now named 0):
    # segmenting them with the trained folds would report training cases as out-of-fold.
    swapped = [dataclasses.replace(e, image=entries[[1, 0, 2, 3][n]].image, label=entries[[1, 0, 2, 3][n]].label)
               for n, e in enumerate(entries)]
    with pytest.raises(InputError, match=r"fold0.config\.json: this model was trained with other training cases "
                                         r"\(same names, other files or liver labels\); other validation cases .* "
                                         r"train it again \(without --no-train\)"):
        crossval(swapped, run, tiny_recipe(), folds, phantoms=0, iterations=2, radiomics=False, device="cpu",
                 log=lambda m: None, train_folds=False)
    # Export records the summary and the chosen threshold; the card shows the table.
    code = main(["export", str(run / "fold0"), "-o", str(tmp_path / "bundle"), "--crossval", str(run),
                 "--threshold", str(summary["threshold"])])
    assert code == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.inference.threshold == summary["threshold"]
    assert bundle.metadata["cross_validation"]["folds"] == folds
    card = (tmp_path / "bundle" / "MODEL.md").read_text(encoding="utf-8")
    assert "## Cross-validation" in card and "nested threshold | unsure fraction |" in card
    assert f"Threshold chosen on all folds: {summary['threshold']:g} (shipped)." in card
    # Another threshold at export: the card names the one the bundle ships, beside crossval's.
    other = 0.55 if summary["threshold"] != 0.55 else 0.45
    assert main(["export", str(run / "fold0"), "-o", str(tmp_path / "bundle2"), "--crossval", str(run),
                 "--threshold", str(other)]) == 0
    card2 = (tmp_path / "bundle2" / "MODEL.md").read_text(encoding="utf-8")
    assert (f"Threshold chosen on all folds: {summary['threshold']:g}; this bundle ships {other:g} instead "
            "(set at export).") in card2
    flagged = summary["evaluation"]["plausibility_warnings"]
    assert f"| plausibility warnings | {len(flagged)} of 4 masks flagged" in card


def test_crossval_of_a_staged_recipe_and_the_final_model_trained_on_every_case(four_cases, tmp_path):
    from LiverVolumetryTraining.export import export_run
    from LiverVolumetryTraining.train import train

    entries = find_pairs(four_cases, liver_label=1)
    recipe = tiny_recipe()
    recipe["stages"] = [{"iterations": 2}, {"iterations": 1, "optimizer": {"lr": 1e-4}}]
    summary = crossval(entries, tmp_path / "cv", recipe, [["0", "2"], ["1", "3"]], phantoms=0, radiomics=False,
                       device="cpu", log=lambda m: None)
    assert summary["iterations"] == [3, 3]  # both stages of every fold
    assert all((tmp_path / "cv" / f"fold{k}" / f"stage{s}" / "last.pt").is_file() for k in (0, 1) for s in (0, 1))
    train(tmp_path / "final", recipe, entries, [], phantoms=0, log=lambda m: None)
    bundle = export_run(tmp_path / "final", tmp_path / "bundle", "final", "1.0.0", crossval=tmp_path / "cv",
                        log=lambda m: None)
    card = (bundle.path / "MODEL.md").read_text(encoding="utf-8")
    assert "No case was held out of this model's training: the cross-validation below" in card
    assert "3 iterations per fold" in card and "| stages | 1. " in card
    other = tmp_path / "other"  # the same run recorded as another recipe's: its card must not borrow the figures
    shutil.copytree(tmp_path / "final", other)
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    config["recipe"]["name"] = "other-recipe"
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(InputError, match="cross-validates recipe .* but the run was trained with 'other-recipe'"):
        export_run(other, tmp_path / "bundle2", "other", "1.0.0", crossval=tmp_path / "cv", log=lambda m: None)
    assert not (tmp_path / "bundle2").exists()
    # A run of other cases, or of other files under the same names, must not take these figures either.
    for change in ("fewer cases", "other files"):
        config = json.loads((tmp_path / "final" / "config.json").read_text(encoding="utf-8"))
        if change == "fewer cases":
            config["train"] = config["train"][:3]
        else:
            config["train"][0]["image"], config["train"][1]["image"] = (config["train"][1]["image"],
                                                                        config["train"][0]["image"])
        (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
        with pytest.raises(InputError, match=r"cross-validates other cases than the run was trained on \(differing: "
                                             + ("3" if change == "fewer cases" else "0, 1") + r"\)"):
            export_run(other, tmp_path / "bundle2", "other", "1.0.0", crossval=tmp_path / "cv", log=lambda m: None)
        assert not (tmp_path / "bundle2").exists()
    shutil.copytree(tmp_path / "cv", tmp_path / "cv-summary-only", ignore=shutil.ignore_patterns("fold*"))
    with pytest.raises(InputError, match=r"fold0.config\.json: not found .*keep the fold folders beside crossval"):
        export_run(tmp_path / "final", tmp_path / "bundle3", "final", "1.0.0", crossval=tmp_path / "cv-summary-only",
                   log=lambda m: None)


def test_folds_trained_one_by_one_are_found_by_the_final_call(four_cases, tmp_path, capsys):
    args = ["crossval", "--data", str(four_cases), "--run", str(tmp_path / "cv"), "--folds", "0,2;1,3",
            "--recipe", str(tmp_path / "tiny.json"), "--iterations", "2", "--phantoms", "0", "--no-radiomics",
            "--device", "cpu"]
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_recipe()), encoding="utf-8")
    assert main(args + ["--fold", "1"]) == 0
    assert "fold 1 trained" in capsys.readouterr().out
    assert (tmp_path / "cv" / "fold1" / "last.pt").is_file() and not (tmp_path / "cv" / "fold0").exists()
    assert not (tmp_path / "cv" / "crossval.json").exists()  # no evaluation before every fold is trained
    assert main(args + ["--fold", "2"]) == 1 and "numbered 0 to 1" in capsys.readouterr().err
    assert main(args + ["--no-train"]) == 1 and "no trained fold model" in capsys.readouterr().err
    assert main(args + ["--fold", "0"]) == 0
    fold1 = (tmp_path / "cv" / "fold1" / "last.pt").stat().st_mtime_ns
    assert main(args) == 0  # finds both folds trained: segments and evaluates only
    assert (tmp_path / "cv" / "fold1" / "last.pt").stat().st_mtime_ns == fold1
    summary = json.loads((tmp_path / "cv" / "crossval.json").read_text(encoding="utf-8"))
    assert sorted(summary["dice_per_case"]) == ["0", "1", "2", "3"]


def test_crossval_cli_refuses_bad_folds_in_one_line(four_cases, tmp_path, capsys):
    code = main(["crossval", "--data", str(four_cases), "--run", str(tmp_path / "cv"), "--folds", "0,1;2"])
    err = capsys.readouterr().err
    assert code == 1 and "in no fold: 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


def test_ablation_trains_each_variant_and_scores_real_cases_and_every_contrast(four_cases, tmp_path):
    from LiverVolumetryLib.phantom_contrast import CONTRASTS
    from LiverVolumetryTraining.ablation import run_ablation

    variants = {"plain": {"augmentation": "none", "phantom_fraction": 0.0},
                "with phantoms": {"augmentation": "mild", "phantom_fraction": 0.5, "phantom_contrasts": ["t2"]}}
    results = run_ablation(find_pairs(four_cases, 1), ["3"], tmp_path / "abl", tiny_recipe(), iterations=2,
                           variants=variants, seeds=(5,), phantoms=2, log=lambda m: None,
                           phantom_args={"shape": (48, 40, 16), "spacing": (7.0, 7.0, 12.0)})
    assert list(results) == ["plain", "with phantoms"]
    for name, slug in (("plain", "plain"), ("with phantoms", "with-phantoms")):
        config = json.loads((tmp_path / "abl" / slug / "config.json").read_text(encoding="utf-8"))
        assert [e["case"] for e in config["validation"]] == ["3"] and "3" not in {e["case"] for e in config["train"]}
        assert set(results[name]["phantom_mean_by_contrast"]) == set(CONTRASTS)
        assert 0.0 <= results[name]["real_mean"] <= 1.0
    assert json.loads((tmp_path / "abl" / "with-phantoms" / "config.json").read_text(encoding="utf-8"))["recipe"][
        "phantom_contrasts"] == ["t2"]
    table = (tmp_path / "abl" / "ablation.md").read_text(encoding="utf-8")
    assert "| plain |" in table and "| with phantoms |" in table
