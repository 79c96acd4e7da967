"""``softsae kmaps``: per-patch k drawn over images, extremes, and the distribution of k.

For a SoftSAE the map shows predicted k̂; for fixed-k baselines the realised L0 (for TopK a flat
map — the comparison that makes SoftSAE's maps meaningful). The per-image value is the mean over
the image's patches; the CLS token's k is added only if the SAE was trained on CLS tokens.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from softsae_vision.analysis.kstats import K_HAT, KMaps, k_maps
from softsae_vision.analysis.pairing import CLS, PATCH, Pairing
from softsae_vision.analysis.views import ImageViews
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import atomic_write, write_json_atomic
from softsae_vision.viz.kmap_figures import (
    KMapPanel,
    k_limits,
    render_k_distribution,
    render_kmap,
    render_kmap_grid,
)
from softsae_vision.viz.layout import short_label
from softsae_vision.viz.style import FIGURE_FORMATS, save_figure


@dataclass
class KMapsResult:
    """What :func:`write_kmaps` produced."""

    out: Path
    kmaps: KMaps
    cls_note: str  # why the CLS k is or is not reported
    formats: Sequence[str] = FIGURE_FORMATS
    figures: dict[str, Path] = field(default_factory=dict)  # name -> first format's path
    files: list[Path] = field(default_factory=list)


def compute_kmaps(
    pairing: Pairing, quantity: str = "auto", device: str = "cpu", progress: bool = False
) -> tuple[KMaps, str]:
    """The k maps of every stored image, and a sentence on whether CLS k is included."""
    pairing.require_patches("k maps")
    if not (pairing.saw(PATCH) or pairing.trained_on == "unknown"):
        raise SoftSAEError(
            f"k maps need an SAE trained on patch tokens; {pairing.name} was trained on "
            f"{pairing.trained_on} tokens (use `softsae complexity` for per-image k)"
        )
    with_cls = pairing.saw(CLS) and pairing.has_tokens(CLS)
    maps = k_maps(
        pairing.sae,
        pairing.store,
        pairing.layer,
        quantity=quantity,
        with_cls=with_cls,
        device=device,
        progress=progress,
    )
    sym = maps.symbol
    if with_cls:
        note = f"CLS {sym} from the CLS token (the SAE was trained on CLS tokens too)"
    elif pairing.has_tokens(CLS):
        note = (
            f"per-image {sym} is the mean over patches; CLS {sym} not computed because the SAE "
            "was not trained on CLS tokens"
        )
    else:
        note = f"per-image {sym} is the mean over patches (the store has no CLS token)"
    return maps, note


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
    kmaps, note = maps or compute_kmaps(pairing, quantity, device, progress)
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
        target=_target_k(pairing) if kmaps.quantity == K_HAT else None,
    )
    _save(result, "distribution", fig)
    n_single = len(order) if n_single < 0 else min(n_single, len(order))
    spread = np.unique(np.round(np.linspace(0, len(order) - 1, n_single)))
    for pos in spread.astype(int):
        i = int(order[pos])
        fig = render_kmap(_panel(kmaps, views, i), limits=limits, label=kmaps.label)
        _save(result, f"kmap_{int(kmaps.rows[i]):06d}", fig)
    result.files.append(_write_csv(out / "kmaps.csv", kmaps, views))
    result.files.append(_write_npz(out / "kmaps.npz", kmaps))
    write_json_atomic(out / "kmaps.json", _summary(pairing, kmaps, note))
    result.files.append(out / "kmaps.json")
    return result


def _panel(kmaps: KMaps, views: ImageViews, i: int) -> KMapPanel:
    row = int(kmaps.rows[i])
    name, value = image_caption(kmaps, i, views.name(row))
    return KMapPanel(views[row], kmaps.per_patch[i], name, value)


def _save(result: KMapsResult, name: str, fig) -> None:
    paths = save_figure(fig, result.out / name, result.formats)
    result.figures[name] = paths[0]
    result.files += paths


def _target_k(pairing: Pairing) -> float | None:
    return pairing.sae.target_l0


def _write_csv(path: Path, kmaps: KMaps, views: ImageViews) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    sym = kmaps.quantity
    per_patch = kmaps.per_patch.reshape(len(kmaps.rows), -1)
    header = ["row", "image", f"{sym}_mean", f"{sym}_std", f"{sym}_min", f"{sym}_max"]
    writer.writerow(header + ([f"{sym}_cls"] if kmaps.cls is not None else []))
    for i, row in enumerate(kmaps.rows):
        vals = per_patch[i]
        line = [int(row), views.paths[int(row)], vals.mean(), vals.std(), vals.min(), vals.max()]
        writer.writerow(line + ([kmaps.cls[i]] if kmaps.cls is not None else []))
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    return path


def _write_npz(path: Path, kmaps: KMaps) -> Path:
    arrays = {
        "quantity": np.array(kmaps.quantity),
        "per_patch": kmaps.per_patch,
        "rows": kmaps.rows,
    }
    if kmaps.cls is not None:
        arrays["cls"] = kmaps.cls

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
    return path


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
        "run": str(pairing.run_dir) if pairing.run_dir else None,
        "store": str(pairing.store.path),
        "layer": pairing.layer,
        "architecture": pairing.sae.architecture,
        "quantity": kmaps.quantity,
        "note": note,
        "per_patch": describe(kmaps.per_patch.ravel()),
        "per_image": describe(kmaps.per_image),
    }
    if kmaps.cls is not None:
        summary["cls"] = describe(kmaps.cls)
    return summary
