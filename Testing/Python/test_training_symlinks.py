"""Manifest paths as datasets hold them. With symlinks to content-addressed files (git-annex,
DVC, datalad), the case and its predicted mask are named after the link, as ``livervolumetry
segment`` names them; a control character in a path is a one-line error."""

from __future__ import annotations

import csv

import numpy as np
import SimpleITK as sitk

from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.manifest import read_manifest, write_manifest


def _annexed_dataset(root):
    """Three cases whose image and label files are links into a store of hash-named files."""
    (root / "store").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pred").mkdir()
    liver = np.zeros((10, 20, 20), np.uint8)
    liver[3:7, 5:15, 5:15] = 1
    for k in range(3):
        scan = np.random.default_rng(k).normal(100, 5, liver.shape) + 100 * liver
        sitk.WriteImage(sitk.GetImageFromArray(scan.astype(np.float32)), str(root / f"store/MD5E-s{k}--a{k}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(liver), str(root / f"store/MD5E-s{k}--b{k}.nii.gz"))
        (root / f"data/patient{k}.nii.gz").symlink_to(root / f"store/MD5E-s{k}--a{k}.nii.gz")
        (root / f"data/patient{k}_seg.nii.gz").symlink_to(root / f"store/MD5E-s{k}--b{k}.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(liver), str(root / f"pred/patient{k}_liver.nii.gz"))
    manifest = root / "manifest.csv"
    manifest.write_text("image,label\n" + "".join(f"data/patient{k}.nii.gz,data/patient{k}_seg.nii.gz\n"
                                                  for k in range(3)), encoding="utf-8")
    return manifest


def test_cases_are_named_after_the_links_and_evaluate_finds_their_masks(tmp_path, capsys):
    manifest = _annexed_dataset(tmp_path)
    entries = read_manifest(manifest)
    assert [e.case for e in entries] == ["patient0", "patient1", "patient2"]
    assert [e.image.name for e in entries] == ["patient0.nii.gz", "patient1.nii.gz", "patient2.nii.gz"]
    assert all(e.image.is_absolute() and e.image.resolve().parent.name == "store" for e in entries)
    # A manifest written from these entries keeps the links, not their targets.
    written = write_manifest(entries, tmp_path / "copy.csv")
    with written.open(encoding="utf-8") as stream:
        assert [row["image"] for row in csv.DictReader(stream)] == [f"data/patient{k}.nii.gz" for k in range(3)]

    out = tmp_path / "out"
    code = main(["evaluate", "--manifest", str(manifest), "--predictions", str(tmp_path / "pred"),
                 "--no-radiomics", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    with (out / "cases.csv").open(encoding="utf-8") as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert sorted(rows) == ["patient0", "patient1", "patient2"]
    assert all(float(row["dice"]) == 1.0 for row in rows.values())


def test_a_manifest_in_a_linked_folder_reads_its_parent_folder_as_the_shell_does(tmp_path):
    # ``..`` from a manifest inside a symlinked folder is the link target's parent.
    _annexed_dataset(tmp_path / "real" / "project")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(tmp_path / "real" / "project" / "data")
    linked = tmp_path / "elsewhere" / "link" / "m.csv"
    linked.write_text("image,label\n../data/patient1.nii.gz,../data/patient1_seg.nii.gz\n", encoding="utf-8")
    (entry,) = read_manifest(linked)
    assert entry.case == "patient1" and entry.image.is_file() and entry.label.is_file()
    assert entry.image.parent == (tmp_path / "real" / "project" / "data").resolve()


def test_a_control_character_in_a_manifest_path_or_case_is_a_one_line_error(tmp_path, capsys):
    for number, row in enumerate(["\0,\0", "a.nii.gz,b.nii.gz,x\ty"]):
        manifest = tmp_path / f"m{number}.csv"
        manifest.write_text("image,label,case\n" + row + "\n", encoding="utf-8")
        assert main(["check", "--manifest", str(manifest)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"m{number}.csv: line 2: " in err[0] and "control character" in err[0], err
