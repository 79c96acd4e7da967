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

# Extraction pulls in timm and open_clip, rendering matplotlib: load those names on first use.
_LAZY = {
    "load_backbone": "softsae_vision.backbones",
    "open_store": "softsae_vision.data.store",
    "StoreSource": "softsae_vision.data.store_source",
    **dict.fromkeys(["feature_maps", "k_maps", "model_views", "overlay"], "softsae_vision.maps"),
    **dict.fromkeys(
        [
            "top_activations",
            "TopActivations",
            "KMaps",
            "complexity_measures",
            "patch_complexity",
            "correlate",
            "pair",
        ],
        "softsae_vision.analysis",
    ),
    **dict.fromkeys(
        [
            "render_feature",
            "render_feature_index",
            "render_kmap",
            "render_kmap_grid",
            "render_complexity_scatter",
            "save_figure",
            "write_features",
            "write_kmaps",
            "write_complexity",
            "build_report",
        ],
        "softsae_vision.viz",
    ),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'softsae_vision' has no attribute {name!r}")


__all__ = [
    *_LAZY,
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
    "load_sae",
    "soft_topk",
    "train",
]
