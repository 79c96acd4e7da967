"""``softsae kmaps``: per-patch k drawn over images, extremes, and the distribution of k.

For a SoftSAE the map shows predicted k̂; for fixed-k baselines the realised L0 (for TopK a flat
map — the comparison that makes SoftSAE's maps meaningful). The per-image value is the mean over
the image's patches; the CLS token's k is added only if the SAE was trained on CLS tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._deprecated import deprecated
from softsae_vision._io import write_npz_atomic
from softsae_vision.analysis import kmaps as k_analysis
from softsae_vision.analysis.kstats import K_HAT, KMaps
from softsae_vision.analysis.pairing import Pairing
from softsae_vision.analysis.views import ImageViews
from softsae_vision.viz.kmap_figures import (
    KMapPanel,
    k_limits,
    render_k_distribution,
    render_kmap,
    render_kmap_grid,
)
from softsae_vision.viz.layout import short_label
from softsae_vision.viz.outputs import save_named, summary_header, write_summary, write_table
from softsae_vision.viz.style import FIGURE_FORMATS


@dataclass
class KMapsResult:
    """What :func:`write_kmaps` produced."""

    out: Path
    kmaps: KMaps
    cls_note: str  # why the CLS k is or is not reported
    formats: Sequence[str] = FIGURE_FORMATS
    figures: dict[str, Path] = field(default_factory=dict)  # name -> first format's path
    files: list[Path] = field(default_factory=list)


def image_caption(maps: KMaps, i: int, name: str) -> tuple[str, str]:
    """The image's short name and its k ("k̂ 12.3", + " · CLS 11.0"), one decimal throughout."""
    text = f"{maps.symbol} {maps.per_image[i]:.1f}"
    if maps.cls is not None:
        text += f" · CLS {maps.cls[i]:.1f}"
    return short_label(name, 20), text


def write_kmaps(
    pairing: Pairing,
    out: str | os.PathLike,
    *,
    quantity: str = "auto",
    n_grid: int = 8,
    n_single: int = 6,
    device: str = "cpu",
    progress: bool = False,
    maps: tuple[KMaps, str] | None = None,
    formats: Sequence[str] = FIGURE_FORMATS,
) -> KMapsResult:
    """Write k-map figures, ``kmaps.csv`` and ``kmaps.npz`` for every image of the store.

    Figures: ``lowest`` / ``highest`` (the ``n_grid`` images of lowest and highest per-image k,
    on one shared colour scale), ``distribution`` (k over patches and images) and
    ``kmap_<row>`` for ``n_single`` images spread evenly over the k ranking (every image if
    ``n_single`` is negative); each figure in every one of ``formats``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kmaps, note = maps or k_analysis.compute_kmaps(pairing, quantity, device, progress)
    views = ImageViews(pairing.store)
    result = KMapsResult(out, kmaps, note, tuple(formats))
    order = np.argsort(kmaps.per_image, kind="stable")
    limits = k_limits(kmaps.per_patch)
    title_of = {
        "lowest": f"lowest per-image {kmaps.symbol} · {pairing.name}",
        "highest": f"highest per-image {kmaps.symbol} · {pairing.name}",
    }
    n = min(n_grid, len(order))
    for name, idx in (("lowest", order[:n]), ("highest", order[::-1][:n])):
        panels = [_panel(kmaps, views, i) for i in idx]
        fig = render_kmap_grid(panels, title=title_of[name], limits=limits, label=kmaps.label)
        _save(result, name, fig)
    fig = render_k_distribution(
        kmaps.per_patch.ravel(),
        kmaps.per_image,
        label=kmaps.label,
        cls=kmaps.cls,
        target=kmaps.target if kmaps.quantity == K_HAT else None,
    )
    _save(result, "distribution", fig)
    n_single = len(order) if n_single < 0 else min(n_single, len(order))
    spread = np.unique(np.round(np.linspace(0, len(order) - 1, n_single)))
    for pos in spread.astype(int):
        i = int(order[pos])
        fig = render_kmap(_panel(kmaps, views, i), limits=limits, label=kmaps.label)
        _save(result, f"kmap_{int(kmaps.rows[i]):06d}", fig)
    write_table(result, "kmaps.csv", *_table(kmaps, views))
    result.files.append(write_npz_atomic(out / "kmaps.npz", _arrays(kmaps)))
    write_summary(result, "kmaps.json", _summary(pairing, kmaps, note))
    return result


def _panel(kmaps: KMaps, views: ImageViews, i: int) -> KMapPanel:
    row = int(kmaps.rows[i])
    name, value = image_caption(kmaps, i, views.name(row))
    return KMapPanel(views[row], kmaps.per_patch[i], name, value)


def _save(result: KMapsResult, name: str, fig) -> None:
    save_named(result, name, fig, result.formats, result.figures)


def _table(kmaps: KMaps, views: ImageViews) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of ``kmaps.csv``: per image, its k statistics over patches (and CLS k)."""
    sym = kmaps.quantity
    per_patch = kmaps.per_patch.reshape(len(kmaps.rows), -1)
    header = ["row", "image", f"{sym}_mean", f"{sym}_std", f"{sym}_min", f"{sym}_max"]
    header += [f"{sym}_cls"] if kmaps.cls is not None else []
    rows = []
    for i, row in enumerate(kmaps.rows):
        vals = per_patch[i]
        line = [int(row), views.paths[int(row)], vals.mean(), vals.std(), vals.min(), vals.max()]
        rows.append(line + ([kmaps.cls[i]] if kmaps.cls is not None else []))
    return header, rows


def _arrays(kmaps: KMaps) -> dict[str, np.ndarray]:
    """The arrays of ``kmaps.npz``."""
    arrays = {
        "quantity": np.array(kmaps.quantity),
        "per_patch": kmaps.per_patch,
        "rows": kmaps.rows,
    }
    if kmaps.cls is not None:
        arrays["cls"] = kmaps.cls
    return arrays


def _summary(pairing: Pairing, kmaps: KMaps, note: str) -> dict:
    def describe(values: np.ndarray) -> dict:
        q = np.percentile(values, [5, 50, 95])
        return {
            "n": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "p5": float(q[0]),
            "median": float(q[1]),
            "p95": float(q[2]),
            "max": float(values.max()),
        }

    summary = {
        **summary_header(pairing),
        "quantity": kmaps.quantity,
        "note": note,
        "per_patch": describe(kmaps.per_patch.ravel()),
        "per_image": describe(kmaps.per_image),
    }
    if kmaps.cls is not None:
        summary["cls"] = describe(kmaps.cls)
    return summary


def __getattr__(name: str) -> Any:
    if name == "compute_kmaps":  # analysis computes, viz draws
        new = "softsae_vision.analysis.compute_kmaps"
        return deprecated(f"{__name__}.{name}", new, k_analysis.compute_kmaps)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
