"""The paper's inference pipeline, re-implemented with MONAI as the speed reference.

Gross et al., Eur Radiol 2024 ("Volumetry-Net"): MONAI ``UNet(channels=(16, 32, 64, 128),
strides=(2, 2, 2), num_res_units=2, norm=batch)``; images loaded from NIfTI, oriented to
RAS, resampled to 2 mm (bilinear), scaled with ``ScaleIntensityRangePercentiles(25, 75,
-0.5, 0.5, clip=False)``; ``sliding_window_inference(roi=(224, 224, 128),
sw_batch_size=4, overlap=0.25)``; argmax; largest connected component; inverted back to
the input grid with nearest-neighbour interpolation; written as NIfTI.

Weights: a ``volumetry-net`` bundle trained with ``livervolumetry-train`` (same format as
the engine's), or untrained weights when none is given (timing only, no Dice).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

PAPER_NETWORK = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (16, 32, 64, 128),
                 "strides": (2, 2, 2), "num_res_units": 2, "norm": "batch"}
PAPER_INFERENCE = {"roi_size": (224, 224, 128), "sw_batch_size": 4, "overlap": 0.25}


def paper_network(bundle_dir: str | Path | None = None) -> tuple[torch.nn.Module, str]:
    """The paper's UNet in eval mode, and where its weights came from."""
    if bundle_dir is not None:
        from LiverVolumetryLib.bundle import load_bundle

        bundle = load_bundle(bundle_dir)
        args = bundle.network.get("args", {})
        if bundle.network.get("class") != "UNet" or list(args.get("channels", [])) != [16, 32, 64, 128]:
            raise SystemExit(f"{bundle_dir}: not a volumetry-net bundle (network {bundle.network})")
        return bundle.load_network().eval(), f"{bundle.name} {bundle.version}"
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(**PAPER_NETWORK).eval(), "untrained"


def _transforms():
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, Orientationd,
                                  ScaleIntensityRangePercentilesd, Spacingd)

    return Compose([
        LoadImaged(keys="image", reader="NibabelReader"),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0), mode="bilinear"),
        ScaleIntensityRangePercentilesd(keys="image", lower=25, upper=75, b_min=-0.5, b_max=0.5, clip=False),
    ])


def _largest_component(label: np.ndarray) -> np.ndarray:
    """MONAI's KeepLargestConnectedComponent (full connectivity) with scipy, which MONAI
    would take from scikit-image, not a dependency here."""
    from scipy import ndimage

    components, count = ndimage.label(label > 0, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return label
    sizes = np.bincount(components.ravel())[1:]
    return (components == int(np.argmax(sizes)) + 1).astype(label.dtype)


def run_reference(image_path: str | Path, out_path: str | Path, network: torch.nn.Module,
                  device: str = "cpu") -> dict[str, float]:
    """Segment one NIfTI file the paper's way; returns the seconds of each stage."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import AsDiscreted, Invertd

    timings: dict[str, float] = {}
    t = time.perf_counter()
    pre = _transforms()
    data = pre({"image": str(image_path)})
    timings["load+preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    with torch.inference_mode():
        batch = data["image"][None].to(device)
        data["pred"] = sliding_window_inference(batch, PAPER_INFERENCE["roi_size"], PAPER_INFERENCE["sw_batch_size"],
                                                network, overlap=PAPER_INFERENCE["overlap"])[0].cpu()
    timings["network"] = time.perf_counter() - t

    t = time.perf_counter()
    data = AsDiscreted(keys="pred", argmax=True)(data)
    data["pred"][0] = torch.from_numpy(_largest_component(data["pred"][0].numpy()))
    data = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)
    timings["postprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    import nibabel

    mask = data["pred"]  # a MetaTensor on the input grid, carrying the input's affine
    nibabel.save(nibabel.Nifti1Image(mask[0].numpy().astype(np.uint8), np.asarray(mask.affine)), str(out_path))
    timings["write"] = time.perf_counter() - t
    return timings
