"""``softsae compare`` outputs: the FVU-against-L0 figure and the comparison tables.

Draws and writes what :mod:`softsae_vision.analysis.compare` measured; computes nothing.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from softsae_vision._io import write_json_atomic, write_text_atomic
from softsae_vision.analysis.compare import SOFTSAE, Comparison, metric_rows
from softsae_vision.viz.style import FIGURE_FORMATS, LINE_COLOURS, new_figure, save_figure, styled

AT_L0_COLUMNS = (
    "softsae_run",
    "softsae_l0",
    "softsae_fvu",
    "baseline",
    "baseline_fvu_at_l0",
    "fvu_difference",
    "nearest_baseline_run",
    "nearest_baseline_l0",
    "nearest_baseline_fvu",
)
STABILITY_COLUMNS = (
    "run_a",
    "run_b",
    "architecture",
    "seed_a",
    "seed_b",
    "mean_cosine",
    "frac_above",
)


@dataclass
class CompareFiles:
    """Paths :func:`write_comparison` wrote."""

    figure: list[Path]
    tables: dict[str, Path] = field(default_factory=dict)


@styled
def render_pareto(comparison: Comparison) -> Figure:
    """FVU against mean realised L0: one joined front per architecture, SoftSAE as stars."""
    fig = new_figure(5.2, 3.6)
    ax = fig.add_subplot()
    for i, (arch, front) in enumerate(comparison.fronts.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        soft = arch == SOFTSAE
        l0s = [r.l0 for r in front]
        fvus = [r.fvu for r in front]
        ax.plot(
            l0s,
            fvus,
            marker="*" if soft else "o",
            markersize=11 if soft else 6,
            linewidth=2.0 if soft else 1.2,
            color=colour,
            label=f"{arch} ({len(front)} run{'s' if len(front) > 1 else ''})",
            zorder=3 if soft else 2,
        )
        # L0 spread: one standard deviation of the realised L0 across inputs
        for run in front:
            std = float(run.metrics.get("l0_std", 0.0))
            if std > 0:
                ax.plot([run.l0 - std, run.l0 + std], [run.fvu] * 2, color=colour, alpha=0.35, lw=1)
    ax.set_xlabel("mean realised L0 (active latents per token)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    fvus = [r.fvu for r in comparison.runs if math.isfinite(r.fvu) and r.fvu > 0]
    if fvus and max(fvus) / min(fvus) > 10:
        ax.set_yscale("log")
    ax.set_title("Reconstruction against sparsity (lower left is better)")
    ax.legend(loc="best", frameon=False)
    ax.grid(True, alpha=0.3)
    return fig


def write_comparison(
    comparison: Comparison, out: str | Path, formats: Sequence[str] = FIGURE_FORMATS
) -> CompareFiles:
    """Write ``pareto.*``, ``compare.{json,csv,md}``, ``fvu_at_l0.{csv,json,md}`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = CompareFiles(save_figure(render_pareto(comparison), out / "pareto", formats))
    rows = metric_rows(comparison)
    summary = comparison.to_json()
    tables = {
        "compare.json": summary,
        "compare.csv": _csv(rows),
        "compare.md": markdown_table(rows),
        "fvu_at_l0.json": {
            "schema_version": summary["schema_version"],
            "rows": comparison.at_softsae_l0,
        },
        "fvu_at_l0.csv": _csv(at_l0_rows(comparison)),
        "fvu_at_l0.md": markdown_table(at_l0_rows(comparison)),
    }
    if comparison.stability:
        stab = [{c: r[c] for c in STABILITY_COLUMNS} for r in comparison.stability]
        tables["stability.csv"] = _csv(stab)
        tables["stability.md"] = markdown_table(stab)
    for name, content in tables.items():
        path = out / name
        if isinstance(content, str):
            write_text_atomic(path, content)
        else:
            write_json_atomic(path, content)
        files.tables[name] = path
    return files


def at_l0_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The rows of the FVU-at-SoftSAE's-L0 table, in :data:`AT_L0_COLUMNS` order."""
    return [{c: r[c] for c in AT_L0_COLUMNS} for r in comparison.at_softsae_l0]


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, "-" for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (their keys are the columns)."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()
