"""Mixed precision in training: the CPU bfloat16 convolutions PyTorch gets wrong (innermost
output 1 with stride > 1, pytorch/pytorch#169688) run in float32, and a loss that is not
finite stops the run with its last good checkpoint kept."""

from __future__ import annotations

import math

import pytest
import torch
from test_training_runs import TINY, one_line_error, train_args, write_case

import LiverVolumetryTraining.train as train_module
from LiverVolumetryTraining.cli import main
from LiverVolumetryTraining.precision import autocast_dtype, guard_bf16_convolutions, innermost_output_size

CPU_BF16 = autocast_dtype("bf16", torch.device("cpu")) is not None


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1),
                                                               (3, 3, 2, 2), (1, 2, 0, 1), (5, 2, 2, 1),
                                                               (3, 2, "valid", 1), (3, 1, "same", 1)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 16])
def test_innermost_output_size_is_the_convolutions(kernel, stride, padding, dilation, size):
    conv = torch.nn.Conv3d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    pad = {"valid": 0, "same": kernel // 2}.get(padding, padding)
    if size + 2 * pad < dilation * (kernel - 1) + 1:
        return  # no output at all
    assert innermost_output_size(conv, size) == conv(torch.zeros(1, 1, 3, 3, size)).shape[-1]


def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    output, reference = output.detach().float(), reference.detach()
    return float((output - reference).abs().nan_to_num(1e30).max() / reference.abs().max())


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no fast bfloat16: training runs in float32")
@pytest.mark.parametrize("depth", [1, 2])
def test_guarded_strided_conv_with_one_output_slice_is_right_under_bf16_autocast(depth):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv3d(16, 32, 3, stride=2, padding=1))
    x = torch.randn(2, 16, 20, 20, depth)
    reference = network(x)
    assert guard_bf16_convolutions(network) == ["0"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guarded = network(x)
    assert guarded.dtype == torch.float32 and _relative_error(guarded, reference) < 1e-5


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no fast bfloat16: training runs in float32")
def test_other_convolutions_keep_bfloat16():
    torch.manual_seed(0)
    strided, plain = torch.nn.Conv3d(8, 8, 3, stride=2, padding=1), torch.nn.Conv3d(8, 8, 3, padding=1)
    network = torch.nn.Sequential(strided, plain)
    keys = list(network.state_dict())
    assert guard_bf16_convolutions(network) == ["0"]
    assert guard_bf16_convolutions(network) == []  # guarding twice changes nothing
    assert list(network.state_dict()) == keys  # checkpoints are the plain network's
    x = torch.randn(1, 8, 12, 12, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert strided(x).dtype == torch.bfloat16  # innermost output 4: oneDNN's bf16 is right there
        assert plain(torch.randn(1, 8, 6, 6, 1)).dtype == torch.bfloat16  # stride 1: not guarded
    assert network(x).dtype == torch.float32  # no autocast: as before


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no fast bfloat16: training runs in float32")
def test_a_bf16_training_unet_on_thin_patches_matches_float32_closely():
    """The liver-mri-4mm situation: 16-slice patches through four stride-2 levels."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32, 64, 64),
                   strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
    x = torch.randn(1, 1, 64, 64, 16)  # the deepest level: 4 x 4 x 2 -> 2 x 2 x 1 (smaller ones escape the bug)
    with torch.no_grad():
        reference = network(x)
        guard_bf16_convolutions(network)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = network(x)
    assert torch.isfinite(output).all() and _relative_error(output, reference) < 0.05


def _unet_gradients(network, x, target, amp: bool) -> torch.Tensor:
    network.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        output = network(x)
    (output.float() * target).mean().backward()
    return torch.cat([p.grad.flatten() for p in network.parameters() if p.dim() > 1])


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no fast bfloat16: training runs in float32")
def test_bf16_unet_gradients_on_thin_patches_are_close_to_float32_and_repeatable():
    """The up-sampling from one slice: its backward pass meets the wrong kernel too."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32, 64, 64),
                   strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
    x, target = torch.randn(1, 1, 64, 64, 16), torch.randn(1, 2, 64, 64, 16)
    reference = _unet_gradients(network, x, target, amp=False)
    guard_bf16_convolutions(network)
    first, second = (_unet_gradients(network, x, target, amp=True) for _ in range(2))
    assert torch.equal(first, second)
    assert float((first - reference).norm() / reference.norm()) < 0.3  # bfloat16's own error: about 0.17


def test_a_loss_that_is_not_finite_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    for k in (1, 2, 3):
        write_case(tmp_path / "data", k)
    recipe_file = tmp_path / "tiny.json"
    recipe_file.write_text(__import__("json").dumps(TINY), encoding="utf-8")
    loss_of = train_module._loss
    calls = []

    def failing_at_the_third_step(name):
        loss = loss_of(name)

        def compute(logits, target):
            calls.append(1)
            value = loss(logits, target)
            return value * float("nan") if len(calls) == 3 else value
        return compute

    monkeypatch.setattr(train_module, "_loss", failing_at_the_third_step)
    run = tmp_path / "run"
    code = main(train_args(tmp_path / "data", run, recipe_file, "--val-cases", "3", "--iterations", "4",
                           "--validate-every", "2"))
    assert code == 1
    assert one_line_error(capsys).endswith(f"{run}: the training loss is not finite (nan) at iteration 3; the run "
                                           "stops, its last checkpoint kept (try a lower learning rate, or "
                                           "precision fp32)")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["iteration"] == 2
    assert all(math.isfinite(float(v.float().abs().sum())) for v in state["model"].values())
    monkeypatch.setattr(train_module, "_loss", loss_of)
    assert main(train_args(tmp_path / "data", run, recipe_file, "--val-cases", "3", "--iterations", "4",
                           "--validate-every", "2")) == 0  # re-running resumes from iteration 2
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 4
