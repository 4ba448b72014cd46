"""Multi-process training helpers: torchrun detection, process group, DDP wrapping.

The same ``livervolumetry-train train ...`` command runs in one process or under
``torchrun --nproc_per_node=N -m LiverVolumetryTraining.cli train ...``. torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1 a process group is
started (NCCL on CUDA, gloo on the CPU). Rank 0 ("main") validates and writes the log,
checkpoints and config; the others wait at barriers.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

from LiverVolumetryLib.errors import LiverVolumetryError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """Whether a process group is active (more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: validates, logs, writes checkpoints."""
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks (collective: every rank must call it)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        """Wait until every rank arrives (no-op in a single process)."""
        if self.distributed:
            torch.distributed.barrier()


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Rank 0, or no torchrun at all (usable before the process group exists)."""
    env = torchrun_env()
    return env is None or env[0] == 0


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (``cuda:LOCAL_RANK``) when available, else the CPU; ``cpu``; ``cuda``."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise LiverVolumetryError(f"unknown device {name!r} (use auto, cpu or cuda)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LiverVolumetryError(f"device {name!r} requested but CUDA is not available")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))


@contextmanager
def distributed_session(device: str = "auto", timeout_minutes: float = 60.0) -> Iterator[DistContext]:
    """Start the process group under torchrun (WORLD_SIZE > 1) and always destroy it.

    A process group started by the caller is reused and left alone. The long timeout
    covers rank 0 preprocessing and validating while the others wait at a barrier.
    """
    env = torchrun_env()
    rank, world, local_rank = env if env else (0, 1, 0)
    dev = resolve_device(device, local_rank)
    started = False
    if world > 1 and not torch.distributed.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes))
        started = True
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        yield DistContext(rank, world, local_rank, dev)
    finally:
        if started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def wrap_model(network: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Move to the device; under DDP wrap it (BatchNorm -> SyncBatchNorm on CUDA only)."""
    network = network.to(ctx.device)
    if not ctx.distributed:
        return network
    if ctx.device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[ctx.device.index],
                                                         output_device=ctx.device.index)
    return torch.nn.parallel.DistributedDataParallel(network)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside a DDP wrapper (its state dict has no ``module.`` prefix)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


def split_count(total: int, rank: int, world_size: int) -> int:
    """This rank's share of ``total`` items (shares differ by at most one; at least 1)."""
    return max(1, total // world_size + (1 if rank < total % world_size else 0))


def split_items(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's items of a global batch (round-robin); a rank left without any reuses one."""
    if not items:
        return []
    mine = list(items[rank::world_size])
    return mine or [items[rank % len(items)]]
