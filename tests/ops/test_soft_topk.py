"""soft_topk: agreement with the bisection oracle, LapSum's properties, dtypes, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import soft_topk, soft_topk_reference
from softsae_vision.ops._soft_topk_plan import FAST_ENV, PATH_ENV

PATHS = ["fast", "full", "fixed"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Run the test with the adaptive candidate path, the full sort and the fixed-shape plan."""
    monkeypatch.setenv(FAST_ENV, "0" if request.param == "full" else "1")
    monkeypatch.setenv(PATH_ENV, "fixed" if request.param == "fixed" else "adaptive")
    return request.param


def relu_rows(B: int, F: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """ReLU latents with about half exact zeros, an all-zero row and a row of ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(B, F, generator=g, dtype=torch.float64))
    if B >= 3:
        x[1] = 0.0
        x[2, : F // 2] = 0.5
    return x.to(dtype)


def assert_monotone(x_BF: torch.Tensor, p_BF: torch.Tensor) -> None:
    """p is non-decreasing in x within each row and equal on equal inputs, up to rounding.

    (SIMD and scalar tails of one elementwise kernel may differ in the last bit.)
    """
    tol = 4 * torch.finfo(p_BF.dtype).eps
    order = torch.argsort(x_BF, dim=1)
    xs, ps = x_BF.gather(1, order), p_BF.gather(1, order)
    step = ps[:, 1:] - ps[:, :-1]
    assert (step >= -tol).all()
    ties = xs[:, 1:] == xs[:, :-1]
    assert (step[ties].abs() <= tol).all()


@pytest.mark.parametrize("alpha", [1e-5, 1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("F", [1, 7, 128])
def test_matches_oracle_on_a_grid(path, alpha, F):
    x = relu_rows(5, F)
    for k_val in [1e-3, 0.5, 1.0, 2.0, 3.7, F / 2, F - 1, F - 1e-3]:
        if not 0 < k_val < F:
            continue
        k = torch.full((5,), k_val, dtype=torch.float64)
        p = soft_topk(x, k, alpha)
        ref = soft_topk_reference(x, k, alpha)
        torch.testing.assert_close(p, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(p.sum(1), k, atol=1e-12 * max(1.0, k_val), rtol=0)
        assert ((p >= 0) & (p <= 1)).all()
        assert_monotone(x, p)


def test_fp32_matches_oracle_to_output_rounding(path):
    x = relu_rows(16, 2048, torch.float32) * 0.3
    k = torch.linspace(8, 64, 16)
    p = soft_topk(x, k, 1e-3)
    assert p.dtype == torch.float32
    ref = soft_topk_reference(x, k, 1e-3)
    # half an ulp of 1 in float32 is 6e-8: the result is the exact answer rounded to float32
    torch.testing.assert_close(p.double(), ref, atol=6e-8, rtol=0)


@st.composite
def rows_k_alpha(draw):
    B = draw(st.integers(1, 3))
    F = draw(st.integers(1, 40))
    pool = draw(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=6))
    vals = draw(st.lists(st.sampled_from([0.0, *pool]), min_size=B * F, max_size=B * F))
    x = torch.tensor(vals, dtype=torch.float64).reshape(B, F)
    ks = draw(st.lists(st.floats(1e-3, 1 - 1e-3), min_size=B, max_size=B))
    k = torch.tensor(ks, dtype=torch.float64) * F
    alpha = 10 ** draw(st.floats(-4.0, 1.0))
    return x, k, alpha


@settings(max_examples=60, deadline=None)
@given(case=rows_k_alpha(), which=st.sampled_from(PATHS))
def test_properties_hold_on_random_rows_with_ties(case, which):
    x, k, alpha = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAST_ENV, "0" if which == "full" else "1")
        mp.setenv(PATH_ENV, "fixed" if which == "fixed" else "adaptive")
        p = soft_topk(x, k, alpha)
    torch.testing.assert_close(p.sum(1), k, atol=1e-12 * x.shape[1], rtol=0)
    assert ((p >= 0) & (p <= 1)).all()
    assert_monotone(x, p)
    torch.testing.assert_close(p, soft_topk_reference(x, k, alpha), atol=1e-12, rtol=0)


def test_small_alpha_gives_the_hard_topk_indicator(path):
    x = torch.randperm(50, dtype=torch.float64).reshape(2, 25) / 50  # distinct, gaps 0.02
    k = torch.tensor([3.0, 10.0], dtype=torch.float64)
    p = soft_topk(x, k, 1e-5)
    hard = torch.zeros_like(x)
    for b in range(2):
        hard[b, torch.argsort(x[b], descending=True)[: int(k[b])]] = 1.0
    torch.testing.assert_close(p, hard, atol=1e-12, rtol=0)


def test_large_alpha_gives_k_over_width(path):
    x = relu_rows(3, 30)
    k = torch.tensor([0.5, 7.0, 29.0], dtype=torch.float64)
    p = soft_topk(x, k, 1e7)
    torch.testing.assert_close(p, (k / 30)[:, None].expand(3, 30), atol=1e-6, rtol=0)


def test_all_zero_row_is_uniform(path):
    p = soft_topk(torch.zeros(2, 10), torch.tensor([2.5, 9.0]), 1e-3)
    torch.testing.assert_close(p, torch.tensor([[0.25] * 10, [0.9] * 10]))


def test_inputs_are_not_modified(path):
    x = relu_rows(4, 64).requires_grad_(True)
    k = torch.tensor([1.5, 2.0, 8.0, 30.0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(1e-2, dtype=torch.float64)
    x0, k0, a0 = x.detach().clone(), k.detach().clone(), alpha.clone()
    p = soft_topk(x, k, alpha)
    (p * torch.randn_like(p)).sum().backward()
    assert torch.equal(x.detach(), x0) and torch.equal(k.detach(), k0)
    assert torch.equal(alpha, a0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_or_better(path, dtype):
    x = (relu_rows(8, 256, torch.float32) * 0.3).to(dtype).requires_grad_(True)
    k = torch.linspace(4, 40, 8)
    p = soft_topk(x, k, 1e-2)
    assert p.dtype == dtype
    p32 = soft_topk(x.detach().float(), k, 1e-2)
    tol = torch.finfo(dtype).eps
    torch.testing.assert_close(p.float(), p32, atol=tol, rtol=0)
    p.float().sum().backward()
    assert x.grad.dtype == dtype


def test_k_shapes_and_scalars_agree():
    x = relu_rows(4, 32)
    k_B = torch.tensor([2.5, 2.5, 2.5, 2.5], dtype=torch.float64)
    expected = soft_topk(x, k_B, 0.1)
    for k in [k_B[:, None], 2.5, torch.tensor(2.5), torch.tensor([2.5])]:
        torch.testing.assert_close(soft_topk(x, k, 0.1), expected, atol=0, rtol=0)


def test_k_gradient_comes_back_in_k_shape():
    x = relu_rows(4, 32)
    for k in [torch.full((4, 1), 3.0), torch.tensor(3.0), torch.full((4,), 3.0)]:
        k.requires_grad_(True)
        (soft_topk(x, k, 0.1) * torch.randn(4, 32, dtype=torch.float64)).sum().backward()
        assert k.grad.shape == k.shape and k.grad.dtype == k.dtype


def test_one_dimensional_row():
    x = relu_rows(1, 20)
    torch.testing.assert_close(soft_topk(x[0], 3.5, 0.05), soft_topk(x, 3.5, 0.05)[0])


def test_empty_batch():
    p = soft_topk(torch.zeros(0, 8), torch.zeros(0), 0.1)
    assert p.shape == (0, 8)


@pytest.mark.parametrize(
    ("x", "k", "alpha", "msg"),
    [
        (torch.ones(2, 4), 1.0, 0.0, "alpha"),
        (torch.ones(2, 4), 1.0, -1.0, "alpha"),
        (torch.ones(2, 4), 1.0, math.nan, "alpha"),
        (torch.ones(2, 4), 1.0, math.inf, "alpha"),
        (torch.ones(2, 4), 1.0, "0.1", "alpha"),
        (torch.ones(2, 4), 0.0, 0.1, "0 < k < F"),
        (torch.ones(2, 4), 4.0, 0.1, "0 < k < F"),
        (torch.ones(2, 4), torch.tensor([1.0, math.nan]), 0.1, "0 < k < F"),
        (torch.ones(2, 4), torch.tensor([1.0, 2.0, 3.0]), 0.1, "shape"),
        (torch.ones(2, 4), torch.ones(2, 2), 0.1, "shape"),
        (torch.ones(2, 3, 4), 1.0, 0.1, "(B, F)"),
        (torch.tensor(1.0), 1.0, 0.1, "(B, F)"),
        (torch.ones(2, 4, dtype=torch.int64), 1.0, 0.1, "floating"),
        (torch.tensor([[1.0, math.nan]]), 1.0, 0.1, "NaN or inf"),
        (torch.tensor([[1.0, math.inf]]), 1.0, 0.1, "NaN or inf"),
        (torch.tensor([[1.0, -math.inf]]), 1.0, 0.1, "NaN or inf"),
    ],
)
def test_bad_input_raises_a_clear_error(x, k, alpha, msg):
    with pytest.raises(SoftSAEError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        soft_topk(x, k, alpha)


def test_fixed_path_when_the_width_covers_the_row_but_not_twice_k(monkeypatch):
    """n = F ≤ 2k: no folding is valid there; every entry is its own knot (found by hypothesis:
    13 ones, one tiny value and 12 zeros, k = 13, α = 1 lost the zeros' weight)."""
    monkeypatch.setenv(FAST_ENV, "1")
    monkeypatch.setenv(PATH_ENV, "fixed")
    x = torch.zeros(2, 26, dtype=torch.float64)
    x[1, 12:25] = 1.0
    x[1, 25] = 2.8414e-83
    k = torch.tensor([13.0, 13.0], dtype=torch.float64)
    p = soft_topk(x, k, alpha=1.0)
    torch.testing.assert_close(p.sum(1), k, atol=1e-10, rtol=0)
    torch.testing.assert_close(p, soft_topk_reference(x, k, 1.0), atol=1e-10, rtol=0)
