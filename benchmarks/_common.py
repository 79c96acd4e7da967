"""Timing helpers shared by the benchmarks: interleaved repeats, medians, one JSON line."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable


def time_fn(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Return the median wall time of fn() in seconds over `repeats` runs after `warmup`."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per function, running them in turn each round.

    Interleaving makes load from other processes hit every candidate alike, so ratios
    between them stay meaningful on a shared machine even when absolute times drift.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def emit_json(obj: dict) -> None:
    """Print one JSON object on stdout (the benchmark's whole output)."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
