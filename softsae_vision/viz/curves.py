"""Training curves from a run's ``metrics.jsonl`` (one JSON object per logged step)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softsae_vision.errors import SoftSAEError
from softsae_vision.viz.style import LINE_COLOURS, new_figure, styled

log = logging.getLogger(__name__)

STEP_KEY = "step"
LOG_SCALE_KEYS = ("loss", "mse", "fvu", "aux", "lr")  # plotted on a log axis when positive


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a run directory works too); bad lines skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise SoftSAEError(f"no training metrics at {path}")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d is not JSON (an interrupted write?); skipped", path, lineno)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def numeric_series(records: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every numeric key except the step, as ``{key: (steps, values)}`` in first-seen order."""
    series: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(records):
        step = rec.get(STEP_KEY, i)
        for key, value in rec.items():
            if key == STEP_KEY or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(step)
                ys.append(value)
    return {k: (np.asarray(xs, float), np.asarray(ys, float)) for k, (xs, ys) in series.items()}


@styled
def render_training_curves(records: Sequence[dict], *, title: str | None = None):
    """One small panel per logged quantity against the training step."""
    series = numeric_series(records)
    if not series:
        raise SoftSAEError("the training metrics hold no numeric values to plot")
    n_cols = min(3, len(series))
    n_rows = math.ceil(len(series) / n_cols)
    fig = new_figure(2.6 * n_cols, 1.9 * n_rows + 0.3)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for idx, (ax, (key, (steps, values))) in enumerate(
        zip(axes.ravel(), series.items(), strict=False)
    ):
        ax.plot(steps, values, color=LINE_COLOURS[idx % len(LINE_COLOURS)], linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        if any(tag in key for tag in LOG_SCALE_KEYS) and _spans_decades(values):
            ax.set_yscale("log")
    for ax in axes.ravel()[len(series) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def _spans_decades(values: np.ndarray) -> bool:
    """Positive values covering more than a factor of 10 read better on a log axis."""
    return bool(values.size) and values.min() > 0 and values.max() > 10 * values.min()
