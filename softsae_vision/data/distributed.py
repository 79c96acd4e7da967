"""The process group an extraction runs in: one process, or the ranks ``torchrun`` started.

Uses PyTorch's own machinery: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the
default process group is initialised here if the caller has not done it (gloo for CPU
tensors, NCCL for CUDA ones), with a long timeout since ranks finish their shares at
different times.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from softsae_vision.errors import SoftSAEError

BARRIER_TIMEOUT = datetime.timedelta(hours=48)
_R = TypeVar("_R", bound="Ranks")


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world`` extraction processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls: type[_R]) -> _R:
        """The default process group, initialising it under torchrun; else a single process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_available():  # pragma: no cover
            raise SoftSAEError("this PyTorch build has no torch.distributed; run one process")
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, error: str | None) -> None:
        """Raise the first rank's error (if any) on every rank, so no rank waits for a dead one."""
        errors = self.gather(error)
        for rank, message in enumerate(errors):
            if message is not None:
                prefix = "" if self.world == 1 else f"rank {rank}: "
                raise SoftSAEError(prefix + message)
