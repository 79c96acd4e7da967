"""Held-out metrics, pooled over the whole data set in raw activation space.

FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² over all rows (not an average of per-batch ratios, which the
reference evaluation did and which is biased for small batches); realised L0 from the codes
actually produced (not the target k); dead latents = never fired on the evaluation set,
almost-dead = fired on fewer than :data:`ALMOST_DEAD_FREQ` of the rows (but at least once), dense
= fired on more than :data:`DENSE_FREQ` of the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE

PERCENTILES = (5, 25, 50, 75, 95)
ALMOST_DEAD_FREQ = 1e-4
"""A latent firing on fewer than this fraction of rows (but on some) is almost dead."""
DENSE_FREQ = 0.1
"""A latent firing on more than this fraction of rows is dense."""


@dataclass
class _Accumulator:
    """Streaming sums for one group of rows (float64 to pool millions of rows exactly)."""

    n_latents: int
    n: int = 0
    sq_err: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_sq_norm: float = 0.0
    cos_sum: float = 0.0
    l0_hist: torch.Tensor = field(init=False)
    fire_counts: torch.Tensor = field(init=False)
    k_hats: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.l0_hist = torch.zeros(self.n_latents + 1, dtype=torch.long)
        self.fire_counts = torch.zeros(self.n_latents, dtype=torch.long)

    def add(self, x_BD, x_hat_BD, codes_BF, k_hat_B) -> None:
        x, x_hat = x_BD.double(), x_hat_BD.double()
        self.n += len(x)
        self.sq_err += (x - x_hat).pow(2).sum().item()
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq_norm += x.pow(2).sum().item()
        self.cos_sum += torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum().item()
        active_BF = codes_BF != 0
        self.l0_hist += torch.bincount(active_BF.sum(-1).cpu(), minlength=self.n_latents + 1)
        self.fire_counts += active_BF.sum(0).cpu()
        if k_hat_B is not None:
            self.k_hats.append(k_hat_B.float().cpu())

    def result(self) -> dict[str, Any]:
        if self.sum_x is None:
            raise SoftSAEError("no evaluation data")
        total_var = self.sum_sq_norm - self.sum_x.pow(2).sum().item() / self.n
        counts = self.l0_hist.double()
        values = torch.arange(len(counts), dtype=torch.float64)
        mean = (counts * values).sum() / self.n
        std = ((counts * (values - mean) ** 2).sum() / self.n).sqrt()
        cdf = counts.cumsum(0) / self.n
        out = {
            "n_rows": self.n,
            "fvu": self.sq_err / total_var if total_var > 0 else float("nan"),
            "cosine": self.cos_sum / self.n,
            "l0_mean": mean.item(),
            "l0_std": std.item(),
            **{
                f"l0_p{p}": int(torch.searchsorted(cdf, torch.tensor(p / 100.0, dtype=cdf.dtype)))
                for p in PERCENTILES
            },
            **latent_usage(self.fire_counts, self.n),
        }
        if self.k_hats:
            out.update(k_hat_summary(torch.cat(self.k_hats)))
        return out


def latent_usage(fire_counts_F: torch.Tensor, n_rows: int) -> dict[str, float]:
    """Dead, almost-dead and dense latent counts from per-latent firing counts over n_rows."""
    freq_F = fire_counts_F.double() / max(1, n_rows)
    dead_F = fire_counts_F == 0
    return {
        "dead_latents": int(dead_F.sum()),
        "dead_frac": dead_F.float().mean().item(),
        "almost_dead_latents": int(((freq_F < ALMOST_DEAD_FREQ) & ~dead_F).sum()),
        "dense_latents": int((freq_F > DENSE_FREQ).sum()),
    }


def k_hat_summary(k_hat_N: torch.Tensor) -> dict[str, float]:
    """Mean, std, min and max of predicted k̂ values."""
    return {
        "k_hat_mean": k_hat_N.mean().item(),
        "k_hat_std": k_hat_N.std().item() if len(k_hat_N) > 1 else 0.0,
        "k_hat_min": k_hat_N.min().item(),
        "k_hat_max": k_hat_N.max().item(),
    }


@torch.no_grad()
def evaluate(
    sae: BaseSAE,
    batches: Iterable[tuple[str, torch.Tensor]] | Iterable[torch.Tensor],
    device: str = "auto",
) -> dict:
    """Pooled metrics over every row of ``batches``; per group too when there are several.

    ``batches`` yields (group, (b, d) tensor) pairs — what ``source.iter_eval(n)`` gives — or
    plain tensors (one group, "all"). Returns {"n_rows", "fvu", "cosine", "l0_mean", ...,
    "groups": {name: {...}}} with "groups" present only if the rows came in named groups.
    """
    dev = resolve_device(device)
    sae = sae.to(dev).eval()
    pooled = _Accumulator(sae.n_latents)
    groups: dict[str, _Accumulator] = {}
    for item in batches:
        group, x_BD = item if isinstance(item, tuple) else ("all", item)
        x_BD = torch.as_tensor(x_BD).to(dev, torch.float32)
        if not torch.isfinite(x_BD).all():
            raise SoftSAEError("evaluation data contain NaN or inf values")
        out = sae(x_BD)
        pooled.add(x_BD, out.x_hat, out.codes, out.k_hat)
        groups.setdefault(group, _Accumulator(sae.n_latents)).add(
            x_BD, out.x_hat, out.codes, out.k_hat
        )
    if pooled.n == 0:
        raise SoftSAEError("no evaluation data")
    result: dict[str, Any] = pooled.result()
    if set(groups) != {"all"}:
        result["groups"] = {name: acc.result() for name, acc in groups.items()}
    return result


def run_data_description(run_dir) -> dict:
    """The ``data`` block of a run's config.json (empty if the run has none)."""
    import json
    from pathlib import Path

    path = Path(run_dir)
    path = path.parent if path.suffix == ".safetensors" else path
    try:
        return json.loads((path / "config.json").read_text()).get("data") or {}
    except (OSError, json.JSONDecodeError):
        return {}


def open_eval_source(run_dir, data, layer=None, tokens=None):
    """The source over DATA a run is evaluated on: by default the layer and tokens it saw."""
    from pathlib import Path

    from softsae_vision.data.source import open_source

    trained_on = run_data_description(run_dir)
    if Path(data).is_dir() and trained_on.get("kind") == "store":
        layer = layer if layer is not None else trained_on.get("layer")
        tokens = tokens or trained_on.get("tokens")
    return open_source(data, layer=layer, tokens=tokens)
