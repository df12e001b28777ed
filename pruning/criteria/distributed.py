"""Work across torchrun processes with torch.distributed: one rule for sharding, and the few collectives we use.

`torchrun --nproc_per_node N -m pruning score ...` scores a shard of the calibration batches on each rank and
all-reduces the sums; `torchrun ... -m pruning compare ...` gives each rank a shard of the sweep's rows.  Both
split their work with `shard`.  Gloo on CPU, nccl on GPU (compare: gloo, it only synchronises).  Without
torchrun's environment everything here is a no-op, so the same code runs single-process.
"""

from __future__ import annotations

import datetime
import os
import pickle
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import PruningError

T = TypeVar("T")

_ALONE: list[bool] = []  # inside `alone()`: this process's work is its own, the criteria must not all-reduce


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank `rank`'s share of `items` out of `world`: a contiguous block, the blocks' sizes differing by at most one
    (the first ranks take the extra items), so that the blocks in rank order are `items` again.  Contiguous, not
    round robin: gathered results come back in single-process order, and a compare rank gets a criterion's
    targets together (scored once, reused)."""
    if not 0 <= rank < world:
        raise PruningError(f"rank {rank} is not in a world of {world} process(es); check torchrun's RANK and "
                           f"WORLD_SIZE")
    base, extra = divmod(len(items), world)
    start = rank * base + min(rank, extra)
    return list(items[start:start + base + (rank < extra)])


def launched() -> bool:
    """Whether this process was started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu", backend: str | None = None,
         timeout: datetime.timedelta | None = None) -> tuple[int, int]:
    """Join the process group if launched by torchrun; returns (rank, world size).  `backend` defaults to nccl
    for a GPU and gloo otherwise; `timeout` bounds each collective (torch's default when None)."""
    if not launched():
        return 0, 1
    if not dist.is_initialized():
        from ..devices import torch_device

        dev = torch_device(device)
        if dev.type == "cuda":  # one GPU per rank: LOCAL_RANK picks it (torch_device), nccl between them
            torch.cuda.set_device(dev)
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                **({"timeout": timeout} if timeout else {}))
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def group(device: str = "cpu", backend: str | None = None,
          timeout: datetime.timedelta | None = None) -> Iterator[tuple[int, int]]:
    """`with group(...) as (rank, world):` joins torchrun's process group (`init`) and leaves it afterwards,
    unless the process had joined it before; (0, 1) single-process."""
    joined_before = dist.is_available() and dist.is_initialized()
    ranks = init(device, backend, timeout)
    try:
        yield ranks
    finally:
        if not joined_before:
            finish()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the processes sharing the current work: the initialised group's, or (0, 1)
    single-process and inside `alone()`."""
    if not _ALONE and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def alone() -> Iterator[None]:
    """Within the block this process works on its own although it is in a group (rank_world() is (0, 1), so the
    criteria score all their batches and all-reduce nothing): a compare rank scores whole rows by itself."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


class RankFailedError(PruningError):
    """Another rank of the torchrun job stopped (it died or failed) before reaching a point all ranks must reach."""


def barrier() -> None:
    """Wait until every rank of the group gets here (no-op single-process).  RankFailedError when a rank died
    before arriving (gloo sees its connection close at once) or the group's timeout passed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        try:
            dist.barrier()
        except RuntimeError as exc:  # torch's DistBackendError and gloo's errors are RuntimeErrors
            raise RankFailedError(f"another rank stopped before rank {dist.get_rank()} finished waiting for it "
                                  f"({str(exc).splitlines()[0][:200]})") from exc


def from_rank0(make: Callable[[], T]) -> T:
    """`make()` run on rank 0 alone and its result given to every rank; an exception `make` raises is raised on
    every rank, so that all of them stop, not only rank 0.  Single-process: `make()`."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return make()
    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box = [(make(), None)]
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised there
            box = [(None, exc if _picklable(exc) else PruningError(f"{type(exc).__name__}: {exc}"))]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as exc:
        raise RankFailedError(f"rank 0 stopped before it handed on its result ({str(exc).splitlines()[0][:200]})") \
            from exc
    value, error = box[0]
    if error is not None:
        raise error
    return value


def _picklable(exc: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - whatever pickling raises
        return False
    return True


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
