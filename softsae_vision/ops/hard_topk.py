"""Old module path of :mod:`softsae_vision.ops.topk_select`, kept so existing imports work.

The package attribute ``softsae_vision.ops.hard_topk`` is the function; ``ops/__init__`` loads
this module before binding it, so importing this path later cannot replace the function.
"""

from softsae_vision.ops.topk_select import hard_topk, hard_topk_sparse

__all__ = ["hard_topk", "hard_topk_sparse"]
