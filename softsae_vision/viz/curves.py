"""Training curves from a run's ``metrics.jsonl`` (one JSON object per logged step)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

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


@dataclass(frozen=True)
class Panel:
    """One panel of the training-curve figure: a human title (with unit) over some keys."""

    title: str
    keys: tuple[str, ...]
    scale: float = 1.0  # multiply values (e.g. fractions shown as %)
    log: bool = False  # log y axis when the values span more than a decade


PANELS = (
    Panel("training loss (normalised squared error)", ("loss", "mse", "aux"), log=True),
    Panel("active latents per input", ("l0_mean", "k_target", "k_hat_mean")),
    Panel("predicted k̂ range (latents)", ("k_hat_min", "k_hat_max")),
    Panel("L0 spread across inputs (std, latents)", ("l0_std", "k_hat_std")),
    Panel("dead latents (% of dictionary)", ("dead_frac",), scale=100.0),
    Panel("learning rate", ("lr",), log=True),
    Panel("soft top-k temperature α (normalised units)", ("alpha",), log=True),
    Panel("k-budget penalty (hinge on the batch-mean k̂)", ("loss_k",)),
)
"""Known metrics, grouped; any other numeric key gets a panel of its own."""

LINE_NAMES = {
    "loss": "total",
    "mse": "reconstruction",
    "aux": "AuxK",
    "l0_mean": "realised L0",
    "k_target": "k target",
    "k_hat_mean": "mean k̂",
    "k_hat_min": "min k̂",
    "k_hat_max": "max k̂",
    "l0_std": "L0",
    "k_hat_std": "k̂",
    "dead_frac": "dead latents (fraction)",
    "lr": "learning rate",
    "alpha": "α",
    "loss_k": "k-budget penalty",
}


def training_events(records: Sequence[dict]) -> dict[str, float]:
    """Steps of the soft→hard switch and of the end of k annealing, where the run had them."""
    events: dict[str, float] = {}
    for i, rec in enumerate(records):
        if rec.get("phase") == "hard":
            if i > 0:  # a run that is hard from its first step has no switch to mark
                events["soft → hard top-k"] = float(rec.get(STEP_KEY, i))
            break
    k_steps, k_values = numeric_series(records).get("k_target", (np.empty(0), np.empty(0)))
    if k_values.size > 1 and np.ptp(k_values) > 0:
        final = np.flatnonzero(np.abs(k_values - k_values[-1]) > 1e-9 * abs(k_values[-1]) + 1e-12)
        if final.size and final[-1] + 1 < k_values.size:
            events["k annealing ends"] = float(k_steps[final[-1] + 1])
    return events


def _panels(series: dict) -> tuple[list[tuple[Panel, list[str]]], list[str]]:
    """Panels with their varying keys, and the notes for constant series left out."""
    constant = {
        k for k, (_, v) in series.items() if v.size and np.ptp(v) <= 1e-12 * max(1, abs(v[0]))
    }
    known = {k for p in PANELS for k in p.keys}
    extra = [Panel(k.replace("_", " "), (k,)) for k in series if k not in known]
    panels = []
    for panel in (*PANELS, *extra):
        varying = [k for k in panel.keys if k in series and k not in constant]
        if varying:
            panels.append((panel, varying))
    notes = [f"{LINE_NAMES.get(k, k)} = {series[k][1][0]:.4g}" for k in series if k in constant]
    return panels, notes


@styled
def render_training_curves(records: Sequence[dict], *, title: str | None = None):
    """Panels of the logged quantities on one shared step axis, phases marked.

    Related metrics share a panel (losses; L0, k target and mean k̂); quantities that never
    change are listed under the figure instead of drawn flat. Dashed lines mark the soft→hard
    switch and the end of k annealing.
    """
    series = numeric_series(records)
    if not series:
        raise SoftSAEError("the training metrics hold no numeric values to plot")
    panels, notes = _panels(series)
    if not panels:
        raise SoftSAEError(f"every logged quantity is constant ({', '.join(notes)})")
    events = training_events(records)
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    footer = 0.35 if (events or notes) else 0.0
    fig = new_figure(2.8 * n_cols, 2.0 * n_rows + 0.3 + footer + (0.25 if title else 0))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True)
    first, last = min(s[0].min() for s in series.values()), max(s[0].max() for s in series.values())
    for idx, (ax, (panel, keys)) in enumerate(zip(axes.ravel(), panels, strict=False)):
        for j, key in enumerate(keys):
            steps, values = series[key]
            ax.plot(
                steps,
                values * panel.scale,
                color=LINE_COLOURS[(idx if len(keys) == 1 else j) % len(LINE_COLOURS)],
                linewidth=1.2,
                label=LINE_NAMES.get(key, key),
            )
        ax.set_title(panel.title)
        values = np.concatenate([series[k][1] for k in keys])
        if panel.log and _spans_decades(values[values > 0]):  # zeros are left out on a log axis
            ax.set_yscale("log")
        for (name, step), style in zip(events.items(), EVENT_STYLES, strict=False):
            ax.axvline(step, color="0.3", linewidth=0.9, linestyle=style, label="_" + name)
        if len(keys) > 1:
            ax.legend(frameon=True, framealpha=0.85, edgecolor="none", fontsize=7, loc="best")
        ax.set_xlim(first, last if last > first else first + 1)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for idx, ax in enumerate(axes.ravel()[: len(panels)]):
        ax.xaxis.set_tick_params(labelbottom=True)  # shared axis, but every panel readable
        if idx + n_cols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("training step")
    _footer(fig, events, notes)
    if title:
        fig.suptitle(title)
    return fig


EVENT_STYLES = ("--", ":")


def _footer(fig, events: dict[str, float], notes: list[str]) -> None:
    """A legend under the panels: what the vertical lines mark, and the constant quantities."""
    handles = [
        Line2D([], [], color="0.3", linewidth=0.9, linestyle=style, label=f"{name} (step {step:g})")
        for (name, step), style in zip(events.items(), EVENT_STYLES, strict=False)
    ]
    if notes:
        handles.append(Line2D([], [], linestyle="none", label="constant: " + ", ".join(notes)))
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=len(handles),
            frameon=False,
            fontsize=7,
        )


def _spans_decades(values: np.ndarray) -> bool:
    """Positive values covering more than a factor of 10 read better on a log axis."""
    return bool(values.size) and values.min() > 0 and values.max() > 10 * values.min()
