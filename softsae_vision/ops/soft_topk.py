"""Old module path of :mod:`softsae_vision.ops.lapsum_topk`, kept so existing imports work.

The package attribute ``softsae_vision.ops.soft_topk`` is the function; ``ops/__init__`` loads
this module before binding it, so importing this path later cannot replace the function.
"""

from softsae_vision.ops.lapsum_topk import (
    DEBUG_ENV,
    debug_checks,
    dense_soft_topk,
    make_plan,
    prepare,
    soft_topk,
    soft_topk_reference,
)

__all__ = [
    "DEBUG_ENV",
    "debug_checks",
    "dense_soft_topk",
    "make_plan",
    "prepare",
    "soft_topk",
    "soft_topk_reference",
]
