"""Complexity of every stored image (and patch), and its correlation with per-image k.

Measures are computed on the model's view of each image (see :mod:`.views`), so a patch's
complexity is that of the pixels its token saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from softsae_vision.analysis.complexity import (
    IMAGE_MEASURES,
    PATCH_MEASURES,
    complexity_measures,
    patch_complexity,
)
from softsae_vision.analysis.stats import correlate
from softsae_vision.analysis.views import ImageViews
from softsae_vision.data.store import Store

MAX_PATCH_PAIRS = 200_000
"""Per-patch correlations use at most this many patches (whole images, chosen at random)."""
PATCH_BOOT = 200
"""Bootstrap resamples for per-patch correlations (each resample re-ranks every patch)."""


@dataclass
class ComplexityTable:
    """Complexity measures of store images: per image (N,) and per patch (N, h, w)."""

    rows: np.ndarray  # (N,) store rows
    image: dict[str, np.ndarray]  # measure -> (N,)
    patch: dict[str, np.ndarray]  # measure -> (N, h, w); empty if not computed


def store_complexity(
    store: Store,
    rows: np.ndarray | None = None,
    *,
    patches: bool = True,
    progress: bool = False,
) -> ComplexityTable:
    """Complexity measures of ``rows`` of the store (default: every stored image)."""
    views = ImageViews(store, cache_size=1)
    rows = np.arange(len(views)) if rows is None else np.asarray(rows, dtype=np.int64)
    image = {name: np.zeros(len(rows)) for name in IMAGE_MEASURES}
    patch = {name: np.zeros((len(rows), *store.grid)) for name in PATCH_MEASURES} if patches else {}
    for i, row in enumerate(tqdm(rows, unit="img", desc="complexity", disable=not progress)):
        view = views[int(row)]
        for name, value in complexity_measures(view).items():
            image[name][i] = value
        if patches:
            for name, values in patch_complexity(view, store.grid).items():
                patch[name][i] = values
    return ComplexityTable(rows, image, patch)


def correlate_images(
    k_by_variable: dict[str, np.ndarray],
    table: ComplexityTable,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{k variable: {measure: correlate(...)}}`` over images (rows aligned with the table)."""
    return {
        var: {m: correlate(table.image[m], k, n_boot, seed=seed) for m in table.image}
        for var, k in k_by_variable.items()
    }


def correlate_patches(
    k_patch: np.ndarray,
    table: ComplexityTable,
    n_boot: int = PATCH_BOOT,
    seed: int = 0,
    max_pairs: int = MAX_PATCH_PAIRS,
) -> dict[str, dict]:
    """Per-patch k (N, h, w) against each local measure, pooled over images.

    Patches of one image are not independent, so the bootstrap resamples whole images.
    Large stores are subsampled to at most ``max_pairs`` patches (whole images, at random).
    """
    n, per_image = len(k_patch), int(np.prod(k_patch.shape[1:]))
    keep = np.arange(n)
    if n * per_image > max_pairs:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(n, size=max(1, max_pairs // per_image), replace=False))
    groups = np.repeat(keep, per_image)
    k = k_patch[keep].ravel()
    out = {}
    for name, values in table.patch.items():
        result = correlate(values[keep].ravel(), k, n_boot, groups=groups, seed=seed)
        result["n_images_used"] = int(len(keep))
        out[name] = result
    return out
