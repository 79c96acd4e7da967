"""softsae_vision: SoftSAE sparse autoencoders for vision transformers."""

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import hard_topk, soft_topk
from softsae_vision.sae import (
    BaseSAE,
    BatchTopKSAE,
    MatryoshkaSAE,
    ReLUSAE,
    SAEOutput,
    SoftSAE,
    TopKSAE,
    load_sae,
)
from softsae_vision.training import TrainConfig, evaluate, train

# Extraction pulls in timm and open_clip: load those names on first use only.
_LAZY = {
    "load_backbone": "softsae_vision.backbones",
    "open_store": "softsae_vision.data.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'softsae_vision' has no attribute {name!r}")


__all__ = [
    "BaseSAE",
    "BatchTopKSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "SAEOutput",
    "SoftSAE",
    "SoftSAEError",
    "TopKSAE",
    "TrainConfig",
    "__version__",
    "evaluate",
    "hard_topk",
    "load_backbone",
    "load_sae",
    "open_store",
    "soft_topk",
    "train",
]
