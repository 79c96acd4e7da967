"""Side-by-side scatter of per-image k against one complexity measure, for several runs.

    python scripts/complexity_compare.py STORE RUN_A RUN_B ... --measure jpeg_bpp --out compare

Each panel is one run (SoftSAE: predicted k̂, mean over patches; baselines: realised L0), with
its Spearman ρ and bootstrap 95% CI in the title. Uses only the public API of softsae_vision.
"""

from __future__ import annotations

import argparse

import numpy as np

from softsae_vision.analysis import (
    MEASURE_LABELS,
    correlate,
    format_correlation,
    pair,
    per_image_k,
    store_complexity,
)
from softsae_vision.analysis.labels import QUANTITY_LABELS
from softsae_vision.viz import save_figure, styled
from softsae_vision.viz.style import LINE_COLOURS, new_figure


@styled
def compare_panels(x: np.ndarray, runs: list[tuple[str, str, np.ndarray, dict]], measure: str):
    """One scatter per run: (name, quantity, k per image, correlate() result)."""
    fig = new_figure(2.6 * len(runs), 2.6)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for i, (ax, (name, quantity, k, stats)) in enumerate(zip(axes, runs, strict=True)):
        ax.scatter(x, k, s=10, color=LINE_COLOURS[i % len(LINE_COLOURS)], alpha=0.7, linewidths=0)
        ax.set_xlabel(MEASURE_LABELS[measure])
        ax.set_ylabel(QUANTITY_LABELS[quantity])
        ax.set_title(f"{name}\n{format_correlation(stats)}", fontsize=8)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--measure", default="jpeg_bpp", choices=sorted(MEASURE_LABELS))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", default="complexity_compare")
    args = parser.parse_args()

    table = None
    panels = []
    for run in args.runs:
        pairing = pair(run, args.store)
        quantity, rows, k_by_var, _, _ = per_image_k(pairing)
        if table is None or not np.array_equal(table.rows, rows):
            table = store_complexity(pairing.store, rows, patches=False)
        k = next(iter(k_by_var.values()))
        stats = correlate(table.image[args.measure], k, args.n_boot)
        panels.append((pairing.name, quantity, k, stats))
        print(f"{pairing.name}: {format_correlation(stats)}")
    fig = compare_panels(table.image[args.measure], panels, args.measure)
    for path in save_figure(fig, args.out):
        print(path)


if __name__ == "__main__":
    main()
