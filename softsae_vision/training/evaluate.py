"""Old module path of :mod:`softsae_vision.training.evaluation`, kept so existing imports work.

Importing this path makes it the package attribute ``softsae_vision.training.evaluate``, where
the function ``evaluate`` was; so that ``training.evaluate(...)`` keeps working either way, this
module is callable and forwards to :func:`~softsae_vision.training.evaluation.evaluate`.
"""

import sys
import types
from typing import Any

from softsae_vision.training.evaluation import (
    ALMOST_DEAD_FREQ,
    DENSE_FREQ,
    PERCENTILES,
    evaluate,
    k_hat_summary,
    latent_usage,
    open_eval_source,
    run_data_description,
)

__all__ = [
    "ALMOST_DEAD_FREQ",
    "DENSE_FREQ",
    "PERCENTILES",
    "evaluate",
    "k_hat_summary",
    "latent_usage",
    "open_eval_source",
    "run_data_description",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
