"""Mixed precision for training: which dtype the forward pass runs in, and a guard for a
known wrong bfloat16 convolution on CPUs.

PyTorch's CPU bfloat16 ``conv3d`` (oneDNN's AMX/AVX-512 BF16 kernels) returns wrong values,
up to NaN, when the innermost output dimension is 1 and its stride is above 1 (pytorch/pytorch
issue 169688). A UNet on thin patches (e.g. 16 slices through four stride-2 levels) meets it
twice: in the deepest down-sampling's forward pass, and in the backward pass of the first
up-sampling (a transposed convolution from one slice, whose input gradient is such a
convolution), which made every encoder gradient wrong and runs non-deterministic.
:func:`guard_bf16_convolutions` runs exactly those convolutions in float32; every other
convolution keeps bfloat16.
"""

from __future__ import annotations

import torch

from LiverVolumetryLib.errors import LiverVolumetryError


def autocast_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype the forward pass runs in under autocast, or None for plain float32.

    ``precision`` is the recipe's: ``"fp32"`` (or absent) or ``"bf16"``, mixed precision
    with bfloat16 convolutions and float32 weights, optimiser and loss (about 1.6x faster
    training steps on a CPU with AVX-512 BF16, e.g. AMD Zen 4; tensor cores on a GPU).
    Where the device lacks fast bfloat16 the run falls back to float32.
    """
    if precision in (None, "fp32"):
        return None
    if precision != "bf16":
        raise LiverVolumetryError(f"unknown precision {precision!r} (fp32 or bf16)")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.bfloat16 if device.type == "cpu" and supported is not None and supported() else None


def precision_name(amp: torch.dtype | None) -> str:
    return "fp32" if amp is None else "bf16"


def innermost_output_size(conv: torch.nn.Conv3d, input_size: int) -> int:
    """The size of ``conv``'s output along its last spatial axis for an input of ``input_size``."""
    if conv.padding == "same":  # PyTorch allows it only with stride 1
        return input_size
    padding = 0 if conv.padding == "valid" else conv.padding[2]
    span = conv.dilation[2] * (conv.kernel_size[2] - 1) + 1
    return (input_size + 2 * padding - span) // conv.stride[2] + 1


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch before 2.4
        return torch.is_autocast_cpu_enabled()


def _degenerate(conv: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` meets the wrong kernel: a strided conv3d whose innermost output
    is 1, forward (``Conv3d``) or in the backward pass (``ConvTranspose3d`` from an innermost
    size of 1: its input gradient is such a convolution)."""
    if isinstance(conv, torch.nn.ConvTranspose3d):
        return x.shape[-1] == 1
    return innermost_output_size(conv, x.shape[-1]) == 1


def guard_bf16_convolutions(network: torch.nn.Module) -> list[str]:
    """Make every ``Conv3d`` and ``ConvTranspose3d`` of ``network`` with an innermost stride
    above 1 run in float32 whenever, under CPU autocast, it would meet PyTorch's wrong
    bfloat16 kernel (see :func:`_degenerate`); returns their names.

    The convolutions are patched in place (their ``forward`` only), so parameter names, the
    state dict and checkpoints are those of the plain network.
    """
    guarded = []
    for name, module in network.named_modules():
        if (isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and module.stride[2] > 1
                and not hasattr(module, "_plain_forward")):
            module._plain_forward = module.forward
            module.forward = _guarded_forward(module)
            guarded.append(name)
    return guarded


def _guarded_forward(conv: torch.nn.Module):
    plain = conv._plain_forward

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.device.type == "cpu" and _autocast_on_cpu() and _degenerate(conv, x):
            with torch.autocast("cpu", enabled=False):
                return plain(x.float(), *args, **kwargs)
        return plain(x, *args, **kwargs)

    return forward
