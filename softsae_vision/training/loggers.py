"""Optional metric sinks: TensorBoard and Weights & Biases, fed the lines of ``metrics.jsonl``.

The trainer writes every logged step to ``metrics.jsonl``; with ``log_to=("tensorboard",)`` (CLI:
``--log tensorboard``) or ``"wandb"`` the same ``{name: value}`` dict also goes to those tools.
Both are off by default and optional: asking for one that is not installed is a one-line
:class:`SoftSAEError` naming the package to install, raised before training starts.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from softsae_vision.errors import SoftSAEError

SINKS = ("tensorboard", "wandb")
"""Names ``--log`` accepts."""
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class MetricSink(Protocol):
    """Receives each logged step's metrics."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}


class TensorBoardSink:
    """Scalars under ``<run>/tensorboard`` (or ``log_dir``), one point per logged step."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in _scalars(metrics).items():
            self.writer.add_scalar(f"train/{name}", value, global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbSink:
    """A Weights & Biases run (project from ``WANDB_PROJECT``, default ``softsae-vision``)."""

    def __init__(self, run_dir: str | os.PathLike | None, config: Mapping[str, Any]) -> None:
        import wandb  # pyright: ignore[reportMissingImports] - optional, not a dependency

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "softsae-vision"),
            name=Path(run_dir).name if run_dir else None,
            dir=str(run_dir) if run_dir else None,
            config=dict(config),
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in _scalars(metrics).items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def check_available(names: Sequence[str]) -> tuple[str, ...]:
    """The requested sink names, validated; raises if one is unknown or not installed."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in names if n and n.strip()))
    for name in names:
        if name not in SINKS:
            raise SoftSAEError(f"unknown --log {name!r}; choose from {', '.join(SINKS)}")
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise SoftSAEError(
                f"--log {name} needs the {_PACKAGES[name]} package, which is not installed; "
                f"pip install {_PACKAGES[name]}"
            )
    return names


def open_sinks(
    names: Sequence[str], run_dir: str | os.PathLike | None, config: Mapping[str, Any]
) -> list[MetricSink]:
    """Open the requested sinks for one training run (TensorBoard under ``run_dir``)."""
    sinks: list[MetricSink] = []
    for name in check_available(names):
        if name == "tensorboard":
            base = Path(run_dir) if run_dir is not None else Path("runs")
            sinks.append(TensorBoardSink(base / "tensorboard"))
        else:
            sinks.append(WandbSink(run_dir, config))
    return sinks


def close_sinks(sinks: Sequence[MetricSink]) -> None:
    """Close every sink (each is flushed even if another fails)."""
    errors = []
    for sink in sinks:
        try:
            sink.close()
        except Exception as err:  # a broken sink must not hide the others
            errors.append(err)
    if errors:
        raise errors[0]


__all__ = ["SINKS", "MetricSink", "check_available", "close_sinks", "open_sinks"]
