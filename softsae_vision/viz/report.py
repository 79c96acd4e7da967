"""``softsae report``: one static HTML page with everything about a run on a store.

The page is self-contained in the sense that matters for sharing: plain HTML with inline CSS, no
scripts, no web fonts, every figure referenced by a relative path inside the output folder — so
the folder can be zipped, moved or opened offline. Each section is produced by the same library
functions as the individual commands; a section that does not apply (e.g. k maps for a CLS-token
SAE) says why instead of failing the report.
"""

from __future__ import annotations

import datetime
import html
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from softsae_vision._version import __version__
from softsae_vision.analysis.kstats import QUANTITY_SYMBOLS
from softsae_vision.analysis.pairing import Pairing, pair
from softsae_vision.analysis.stats import format_correlation
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import atomic_write
from softsae_vision.viz.complexity import VARIABLE_TITLES, write_complexity
from softsae_vision.viz.curves import read_metrics, render_training_curves
from softsae_vision.viz.features import write_features
from softsae_vision.viz.kmaps import compute_kmaps, write_kmaps
from softsae_vision.viz.style import figure_formats, save_figure

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
EVAL_BATCH = 4096

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5em; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 2em; }
.banner { background: #fff3cd; border: 2px solid #e69f00; padding: .8em 1em; margin: 1em 0;
       font-weight: 600; }
.note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.gallery figure { width: 48%; margin: 0; }
"""


def build_report(
    run: str | os.PathLike,
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    banner: str | None = None,
    layer: int | str | None = None,
    n_features: int = 12,
    n_top: int = 8,
    n_boot: int = 1000,
    kmap_images: int = 6,
    title: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    pdf: bool = False,
) -> Path:
    """Write ``out/index.html`` (plus its figures in subfolders); return the page's path.

    ``banner`` is shown prominently at the top, e.g. "features from random weights are not
    semantic"; ``kmap_images`` single-image k maps are drawn. Figures are PNGs (all the page
    needs); ``pdf=True`` also writes a PDF of each, linked from its caption — several times
    slower, so off by default. Raises :class:`SoftSAEError` if the run and store do not belong
    together.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairing = pair(run, store, layer=layer, device=device)
    dev = str(next(pairing.sae.parameters()).device)
    fmts = figure_formats(pdf)  # PNG first: the page shows the first path of each figure
    body = [_header(pairing, title, banner)]
    body.append(_section("Training", lambda: _training(pairing, out, fmts)))
    body.append(_section("Evaluation on this store", lambda: _evaluation(pairing)))
    body.append(
        _section(
            "Features",
            lambda: _features(pairing, out, n_features, n_top, dev, progress, fmts),
        )
    )
    maps: list[Any] = []  # k maps computed once, shared by the k-map and complexity sections
    body.append(
        _section("k maps", lambda: _kmaps(pairing, out, maps, kmap_images, dev, progress, fmts))
    )
    body.append(
        _section(
            "k and image complexity", lambda: _complexity(pairing, out, maps, n_boot, dev, fmts)
        )
    )
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f'<p class="note">Made by softsae-vision {__version__} on {stamp}.</p>')
    page = _page(title or f"SAE report: {pairing.name}", "\n".join(body))
    path = out / REPORT_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("report written to %s", path)
    return path


# ----------------------------------------------------------------------------- sections
def _section(name: str, build: Callable[[], str]) -> str:
    """A section's HTML; a SoftSAEError (a section that does not apply) becomes a note."""
    try:
        content = build()
    except SoftSAEError as err:
        log.info("report section %r skipped: %s", name, err)
        content = _note(f"Not available: {err}")
    return f"<section><h2>{_esc(name)}</h2>\n{content}\n</section>"


def _header(pairing: Pairing, title: str | None, banner: str | None) -> str:
    sae, store = pairing.sae, pairing.store
    rows = [
        ("run", str(pairing.run_dir) if pairing.run_dir else "(in memory)"),
        ("architecture", sae.architecture),
        ("width", f"d_in {sae.d_in}, {sae.n_latents} latents"),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in sae.hparams().items()) or "-"),
        ("trained on", f"{pairing.trained_on} tokens"),
        ("store", f"{store.path} ({store.backbone}, {store.n_images} images)"),
        ("layer analysed", str(pairing.layer)),
    ]
    parts = [f"<h1>{_esc(title or f'SAE report: {pairing.name}')}</h1>"]
    if banner:
        parts.append(f'<div class="banner" role="alert">{_esc(banner)}</div>')
    parts.append(_table(None, rows))
    return "\n".join(parts)


def _training(pairing: Pairing, out: Path, formats: tuple[str, ...]) -> str:
    if pairing.run_dir is None:
        raise SoftSAEError("no run directory, so no training curve")
    records = read_metrics(pairing.run_dir)
    paths = save_figure(render_training_curves(records), out / "training" / "curves", formats)
    last = {k: v for k, v in records[-1].items() if isinstance(v, int | float)} if records else {}
    table = _table(["final value", ""], [(k, _fmt(v)) for k, v in last.items()])
    return _figure(out, paths[0], f"Training curves ({len(records)} logged steps).") + table


def _evaluation(pairing: Pairing) -> str:
    from softsae_vision.data.store_source import StoreSource
    from softsae_vision.training.evaluate import evaluate

    tokens = pairing.trained_on if pairing.trained_on != "unknown" else None
    source = StoreSource(pairing.store.path, layer=pairing.layer, tokens=tokens)
    dev = str(next(pairing.sae.parameters()).device)
    metrics = evaluate(pairing.sae, source.iter_eval(EVAL_BATCH), device=dev)
    groups = metrics.pop("groups", {})
    rows = [(k, _fmt(v)) for k, v in metrics.items()]
    parts = [
        _note(
            "Measured on the store being analysed; if the SAE was trained on it, these are "
            "training-set numbers, not held-out ones."
        ),
        _table(["metric", f"all rows ({tokens or 'patch'} tokens)"], rows),
    ]
    for name, sub in groups.items():
        parts.append(_table(["metric", f"{name} tokens"], [(k, _fmt(v)) for k, v in sub.items()]))
    return "\n".join(parts)


def _features(
    pairing: Pairing,
    out: Path,
    n_features: int,
    n_top: int,
    device: str,
    progress: bool,
    formats: tuple[str, ...],
) -> str:
    result = write_features(
        pairing,
        out / "features",
        n_features=n_features,
        n_top=n_top,
        device=device,
        progress=progress,
        formats=formats,
    )
    parts = [
        _note(
            f"{result.n_dead} of {pairing.sae.n_latents} features never fire on this store. "
            "Features shown: the strongest peak activations."
        )
    ]
    if result.index is not None:
        parts.append(_figure(out, result.index, "Many features at a glance."))
    gallery = [
        _figure(out, png, f"Feature {f}: top images and zoom on the strongest patch.")
        for f, png in result.figures.items()
    ]
    parts.append('<div class="gallery">' + "\n".join(gallery) + "</div>")
    parts.append(_links(out, [out / "features" / "features.json"]))
    return "\n".join(parts)


def _kmaps(
    pairing: Pairing,
    out: Path,
    maps: list,
    n_single: int,
    device: str,
    progress: bool,
    formats: tuple[str, ...],
) -> str:
    maps.append(compute_kmaps(pairing, device=device, progress=progress))
    result = write_kmaps(
        pairing, out / "kmaps", maps=maps[0], n_single=n_single, device=device, formats=formats
    )
    km = result.kmaps
    captions = {
        "lowest": f"Images with the lowest per-image {km.symbol}.",
        "highest": f"Images with the highest per-image {km.symbol}.",
        "distribution": f"Distribution of {km.symbol} over patches and images.",
    }
    parts = [_note(result.cls_note)]
    singles = []
    for name, png in result.figures.items():
        if name in captions:
            parts.append(_figure(out, png, captions[name]))
        else:
            singles.append(_figure(out, png, f"k map of store row {int(name[5:])}."))
    parts.append('<div class="gallery">' + "\n".join(singles) + "</div>")
    parts.append(_links(out, [out / "kmaps" / "kmaps.csv", out / "kmaps" / "kmaps.json"]))
    return "\n".join(parts)


def _complexity(
    pairing: Pairing, out: Path, maps: list, n_boot: int, device: str, formats: tuple[str, ...]
) -> str:
    result = write_complexity(
        pairing,
        out / "complexity",
        n_boot=n_boot,
        device=device,
        maps=maps[0] if maps else None,
        formats=formats,
    )
    parts = [_note(result.note)]
    header = ["k variable", "measure", "Spearman ρ [95% CI]", "Pearson r [95% CI]"]
    rows = [
        (var, measure, _corr(stats, "spearman"), _corr(stats, "pearson"))
        for var, by_measure in result.image_stats.items()
        for measure, stats in by_measure.items()
    ]
    parts.append(_table(header, rows))
    sym = QUANTITY_SYMBOLS[result.quantity]
    for name, png in result.figures.items():
        if name.startswith("scatter_"):
            caption = VARIABLE_TITLES[name.removeprefix("scatter_")].format(sym=sym)
            caption += "; letters mark the lowest- and highest-k images shown below the panels."
        else:
            caption = f"{sym} per patch against the local complexity of the patch."
        parts.append(_figure(out, png, caption))
    if result.patch_stats:
        patch_rows = [
            (measure, _corr(stats, "spearman"), stats.get("n_images_used", ""))
            for measure, stats in result.patch_stats.items()
        ]
        parts.append(_table(["local measure", "Spearman ρ [95% CI]", "images"], patch_rows))
    files = [out / "complexity" / "complexity.csv", out / "complexity" / "complexity.json"]
    parts.append(_links(out, files))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- HTML bits
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rel(out: Path, path: Path) -> str:
    """A relative, URL-safe link from the report to ``path`` (always inside ``out``)."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(path, out)).as_posix())


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _figure(out: Path, png: Path, caption: str) -> str:
    pdf = png.with_suffix(".pdf")
    link = f' <a href="{_rel(out, pdf)}">PDF</a>' if pdf.is_file() else ""
    return (
        f'<figure><a href="{_rel(out, png)}"><img src="{_rel(out, png)}" alt="{_esc(caption)}" '
        f'loading="lazy"></a><figcaption>{_esc(caption)}{link}</figcaption></figure>'
    )


def _links(out: Path, files: list[Path]) -> str:
    items = [f'<a href="{_rel(out, f)}">{_esc(f.name)}</a>' for f in files if f.is_file()]
    return f"<p>Data: {' · '.join(items)}</p>" if items else ""


def _table(header: list[str] | None, rows: list[tuple]) -> str:
    """A table whose first column is a row heading; ``header=None`` for a key-value table."""
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(
        "<tr>" + "".join(_cell(v, first=i == 0) for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _cell(value: Any, first: bool) -> str:
    if first:
        return f"<th>{_esc(value)}</th>"
    numeric = isinstance(value, int | float) or _is_number(value)
    return f'<td class="num">{_esc(value)}</td>' if numeric else f"<td>{_esc(value)}</td>"


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _corr(stats: dict, method: str) -> str:
    return format_correlation(stats, method).split(", n =")[0]


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )
