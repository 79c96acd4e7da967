"""``softsae complexity``: does the SAE spend more features on more complex images?

Per image: complexity measures of the model's view, and k — the mean over patches of predicted
k̂ for a SoftSAE, or of realised L0 for baselines; plus the CLS token's k where the SAE was
trained on CLS tokens. Spearman and Pearson correlations with bootstrap 95% CIs, per image and
per patch (patch-level intervals resample whole images). Writes ``complexity.csv`` (one row per
image), ``complexity.json`` (the correlations) and scatter / density figures.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from softsae_vision.analysis.complexity import MEASURE_LABELS
from softsae_vision.analysis.complexity_table import (
    ComplexityTable,
    correlate_images,
    correlate_patches,
    store_complexity,
)
from softsae_vision.analysis.kstats import (
    QUANTITY_LABELS,
    QUANTITY_SYMBOLS,
    KMaps,
    resolve_quantity,
    token_k,
)
from softsae_vision.analysis.pairing import CLS, EMBED, PATCH, Pairing
from softsae_vision.analysis.stats import format_correlation
from softsae_vision.analysis.views import ImageViews
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import atomic_write, write_json_atomic
from softsae_vision.viz.complexity_figures import render_complexity_scatter, render_patch_density
from softsae_vision.viz.kmaps import compute_kmaps
from softsae_vision.viz.style import FIGURE_FORMATS, save_figure

log = logging.getLogger(__name__)

MEAN_OVER_PATCHES = "mean_over_patches"
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


def per_image_k(
    pairing: Pairing,
    quantity: str = "auto",
    device: str = "cpu",
    progress: bool = False,
    maps: tuple[KMaps, str] | None = None,
) -> tuple[str, np.ndarray, dict[str, np.ndarray], KMaps | None, str]:
    """(quantity, rows, {variable: k per image}, k maps or None, note) for the pairing.

    SAEs trained on patches use their k maps (mean over patches, plus CLS if trained on it);
    SAEs trained on CLS tokens or pooled embeddings use that one token per image.
    """
    if pairing.saw(PATCH) or (pairing.trained_on == "unknown" and pairing.has_tokens(PATCH)):
        kmaps, note = maps or compute_kmaps(pairing, quantity, device, progress)
        k = {MEAN_OVER_PATCHES: kmaps.per_image}
        if kmaps.cls is not None:
            k[CLS] = kmaps.cls
        return kmaps.quantity, kmaps.rows, k, kmaps, note
    kind = pairing.trained_on if pairing.trained_on in (CLS, EMBED) else None
    if kind is None or not pairing.has_tokens(kind):
        raise SoftSAEError(
            f"{pairing.name} was trained on {pairing.trained_on} tokens; per-image k needs an "
            "SAE trained on patch, CLS or pooled-embedding tokens that the store also holds"
        )
    q = resolve_quantity(pairing.sae, quantity)
    rows, values = token_k(
        pairing.sae,
        pairing.store,
        pairing.layer,
        kind,
        quantity=q,
        device=device,
        progress=progress,
    )
    return q, rows, {kind: values}, None, f"per-image {QUANTITY_SYMBOLS[q]} of the {kind} token"


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
    :func:`compute_kmaps`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    q, rows, k, kmaps, note = per_image_k(pairing, quantity, device, progress, maps)
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
    result.files.append(_write_csv(out / "complexity.csv", result, pairing))
    write_json_atomic(out / "complexity.json", _finite_or_null(_summary(result, pairing, n_boot)))
    result.files.append(out / "complexity.json")
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
        paths = save_figure(fig, result.out / f"scatter_{variable}", formats)
        result.figures[f"scatter_{variable}"] = paths[0]
        result.files += paths
    if result.patch_stats and result.k_patch is not None:
        fig = render_patch_density(
            {m: result.table.patch[m] for m in result.patch_stats},
            result.k_patch,
            stats=result.patch_stats,
            k_label=label,
            title=f"{pairing.name}: {sym} per patch against local complexity",
        )
        paths = save_figure(fig, result.out / "patches", formats)
        result.figures["patches"] = paths[0]
        result.files += paths


def _write_csv(path: Path, result: ComplexityResult, pairing: Pairing) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    measures = list(result.table.image)
    k_cols = [f"{result.quantity}_{v}" for v in result.k]
    writer.writerow(["row", "image", *measures, *k_cols])
    paths = pairing.store.ok_images
    for i, row in enumerate(result.table.rows):
        values = [result.table.image[m][i] for m in measures]
        ks = [result.k[v][i] for v in result.k]
        writer.writerow([int(row), paths[int(row)], *values, *ks])
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    return path


def _summary(result: ComplexityResult, pairing: Pairing, n_boot: int) -> dict:
    return {
        "run": str(pairing.run_dir) if pairing.run_dir else None,
        "store": str(pairing.store.path),
        "layer": pairing.layer,
        "architecture": pairing.sae.architecture,
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
