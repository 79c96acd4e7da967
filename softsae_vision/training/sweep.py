"""Several SAEs trained on one pass over the data: ``train_many`` and the sweep's run folders.

Every member sees the same batches, read (and sent to the device) once per step, and does
exactly the arithmetic ``train`` would do for it alone, so each member's weights equal those
of the same configuration trained alone with the same seed (bit for bit on a CPU). With
``out`` each member has its own run directory ``out/<name>/`` (``<arch>-k<K>`` by default),
which ``load_sae`` and every analysis command accept; rerunning with ``resume=True`` continues
every unfinished member and skips the finished ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from softsae_vision.data.source import ActivationSource
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE
from softsae_vision.training.config import TrainConfig
from softsae_vision.training.trainer import TrainResult, train_group


def member_name(sae: BaseSAE) -> str:
    """``<arch>-k<K>`` (or just ``<arch>`` for architectures without a k)."""
    k = sae.target_l0
    return sae.architecture if k is None else f"{sae.architecture}-k{k:g}"


def _named(saes: Mapping[str, BaseSAE] | Sequence[BaseSAE]) -> dict[str, BaseSAE]:
    if isinstance(saes, Mapping):
        named = dict(saes)
    else:
        named = {}
        for sae in saes:
            name = member_name(sae)
            if name in named:
                raise SoftSAEError(
                    f"two sweep members would both be named {name!r}; pass a dict of names"
                )
            named[name] = sae
    if not named:
        raise SoftSAEError("train_many needs at least one SAE")
    bad = [n for n in named if not n or "/" in n or n in (".", "..")]
    if bad:
        raise SoftSAEError(f"sweep member names must be plain folder names, got {bad}")
    return named


def train_many(
    saes: Mapping[str, BaseSAE] | Sequence[BaseSAE],
    data: ActivationSource | Iterable[torch.Tensor] | torch.Tensor,
    cfg: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, TrainResult]:
    """Train every SAE on the same batches; return name → TrainResult.

    ``saes`` is a dict name → SAE or a list (named ``<arch>-k<K>``). With ``out`` each
    member is checkpointed and saved in ``out/<name>/``; ``resume=True`` continues an
    interrupted sweep. A member that fails stops the sweep with a SoftSAEError naming it; the
    others are checkpointed and resume with the rest.
    """
    named = _named(saes)
    root = Path(out) if out is not None else None
    members = {name: (sae, None if root is None else root / name) for name, sae in named.items()}
    return train_group(members, data, cfg, resume=resume, progress=progress)


__all__ = ["member_name", "train_many"]
