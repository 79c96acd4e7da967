"""``softsae complexity``: does the SAE spend more features on more complex images?

Per image: complexity measures of the model's view, and k — the mean over patches of predicted
k̂ for a SoftSAE, or of realised L0 for baselines; plus the CLS token's k where the SAE was
trained on CLS tokens. Spearman and Pearson correlations with bootstrap 95% CIs, per image and
per patch (patch-level intervals resample whole images). Writes ``complexity.csv`` (one row per
image), ``complexity.json`` (the correlations) and scatter / density figures.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._deprecated import deprecated
from softsae_vision.analysis.complexity import MEASURE_LABELS
from softsae_vision.analysis.complexity_table import (
    ComplexityTable,
    correlate_images,
    correlate_patches,
    store_complexity,
)
from softsae_vision.analysis.kmaps import MEAN_OVER_PATCHES
from softsae_vision.analysis.kmaps import per_image_k as _per_image_k
from softsae_vision.analysis.kstats import QUANTITY_LABELS, QUANTITY_SYMBOLS, KMaps
from softsae_vision.analysis.pairing import Pairing
from softsae_vision.analysis.stats import format_correlation
from softsae_vision.analysis.views import ImageViews
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.complexity_figures import render_complexity_scatter, render_patch_density
from softsae_vision.viz.outputs import save_named, summary_header, write_summary, write_table
from softsae_vision.viz.style import FIGURE_FORMATS
from softsae_vision.vocab import CLS, EMBED

log = logging.getLogger(__name__)

VARIABLE_TITLES = {
    MEAN_OVER_PATCHES: "per-image {sym} = mean over patches",
    CLS: "{sym} of the CLS token",
    EMBED: "{sym} of the pooled embedding",
}


@dataclass
class ComplexityResult:
    """What :func:`write_complexity` produced."""

    out: Path
    quantity: str
    k: dict[str, np.ndarray]  # k variable -> (N,) per image
    table: ComplexityTable
    image_stats: dict[str, dict[str, dict]]  # k variable -> measure -> correlate() result
    patch_stats: dict[str, dict]  # measure -> correlate() result (empty if no patch maps)
    note: str
    k_patch: np.ndarray | None = None  # (N, h, w) per-patch k, aligned with table rows
    figures: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def headline(self, measure: str = "jpeg_bpp", variable: str | None = None) -> str:
        """One line: the Spearman correlation of k with ``measure`` and its CI."""
        variable = variable or next(iter(self.image_stats))
        sym = QUANTITY_SYMBOLS[self.quantity]
        stats = self.image_stats[variable][measure]
        return f"{sym} ({variable}) vs {measure}: Spearman {format_correlation(stats)}"


class _Thumbnails:
    """Table position → image view, loaded only for the points a figure marks."""

    def __init__(self, views: ImageViews, rows: np.ndarray):
        self.views, self.rows = views, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.views[int(self.rows[i])]


def write_complexity(
    pairing: Pairing,
    out: str | os.PathLike,
    *,
    quantity: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    maps: tuple[KMaps, str] | None = None,
    figures: bool = True,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> ComplexityResult:
    """Compute complexity measures and k for every stored image, correlate them, and write
    ``complexity.csv``, ``complexity.json`` and (unless ``figures=False``) the figures, in each
    of ``formats``, into ``out``. ``maps`` reuses k maps already computed by
    :func:`softsae_vision.analysis.compute_kmaps`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    q, rows, k, kmaps, note = _per_image_k(pairing, quantity, device, progress, maps)
    if len(rows) < 3:
        raise SoftSAEError(f"{pairing.store.path} has {len(rows)} images; correlations need 3+")
    table = store_complexity(pairing.store, rows, patches=kmaps is not None, progress=progress)
    image_stats = correlate_images(k, table, n_boot, seed)
    patch_stats = correlate_patches(kmaps.per_patch, table, seed=seed) if kmaps else {}
    constant = [v for v, values in k.items() if np.ptp(values) == 0]
    if constant:
        note += (
            f"; {', '.join(constant)} {QUANTITY_SYMBOLS[q]} is the same for every image "
            "(as for a TopK SAE), so its correlations are undefined"
        )
    k_patch = kmaps.per_patch if kmaps is not None else None
    result = ComplexityResult(out, q, k, table, image_stats, patch_stats, note, k_patch)
    if figures:
        _write_figures(result, pairing, ImageViews(pairing.store), formats)
    write_table(result, "complexity.csv", *_table(result, pairing))
    write_summary(result, "complexity.json", _finite_or_null(_summary(result, pairing, n_boot)))
    return result


def _write_figures(
    result: ComplexityResult, pairing: Pairing, views: ImageViews, formats: Sequence[str]
) -> None:
    sym = QUANTITY_SYMBOLS[result.quantity]
    label = QUANTITY_LABELS[result.quantity]
    thumbs = _Thumbnails(views, result.table.rows)
    for variable, values in result.k.items():
        title = f"{pairing.name}: {VARIABLE_TITLES[variable].format(sym=sym)}"
        fig = render_complexity_scatter(
            result.table.image,
            values,
            stats=result.image_stats[variable],
            thumbnails=thumbs,
            k_label=label,
            k_symbol=sym,
            title=title,
        )
        save_named(result, f"scatter_{variable}", fig, formats, result.figures)
    if result.patch_stats and result.k_patch is not None:
        fig = render_patch_density(
            {m: result.table.patch[m] for m in result.patch_stats},
            result.k_patch,
            stats=result.patch_stats,
            k_label=label,
            title=f"{pairing.name}: {sym} per patch against local complexity",
        )
        save_named(result, "patches", fig, formats, result.figures)


def _table(result: ComplexityResult, pairing: Pairing) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``complexity.csv``: per image, its measures and its k variables."""
    measures = list(result.table.image)
    header = ["row", "image", *measures, *(f"{result.quantity}_{v}" for v in result.k)]
    paths = pairing.store.ok_images
    rows = [
        [
            int(row),
            paths[int(row)],
            *(result.table.image[m][i] for m in measures),
            *(result.k[v][i] for v in result.k),
        ]
        for i, row in enumerate(result.table.rows)
    ]
    return header, rows


def _summary(result: ComplexityResult, pairing: Pairing, n_boot: int) -> dict:
    return {
        **summary_header(pairing),
        "quantity": result.quantity,
        "n_images": int(len(result.table.rows)),
        "n_boot": n_boot,
        "note": result.note,
        "measures": {m: MEASURE_LABELS[m] for m in result.table.image},
        "per_image": result.image_stats,
        "per_patch": result.patch_stats,
    }


def _finite_or_null(obj):
    """The same structure with NaN and infinities as None: strict JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def __getattr__(name: str) -> Any:
    if name == "per_image_k":  # analysis computes, viz draws
        return deprecated(f"{__name__}.{name}", "softsae_vision.analysis.per_image_k", _per_image_k)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
