"""Comparison fronts, interpolation, seed stability and latent-usage counts."""

from pathlib import Path

import numpy as np
import pytest
import torch

from softsae_vision.analysis.compare import (
    RunMetrics,
    baseline_at_softsae_l0,
    build_fronts,
    fvu_at_l0,
)
from softsae_vision.analysis.stability import coherence, match_atoms, seed_groups
from softsae_vision.training.evaluation import latent_usage


def _run(name, arch, l0, fvu, seed=0):
    config = {"architecture": arch, "training": {"seed": seed}}
    return RunMetrics(name, Path(name), arch, config, {"l0_mean": l0, "fvu": fvu})


def test_fvu_at_l0_interpolates_inside_the_front_only():
    front = build_fronts([_run("b", "topk", 8, 0.2), _run("a", "topk", 4, 0.4)])["topk"]
    assert [r.name for r in front] == ["a", "b"]
    assert fvu_at_l0(front, 6) == pytest.approx(0.3)
    assert fvu_at_l0(front, 4) == pytest.approx(0.4)
    assert fvu_at_l0(front, 9) is None and fvu_at_l0(front, 3) is None


def test_seed_replicates_count_once_at_their_mean():
    front = [_run("a", "topk", 4, 0.4), _run("a1", "topk", 4, 0.6), _run("b", "topk", 8, 0.2)]
    assert fvu_at_l0(front, 4) == pytest.approx(0.5)
    assert fvu_at_l0(front, 6) == pytest.approx(0.35)


def test_baseline_table_rows():
    fronts = build_fronts(
        [_run("s", "softsae", 5, 0.25), _run("a", "topk", 4, 0.4), _run("b", "topk", 8, 0.2)]
    )
    (row,) = baseline_at_softsae_l0(fronts)
    assert row["baseline"] == "topk" and row["baseline_fvu_at_l0"] == pytest.approx(0.35)
    assert row["fvu_difference"] == pytest.approx(-0.1) and row["nearest_baseline_run"] == "a"


def test_matching_recovers_a_permuted_dictionary():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 16, generator=gen)
    perm = torch.randperm(64, generator=gen)
    same = match_atoms(w, 3.0 * w[perm])  # scale does not matter, order does not matter
    assert same["mean_cosine"] == pytest.approx(1.0) and same["frac_above"] == 1.0
    other = match_atoms(w, torch.randn(64, 16, generator=gen))
    assert other["mean_cosine"] < 0.8 and other["frac_above"] < 0.2


def test_coherence_is_the_largest_off_diagonal_cosine():
    w = torch.eye(4, 8)
    assert coherence(w) == pytest.approx(0.0)
    w[3] = w[0] + 0.01 * w[1]
    assert coherence(w) == pytest.approx(float(w[3] @ w[0] / w[3].norm()), abs=1e-6)


def test_seed_groups_need_everything_but_the_seed_equal():
    base = {"architecture": "topk", "hparams": {"k": 4}, "data": {"path": "/x", "d": 8}}
    configs = [
        {**base, "training": {"seed": 0, "steps": 10}},
        {**base, "data": {"path": "/y", "d": 8}, "training": {"seed": 1, "steps": 10}},
        {**base, "training": {"seed": 2, "steps": 20}},  # other steps: not a replicate
        {**base, "hparams": {"k": 8}, "training": {"seed": 3, "steps": 10}},
    ]
    assert seed_groups(configs) == [[0, 1]]


def test_latent_usage_counts():
    counts = torch.tensor([0, 1, 50, 2000, 9000])
    usage = latent_usage(counts, n_rows=10_000)
    assert usage["dead_latents"] == 1 and usage["almost_dead_latents"] == 0
    usage = latent_usage(counts, n_rows=100_000)
    assert usage["almost_dead_latents"] == 1  # 1 in 100k < 1e-4; 50 in 100k is not
    assert usage["dense_latents"] == 0  # 9000 in 100k is under 10 %
    assert latent_usage(counts, 10_000)["dense_latents"] == 2
    assert np.isclose(usage["dead_frac"], 0.2)
