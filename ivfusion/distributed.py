"""Running under ``torchrun``: which rank this process is, sharding work, gathering results.

``torchrun --nproc-per-node N -m ivfusion ...`` starts ``N`` processes with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in their environment (``--nnodes`` spreads them over machines). Without those
variables everything here is the single-process identity: rank 0 of 1, no process group.
The process group uses NCCL when each rank has a GPU and gloo otherwise (CPU runs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Sequence, TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "dist_info", "init_distributed", "shard", "gather_objects", "barrier", "rank_device",
           "rank0_decides"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the ranks of a ``torchrun`` launch (0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, writes reports and checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}: expected an integer, got {value!r}") from None


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the initialised process group, else from the
    ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else ``0, 1, 0``."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"$RANK={rank} and $WORLD_SIZE={world} do not describe a rank of a launch")
    return DistInfo(rank, world, _env_int("LOCAL_RANK", 0))


def rank_device(device: Any) -> Any:
    """``device`` unless it is ``None``: then this rank's GPU (``cuda:LOCAL_RANK``) when CUDA is
    available in a multi-process launch, else ``None`` (the caller's default)."""
    info = dist_info()
    if device is None and info.distributed and torch.cuda.is_available():
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


def init_distributed(device: Any = None) -> bool:
    """Join the launch's process group when ``WORLD_SIZE > 1`` and none is initialised yet.

    NCCL when ``device`` is a CUDA device (each rank on its own GPU), gloo otherwise. Returns
    whether this call created the group (the caller then destroys it with
    ``torch.distributed.destroy_process_group()`` when done).
    """
    info = dist_info()
    if not info.distributed or dist.is_initialized():
        return False
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def shard(items: Sequence[T]) -> List[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank`` (balanced to
    within one item; the union over ranks is ``items``, each item on exactly one rank)."""
    info = dist_info()
    return list(items[info.rank::info.world_size])


def gather_objects(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects; ``[obj]`` alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank0_decides(flag: bool, device: Any = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (a broadcast through ``device``, the process group's device), so
    that decisions taken on local state (a clock) agree; ``flag`` itself in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
