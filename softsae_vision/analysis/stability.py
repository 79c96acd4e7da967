"""Dictionary stability across seeds and decoder coherence, from decoder atoms alone.

Two runs that differ only in their seed should learn the same dictionary up to a permutation of
latents. We match atoms one-to-one by the Hungarian algorithm on their cosine similarity
(``scipy.optimize.linear_sum_assignment``, maximising the summed cosine) and report the mean
matched cosine and the fraction of atoms matched above a threshold (0.9 by default). Coherence
is the largest cosine between two different atoms of one dictionary (1.0: a duplicated atom).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

MATCH_THRESHOLD = 0.9
"""Matched atoms with a cosine above this count as reproduced."""

_BLOCK_ROWS = 2048


def unit_rows(w_FD: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm, float64 on the CPU (zero rows stay zero)."""
    w_FD = w_FD.detach().double().cpu()
    return w_FD / w_FD.norm(dim=1, keepdim=True).clamp_min(1e-12)


def match_atoms(
    w_a_FD: torch.Tensor, w_b_GD: torch.Tensor, threshold: float = MATCH_THRESHOLD
) -> dict[str, Any]:
    """Hungarian matching of two decoders' atoms by cosine: mean, median and fraction above."""
    from scipy.optimize import linear_sum_assignment

    if w_a_FD.shape[1] != w_b_GD.shape[1]:
        raise ValueError(f"decoders of width {w_a_FD.shape[1]} and {w_b_GD.shape[1]} differ")
    cos_FG = (unit_rows(w_a_FD) @ unit_rows(w_b_GD).T).numpy()
    rows, cols = linear_sum_assignment(cos_FG, maximize=True)
    matched = cos_FG[rows, cols]
    return {
        "n_matched": int(len(matched)),
        "mean_cosine": float(matched.mean()),
        "median_cosine": float(np.median(matched)),
        "frac_above": float((matched > threshold).mean()),
        "threshold": threshold,
    }


def coherence(w_FD: torch.Tensor) -> float:
    """Largest cosine between two different rows (atoms) of a decoder."""
    unit_FD = unit_rows(w_FD)
    n = unit_FD.shape[0]
    if n < 2:
        return float("nan")
    best = -1.0
    for start in range(0, n, _BLOCK_ROWS):
        block_BF = unit_FD[start : start + _BLOCK_ROWS] @ unit_FD.T
        idx = torch.arange(block_BF.shape[0])
        block_BF[idx, idx + start] = -2.0  # exclude each atom's cosine with itself
        best = max(best, float(block_BF.max()))
    return best


def seed_key(config: dict[str, Any]) -> str:
    """What must agree for two runs to differ only in seed: architecture, widths, data, training."""
    data = {k: v for k, v in (config.get("data") or {}).items() if k != "path"}
    training = {k: v for k, v in (config.get("training") or {}).items() if k != "seed"}
    hparams = {k: v for k, v in (config.get("hparams") or {}).items() if k != "seed"}
    key = {
        "architecture": config.get("architecture"),
        "d_in": config.get("d_in"),
        "n_latents": config.get("n_latents"),
        "hparams": hparams,
        "data": data,
        "training": training,
    }
    return json.dumps(key, sort_keys=True, default=str)


def seed_groups(configs: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of runs that differ only in seed (groups of two or more, distinct seeds)."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(seed_key(config), []).append(i)
    out = []
    for members in groups.values():
        seeds = {(configs[i].get("training") or {}).get("seed") for i in members}
        if len(members) >= 2 and len(seeds) == len(members):
            out.append(members)
    return out


def seed_stability(
    names: Sequence[str],
    configs: Sequence[dict[str, Any]],
    decoders: Sequence[torch.Tensor],
    threshold: float = MATCH_THRESHOLD,
) -> list[dict[str, Any]]:
    """Matched-atom statistics for every pair of runs that differ only in seed."""
    results = []
    for group in seed_groups(configs):
        for i, j in combinations(group, 2):
            results.append(
                {
                    "run_a": names[i],
                    "run_b": names[j],
                    "architecture": configs[i].get("architecture"),
                    "seed_a": (configs[i].get("training") or {}).get("seed"),
                    "seed_b": (configs[j].get("training") or {}).get("seed"),
                    **match_atoms(decoders[i], decoders[j], threshold),
                }
            )
    return results
