"""Batch-level operations over a global batch that data-parallel ranks share row-wise.

Under ``torchrun`` each training process holds an equal slice of the global batch. A loss that
is a mean over rows needs nothing more (DistributedDataParallel averages the ranks' gradients),
but a few operations look at the batch as a whole: BatchTopK's threshold, the price of
SoftSAE's k-target allocation and its hinge on the batch mean of k̂, AuxK's variance. They call
these functions. With no group active (one process, and always outside training) each is
exactly the plain single-batch operation; with one (set by the trainer while it trains) each
returns the global batch's value, its gradient scaled for DDP's averaging over ranks, so the
ranks' averaged gradient equals the single-process gradient.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import torch
from torch import Tensor

_ACTIVE: contextvars.ContextVar[BatchGroup | None] = contextvars.ContextVar(
    "softsae_batch_group", default=None
)


@dataclass(frozen=True)
class BatchGroup:
    """This process's ``rank`` among ``world`` ranks, each holding an equal slice of the batch."""

    rank: int
    world: int


def active() -> BatchGroup | None:
    """The group the current training step's batch is split over (None: one process)."""
    return _ACTIVE.get()


def activate(group: BatchGroup | None) -> contextvars.Token:
    """Make ``group`` active; pass the returned token to :func:`deactivate`."""
    return _ACTIVE.set(group)


def deactivate(token: contextvars.Token) -> None:
    _ACTIVE.reset(token)


def global_rows(n_local: int) -> int:
    """Rows in the global batch when this rank holds ``n_local``."""
    group = active()
    return n_local if group is None else n_local * group.world


def prefix_rows(n_local: int, limit: int) -> tuple[int, int]:
    """(this rank's rows among the global batch's first ``limit``, that prefix's global size).

    Ranks hold consecutive slices in rank order, so the prefix is rank 0's rows first.
    """
    group = active()
    if group is None:
        n = min(n_local, limit)
        return n, n
    total = min(n_local * group.world, limit)
    return max(0, min(n_local, total - group.rank * n_local)), total


def _all_reduce(t: Tensor, op: torch.distributed.ReduceOp.RedOpType) -> Tensor:
    import torch.distributed as dist

    out = t.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def mean(t_N: Tensor, n_global: int | None = None) -> Tensor:
    """Mean over dim 0 of the global batch's rows of ``t_N`` (``n_global`` rows in all).

    ``n_global`` defaults to this rank's rows times the world size. The value is the global
    mean on every rank; the gradient reaching this rank's rows is world / n_global per row,
    which DDP's averaging over ranks turns into the single-process 1 / n_global.
    """
    group = active()
    if group is None:
        return t_N.mean(0)
    import torch.distributed as dist

    n = len(t_N) * group.world if n_global is None else n_global
    local = t_N.sum(0)
    value = _all_reduce(local, dist.ReduceOp.SUM) / n
    scaled = local * (group.world / n)
    return scaled + (value - scaled).detach()


def kth_largest(values_N: Tensor, k: int) -> Tensor:
    """The ``k``-th largest entry of the global batch's ``values_N`` (a 0-d tensor, no grad)."""
    group = active()
    values_N = values_N.detach()
    if group is None:
        return values_N.topk(k, sorted=False).values.min()
    import torch.distributed as dist

    top = values_N if len(values_N) <= k else values_N.topk(k, sorted=False).values
    padded = top.new_full((k,), -torch.inf)  # every rank sends k entries
    padded[: len(top)] = top
    parts = [torch.empty_like(padded) for _ in range(group.world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts).topk(k, sorted=False).values.min()


def minimum(t: Tensor) -> Tensor:
    """The smallest value of ``t`` (a 0-d tensor) over every rank (no grad)."""
    if active() is None:
        return t
    import torch.distributed as dist

    return _all_reduce(t, dist.ReduceOp.MIN)


__all__ = [
    "BatchGroup",
    "activate",
    "active",
    "deactivate",
    "global_rows",
    "kth_largest",
    "mean",
    "minimum",
    "prefix_rows",
]
