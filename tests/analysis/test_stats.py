import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softsae_vision.analysis.stats import correlate, format_correlation, rankdata
from softsae_vision.errors import SoftSAEError


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=30))
def test_rankdata_matches_definition(values):
    a = np.array(values)
    expected = [np.sum(a < v) + (np.sum(a == v) + 1) / 2 for v in a]
    assert np.allclose(rankdata(a), expected)


def test_pearson_and_spearman_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x**3 + rng.normal(scale=0.5, size=200)
    out = correlate(x, y, n_boot=200, n_perm=200)
    assert out["pearson"]["r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert out["spearman"]["r"] == pytest.approx(np.corrcoef(rankdata(x), rankdata(y))[0, 1])
    for method in ("pearson", "spearman"):
        s = out[method]
        assert s["ci_low"] <= s["r"] <= s["ci_high"]
        assert s["ci_high"] - s["ci_low"] < 0.3
        assert s["p_perm"] == pytest.approx(1 / 201)  # nothing beats a strong correlation
        assert s["boot_valid"] == 1.0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(-2, 2))
def test_ci_contains_point_estimate(seed, slope):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=40)
    y = slope * x + rng.normal(size=40)
    out = correlate(x, y, n_boot=300, n_perm=0, seed=seed)
    for method in ("pearson", "spearman"):
        s = out[method]
        assert s["ci_low"] <= s["r"] <= s["ci_high"]
        assert s["p_perm"] is None


def test_independent_data_is_not_significant():
    rng = np.random.default_rng(3)
    out = correlate(rng.normal(size=300), rng.normal(size=300), n_boot=200, n_perm=500)
    assert out["spearman"]["ci_low"] < 0 < out["spearman"]["ci_high"]
    assert out["spearman"]["p_perm"] > 0.05


def test_constant_variable_is_undefined_not_an_error():
    out = correlate(np.arange(10.0), np.full(10, 32.0), n_boot=50)
    assert math.isnan(out["spearman"]["r"]) and "constant" in out["note"]
    assert "undefined" in format_correlation(out)


def test_grouped_bootstrap_is_wider_for_clustered_data():
    # 10 groups, each 50 copies of one random point: only 10 independent observations.
    rng = np.random.default_rng(0)
    gx, gy = rng.normal(size=10), rng.normal(size=10)
    groups = np.repeat(np.arange(10), 50)
    x, y = gx[groups] + 1e-3 * rng.normal(size=500), gy[groups] + 1e-3 * rng.normal(size=500)
    naive = correlate(x, y, n_boot=300, n_perm=0)["pearson"]
    clustered = correlate(x, y, n_boot=300, groups=groups)
    assert clustered["n_groups"] == 10 and clustered["pearson"]["p_perm"] is None
    width = clustered["pearson"]["ci_high"] - clustered["pearson"]["ci_low"]
    assert width > 2 * (naive["ci_high"] - naive["ci_low"])


def test_drops_non_finite_and_checks_lengths():
    out = correlate([1, 2, np.nan, 4, 5], [2, 4, 6, np.inf, 10], n_boot=20)
    assert out["n"] == 3 and out["pearson"]["r"] == pytest.approx(1.0)
    with pytest.raises(SoftSAEError):
        correlate([1, 2], [1, 2, 3])
    assert "ρ = 1.00" in format_correlation(out)
