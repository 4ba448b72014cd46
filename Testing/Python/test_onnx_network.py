"""The ONNX Runtime path: same probabilities as PyTorch, checksummed, never stale."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ellipsoid_image, rotation_direction

from LiverVolumetryLib.bundle import load_bundle, write_bundle
from LiverVolumetryLib.errors import ModelBundleError
from LiverVolumetryLib.onnx_network import BACKEND_VARIABLE
from LiverVolumetryLib.segment import network_backend, network_probability, segment_liver

pytest.importorskip("onnxruntime")


def test_bundles_carry_a_checksummed_onnx_graph(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    spec = json.loads((tiny_bundle / "model.json").read_text(encoding="utf-8"))
    assert bundle.onnx_path == tiny_bundle / "model.onnx" and spec["onnx"]["file"] == "model.onnx"
    assert network_backend(bundle, "cpu") == "onnxruntime" and network_backend(bundle, "cuda") == "torch"


def test_onnx_runtime_gives_pytorchs_probabilities(tiny_bundle, monkeypatch):
    image, _ = ellipsoid_image(size=(50, 42, 22), direction=rotation_direction((10, -5, 20)))
    bundle = load_bundle(tiny_bundle)
    fast, grid = network_probability(image, bundle, "cpu")
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    assert network_backend(bundle, "cpu") == "torch"
    slow, grid_torch = network_probability(image, bundle, "cpu")
    assert fast.shape == slow.shape and grid.GetSize() == grid_torch.GetSize()
    assert np.abs(fast - slow).max() < 1e-4
    assert segment_liver(image, bundle, device="cpu").backend == "torch"


def test_a_replaced_onnx_file_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelBundleError, match="model.onnx"):
        load_bundle(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(ModelBundleError, match="model.onnx is missing"):
        load_bundle(copy)


def test_rewriting_without_onnx_leaves_no_stale_graph(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    bundle = load_bundle(copy)
    spec = {k: v for k, v in bundle.metadata.items() if k not in ("weights", "format_version")}
    rewritten = write_bundle(copy, bundle.load_state_dict(), spec, overwrite=True, onnx=False)
    assert rewritten.onnx_path is None and not (copy / "model.onnx").exists()
    assert "onnx" not in json.loads((copy / "model.json").read_text(encoding="utf-8"))


def test_the_cpu_path_segments_without_importing_pytorch_or_monai():
    """PyTorch and MONAI imports are ~2 s of a cold start; ONNX Runtime on one window needs neither."""
    import subprocess
    import sys
    from pathlib import Path

    lib = Path(__file__).resolve().parents[2] / "LiverVolumetry"
    code = (f"import sys; sys.path.insert(0, {str(lib)!r})\n"
            "from LiverVolumetryLib.phantom import make_phantom\n"
            "from LiverVolumetryLib.segment import resolve_device, segment_liver\n"
            "result = segment_liver(make_phantom(3, shape=(96, 80, 24)).image, device=resolve_device('cpu'))\n"
            "print(result.backend, 'torch' in sys.modules, 'monai' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    backend, torch_loaded, monai_loaded = out.stdout.split()
    assert (backend, torch_loaded, monai_loaded) == ("onnxruntime", "False", "False")


def test_resolve_device_answers_cpu_without_pytorch_where_cuda_cannot_be(monkeypatch):
    import torch

    from LiverVolumetryLib import segment
    from LiverVolumetryLib.errors import LiverVolumetryError

    monkeypatch.setattr(segment, "_may_have_cuda", lambda: False)
    assert segment.resolve_device("auto") == "cpu" and segment.resolve_device("CPU") == "cpu"
    monkeypatch.setattr(segment, "_may_have_cuda", lambda: True)
    assert segment.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LiverVolumetryError, match="unknown device 'tpu'"):
        segment.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LiverVolumetryError, match=r"no CUDA GPU is available \(choose the cpu or auto device\)"):
            segment.resolve_device("gpu")


def test_several_windows_per_batch_run_on_the_onnx_graph(tiny_bundle, tmp_path, monkeypatch):
    """Bundles with sw_batch_size > 1 (volumetry-net uses 4): the graph was exported for one
    window at a time and ONNX Runtime refused a batch of several."""
    copy = tmp_path / "batched"
    shutil.copytree(tiny_bundle, copy)
    spec = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    spec["inference"].update(sw_batch_size=3, roi_size=[16, 16, 16])
    (copy / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    image, _ = ellipsoid_image(size=(50, 42, 22), direction=rotation_direction((10, -5, 20)))
    bundle = load_bundle(copy)
    assert network_backend(bundle, "cpu") == "onnxruntime"
    fast, _ = network_probability(image, bundle, "cpu")
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    slow, _ = network_probability(image, bundle, "cpu")
    assert np.abs(fast - slow).max() < 1e-4


def test_a_graph_with_a_fixed_batch_of_one_runs_windows_in_turn():
    """The bundled 2.0.0 graph was exported for one window at a time: batches are split."""
    from LiverVolumetryLib.onnx_network import OnnxNetwork

    network = OnnxNetwork(load_bundle().onnx_path, threads=1)
    assert network.one_at_a_time
    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    both = network.logits(batch)
    assert both.shape == (2, 2, 16, 16, 16)
    np.testing.assert_array_equal(both[1:], network.logits(batch[1:]))
