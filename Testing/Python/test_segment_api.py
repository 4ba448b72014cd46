"""segment_liver API and model bundles: grid, progress, cancel, device, checksum, allow-list,
and the README's Python example run as written."""

from __future__ import annotations

import json
import shutil

import pytest
import SimpleITK as sitk
from conftest import ellipsoid_image, rotation_direction, same_grid

from LiverVolumetryLib.bundle import load_bundle
from LiverVolumetryLib.errors import CancelledError, LiverVolumetryError, ModelBundleError
from LiverVolumetryLib.segment import segment_liver


def test_mask_is_on_the_input_grid_for_an_oblique_input(tiny_bundle):
    image, _ = ellipsoid_image(direction=rotation_direction((10, -5, 25), flips=(1, -1, 1)), spacing=(3.0, 4.0, 9.0))
    result = segment_liver(image, tiny_bundle, device="cpu")
    assert same_grid(result.mask, image)
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    assert result.model_name == "tiny-test" and result.device == "cpu"
    assert set(result.timings) == {"preprocess", "network", "postprocess"}


def test_progress_reports_stages_and_reaches_one(tiny_bundle):
    image, _ = ellipsoid_image()
    events = []
    segment_liver(image, tiny_bundle, device="cpu", progress=lambda f, s: events.append((f, s)))
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"preprocess", "network", "postprocess"} <= {s for _, s in events}


def test_cancel_stops_the_work(tiny_bundle):
    image, _ = ellipsoid_image()
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        segment_liver(image, tiny_bundle, device="cpu", cancel=cancel)


def test_cuda_without_gpu_is_a_clear_error(tiny_bundle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    image, _ = ellipsoid_image()
    with pytest.raises(LiverVolumetryError, match="no CUDA GPU"):
        segment_liver(image, tiny_bundle, device="cuda")


def test_checksum_mismatch_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    spec = json.loads((copy / "model.json").read_text())
    spec["weights"]["sha256"] = "0" * 64
    (copy / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelBundleError, match="SHA-256"):
        load_bundle(copy)


def test_network_class_must_be_allow_listed(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    spec = json.loads((copy / "model.json").read_text())
    spec["network"]["class"] = "os.system"
    (copy / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelBundleError, match="not allowed"):
        load_bundle(copy).build_network()


@pytest.mark.parametrize("mutate, message", [
    (lambda folder: (folder / "model.json").unlink(), "no model.json"),
    (lambda folder: (folder / "model.json").write_text("{not json"), "not valid JSON"),
    (lambda folder: (folder / "model.safetensors").unlink(), "missing"),
])
def test_broken_bundles_give_one_line_errors(tiny_bundle, tmp_path, mutate, message):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    mutate(copy)
    with pytest.raises(ModelBundleError, match=message) as info:
        load_bundle(copy)
    assert "\n" not in str(info.value)


def test_bundled_model_loads_and_verifies():
    bundle = load_bundle()
    assert bundle.weights_path.suffix == ".safetensors"
    assert bundle.load_network() is not None


def test_images_smaller_than_the_window_and_of_odd_size(tiny_bundle):
    """Network-grid sizes that are not multiples of the U-Net's stride must still work."""
    image, _ = ellipsoid_image(size=(23, 17, 9), spacing=(4.3, 5.1, 7.7))
    result = segment_liver(image, tiny_bundle, device="cpu")
    assert same_grid(result.mask, image)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    from pathlib import Path

    from LiverVolumetryLib.phantom import make_phantom

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    phantom = make_phantom(3, shape=(80, 64, 26), spacing=(5.0, 5.0, 9.0))
    sitk.WriteImage(phantom.image, str(tmp_path / "scan.nii.gz"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the bundled model, on the phantom
    assert same_grid(namespace["result"].mask, namespace["image"])
    assert namespace["table"]["volume_ml"] > 0 and "original_glcm_Contrast" in namespace["table"]
