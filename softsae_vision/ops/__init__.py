"""Selection operators: LapSum soft top-k (training) and per-row hard top-k (inference)."""

from softsae_vision.ops.hard_topk import hard_topk
from softsae_vision.ops.soft_topk import soft_topk, soft_topk_reference

__all__ = ["hard_topk", "soft_topk", "soft_topk_reference"]
