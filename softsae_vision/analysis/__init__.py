"""Analyses of an SAE on an activation store: top activations, k statistics, complexity.

Everything here computes numbers (arrays, dicts); drawing lives in :mod:`softsae_vision.viz`.
"""

from softsae_vision.analysis.complexity import (
    IMAGE_MEASURES,
    MEASURE_LABELS,
    PATCH_MEASURES,
    complexity_measures,
    patch_complexity,
)
from softsae_vision.analysis.complexity_table import (
    ComplexityTable,
    correlate_images,
    correlate_patches,
    store_complexity,
)
from softsae_vision.analysis.kmaps import MEAN_OVER_PATCHES, compute_kmaps, per_image_k
from softsae_vision.analysis.kstats import KMaps, k_maps, token_k
from softsae_vision.analysis.pairing import Pairing, pair
from softsae_vision.analysis.stats import correlate, format_correlation, rankdata
from softsae_vision.analysis.top_activations import TopActivations, feature_maps, top_activations
from softsae_vision.analysis.views import ImageViews

__all__ = [
    "IMAGE_MEASURES",
    "MEAN_OVER_PATCHES",
    "MEASURE_LABELS",
    "PATCH_MEASURES",
    "ComplexityTable",
    "ImageViews",
    "KMaps",
    "Pairing",
    "TopActivations",
    "complexity_measures",
    "compute_kmaps",
    "correlate",
    "correlate_images",
    "correlate_patches",
    "feature_maps",
    "format_correlation",
    "k_maps",
    "pair",
    "patch_complexity",
    "per_image_k",
    "rankdata",
    "store_complexity",
    "token_k",
    "top_activations",
]
