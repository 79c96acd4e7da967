"""Several SAE runs on the same held-out data: metrics, FVU-against-L0 fronts, seed stability.

Every number comes from :func:`softsae_vision.training.evaluate.evaluate` (pooled FVU, cosine,
realised L0, latent usage) and :mod:`softsae_vision.analysis.stability`; this module only
groups runs into fronts and interpolates. A *front* is one architecture's runs sorted by mean
realised L0 and joined; a baseline's FVU at SoftSAE's mean L0 is read off its front by linear
interpolation between the two neighbouring runs (never extrapolated beyond its L0 range).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softsae_vision.errors import SoftSAEError

SOFTSAE = "softsae"
SCHEMA_VERSION = 1


@dataclass
class RunMetrics:
    """One run's identity and its pooled (and per-token-type) metrics on the data."""

    name: str
    path: Path
    architecture: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def l0(self) -> float:
        return float(self.metrics["l0_mean"])

    @property
    def fvu(self) -> float:
        return float(self.metrics["fvu"])


@dataclass
class Comparison:
    """What :func:`compare_runs` measured."""

    data: str
    runs: list[RunMetrics]
    fronts: dict[str, list[RunMetrics]]
    at_softsae_l0: list[dict[str, Any]]
    stability: list[dict[str, Any]] = field(default_factory=list)
    coherence: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (the ``compare.json`` file)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "data": self.data,
            "runs": [
                {
                    "name": r.name,
                    "path": str(r.path),
                    "architecture": r.architecture,
                    "hparams": r.config.get("hparams", {}),
                    "seed": (r.config.get("training") or {}).get("seed"),
                    "coherence": self.coherence.get(r.name),
                    "metrics": r.metrics,
                }
                for r in self.runs
            ],
            "fronts": {arch: [r.name for r in front] for arch, front in self.fronts.items()},
            "fvu_at_softsae_l0": self.at_softsae_l0,
            "seed_stability": self.stability,
        }


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Run directory names, prefixed by their parent where two would otherwise clash."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def build_fronts(runs: Sequence[RunMetrics]) -> dict[str, list[RunMetrics]]:
    """Each architecture's runs sorted by mean realised L0."""
    fronts: dict[str, list[RunMetrics]] = {}
    for run in runs:
        fronts.setdefault(run.architecture, []).append(run)
    return {arch: sorted(front, key=lambda r: r.l0) for arch, front in sorted(fronts.items())}


def fvu_at_l0(front: Sequence[RunMetrics], l0: float) -> float | None:
    """FVU of ``front`` at mean L0 ``l0`` by linear interpolation; None outside its L0 range."""
    if not front:
        return None
    by_l0: dict[float, list[float]] = {}
    for run in front:  # seed replicates at one L0 count once, with their mean FVU
        by_l0.setdefault(round(run.l0, 9), []).append(run.fvu)
    l0s = np.array(sorted(by_l0))
    fvus = np.array([np.mean(by_l0[x]) for x in l0s])
    if l0 < l0s[0] - 1e-9 or l0 > l0s[-1] + 1e-9:
        return None
    return float(np.interp(l0, l0s, fvus))


def baseline_at_softsae_l0(fronts: dict[str, list[RunMetrics]]) -> list[dict[str, Any]]:
    """For every SoftSAE run and baseline front: the baseline's FVU at SoftSAE's mean L0."""
    rows = []
    for soft in fronts.get(SOFTSAE, []):
        for arch, front in fronts.items():
            if arch == SOFTSAE:
                continue
            at = fvu_at_l0(front, soft.l0)
            nearest = min(front, key=lambda r: abs(r.l0 - soft.l0))
            rows.append(
                {
                    "softsae_run": soft.name,
                    "softsae_l0": soft.l0,
                    "softsae_fvu": soft.fvu,
                    "baseline": arch,
                    "baseline_l0_range": [front[0].l0, front[-1].l0],
                    "baseline_fvu_at_l0": at,
                    "fvu_difference": None if at is None else soft.fvu - at,
                    "nearest_baseline_run": nearest.name,
                    "nearest_baseline_l0": nearest.l0,
                    "nearest_baseline_fvu": nearest.fvu,
                }
            )
    return rows


def compare_runs(
    runs: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    *,
    layer: int | str | None = None,
    tokens: str | None = None,
    batch_size: int = 4096,
    device: str = "cpu",
) -> Comparison:
    """Evaluate every run on ``data`` (each on the layer and tokens it was trained on unless
    ``layer``/``tokens`` say otherwise), build fronts, interpolate, and measure seed stability."""
    from softsae_vision.sae.base import load_run
    from softsae_vision.training.evaluation import evaluate, open_eval_source

    if not runs:
        raise SoftSAEError("compare needs at least one RUN")
    paths = [Path(r).parent if Path(r).suffix == ".safetensors" else Path(r) for r in runs]
    names = unique_names(paths)
    if len(set(names)) != len(names):
        raise SoftSAEError("the same run was given twice; pass each RUN once")
    measured, decoders = [], []
    for name, path in zip(names, paths, strict=True):
        run = load_run(path, device=device)
        sae, config = run.sae, run.config
        source = open_eval_source(path, data, layer=layer, tokens=tokens)
        if source.d != sae.d_in:
            raise SoftSAEError(
                f"{path}: the SAE reads d={sae.d_in} but {data} gives d={source.d}; compare runs "
                "trained on the same layer of the same backbone"
            )
        metrics = evaluate(sae, source.iter_eval(batch_size), device=device)
        measured.append(RunMetrics(name, path, sae.architecture, config, metrics))
        decoders.append(sae.W_dec.detach().cpu())
    return summarise(str(data), measured, decoders)


def summarise(
    data: str, measured: list[RunMetrics], decoders: Sequence[torch.Tensor]
) -> Comparison:
    """Fronts, baseline FVU at SoftSAE's L0, seed stability and coherence of measured runs."""
    from softsae_vision.analysis.stability import coherence, seed_stability

    fronts = build_fronts(measured)
    configs = [r.config for r in measured]
    return Comparison(
        data=data,
        runs=measured,
        fronts=fronts,
        at_softsae_l0=baseline_at_softsae_l0(fronts),
        stability=seed_stability([r.name for r in measured], configs, decoders),
        coherence={r.name: coherence(w) for r, w in zip(measured, decoders, strict=True)},
    )


METRIC_COLUMNS = (
    "n_rows",
    "fvu",
    "cosine",
    "l0_mean",
    "l0_std",
    "l0_p5",
    "l0_p95",
    "dead_latents",
    "almost_dead_latents",
    "dense_latents",
    "k_hat_mean",
)


def metric_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per run and token type ("pooled" first): the columns of ``compare.csv``."""
    rows = []
    for run in comparison.runs:
        groups = {"pooled": run.metrics, **run.metrics.get("groups", {})}
        for tokens, metrics in groups.items():
            rows.append(
                {
                    "run": run.name,
                    "architecture": run.architecture,
                    "tokens": tokens,
                    **{c: metrics.get(c) for c in METRIC_COLUMNS},
                    "decoder_coherence": comparison.coherence.get(run.name),
                }
            )
    return rows
