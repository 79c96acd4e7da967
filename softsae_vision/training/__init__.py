"""Training loop, schedules, losses and held-out evaluation.

``TrainConfig`` loads at once (it imports no torch, so the command line builds its flags from it
before any heavy import); ``train``, ``TrainResult`` and ``evaluate`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from softsae_vision.training.config import TrainConfig

if TYPE_CHECKING:
    from softsae_vision.training.evaluation import evaluate
    from softsae_vision.training.trainer import TrainResult, train

_LAZY = {
    "evaluate": "softsae_vision.training.evaluation",
    "TrainResult": "softsae_vision.training.trainer",
    "train": "softsae_vision.training.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
