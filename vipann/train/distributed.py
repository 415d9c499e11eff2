"""PyTorch distributed helpers for the recipes (``torchrun``; gloo on CPU, NCCL on GPU).

A run started with ``torchrun --nproc_per_node N ...`` (one or many nodes) has ``WORLD_SIZE`` and
``RANK`` in its environment; :func:`init_distributed` then joins the process group and every other
helper here becomes collective. Started as a plain ``python`` process, the same code runs as a
world of one and every helper is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from vipann.utils.devices import check_device

__all__ = ["DistContext", "all_gather_rows", "broadcast_object", "init_distributed", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run.

    Attributes:
        rank: Global rank (0 in a single-process run).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        device: The device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that writes results (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in a single-process run)."""
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module, **kwargs: object) -> nn.Module:
        """Wrap ``model`` in DistributedDataParallel when distributed, else return it unchanged."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of ``value`` over processes."""
        if not self.distributed:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the ``torchrun`` process group if there is one.

    Args:
        device: ``"cpu"``, ``"cuda"`` or a specific device; default: CUDA when available. Under
            ``torchrun`` with CUDA each process takes GPU ``LOCAL_RANK``.
        timeout_s: Collective timeout.

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        ValueError: For a device this machine does not have (e.g. ``cuda`` without CUDA).
    """
    if device is not None:
        want = check_device(device)
    else:
        want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=want)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if want.type == "cuda":
        want = torch.device("cuda", local if want.index is None else want.index)
        torch.cuda.set_device(want)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if want.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistContext(rank=rank, world_size=world, local_rank=local, device=want)


def shutdown() -> None:
    """Leave the process group (safe to call in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_rows(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every process (rows may differ per process).

    Args:
        ctx: The distributed context.
        tensor: This process's rows.

    Returns:
        All rows, rank 0's first; ``tensor`` itself in a single-process run.
    """
    if not ctx.distributed:
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(ctx.world_size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
