"""softsae_vision: SoftSAE sparse autoencoders for vision transformers."""

from typing import TYPE_CHECKING

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time __getattr__ imports on first use
    from softsae_vision.analysis import (
        KMaps,
        TopActivations,
        complexity_measures,
        correlate,
        pair,
        patch_complexity,
        top_activations,
    )
    from softsae_vision.backbones import load_backbone
    from softsae_vision.data.store import open_store
    from softsae_vision.data.store_source import StoreSource
    from softsae_vision.maps import feature_maps, k_maps, model_views, overlay
    from softsae_vision.ops import hard_topk, soft_topk
    from softsae_vision.sae import (
        BaseSAE,
        BatchTopKSAE,
        MatryoshkaSAE,
        ReLUSAE,
        Run,
        SAEOutput,
        SoftSAE,
        TopKSAE,
        load_run,
        load_sae,
    )
    from softsae_vision.training import TrainConfig, evaluate, train
    from softsae_vision.viz import (
        build_report,
        render_complexity_scatter,
        render_feature,
        render_feature_index,
        render_kmap,
        render_kmap_grid,
        save_figure,
        write_complexity,
        write_features,
        write_kmaps,
    )

# Every other name loads on first use, so that `softsae --help` and argument errors answer
# without importing torch (and extraction's timm/open_clip, rendering's matplotlib).
_LAZY = {
    **dict.fromkeys(["hard_topk", "soft_topk"], "softsae_vision.ops"),
    **dict.fromkeys(
        [
            "BaseSAE",
            "BatchTopKSAE",
            "MatryoshkaSAE",
            "ReLUSAE",
            "Run",
            "SAEOutput",
            "SoftSAE",
            "TopKSAE",
            "load_run",
            "load_sae",
        ],
        "softsae_vision.sae",
    ),
    **dict.fromkeys(["TrainConfig", "evaluate", "train"], "softsae_vision.training"),
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


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'softsae_vision' has no attribute {name!r}")


# Spelled out (not built from _LAZY) so that type checkers can read it; tests/test_api.py checks
# that it, _LAZY and the TYPE_CHECKING imports name the same things.
__all__ = [
    "BaseSAE",
    "BatchTopKSAE",
    "KMaps",
    "MatryoshkaSAE",
    "ReLUSAE",
    "Run",
    "SAEOutput",
    "SoftSAE",
    "SoftSAEError",
    "StoreSource",
    "TopActivations",
    "TopKSAE",
    "TrainConfig",
    "__version__",
    "build_report",
    "complexity_measures",
    "correlate",
    "evaluate",
    "feature_maps",
    "hard_topk",
    "k_maps",
    "load_backbone",
    "load_run",
    "load_sae",
    "model_views",
    "open_store",
    "overlay",
    "pair",
    "patch_complexity",
    "render_complexity_scatter",
    "render_feature",
    "render_feature_index",
    "render_kmap",
    "render_kmap_grid",
    "save_figure",
    "soft_topk",
    "top_activations",
    "train",
    "write_complexity",
    "write_features",
    "write_kmaps",
]
