"""Training datasets: manifests (CSV/JSON), their validation, and the converters of the
public liver-MRI datasets (CHAOS, AMOS, LiverHccSeg, TotalSegmentator MRI, pairs), each
on a tiny synthetic stand-in written in the dataset's own layout."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import OBLIQUE

from LiverVolumetryLib.errors import InputError, OutputError
from LiverVolumetryTraining.chaos import convert_chaos
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.converters import convert_amos, convert_pairs, convert_totalseg
from LiverVolumetryTraining.dataset import CaseEntry, load_entry
from LiverVolumetryTraining.liverhccseg import convert_liverhccseg
from LiverVolumetryTraining.manifest import check_entries, read_manifest, write_manifest

# A liver box in voxel indices (x, y, z ranges) of the synthetic grids below.
BOX = (slice(3, 9), slice(2, 6), slice(1, 4))


def volume(size=(12, 10, 6), spacing=(1.5, 1.7, 4.0), origin=(-30.0, 12.0, 40.0), direction=OBLIQUE,
           seed=0) -> sitk.Image:
    """An int16 image whose values grow with the slice index (a wrong slice order shows)."""
    rng = np.random.default_rng(seed)
    array = (rng.integers(0, 50, size[::-1]) + 100 * np.arange(size[2])[:, None, None]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def box_label(image: sitk.Image, value: int = 1) -> sitk.Image:
    """A uint8 label on ``image``'s grid holding ``value`` in :data:`BOX`."""
    array = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    array[BOX[2], BOX[1], BOX[0]] = value
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    return label


def liver_centre(label: sitk.Image, value: int = 1) -> np.ndarray:
    """The physical centre (mm) of the voxels of ``label`` holding ``value``."""
    z, y, x = np.nonzero(sitk.GetArrayViewFromImage(label) == value)
    return np.mean([label.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
                    for i, j, k in zip(x, y, z)], axis=0)


BOX_CENTRE = liver_centre(box_label(volume()))


def write_pair(folder: Path, image_name: str, label_name: str, value: int = 1, seed: int = 0,
               label: sitk.Image | None = None) -> tuple[Path, Path]:
    (folder / label_name).parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    image = volume(seed=seed)
    sitk.WriteImage(image, str(folder / image_name))
    sitk.WriteImage(box_label(image, value) if label is None else label, str(folder / label_name))
    return folder / image_name, folder / label_name


def write_dicom_slices(image: sitk.Image, folder: Path, names: list[str]) -> None:
    """Slice z of ``image`` as DICOM file ``folder/names[z].dcm`` with its position tags."""
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z, name in enumerate(names):
        slab = image[:, :, z:z + 1]
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"1.2.826.0.1.3680043.8.498.7.{z + 1}",
                "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.8.498.1",
                "0020|000e": "1.2.826.0.1.3680043.8.498.2", "0020|0013": str(z + 1),
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0037": orientation,
                "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}"}
        for key, value in tags.items():
            slab.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{name}.dcm"))
        writer.Execute(slab)


def chaos_grey(image: sitk.Image) -> np.ndarray:
    """CHAOS ground-truth grey values (z, rows, cols): liver 63 (and 60) in BOX, a kidney 126."""
    grey = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
    grey[BOX[2], BOX[1], BOX[0]] = 63
    grey[BOX[2], BOX[1].start, BOX[0]] = 60
    grey[1:3, 7:9, 9:11] = 126
    return grey


@pytest.fixture(scope="module")
def chaos_root(tmp_path_factory) -> Path:
    """CHAOS_Train_Sets/Train_Sets/MR/3 with T2SPIR and T1DUAL; file numbers shuffled
    against slice positions; T1 PNGs named like the in-phase files only."""
    root = tmp_path_factory.mktemp("chaos")
    patient = root / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / "3"
    image = volume()
    grey = chaos_grey(image)
    n = image.GetSize()[2]
    order = list(range(1, n + 1))
    random.Random(3).shuffle(order)
    assert order != sorted(order) and order != sorted(order, reverse=True)
    t2_names = [f"IMG-0002-{k:05d}" for k in order]
    in_names = [f"IMG-0004-{2 * k:05d}" for k in order]
    out_names = [f"IMG-0004-{2 * k - 1:05d}" for k in order]
    write_dicom_slices(image, patient / "T2SPIR" / "DICOM_anon", t2_names)
    write_dicom_slices(image, patient / "T1DUAL" / "DICOM_anon" / "InPhase", in_names)
    write_dicom_slices(volume(seed=1), patient / "T1DUAL" / "DICOM_anon" / "OutPhase", out_names)
    for sequence, names in (("T2SPIR", t2_names), ("T1DUAL", in_names)):
        (patient / sequence / "Ground").mkdir(parents=True)
        for z, name in enumerate(names):
            sitk.WriteImage(sitk.GetImageFromArray(grey[z]), str(patient / sequence / "Ground" / f"{name}.png"))
    return root


def test_chaos_series_land_on_their_dicom_slices(chaos_root, tmp_path):
    out = tmp_path / "out"
    entries = convert_chaos(chaos_root, out, keep_organs=True)
    assert [(e.case, e.group) for e in entries] == [("chaos-3-t2spir", "t2spir"), ("chaos-3-t1-in", "t1-in"),
                                                     ("chaos-3-t1-out", "t1-out")]
    built = volume()
    for entry in entries:
        image, label = sitk.ReadImage(str(entry.image)), sitk.ReadImage(str(entry.label))
        assert entry.image.parent == out and entry.liver_label == 1
        np.testing.assert_allclose(image.GetOrigin(), built.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(image.GetDirection(), built.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(image.GetSpacing(), built.GetSpacing(), atol=1e-4)
        expected = volume(seed=1) if entry.group == "t1-out" else built
        assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(expected))
        np.testing.assert_allclose(liver_centre(label), BOX_CENTRE, atol=1e-3)
        assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1, 2}
        load_entry(entry)  # grids match, liver present
    assert read_manifest(out / "manifest.csv") == entries
    assert "chaos-3-t2spir_image.nii.gz,chaos-3-t2spir_label.nii.gz" in (out / "manifest.csv").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_chaos_without_organs_and_one_sequence(chaos_root, tmp_path):
    patient = chaos_root / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    entries = convert_chaos(patient, tmp_path / "out", sequences=["t1-out"])
    assert [e.case for e in entries] == ["chaos-3-t1-out"]
    label = sitk.ReadImage(str(entries[0].label))
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1}


def test_a_patient_or_subject_folder_given_as_dot_keeps_its_name(chaos_root, tmp_path, monkeypatch):
    """`convert chaos .` inside a patient folder named the case "chaos--t2spir" (an empty name)."""
    monkeypatch.chdir(chaos_root / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / "3")
    assert [e.case for e in convert_chaos(".", tmp_path / "out", sequences=["t2spir"])] == ["chaos-3-t2spir"]
    write_pair(tmp_path / "s0007", "mri.nii.gz", "segmentations/liver.nii.gz")
    monkeypatch.chdir(tmp_path / "s0007")
    assert [e.case for e in convert_totalseg(".", tmp_path / "ts")] == ["totalseg-s0007"]


def test_chaos_missing_png_names_the_dicom_file_and_writes_nothing(chaos_root, tmp_path):
    broken = tmp_path / "MR"
    shutil.copytree(chaos_root / "CHAOS_Train_Sets" / "Train_Sets" / "MR", broken)
    png = sorted((broken / "3" / "T2SPIR" / "Ground").glob("*.png"))[2]
    png.unlink()
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"{png.stem}.dcm: has no ground-truth PNG"):
        convert_chaos(broken, out, sequences=["t2spir"])
    assert not out.exists()
    # a PNG of another size than its slice
    sitk.WriteImage(sitk.Image(5, 5, sitk.sitkUInt8), str(png))
    with pytest.raises(InputError, match=f"{png.name}: is 5x5 pixels but DICOM file {png.stem}.dcm is 12x10"):
        convert_chaos(broken, out, sequences=["t2spir"])


# ------------------------------------------------------------------ in-place datasets


def test_amos_mri_cases_are_referenced_in_place(tmp_path):
    root = tmp_path / "amos22"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "6": "liver"}}))
    write_pair(root / "imagesTr", "amos_0001.nii.gz", "../labelsTr/amos_0001.nii.gz", value=6)  # CT: left out
    write_pair(root / "imagesTr", "amos_0500.nii.gz", "../labelsTr/amos_0500.nii.gz", value=6)  # the last CT id
    write_pair(root / "imagesTr", "amos_0507.nii.gz", "../labelsTr/amos_0507.nii.gz", value=6)
    write_pair(root / "imagesTr", "amos_0510.nii.gz", "../labelsTr/amos_0510.nii.gz", value=3)  # no liver
    write_pair(root / "imagesVa", "amos_0600.nii.gz", "../labelsVa/amos_0600.nii.gz", value=6, seed=1)
    logged = []
    entries = convert_amos(tmp_path, tmp_path / "out", log=logged.append)
    assert [(e.case, e.liver_label, e.group) for e in entries] == [("amos_0507", 6, "amos-mri"),
                                                                   ("amos_0600", 6, "amos-mri")]
    assert entries[1].label == (root / "labelsVa" / "amos_0600.nii.gz").resolve()
    assert any("amos_0510" in m and "no voxel has the liver label 6" in m for m in logged)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.csv"]
    assert read_manifest(tmp_path / "out" / "manifest.csv") == entries
    from LiverVolumetryTraining.converters import convert

    again = []
    with pytest.raises(OutputError, match="manifest.csv: already exists"):
        convert("amos", tmp_path, tmp_path / "out", log=again.append)
    assert again == []  # refused before any case was read


def test_totalseg_single_and_combined_labels(tmp_path):
    write_pair(tmp_path / "s0001", "mri.nii.gz", "segmentations/liver.nii.gz")
    write_pair(tmp_path / "s0002", "mri.nii.gz", "seg.nii.gz", value=5)
    write_pair(tmp_path / "s0003", "mri.nii.gz", "segmentations/liver.nii.gz", value=0)  # a head scan
    logged = []
    entries = convert_totalseg(tmp_path, tmp_path / "out", log=logged.append)
    assert [(e.case, e.label.name, e.liver_label, e.group) for e in entries] == [
        ("totalseg-s0001", "liver.nii.gz", 1, "totalseg-mri"), ("totalseg-s0002", "seg.nii.gz", 5, "totalseg-mri")]
    assert len(logged) == 1 and "totalseg-s0003" in logged[0]


def test_pairs_manifest_and_refusing_to_overwrite(tmp_path):
    data = tmp_path / "data"
    write_pair(data, "image_1.nii.gz", "label_1.nii.gz", value=2)
    entries = convert_pairs(data, data, liver_label=2)
    assert [(e.case, e.group) for e in entries] == [("1", "data")]
    assert (data / "manifest.csv").read_text().splitlines()[1] == "1,image_1.nii.gz,label_1.nii.gz,2,data"
    with pytest.raises(OutputError, match="manifest.csv: already exists"):
        convert_pairs(data, data, liver_label=2)
    assert convert_pairs(data, data, liver_label=2, overwrite=True) == entries


def test_liverhccseg_portal_venous_nifti_and_dicom(tmp_path):
    a = tmp_path / "TCGA-AA-0001" / "study"
    for name, seed in (("art", 1), ("art_pv", 2), ("art_del", 3)):
        write_pair(a, f"{name}.nii.gz", "rater1_liver.nii.gz", seed=seed)
    sitk.WriteImage(box_label(volume(), 1), str(a / "rater2_liver.nii.gz"))
    sitk.WriteImage(box_label(volume(), 1), str(a / "rater1_tumor.nii.gz"))
    # patient B: DICOM phases, liver mask stored on a finer (arterial) grid of the same space
    b = tmp_path / "TCGA-BB-0002"
    write_dicom_slices(volume(seed=4), b / "4-Ax LAVA ART", [f"a{k}" for k in range(6)])
    write_dicom_slices(volume(seed=5), b / "7-Ax LAVA PV", [f"p{k}" for k in range(6)])
    fine = sitk.Resample(box_label(volume()), [24, 20, 12], sitk.Transform(), sitk.sitkNearestNeighbor,
                         volume().GetOrigin(), (0.75, 0.85, 2.0), volume().GetDirection(), 0, sitk.sitkUInt8)
    sitk.WriteImage(fine, str(b / "liver_seg.nii.gz"))
    out = tmp_path / "out"
    entries = convert_liverhccseg(tmp_path, out)
    assert [(e.case, e.group) for e in entries] == [("TCGA-AA-0001", "liverhccseg"), ("TCGA-BB-0002", "liverhccseg")]
    assert (entries[0].image, entries[0].label) == (a / "art_pv.nii.gz", a / "rater1_liver.nii.gz")
    assert entries[1].image.parent == out and entries[1].label.parent == out
    image, liver = load_entry(entries[1])
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayFromImage(volume(seed=5)))
    np.testing.assert_allclose(liver_centre(liver), BOX_CENTRE, atol=1.0)


@pytest.mark.parametrize("dataset", ["liverhccseg", "chaos"])
def test_converters_that_write_images_refuse_an_output_inside_the_dataset(tmp_path, dataset):
    # Before, `convert liverhccseg SRC -o SRC` worked once; the next run took the label it
    # had written for a resampled case as a second liver segmentation of the whole source.
    from LiverVolumetryLib.errors import OutputError
    from LiverVolumetryTraining.converters import convert

    write_pair(tmp_path / "P1", "art_pv.nii.gz", "rater1_liver.nii.gz")
    for out in (tmp_path, tmp_path / "converted"):
        with pytest.raises(OutputError, match=f"is inside the {dataset} dataset folder"):
            convert(dataset, tmp_path, out)
        assert not (out / "manifest.csv").exists()


def test_an_in_place_manifest_may_be_written_into_the_dataset_folder(tmp_path):
    from LiverVolumetryTraining.converters import convert

    image, label = write_pair(tmp_path, "image_1.nii.gz", "label_1.nii.gz")
    assert [e.image for e in convert("pairs", tmp_path, tmp_path)] == [image]


def test_liverhccseg_tcia_nifti_package(tmp_path):
    """The TCIA download nifti_and_segms.zip as unpacked: nifti_and_segms/nifti_and_segms/
    <subject>/<study>/art_pre, art, art_pv, art_del + rater1/rater2 liver and tumour masks,
    the masks on the arterial grid and the portal-venous phase on its own grid."""
    root = tmp_path / "LiverHccSeg"
    package = root / "nifti_and_segms" / "nifti_and_segms"
    fine = dict(size=(24, 20, 12), spacing=(0.75, 0.85, 2.0))  # the arterial grid, same space
    arterial_liver = sitk.Resample(box_label(volume()), volume(**fine), sitk.Transform(), sitk.sitkNearestNeighbor,
                                   0, sitk.sitkUInt8)
    a = package / "TCGA-DD-A1EB" / "study"
    a.mkdir(parents=True)
    for name, seed in (("art_pre", 1), ("art", 2), ("art_del", 4)):
        sitk.WriteImage(volume(seed=seed, **fine), str(a / f"{name}.nii.gz"))
    sitk.WriteImage(volume(seed=3), str(a / "art_pv.nii.gz"))
    for name in ("rater1_liver", "rater2_liver", "rater1_tumor", "rater2_tumor"):
        sitk.WriteImage(arterial_liver, str(a / f"{name}.nii.gz"))
    b = package / "TCGA-G3-A25S" / "study"
    for name, seed in (("art_pre", 5), ("art", 6), ("art_pv", 7), ("art_del", 8)):
        write_pair(b, f"{name}.nii.gz", "rater1_liver.nii.gz", seed=seed)
    sitk.WriteImage(box_label(volume()), str(b / "rater2_liver.nii.gz"))
    out = tmp_path / "out"
    entries = convert_liverhccseg(root, out)
    assert [(e.case, e.image, e.liver_label) for e in entries] == [
        ("TCGA-DD-A1EB", a / "art_pv.nii.gz", 1), ("TCGA-G3-A25S", b / "art_pv.nii.gz", 1)]
    assert entries[0].label.parent == out and entries[1].label == b / "rater1_liver.nii.gz"
    image, liver = load_entry(entries[0])
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayFromImage(volume(seed=3)))
    np.testing.assert_allclose(liver_centre(liver), BOX_CENTRE, atol=1e-3)
    wrapped = tmp_path / "download"  # one folder more around the package, as some unzip tools add
    wrapped.mkdir()
    root.rename(wrapped / "LiverHccSeg_v1")
    assert [e.case for e in convert_liverhccseg(wrapped, tmp_path / "out2")] == ["TCGA-DD-A1EB", "TCGA-G3-A25S"]


# ------------------------------------------------------------------ manifests and checks


def test_json_manifest_and_relative_paths(tmp_path):
    image, label = write_pair(tmp_path / "cases", "a.nii.gz", "a_seg.nii.gz", value=6)
    rows = [{"case": "A", "image": "cases/a.nii.gz", "label": "cases/a_seg.nii.gz", "liver_label": 6, "group": "x"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "cases.json").write_text(json.dumps({"cases": [{"image": str(image), "label": str(label)}]}))
    assert read_manifest(tmp_path / "list.json") == [CaseEntry("A", image, label, 6, "x")]
    assert read_manifest(tmp_path / "cases.json") == [CaseEntry("a", image, label, 1, "")]
    write_manifest(read_manifest(tmp_path / "list.json"), tmp_path / "again.csv")
    assert "A,cases/a.nii.gz,cases/a_seg.nii.gz,6,x" in (tmp_path / "again.csv").read_text()
    (tmp_path / "bad.csv").write_text("image,mask\na.nii.gz,b.nii.gz\n")
    with pytest.raises(InputError, match="bad.csv: needs 'image' and 'label' columns"):
        read_manifest(tmp_path / "bad.csv")


def test_json_manifest_keeps_a_case_or_group_coded_as_the_number_0(tmp_path):
    # Before, `row.get("group") or ""` turned group 0 into no group (left out of the
    # Mann-Whitney comparison of a 0/1 coding) and case 0 into the image's name.
    image, label = write_pair(tmp_path, "a.nii.gz", "a_seg.nii.gz")
    rows = [{"case": 0, "image": "a.nii.gz", "label": "a_seg.nii.gz", "group": 0}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    assert read_manifest(tmp_path / "list.json") == [CaseEntry("0", image, label, 1, "0")]


def test_check_entries_names_each_bad_entry(tmp_path):
    good_image, good_label = write_pair(tmp_path, "image_1.nii.gz", "label_1.nii.gz")
    _, empty = write_pair(tmp_path, "image_2.nii.gz", "label_2.nii.gz", value=0)
    moved = box_label(volume())
    moved.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    copies = {name: shutil.copy(good_image, tmp_path / f"image_{name}.nii.gz") for name in ("nolabel", "moved")}
    entries = [CaseEntry("good", good_image, good_label), CaseEntry("noimage", tmp_path / "gone.nii.gz", good_label),
               CaseEntry("nolabel", copies["nolabel"], tmp_path / "nolabel.nii.gz"),
               CaseEntry("empty", tmp_path / "image_2.nii.gz", empty),
               CaseEntry("moved", copies["moved"], tmp_path / "moved.nii.gz"), CaseEntry("good", good_image, good_label)]
    problems = check_entries(entries)
    assert problems == [
        f"{good_image}: case good: duplicated case name (also used for {good_image})",
        f"{tmp_path / 'gone.nii.gz'}: case noimage: image file not found",
        f"{tmp_path / 'nolabel.nii.gz'}: case nolabel: label file not found",
        f"{empty}: case empty: no voxel has the liver label 1; the label is empty",
        f"{tmp_path / 'moved.nii.gz'}: case moved: label grid does not match the image grid (image origin "
        f"-30x12x40, label origin 0x0x0)"]
    assert check_entries(entries, full=False) == problems


def test_cli_convert_and_check(tmp_path, capsys):
    data = tmp_path / "data"
    write_pair(data, "image_1.nii.gz", "label_1.nii.gz")
    write_pair(data, "image_2.nii.gz", "label_2.nii.gz", value=0)
    assert main(["convert", "pairs", str(data), "-o", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"wrote 1 case to {tmp_path / 'm' / 'manifest.csv'}" in out and "skipped" in out
    assert main(["check", "--manifest", str(tmp_path / "m" / "manifest.csv")]) == 0
    assert main(["check", "--data", str(data)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2].endswith("case 2: no voxel has the liver label 1; the label is empty") and out[-1] == "checked 2 cases: 1 problem(s)"
    assert main(["convert", "chaos", str(data), "-o", str(tmp_path / "c"), "--label-value", "3"]) == 1
    assert main(["convert", "chaos", str(data), "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "holds no CHAOS MR patients" in err[1] and not (tmp_path / "c").exists()


def test_a_folder_of_images_without_labels_names_them(tmp_path):
    from LiverVolumetryTraining.dataset import find_pairs

    write_pair(tmp_path, "image_1.nii.gz", "labels_1.nii.gz")  # a misnamed label
    with pytest.raises(InputError) as error:
        find_pairs(tmp_path)
    assert str(error.value) == (f"{tmp_path}: no image/label pairs found (expected names like image_1.nii.gz + "
                                "label_1.nii.gz); image_1.nii.gz without a label file")


def test_pairs_are_found_whatever_the_letter_case_of_their_names(tmp_path, capsys):
    """Image_3/Label_3 and IMAGE_4.NII.GZ were silently left out (a case-sensitive match)."""
    from LiverVolumetryTraining.dataset import find_pairs

    folder = tmp_path / "pairs"
    write_pair(folder, "image_1.nii.gz", "label_1.nii.gz", seed=1)
    write_pair(folder, "Image_A3.nii.gz", "Label_A3.nii.gz", seed=3)
    write_pair(folder, "image_4.nii.gz", "label_4.nii.gz", seed=4)
    for kind in ("image", "label"):
        (folder / f"{kind}_4.nii.gz").rename(folder / f"{kind}_4.NII.GZ")
    entries = find_pairs(folder)
    assert [(e.case, e.image.name, e.label.name) for e in entries] == [
        ("1", "image_1.nii.gz", "label_1.nii.gz"), ("4", "image_4.NII.GZ", "label_4.NII.GZ"),
        ("A3", "Image_A3.nii.gz", "Label_A3.nii.gz")]
    assert main(["check", "--data", str(folder)]) == 0 and "checked 3 cases" in capsys.readouterr().out
    shutil.copy(folder / "image_1.nii.gz", folder / "Image_1.nii")  # the same case twice
    with pytest.raises(InputError, match=r"image_1.nii.gz and Image_1.nii name the same file|Image_1.nii and "
                                         r"image_1.nii.gz name the same file"):
        find_pairs(folder)
