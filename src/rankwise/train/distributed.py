"""Data parallelism for the training loop on torch.distributed (``torchrun``, ``accelerate launch``).

Every rank holds the whole model and trains on its own slice of each step's windows; gradients are
summed across ranks before clipping and the optimizer step, so every rank takes the same step (and a
low-rank optimizer computes the same subspace from the same summed gradient). Gradients are reduced
explicitly, in flat buckets, instead of through a ``DistributedDataParallel`` wrapper: the loop's
loss calls the model's body and head separately (chunked cross-entropy), which DDP's forward hook
would not see, and the same code then serves every `Trainable`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: Gradients are all-reduced in flat buckets of about this many bytes (fewer, larger messages).
BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``rank`` of ``world`` (0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def join() -> Ranks:
    """Join the process group that ``torchrun``/``accelerate`` describe in the environment (WORLD_SIZE,
    RANK, MASTER_ADDR, ...), once; a single process without them is rank 0 of 1. The backend is
    ``$RANKWISE_DIST_BACKEND`` if set, else NCCL with CUDA and gloo on CPU."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    backend = os.environ.get("RANKWISE_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), dist.get_world_size())


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def sum_gradients(params: list[torch.Tensor], ranks: Ranks) -> None:
    """Replace every ``p.grad`` by its sum over ranks (in place; the same bits on every rank)."""
    if ranks.world == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():  # a flat bucket needs one dtype
        bucket: list[torch.Tensor] = []
        size = 0
        for grad in grads:
            bucket.append(grad)
            size += grad.numel() * grad.element_size()
            if size >= BUCKET_BYTES:
                _reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            _reduce_bucket(bucket)


def _reduce_bucket(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_scalar(value: float, ranks: Ranks) -> float:
    """``value`` summed over ranks (fp64)."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)


#: A process on its own.
SINGLE = Ranks()
