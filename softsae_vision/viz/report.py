"""``softsae report``: one static HTML page with everything about one or several runs on a store.

The page is self-contained in the sense that matters for sharing: plain HTML with inline CSS, no
scripts, no web fonts, every figure referenced by a relative path inside the output folder — so
the folder can be zipped, moved or opened offline. Each section is produced by the same library
functions as the individual commands; a section that does not apply (e.g. k maps for a CLS-token
SAE, or for a fixed-k TopK whose k is the same on every patch) says why in one line instead of
failing the report or plotting a constant.

With several runs, the page opens with their comparison (metrics side by side, FVU against L0)
and each later section shows the runs next to each other; each run's figures live in a
sub-folder named after the run.
"""

from __future__ import annotations

import datetime
import html
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softsae_vision._io import write_text_atomic
from softsae_vision._version import __version__
from softsae_vision.analysis.kmaps import compute_kmaps
from softsae_vision.analysis.kstats import QUANTITY_SYMBOLS
from softsae_vision.analysis.naming import read_names
from softsae_vision.analysis.pairing import Pairing, pair
from softsae_vision.analysis.stats import format_correlation
from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.complexity import VARIABLE_TITLES, write_complexity
from softsae_vision.viz.curves import read_metrics, render_training_curves
from softsae_vision.viz.features import write_features
from softsae_vision.viz.kmaps import write_kmaps
from softsae_vision.viz.style import figure_formats, save_figure

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
EVAL_BATCH = 4096

DEFINITIONS = {
    "fvu": "fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − x̄‖² over all rows (0 is perfect)",
    "cosine": "mean cosine similarity between each activation and its reconstruction",
    "l0_mean": "L0: number of non-zero latent codes per token, averaged (realised, not target)",
    "l0_std": "standard deviation of the per-token L0",
    "l0_p5": "5th percentile of the per-token L0 (p25, p50, … likewise)",
    "k_hat_mean": "k̂: SoftSAE's predicted number of active latents per token, averaged",
    "k_hat_std": "standard deviation of k̂ over tokens",
    "dead_latents": "latents that never fire on these data",
    "dead_frac": "fraction of latents that never fire",
    "almost_dead_latents": "latents firing on fewer than 1 in 10,000 rows (but on some)",
    "dense_latents": "latents firing on more than 10 % of rows",
    "n_rows": "activation vectors (tokens) evaluated",
    "loss": "training loss: reconstruction MSE in normalised units plus auxiliary terms",
    "mse": "reconstruction MSE in normalised units (reads like an FVU)",
    "aux": "auxiliary loss (AuxK: dead latents reconstructing the residual)",
    "lr": "learning rate at the last logged step",
    "alpha": "soft top-k temperature α at the last logged step",
    "k_target": "target mean k at the last logged step",
    "decoder_coherence": "largest cosine between two different decoder atoms",
}
"""Short definitions shown next to a metric where the page first shows it."""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5em; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 2em; }
.banner { background: #fff3cd; border: 2px solid #e69f00; padding: .8em 1em; margin: 1em 0;
       font-weight: 600; }
.note { color: #555; font-style: italic; }
nav.toc { background: #f7f7f7; padding: .5em 1em; display: inline-block; }
nav.toc ol { margin: .3em 0; padding-left: 1.4em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.def { color: #555; font-size: .9em; max-width: 32em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.gallery figure { width: 48%; margin: 0; }
.gallery.wide figure { width: 100%; }
.cols { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 1.2em; }
.cols > div > h3 { margin-top: .4em; }
"""


@dataclass
class _Page:
    """What the sections of one page share: the output folder and the metrics defined so far."""

    out: Path
    defined: set[str] = field(default_factory=set)

    def define(self, name: str) -> str:
        """The definition of ``name`` the first time the page shows it, else ""."""
        key = re.sub(r"^l0_p\d+$", "l0_p5", name)  # one definition covers every percentile
        if key in self.defined or key not in DEFINITIONS:
            return ""
        self.defined.add(key)
        return DEFINITIONS[key]


def build_report(
    run: str | os.PathLike | Sequence[str | os.PathLike],
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

    ``run`` is one run or a list of runs (shown side by side, figures in ``out/<run name>/``).
    ``banner`` is shown prominently at the top, e.g. "features from random weights are not
    semantic"; ``kmap_images`` single-image k maps are drawn. Figures are PNGs (all the page
    needs); ``pdf=True`` also writes a PDF of each, linked from its caption — several times
    slower, so off by default. Raises :class:`SoftSAEError` if a run and the store do not
    belong together.
    """
    from softsae_vision.analysis.compare import unique_names

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run] if isinstance(run, str | os.PathLike) or not isinstance(run, Sequence) else run
    if not runs:
        raise SoftSAEError("report needs at least one RUN")
    pairings = [pair(r, store, layer=layer, device=device) for r in runs]
    run_dirs = [p.run_dir for p in pairings if p.run_dir]
    names = unique_names(run_dirs) if len(run_dirs) == len(pairings) else [p.name for p in pairings]
    multi = len(pairings) > 1
    dirs = [out / _slug(n) if multi else out for n in names]
    dev = str(next(pairings[0].sae.parameters()).device)
    fmts = figure_formats(pdf)  # PNG first: the page shows the first path of each figure
    page = _Page(out)
    heading = title or (
        f"SAE report: {names[0]}" if not multi else f"SAE comparison: {', '.join(names)}"
    )
    maps: list[list] = [[] for _ in pairings]  # k maps, shared by k maps and complexity

    def per_run(build: Callable[[int], str]) -> list[str]:
        return [_part(lambda i=i: build(i)) for i in range(len(pairings))]

    def features() -> str:
        parts = per_run(
            lambda i: _features(page, pairings[i], dirs[i], n_features, n_top, dev, progress, fmts)
        )  # full width, one run after another: feature figures must be readable in place
        heads = [f"<h3>{_esc(n)}</h3>\n" if multi else "" for n in names]
        return "\n".join(h + p for h, p in zip(heads, parts, strict=True))

    builders: list[tuple[str, Callable[[], str]]] = [
        ("Runs", lambda: _runs_table(pairings, names)),
        ("Evaluation on this store", lambda: _evaluation(page, pairings, names, dev, fmts)),
        (
            "Training",
            lambda: _side_by_side(
                names, per_run(lambda i: _training(page, pairings[i], dirs[i], fmts))
            ),
        ),
        ("Features", features),
        (
            "k maps",
            lambda: _side_by_side(
                names,
                per_run(
                    lambda i: _kmaps(
                        page, pairings[i], dirs[i], maps[i], kmap_images, dev, progress, fmts
                    )
                ),
            ),
        ),
        (
            "k and image complexity",
            lambda: _side_by_side(
                names,
                per_run(
                    lambda i: _complexity(page, pairings[i], dirs[i], maps[i], n_boot, dev, fmts)
                ),
            ),
        ),
    ]
    sections = [(name, _section(name, build)) for name, build in builders]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [_header(heading, banner, sections)]
    body += [html_text for _, html_text in sections]
    body.append(f'<p class="note">Made by softsae-vision {__version__} on {stamp}.</p>')
    text = _page(heading, "\n".join(body))
    path = out / REPORT_FILE
    write_text_atomic(path, text)
    log.info("report written to %s", path)
    return path


# ----------------------------------------------------------------------------- sections
def _anchor(name: str) -> str:
    return _slug(name.lower())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _section(name: str, build: Callable[[], str]) -> str:
    """A section's HTML; a SoftSAEError (a section that does not apply) becomes a note."""
    return f'<section id="{_anchor(name)}"><h2>{_esc(name)}</h2>\n{_part(build)}\n</section>'


def _part(build: Callable[[], str]) -> str:
    """``build()``'s HTML, or a one-line note when it does not apply (a SoftSAEError)."""
    try:
        return build()
    except SoftSAEError as err:
        log.info("report part skipped: %s", err)
        return _note(f"Not available: {err}")


def _side_by_side(names: list[str], parts: list[str]) -> str:
    """One column per run (just the content when there is one run)."""
    if len(parts) == 1:
        return parts[0]
    cols = "".join(f"<div><h3>{_esc(n)}</h3>\n{p}</div>" for n, p in zip(names, parts, strict=True))
    return f'<div class="cols" style="--n: {len(parts)}">{cols}</div>'


def _header(title: str, banner: str | None, sections: list[tuple[str, str]]) -> str:
    parts = [f"<h1>{_esc(title)}</h1>"]
    if banner:
        parts.append(f'<div class="banner" role="alert">{_esc(banner)}</div>')
    parts.append(
        "<p>Terms used throughout: <b>L0</b> is the number of latents an SAE actually uses for a "
        "token (non-zero codes); <b>k̂</b> is the number a SoftSAE predicts for the token before "
        "selecting (fixed-k baselines have none); <b>FVU</b> is the fraction of the "
        "activations' variance the reconstruction leaves unexplained (0 is perfect).</p>"
    )
    items = "".join(f'<li><a href="#{_anchor(n)}">{_esc(n)}</a></li>' for n, _ in sections)
    parts.append(f'<nav class="toc"><b>Contents</b><ol>{items}</ol></nav>')
    return "\n".join(parts)


def _runs_table(pairings: list[Pairing], names: list[str]) -> str:
    store = pairings[0].store
    rows = [
        ("run", *(_abs(p.run_dir) if p.run_dir else "(in memory)" for p in pairings)),
        ("architecture", *(p.sae.architecture for p in pairings)),
        ("width", *(f"d_in {p.sae.d_in}, {p.sae.n_latents} latents" for p in pairings)),
        (
            "hyperparameters",
            *(", ".join(f"{k}={v}" for k, v in p.sae.hparams().items()) or "-" for p in pairings),
        ),
        ("trained on", *(f"{p.trained_on} tokens" for p in pairings)),
        ("layer analysed", *(str(p.layer) for p in pairings)),
    ]
    store_line = f"Store: {_abs(store.path)} ({store.backbone}, {store.n_images} images)."
    header = ["", *names] if len(pairings) > 1 else None
    return _table(header, rows) + f"<p>{_esc(store_line)}</p>"


def _abs(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def _training(page: _Page, pairing: Pairing, out: Path, formats: tuple[str, ...]) -> str:
    if pairing.run_dir is None:
        raise SoftSAEError("no run directory, so no training curve")
    records = read_metrics(pairing.run_dir)
    paths = save_figure(render_training_curves(records), out / "training" / "curves", formats)
    last = {k: v for k, v in records[-1].items() if isinstance(v, int | float)} if records else {}
    rows = [(k, _fmt(v), page.define(k)) for k, v in last.items() if k != "step"]
    step = f" at step {last['step']}" if "step" in last else ""
    table = _table([f"final value{step}", "", "meaning"], rows)
    caption = f"Training curves ({len(records)} logged steps)."
    return _figure(page.out, paths[0], caption) + table


def _evaluation(page, pairings, names, device, formats) -> str:
    """One metrics table (a column per run and token type) and, for several runs, the
    FVU-against-L0 comparison."""
    from softsae_vision.analysis.compare import RunMetrics, summarise
    from softsae_vision.data.store_source import StoreSource
    from softsae_vision.training.evaluation import evaluate
    from softsae_vision.viz.compare import at_l0_rows, render_pareto

    measured = []
    for name, p in zip(names, pairings, strict=True):
        tokens = p.trained_on if p.trained_on != "unknown" else None
        source = StoreSource(p.store.path, layer=p.layer, tokens=tokens)
        metrics = evaluate(p.sae, source.iter_eval(EVAL_BATCH), device=device)
        path = p.run_dir or Path(name)
        measured.append(RunMetrics(name, path, p.sae.architecture, p.config, metrics))
    result = summarise(str(pairings[0].store.path), measured, [p.sae.W_dec for p in pairings])
    columns: list[tuple[str, dict, str]] = []  # (heading, metrics, run name)
    for name, run in zip(names, result.runs, strict=True):
        groups = run.metrics.get("groups", {})
        prefix = f"{name}: " if len(pairings) > 1 else ""
        if len(groups) <= 1:  # one token type: the pooled column is that type's column
            kind = next(iter(groups), "all")
            columns.append((f"{prefix}{kind} tokens", run.metrics, name))
        else:
            columns.append((f"{prefix}pooled", run.metrics, name))
            columns += [(f"{prefix}{g} tokens", m, name) for g, m in groups.items()]
    keys = list(dict.fromkeys(k for _, m, _ in columns for k in m if k != "groups"))
    rows = [
        (key, *(_fmt(m.get(key, "-")) for _, m, _ in columns), page.define(key)) for key in keys
    ]
    coherence = [_fmt(result.coherence.get(n)) for _, _, n in columns]
    rows.append(("decoder_coherence", *coherence, page.define("decoder_coherence")))
    parts = [
        _note(
            "Measured on the store being analysed; if the SAE was trained on it, these are "
            "training-set numbers, not held-out ones."
        ),
        _table(["metric", *(c for c, _, _ in columns), "meaning"], rows),
    ]
    if len(pairings) > 1:
        fig = save_figure(render_pareto(result), page.out / "compare" / "pareto", formats)
        parts.append(
            _figure(
                page.out,
                fig[0],
                "FVU against mean realised L0; each architecture's runs joined as a front, "
                "SoftSAE as stars, thin bars: ±1 standard deviation of the per-token L0.",
            )
        )
        at = at_l0_rows(result)
        if at:
            parts.append(
                _note(
                    "Each baseline's FVU at SoftSAE's mean L0, interpolated along the baseline's "
                    "front ('-' when SoftSAE's L0 is outside the front's range: then compare with "
                    "the nearest baseline run)."
                )
            )
            parts.append(_table(list(at[0]), [tuple(_fmt(v) for v in r.values()) for r in at]))
        if result.stability:
            rows = [
                (r["run_a"], r["run_b"], _fmt(r["mean_cosine"]), _fmt(r["frac_above"]))
                for r in result.stability
            ]
            parts.append(_table(["run", "other seed", "matched cosine", "fraction > 0.9"], rows))
    return "\n".join(parts)


def _features(
    page: _Page,
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
    names = read_names(pairing.run_dir)
    parts = [
        _note(
            f"{result.n_dead} of {pairing.sae.n_latents} features never fire on this store. "
            "Features shown: the strongest peak activations."
            + (" Names from `softsae name` (the run's features.json)." if names else "")
        )
    ]
    if result.index is not None:
        parts.append(_figure(page.out, result.index, "Many features at a glance."))
    gallery = []
    for f, png in result.figures.items():
        label = f"Feature {f} “{names[f]}”" if f in names else f"Feature {f}"
        gallery.append(
            _figure(page.out, png, f"{label}: top images and zoom on the strongest patch.")
        )
    parts.append('<div class="gallery wide">' + "\n".join(gallery) + "</div>")
    parts.append(_links(page.out, [out / "features" / "features.json"]))
    return "\n".join(parts)


def _constant_k(pairing: Pairing, maps) -> str | None:
    """A one-line reason when a run's k is the same on every patch (fixed-k TopK), else None."""
    kmaps = maps[0][0]
    values = kmaps.per_patch
    if values.size and float(np.ptp(values)) == 0.0:
        return (
            f"{pairing.name} ({pairing.sae.architecture}) uses the same {kmaps.symbol} = "
            f"{float(values.flat[0]):g} on every patch, so there is no k map or k-complexity "
            "relation to show."
        )
    return None


def _kmaps(
    page: _Page,
    pairing: Pairing,
    out: Path,
    maps: list,
    n_single: int,
    device: str,
    progress: bool,
    formats: tuple[str, ...],
) -> str:
    maps.append(compute_kmaps(pairing, device=device, progress=progress))
    constant = _constant_k(pairing, maps)
    if constant:
        return _note(f"Not applicable: {constant}")
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
            parts.append(_figure(page.out, png, captions[name]))
        else:
            singles.append(_figure(page.out, png, f"k map of store row {int(name[5:])}."))
    parts.append('<div class="gallery">' + "\n".join(singles) + "</div>")
    parts.append(_links(page.out, [out / "kmaps" / "kmaps.csv", out / "kmaps" / "kmaps.json"]))
    return "\n".join(parts)


def _complexity(
    page: _Page,
    pairing: Pairing,
    out: Path,
    maps: list,
    n_boot: int,
    device: str,
    formats: tuple[str, ...],
) -> str:
    if maps:
        constant = _constant_k(pairing, maps)
        if constant:
            return _note(f"Not applicable: {constant}")
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
        parts.append(_figure(page.out, png, caption))
    if result.patch_stats:
        patch_rows = [
            (measure, _corr(stats, "spearman"), stats.get("n_images_used", ""))
            for measure, stats in result.patch_stats.items()
        ]
        parts.append(_table(["local measure", "Spearman ρ [95% CI]", "images"], patch_rows))
    files = [out / "complexity" / "complexity.csv", out / "complexity" / "complexity.json"]
    parts.append(_links(page.out, files))
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
    if value is None:
        return "-"
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
