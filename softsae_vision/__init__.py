"""softsae_vision: SoftSAE sparse autoencoders for vision transformers."""

from softsae_vision._version import __version__
from softsae_vision.errors import SoftSAEError

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


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'softsae_vision' has no attribute {name!r}")


__all__ = [*_LAZY, "SoftSAEError", "__version__"]
