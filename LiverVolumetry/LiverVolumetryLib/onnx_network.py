"""The bundle's network as an ONNX graph run by ONNX Runtime: the fast CPU path.

On CPU, ONNX Runtime runs the same 3D U-Net without importing PyTorch, about 2 s of every
one-case run; warm, it was 1.7x faster than PyTorch's eager convolutions on one 2-core
machine and about as fast on another (README, "What made it fast"); maximum logit
difference ~1e-3.
A bundle may carry ``model.onnx`` next to its safetensors weights, exported from those
weights when the bundle is written and checked against PyTorch on a test input; its
SHA-256 is in ``model.json`` and verified before use. An ONNX file is a protobuf graph
with the weights as tensors: nothing is unpickled. Without ``onnxruntime`` installed, or
on a GPU, the engine uses PyTorch (same results up to float rounding).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

ONNX_FILE = "model.onnx"
#: Largest difference in class probabilities accepted between the ONNX graph and PyTorch.
TOLERANCE = 1e-3
#: LIVERVOLUMETRY_BACKEND=torch turns the ONNX Runtime path off (e.g. to compare).
BACKEND_VARIABLE = "LIVERVOLUMETRY_BACKEND"


def onnxruntime_available() -> bool:
    if os.environ.get(BACKEND_VARIABLE, "").lower() == "torch":
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(network, multiple: int) -> bytes | None:
    """``network`` (eval mode, CPU) as ONNX bytes with free spatial sizes, or None when
    this PyTorch cannot export it or the graph disagrees with PyTorch."""
    import torch

    size = 2 * multiple
    sample = torch.linspace(-1, 1, size**3).reshape(1, 1, size, size, size)
    axes = {0: "windows", 2: "x", 3: "y", 4: "z"}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (sample,), buffer, dynamo=False, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": axes, "logits": axes}, opset_version=17)
    except Exception:  # noqa: BLE001 (any exporter failure means: no ONNX file, PyTorch path)
        return None
    data = buffer.getvalue()
    check = torch.randn(1, 1, size, 3 * multiple, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = torch.softmax(network(check), dim=1).numpy()
    got = softmax(OnnxNetwork(data, threads=1).logits(check.numpy()))
    return data if float(np.abs(got - expected).max()) <= TOLERANCE else None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class OnnxNetwork:
    """``logits`` takes and gives numpy arrays (N, 1, x, y, z); called like the PyTorch
    network, it takes and gives tensors (for MONAI's sliding windows)."""

    def __init__(self, model: bytes | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:  # else ONNX Runtime's default: one thread per physical core
            options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        # Graphs exported before the batch axis was made free take one window at a time.
        self.one_at_a_time = self.session.get_inputs()[0].shape[0] == 1

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.one_at_a_time and batch.shape[0] > 1:
            return np.concatenate([self.logits(batch[i:i + 1]) for i in range(batch.shape[0])])
        return self.session.run(None, {"image": batch})[0]

    def __call__(self, batch):
        import torch

        return torch.from_numpy(self.logits(batch.detach().cpu().numpy()))
