"""Correlations with bootstrap confidence intervals and permutation p-values.

Implemented with numpy alone (no scipy at run time). Ranks use the average of tied positions, so
Spearman's ρ is Pearson's r of those ranks, as in every textbook definition.

When rows are not independent — patches of one image — pass ``groups`` (e.g. the image index of
each patch): the bootstrap then resamples whole groups (a cluster bootstrap). A plain
permutation test would overstate significance for such rows, so it is skipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from softsae_vision.errors import SoftSAEError

METHODS = ("pearson", "spearman")
PERM_CHUNK = 64  # permutations evaluated at once (bounds memory to PERM_CHUNK x n floats)


def rankdata(a: ArrayLike) -> NDArray[np.float64]:
    """Ranks 1..n of a 1-D array, ties given the mean of their positions."""
    a = np.asarray(a)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of the last element of each distinct value
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def _pearson_rows(x_RN: NDArray, y_RN: NDArray) -> NDArray[np.float64]:
    """Pearson r of every row pair (R,); NaN where a row is constant."""
    xc = x_RN - x_RN.mean(axis=1, keepdims=True)
    yc = y_RN - y_RN.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / denom
    # Relative tolerance: a row that is constant up to rounding has no correlation.
    scale = np.sqrt((x_RN**2).sum(axis=1) * (y_RN**2).sum(axis=1))
    r[~(denom > 1e-12 * np.maximum(scale, 1e-300))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _coefficient(method: str, x_RN: NDArray, y_RN: NDArray) -> NDArray[np.float64]:
    if method == "spearman":
        x_RN = np.stack([rankdata(row) for row in x_RN])
        y_RN = np.stack([rankdata(row) for row in y_RN])
    return _pearson_rows(x_RN.astype(np.float64), y_RN.astype(np.float64))


def _bootstrap_indices(
    n: int, n_boot: int, rng: np.random.Generator, groups: NDArray | None
) -> list[NDArray[np.int64]]:
    if groups is None:
        return list(rng.integers(0, n, size=(n_boot, n)))
    labels, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    return [np.concatenate([members[g] for g in draw]) for draw in draws]


def correlate(
    x: ArrayLike,
    y: ArrayLike,
    n_boot: int = 1000,
    *,
    ci: float = 0.95,
    n_perm: int = 1000,
    groups: ArrayLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Pearson and Spearman correlation of ``x`` and ``y`` with bootstrap CIs.

    Returns ``{"n": ..., "n_groups": ..., "pearson": {...}, "spearman": {...}}`` where each
    method has ``r`` (point estimate on all data), ``ci_low``/``ci_high`` (percentile bootstrap
    interval at level ``ci`` over ``n_boot`` resamples of pairs, or of whole ``groups``),
    ``p_perm`` (two-sided permutation p-value from ``n_perm`` shuffles, None with groups) and
    ``boot_valid`` (fraction of resamples where the coefficient was defined). A constant input
    has no correlation: ``r`` and the interval are NaN and ``note`` says why.
    """
    x_N = np.asarray(x, dtype=np.float64).ravel()
    y_N = np.asarray(y, dtype=np.float64).ravel()
    if x_N.shape != y_N.shape:
        raise SoftSAEError(f"correlate needs equal lengths, got {x_N.size} and {y_N.size}")
    if not 0 < ci < 1:
        raise SoftSAEError(f"ci must be in (0, 1), got {ci}")
    keep = np.isfinite(x_N) & np.isfinite(y_N)
    x_N, y_N = x_N[keep], y_N[keep]
    group_N = None if groups is None else np.asarray(groups).ravel()[keep]
    n = x_N.size
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {
        "n": int(n),
        "n_groups": int(len(np.unique(group_N))) if group_N is not None else int(n),
        "ci": ci,
        "n_boot": int(n_boot),
    }
    note = None
    if n < 3:
        note = f"too few finite pairs ({n}) for a correlation"
    elif np.ptp(x_N) == 0 or np.ptp(y_N) == 0:
        note = "one variable is constant, so the correlation is undefined"
    if note is not None:
        result["note"] = note
    boot_idx = _bootstrap_indices(n, n_boot, rng, group_N) if note is None and n_boot > 0 else []
    for method in METHODS:
        result[method] = _one_method(method, x_N, y_N, boot_idx, ci, n_perm, group_N, rng, note)
    return result


def _one_method(
    method: str,
    x_N: NDArray,
    y_N: NDArray,
    boot_idx: list[NDArray[np.int64]],
    ci: float,
    n_perm: int,
    group_N: NDArray | None,
    rng: np.random.Generator,
    note: str | None,
) -> dict[str, Any]:
    nan = float("nan")
    if note is not None:
        return {"r": nan, "ci_low": nan, "ci_high": nan, "p_perm": None, "boot_valid": 0.0}
    r = float(_coefficient(method, x_N[None], y_N[None])[0])
    boot = np.array([_coefficient(method, x_N[i][None], y_N[i][None])[0] for i in boot_idx])
    valid = boot[np.isfinite(boot)]
    tail = (1 - ci) / 2 * 100
    lo, hi = np.percentile(valid, [tail, 100 - tail]) if valid.size else (nan, nan)
    p_perm = None
    if group_N is None and n_perm > 0:
        p_perm = _permutation_p(method, x_N, y_N, r, n_perm, rng)
    return {
        "r": r,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_perm": p_perm,
        "boot_valid": float(valid.size / max(len(boot_idx), 1)) if boot_idx else 0.0,
    }


def _permutation_p(
    method: str, x_N: NDArray, y_N: NDArray, r: float, n_perm: int, rng: np.random.Generator
) -> float:
    """Two-sided p-value: how often shuffled pairs correlate at least as strongly as observed."""
    if method == "spearman":  # ranks of a permutation are the permuted ranks
        x_N, y_N = rankdata(x_N), rankdata(y_N)
    hits = 0
    for start in range(0, n_perm, PERM_CHUNK):
        rows = min(PERM_CHUNK, n_perm - start)
        perms_PN = np.stack([rng.permutation(y_N) for _ in range(rows)])
        null_P = _pearson_rows(np.broadcast_to(x_N, perms_PN.shape), perms_PN)
        hits += int(np.sum(np.abs(null_P) >= abs(r) - 1e-12))
    return (1 + hits) / (n_perm + 1)


def format_correlation(stats: dict[str, Any], method: str = "spearman") -> str:
    """A short human-readable summary such as ``ρ = 0.41 [0.22, 0.57], n = 120``."""
    sym = {"spearman": "ρ", "pearson": "r"}[method]
    s = stats[method]
    if not math.isfinite(s["r"]):
        why = "a variable is constant" if "constant" in stats.get("note", "") else "too few pairs"
        return f"{sym} undefined ({why}), n = {stats['n']}"
    return f"{sym} = {s['r']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}], n = {stats['n']}"
