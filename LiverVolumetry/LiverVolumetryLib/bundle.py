"""Model bundle: the one format shared by the engine, the Slicer module and training.

A bundle is a folder holding ``model.json`` and a weights file (``.safetensors``, or a
state dict ``.pt`` read with ``torch.load(weights_only=True)``; nothing is unpickled).
``model.json`` records the network class and arguments, preprocessing, inference and
post-processing settings, label names, version, the weights' SHA-256 (verified on every
load), the training data and the measured validation metrics. Optionally the same network
as ``model.onnx`` (see ``onnx_network``), with its own SHA-256, for ONNX Runtime on CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path, write_text_atomic
from .errors import ModelBundleError
from .preprocess import Preprocessing

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
DEFAULT_MODEL_NAME = "liver-mri-v2"
# Only these MONAI networks may be named in a bundle: a bundle never makes the engine
# import arbitrary code.
ALLOWED_NETWORKS = ("UNet", "BasicUNet", "DynUNet", "SegResNet", "AttentionUnet", "UNETR", "SwinUNETR")


def models_dir() -> Path:
    """The folder of bundled models inside the installed package."""
    return Path(__file__).resolve().parent / "models"


def default_bundle_dir() -> Path:
    """The bundle used when the user names none."""
    return models_dir() / DEFAULT_MODEL_NAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class InferenceSettings:
    """How the network is run: ``roi_size`` in network-array (x, y, z) order.

    ``crop_to_body``: run the network only on the box around the body (air is background).
    ``max_window_voxels``: a (cropped) grid of at most this many voxels is run as one
    window, without overlap; larger grids use sliding windows of ``roi_size``.
    """

    roi_size: tuple[int, int, int] = (160, 160, 128)
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"
    threshold: float = 0.5
    crop_to_body: bool = False
    max_window_voxels: int = 0

    @classmethod
    def from_dict(cls, spec: dict) -> "InferenceSettings":
        spec = dict(spec)
        spec["roi_size"] = tuple(int(v) for v in spec.get("roi_size", cls.roi_size))
        return cls(**spec)

    def to_dict(self) -> dict:
        return {"roi_size": list(self.roi_size), "overlap": self.overlap, "sw_batch_size": self.sw_batch_size,
                "mode": self.mode, "threshold": self.threshold, "crop_to_body": self.crop_to_body,
                "max_window_voxels": self.max_window_voxels}


@dataclass(frozen=True)
class ModelBundle:
    """A loaded and checksum-verified ``model.json`` plus the path of its weights."""

    path: Path
    name: str
    version: str
    network: dict
    preprocessing: Preprocessing
    inference: InferenceSettings
    postprocessing: dict
    labels: dict
    weights_path: Path
    sha256: str
    metadata: dict = field(default_factory=dict)
    onnx_path: Path | None = None  # verified against model.json's SHA-256 on load

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this (the U-Net's total stride)."""
        product = 1
        for stride in self.network.get("args", {}).get("strides", ()):
            product *= int(stride if isinstance(stride, int) else max(stride))
        return product

    def build_network(self):
        """Instantiate the network named in ``model.json`` (allow-listed MONAI classes)."""
        import monai.networks.nets as nets

        cls_name = allowed_network_class(self.network, self.path)
        try:
            return getattr(nets, cls_name)(**self.network.get("args", {}))
        except (TypeError, ValueError, KeyError, AttributeError) as error:  # MONAI's complaints about its arguments
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelBundleError(self.path, f"bad network arguments: {first}") from None

    def load_state_dict(self) -> dict:
        """The weights as a dict of tensors, never unpickled."""
        import torch

        try:
            if self.weights_path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(self.weights_path))
            return torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as error:  # safetensors, pickle and zip errors alike: the file is not tensors
            first = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:160]
            raise ModelBundleError(self.path, f"weights file {self.weights_path.name} cannot be read as tensors "
                                              f"({first})") from None

    def load_network(self):
        """Network with weights loaded, in eval mode, on the CPU."""
        network = self.build_network()
        try:
            network.load_state_dict(self.load_state_dict())
        except (RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0]
            raise ModelBundleError(self.path, f"weights do not fit the network: {first}") from None
        return network.eval()


def _require(spec: dict, key: str, path: Path) -> Any:
    if key not in spec:
        raise ModelBundleError(path, f"{MODEL_JSON} lacks '{key}'")
    return spec[key]


def load_bundle(path: str | Path | None = None, verify: bool = True) -> ModelBundle:
    """Read a bundle folder (or its ``model.json``); verify the weights' SHA-256."""
    folder = default_bundle_dir() if path is None else Path(path)
    if folder.is_file() and folder.name == MODEL_JSON:
        folder = folder.parent
    spec_path = folder / MODEL_JSON
    if not folder.exists():
        raise ModelBundleError(folder, "does not exist")
    if folder.is_file():
        raise ModelBundleError(folder, f"is a file, not a model bundle (a folder with {MODEL_JSON}, or its "
                                       f"{MODEL_JSON})")
    if not spec_path.is_file():
        raise ModelBundleError(folder, f"no {MODEL_JSON} in this folder")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelBundleError(folder, f"{MODEL_JSON} is not valid JSON ({error})") from None
    if int(spec.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelBundleError(folder, f"format_version {spec['format_version']} is newer than this engine supports")
    weights = _require(spec, "weights", folder)
    weights_path = folder / _require(weights, "file", folder)
    _check_inside(folder, weights_path)
    expected = str(_require(weights, "sha256", folder)).lower()
    if not weights_path.is_file():
        raise ModelBundleError(folder, f"weights file {weights_path.name} is missing")
    if weights_path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ModelBundleError(folder, f"weights must be .safetensors or a .pt state dict, not {weights_path.suffix}")
    if verify and sha256_file(weights_path) != expected:
        raise ModelBundleError(folder, f"SHA-256 of {weights_path.name} does not match {MODEL_JSON}: the file is corrupt or was replaced")
    onnx_path = _checked_onnx(folder, spec.get("onnx"), verify)
    allowed_network_class(spec.get("network"), folder)  # also where the ONNX file runs instead of the class
    try:
        return ModelBundle(
            path=folder, name=str(_require(spec, "name", folder)), version=str(_require(spec, "version", folder)),
            network=_require(spec, "network", folder),
            preprocessing=Preprocessing.from_dict(_require(spec, "preprocessing", folder)),
            inference=InferenceSettings.from_dict(spec.get("inference", {})),
            postprocessing=spec.get("postprocessing", {"largest_component": True, "fill_holes": True}),
            labels=spec.get("labels", {"0": "background", "1": "liver"}),
            weights_path=weights_path, sha256=expected, metadata=spec, onnx_path=onnx_path)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBundleError(folder, f"{MODEL_JSON} has a malformed section ({error})") from None


def allowed_network_class(network: Any, where: Path) -> str:
    """The MONAI class name of ``model.json``'s network section, if it is allow-listed."""
    name = str(network.get("class", "")) if isinstance(network, dict) else ""
    if name.rsplit(".", 1)[-1] not in ALLOWED_NETWORKS:
        raise ModelBundleError(where, f"network class {name!r} is not allowed ({', '.join(ALLOWED_NETWORKS)})")
    return name.rsplit(".", 1)[-1]


def _check_inside(folder: Path, path: Path) -> None:
    """Refuse a file that ``model.json`` names outside the bundle folder."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ModelBundleError(folder, f"{MODEL_JSON} names {path.name} outside the bundle folder; a bundle's "
                                       "files lie inside it")


def _checked_onnx(folder: Path, entry: Any, verify: bool) -> Path | None:
    """The bundle's ONNX file when ``model.json`` names one; its SHA-256 checked."""
    if not entry:
        return None
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        raise ModelBundleError(folder, f"{MODEL_JSON} has a malformed 'onnx' section")
    path = folder / str(entry["file"])
    _check_inside(folder, path)
    if path.suffix != ".onnx" or not path.is_file():
        raise ModelBundleError(folder, f"ONNX file {path.name} is missing")
    if verify and sha256_file(path) != str(entry["sha256"]).lower():
        raise ModelBundleError(folder, f"SHA-256 of {path.name} does not match {MODEL_JSON}: the file is corrupt or was replaced")
    return path


def write_bundle(folder: str | Path, state_dict: dict, spec: dict, overwrite: bool = False,
                 onnx: bool = True) -> ModelBundle:
    """Write weights (safetensors) and ``model.json`` with their SHA-256; return the bundle.

    ``spec`` holds everything of ``model.json`` except ``weights``, ``onnx`` and
    ``format_version``. With ``onnx`` (and ONNX Runtime installed) the network is also
    written as ``model.onnx`` when its export matches PyTorch.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    weights_path = folder / "model.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(weights_path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp))
    full = {"format_version": FORMAT_VERSION, **{k: v for k, v in spec.items() if k != "onnx"},
            "weights": {"file": weights_path.name, "sha256": sha256_file(weights_path)}}
    onnx_path = folder / "model.onnx"
    graph = _onnx_graph(folder, full, weights_path) if onnx else None
    if graph is not None:
        with atomic_path(onnx_path, overwrite=True) as tmp:
            tmp.write_bytes(graph)
        full["onnx"] = {"file": onnx_path.name, "sha256": sha256_file(onnx_path)}
    elif onnx_path.exists():
        onnx_path.unlink()  # never leave a graph of other weights beside these
    write_text_atomic(folder / MODEL_JSON, json.dumps(full, indent=2) + "\n", overwrite=True)
    return load_bundle(folder)


def _onnx_graph(folder: Path, full: dict, weights_path: Path) -> bytes | None:
    from .onnx_network import export_onnx, onnxruntime_available

    if not onnxruntime_available():
        return None
    bundle = ModelBundle(path=folder, name=str(full.get("name", "")), version=str(full.get("version", "")),
                         network=full["network"], preprocessing=Preprocessing(), inference=InferenceSettings(),
                         postprocessing={}, labels={}, weights_path=weights_path, sha256="")
    return export_onnx(bundle.load_network(), bundle.multiple)
