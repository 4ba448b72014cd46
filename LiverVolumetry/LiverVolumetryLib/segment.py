"""``segment_liver``: one SimpleITK image in, a liver mask on the same grid out.

image -> preprocess (RAS, spacing, intensity) -> network (one window, or sliding windows) ->
postprocess (resample back, threshold, largest component, fill holes).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .bundle import ModelBundle, load_bundle
from .confidence import unsure_fraction
from .crop import Box, body_box, box_grid
from .errors import CancelledError, InputError, LiverVolumetryError
from .onnx_network import OnnxNetwork, onnxruntime_available, softmax
from .postprocess import clean_mask, probability_to_input_grid
from .preprocess import network_grid_size, to_network_input

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

_NETWORK_CACHE: dict[tuple, object] = {}


@dataclass
class SegmentationResult:
    """The liver mask (uint8, 1 = liver, on the input grid) and how it was made."""

    mask: sitk.Image
    model_name: str
    model_version: str
    device: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"  # or "onnxruntime"
    unsure_fraction: float | None = None  # see confidence.unsure_fraction


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'. 'gpu' is an alias of 'cuda'.

    'cpu', and 'auto' on a Linux machine without the NVIDIA driver, are answered without
    importing PyTorch (about 1 s of every cold start).
    """
    device = (device or "auto").lower()
    if device == "gpu":
        device = "cuda"
    if device == "cpu" or (device == "auto" and not _may_have_cuda()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LiverVolumetryError("device 'cuda' was requested but no CUDA GPU is available (choose the cpu or auto device)")
    if not device.startswith("cuda"):
        raise LiverVolumetryError(f"unknown device {device!r} (auto, cpu, cuda)")
    return device


def _may_have_cuda() -> bool:
    """False only where CUDA is certainly absent: Linux without the NVIDIA kernel driver
    (``/proc/driver/nvidia``) and without WSL2's GPU device (``/dev/dxg``)."""
    return not sys.platform.startswith("linux") or any(
        os.path.exists(path) for path in ("/proc/driver/nvidia/version", "/dev/dxg"))


def network_backend(bundle: ModelBundle, device: str) -> str:
    """'onnxruntime' on CPU when the bundle has an ONNX graph and ONNX Runtime is
    installed (the fast path), else 'torch'."""
    return "onnxruntime" if device == "cpu" and bundle.onnx_path is not None and onnxruntime_available() else "torch"


def _network_on(bundle: ModelBundle, device: str):
    """The bundle's network (cached per process): an ``OnnxNetwork`` or a PyTorch module."""
    backend = network_backend(bundle, device)
    torch = sys.modules.get("torch")  # a thread count the user set in PyTorch applies to both backends
    threads = torch.get_num_threads() if torch is not None else None
    key = (str(bundle.path), bundle.sha256, device, backend, threads)
    if key not in _NETWORK_CACHE:
        _NETWORK_CACHE.clear()  # keep at most one network in memory
        if backend == "onnxruntime":
            _NETWORK_CACHE[key] = OnnxNetwork(bundle.onnx_path, threads=threads)
        else:
            _NETWORK_CACHE[key] = bundle.load_network().to(device)
    return _NETWORK_CACHE[key]


def stride_product(network_spec: dict) -> int:
    """Input sizes must be multiples of this for the U-Net's skip connections to match."""
    product = 1
    for stride in network_spec.get("args", {}).get("strides", [2, 2, 2, 2]):
        product *= int(stride if isinstance(stride, int) else max(stride))
    return product


def _window_count(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    count = 1
    for size, window in zip(shape, roi):
        if size > window:
            step = max(1, int(window * (1 - overlap)))
            count *= math.ceil((size - window) / step) + 1
    return count


def window_roi(shape: tuple[int, ...], settings, multiple: int) -> tuple[int, ...]:
    """One window over the whole (padded) array when it is small enough, else ``roi_size``.

    Windows are multiples of the network's total stride; MONAI pads the array up to them.
    """
    padded = tuple(math.ceil(s / multiple) * multiple for s in shape)
    if settings.max_window_voxels and math.prod(padded) <= settings.max_window_voxels:
        return padded
    return tuple(min(r, p) for r, p in zip(settings.roi_size, padded))


def liver_probability(array: np.ndarray, bundle: ModelBundle, device: str,
                      progress: Progress | None = None, cancel: Cancel | None = None) -> np.ndarray:
    """Foreground probability (x, y, z float32) for a preprocessed network array."""
    network = _network_on(bundle, device)
    settings = bundle.inference
    roi = window_roi(array.shape, settings, stride_product(bundle.network))
    cval = float(array.min())  # pad with the darkest value (air), not 0, which is mid-grey after scaling
    if all(r >= s for r, s in zip(roi, array.shape)):
        if cancel is not None and cancel():
            raise CancelledError()
        probability = _one_window(array, roi, lambda batch: _foreground(network, batch, device), cval)
        if progress is not None:
            progress(1.0, "network")
        return probability
    return _sliding_windows(array, roi, network, bundle, device, cval, progress, cancel)


def _foreground(network, batch: np.ndarray, device: str) -> np.ndarray:
    """Liver probability (N, 1, x, y, z) of a numpy batch; ONNX Runtime needs no PyTorch."""
    if isinstance(network, OnnxNetwork):
        return softmax(network.logits(batch))[:, 1:2]
    import torch

    with torch.inference_mode(), torch.autocast("cuda", enabled=device.startswith("cuda")):
        logits = network(torch.from_numpy(batch).to(device))
    return torch.softmax(logits.float(), dim=1)[:, 1:2].cpu().numpy()


def _one_window(array: np.ndarray, roi: tuple[int, ...], foreground, cval: float) -> np.ndarray:
    """What MONAI's sliding windows give when one window holds the array (padding split
    evenly before and after), without their blending and bookkeeping."""
    pads = [((r - s) // 2, r - s - (r - s) // 2) for s, r in zip(array.shape, roi)]
    padded = np.pad(array, pads, constant_values=np.float32(cval))
    probability = foreground(padded[None, None])[0, 0]
    inside = tuple(slice(before, before + s) for (before, _), s in zip(pads, array.shape))
    return np.ascontiguousarray(probability[inside], dtype=np.float32)


def _sliding_windows(array: np.ndarray, roi: tuple[int, ...], network, bundle: ModelBundle, device: str,
                     cval: float, progress: Progress | None, cancel: Cancel | None) -> np.ndarray:
    """MONAI's overlapping windows with Gaussian blending, for grids larger than one window."""
    import torch
    from monai.inferers import sliding_window_inference

    settings = bundle.inference
    total = max(1, math.ceil(_window_count(array.shape, roi, settings.overlap) / settings.sw_batch_size))
    done = [0]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if cancel is not None and cancel():
            raise CancelledError()
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            logits = network(batch)
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / total, 1.0), "network")
        return torch.softmax(logits.float(), dim=1)[:, 1:2]

    with torch.inference_mode():
        prob = sliding_window_inference(torch.from_numpy(array)[None, None].to(device), roi, settings.sw_batch_size,
                                        predictor, overlap=settings.overlap, mode=settings.mode, cval=cval)
    return prob[0, 0].float().cpu().numpy()


def _check_image(image: sitk.Image) -> None:
    if not isinstance(image, sitk.Image):
        raise InputError(None, f"expected a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(None, f"a 3D volume is needed (size {'x'.join(map(str, image.GetSize()))})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(None, "a single-component (scalar) image is needed")
    from .imageio import validate_image

    validate_image(image, None)  # as for a file: NaN, constant, label map, sheared or far-off grid


def _check_network_memory(image: sitk.Image, spacing) -> None:
    """Refuse an image whose network grid (its whole field of view at the model's spacing)
    needs more memory than is available: coarse voxels over a wide field of view make a
    small file a huge grid (128x128x60 voxels of 30 mm: 1920x1920x900 at 2 mm)."""
    from .imageio import _gb, _size_text, available_memory_bytes, estimate_memory_bytes

    size = network_grid_size(image, spacing)
    needed, available = estimate_memory_bytes(size), available_memory_bytes()
    if needed > available:
        extent = " x ".join(f"{n * s:.0f}" for n, s in zip(size, spacing))
        raise InputError(None, f"is too large on the network's grid: its field of view of {extent} mm is "
                               f"{_size_text(size)} voxels at {'x'.join(f'{s:g}' for s in spacing)} mm, which needs "
                               f"about {_gb(needed)} of memory, {_gb(available)} available")


def network_probability(image: sitk.Image, bundle: ModelBundle, device: str, report: Progress | None = None,
                        cancel: Cancel | None = None, timings: dict[str, float] | None = None):
    """Preprocess ``image`` and run the network: (liver probability array, its grid).

    The grid is the network grid, cropped to the body when the bundle asks for it.
    ``report(fraction, stage)`` gets 0.1..0.85 for the network windows.
    """
    report = report or (lambda fraction, stage: None)
    timings = {} if timings is None else timings
    t = time.perf_counter()
    _check_network_memory(image, bundle.preprocessing.spacing)
    net_input = to_network_input(image, bundle.preprocessing)
    timings["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    box = body_box(net_input.array) if bundle.inference.crop_to_body else Box((0, 0, 0), net_input.array.shape)
    report(0.1, "network")
    probability = liver_probability(np.ascontiguousarray(net_input.array[box.slices]), bundle, device,
                                    progress=lambda f, s: report(0.1 + 0.75 * f, s), cancel=cancel)
    timings["network"] = time.perf_counter() - t
    return probability, box_grid(net_input.grid, box)


def probability_to_mask(probability: np.ndarray, grid: sitk.Image, image: sitk.Image, bundle: ModelBundle,
                        threshold: float | None = None) -> sitk.Image:
    """The liver mask on ``image``'s grid: threshold (the bundle's unless given), then the
    bundle's post-processing."""
    threshold = bundle.inference.threshold if threshold is None else threshold
    mask = probability_to_input_grid(probability, grid, image, threshold)
    post = bundle.postprocessing
    return clean_mask(mask, post.get("largest_component", True), post.get("fill_holes", True))


def segment_liver(image: sitk.Image, model: str | Path | ModelBundle | None = None, device: str = "auto",
                  progress: Progress | None = None, cancel: Cancel | None = None) -> SegmentationResult:
    """Segment the liver in a 3D MRI volume; the mask is on ``image``'s exact grid.

    ``progress(fraction, stage)`` is called with the overall fraction (0..1) and a stage
    name; ``cancel()`` is polled between stages and between network windows and stops the
    work with :class:`CancelledError` when it returns True.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    _check_image(image)
    bundle = model if isinstance(model, ModelBundle) else load_bundle(model)
    device = resolve_device(device)

    def report(fraction: float, stage: str) -> None:
        if cancel is not None and cancel():
            raise CancelledError()
        if progress is not None:
            progress(float(fraction), stage)

    report(0.0, "preprocess")
    probability, grid = network_probability(image, bundle, device, report, cancel, timings)
    t = time.perf_counter()
    report(0.85, "postprocess")
    mask = probability_to_mask(probability, grid, image, bundle)
    timings["postprocess"] = time.perf_counter() - t
    report(1.0, "postprocess")
    return SegmentationResult(mask=mask, model_name=bundle.name, model_version=bundle.version,
                              device=device, seconds=time.perf_counter() - start, timings=timings,
                              backend=network_backend(bundle, device), unsure_fraction=unsure_fraction(probability))
