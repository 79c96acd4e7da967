"""Data-parallel training: the ranks ``torchrun`` started, each holding a slice of every batch.

Under ``torchrun --nproc-per-node N -m softsae_vision.cli train ...`` every rank reads the same
deterministic stream of global batches (``--batch-size`` rows each) and keeps its consecutive
slice of B / N rows, so the data order is the single-process run's. The SAE's training forward
runs under :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients;
every loss term is a mean over rows or one of the global-batch operations of
:mod:`softsae_vision.ops.batch_group`, so the averaged gradient is the single-process one.
Normalisation, b_dec and SoftSAE's k calibration are computed identically on every rank from
the same sample and then taken from rank 0 (DDP broadcasts rank 0's weights and buffers when
it wraps the model, and the buffers are broadcast again after each k calibration). Dead-latent
counters and metrics are reduced over ranks. Rank 0 alone holds the run folder (its lock,
config.json, metrics, checkpoints and final weights); on ``--resume`` it reads the checkpoint
and sends it to the others. One process (no ``WORLD_SIZE`` > 1) uses :data:`SINGLE`, whose
methods do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from softsae_vision.data.distributed import Ranks
from softsae_vision.errors import SoftSAEError
from softsae_vision.ops.batch_group import BatchGroup

T = TypeVar("T")


class _TrainForward(nn.Module):
    """The SAE's training forward as a module's ``forward``, for DDP to wrap."""

    def __init__(self, sae: nn.Module) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, xn_BD: Tensor, ctx: Any) -> Any:
        return self.sae.train_output(xn_BD, ctx)  # type: ignore[operator]


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted name, a's value, b's value) of the first leaf where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
            if found is not None:
                return found
        return None
    return None if a == b else (prefix, a, b)


class TrainRanks(Ranks):
    """This process's ``rank`` among the ``world`` processes training one run together.

    The ranks themselves (``current``, ``main``, ``gather``, ``barrier``) are extraction's
    :class:`~softsae_vision.data.distributed.Ranks`; this adds what training needs of them.
    """

    @property
    def batch_group(self) -> BatchGroup | None:
        """What the SAE's batch-level operations reduce over (None: one process)."""
        return None if self.world == 1 else BatchGroup(self.rank, self.world)

    # ------------------------------------------------------------ setup
    def device(self, device: torch.device) -> torch.device:
        """On CUDA each rank takes GPU ``LOCAL_RANK`` (unless a GPU index was given)."""
        if self.world == 1 or device.type != "cuda" or device.index is not None:
            return device
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device

    def check_batch_size(self, batch_size: int) -> None:
        """Each rank must hold an equal slice of the global batch."""
        if batch_size % self.world:
            raise SoftSAEError(
                f"--batch-size {batch_size} cannot be split equally over the {self.world} "
                f"training processes; pick a multiple of {self.world}"
            )

    def agree_on_settings(self, settings: dict[str, Any]) -> None:
        """Refuse, on every rank, when the ranks were started with different settings."""
        if self.world == 1:
            return
        every = self.gather(settings)
        for rank, other in enumerate(every[1:], start=1):
            found = _first_difference(every[0], other)
            if found is not None:
                name, mine, theirs = found
                raise SoftSAEError(
                    f"the training ranks were started with different arguments: {name} is "
                    f"{mine!r} on rank 0 but {theirs!r} on rank {rank}; start every rank with "
                    "the same command"
                )

    def on_main(self, make: Callable[[], T]) -> T:
        """``make()`` run on rank 0 and sent to every rank; its SoftSAEError is raised on all."""
        if self.world == 1:
            return make()
        import torch.distributed as dist

        box: list[Any] = [None]
        error: SoftSAEError | None = None
        if self.main:
            try:
                box[0] = ("ok", make())
            except SoftSAEError as err:
                error, box[0] = err, ("error", str(err))
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise SoftSAEError(value)
        return cast(T, value)

    def wrap(self, sae: nn.Module, device: torch.device) -> Callable[[Tensor, Any], Any]:
        """The training forward: ``sae.train_output``, under DDP when there are several ranks.

        DDP takes rank 0's weights and buffers when it wraps the model.
        """
        if self.world == 1:
            return sae.train_output  # type: ignore[return-value]
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            _TrainForward(sae),
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,  # every buffer update is computed identically on all ranks
            # SoftSAE's hard phase leaves its k estimator out of the graph
            find_unused_parameters=hasattr(sae, "k_estimator"),
        )

    # ------------------------------------------------------------ every step
    def rows(self, batches: Iterator[Any]) -> Iterator[Any]:
        """This rank's consecutive slice of every global batch of ``batches``."""
        if self.world == 1:
            yield from batches
            return
        for batch in batches:
            n = len(batch) // self.world
            yield batch[self.rank * n : (self.rank + 1) * n]

    def global_rows(self, n_local: int) -> int:
        return n_local * self.world

    def any_(self, flags: Tensor) -> Tensor:
        """``flags`` (bool) or-ed over ranks, in place."""
        if self.world > 1:
            import torch.distributed as dist

            as_int = flags.to(torch.uint8)
            dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
            flags.copy_(as_int.bool())
        return flags

    def stop(self, requested: bool) -> bool:
        """Whether any rank was asked to stop (Ctrl-C): all stop at the same step."""
        if self.world == 1:
            return requested
        import torch.distributed as dist

        flag = torch.tensor([int(requested)], dtype=torch.int32)  # host-side: gloo
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def gather_rows(self, t_N: Tensor) -> Tensor:
        """Every rank's rows of ``t_N``, in rank order (the global batch's order)."""
        if self.world == 1:
            return t_N
        import torch.distributed as dist

        parts = [torch.empty_like(t_N) for _ in range(self.world)]
        dist.all_gather(parts, t_N.contiguous())
        return torch.cat(parts)

    def mean(self, values: Tensor) -> Tensor:
        """``values`` averaged over ranks (per-rank means of equal slices: the global means)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world

    def broadcast_buffers_(self, module: nn.Module) -> None:
        """Overwrite ``module``'s buffers (normalisation, calibration) with rank 0's."""
        if self.world > 1:
            import torch.distributed as dist

            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


SINGLE = TrainRanks()
"""One process: every method is the identity or does nothing."""

__all__ = ["SINGLE", "TrainRanks"]
