"""Scoring across processes with torch.distributed: each rank scores a shard, sums are all-reduced.

Started by `torchrun --nproc_per_node N -m pruning score ...`; gloo on CPU, nccl on GPU.  Without torchrun's
environment everything here is a no-op, so the same code runs single-process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process was started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> tuple[int, int]:
    """Join the process group if launched by torchrun; returns (rank, world size)."""
    if not launched():
        return 0, 1
    if not dist.is_initialized():
        from ..devices import torch_device

        dev = torch_device(device)
        if dev.type == "cuda":  # one GPU per rank: LOCAL_RANK picks it (torch_device), nccl between them
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sums(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum per-filter statistics over ranks (same keys on every rank, in sorted order); identity when single."""
    if rank_world()[1] == 1:
        return stats
    out = {}
    for key in sorted(stats):
        t = stats[key].clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[key] = t
    return out


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank, in rank order (sizes may differ)."""
    if rank_world()[1] == 1:
        return tensor
    parts: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat([p for p in parts if p is not None], 0).to(tensor.device)


def finish() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
