"""hard_topk: per-row top-k with a per-row k, against a brute-force argsort selection."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import hard_topk


def brute_force(x_BF: torch.Tensor, k_B: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x_BF)
    for b in range(x_BF.shape[0]):
        keep = torch.argsort(x_BF[b], descending=True)[: int(k_B[b])]
        out[b, keep] = x_BF[b, keep]
    return out


def test_matches_brute_force_with_per_row_k():
    x = torch.randn(6, 50)
    k = torch.tensor([0, 1, 7, 25, 49, 50])
    torch.testing.assert_close(hard_topk(x, k), brute_force(x, k), atol=0, rtol=0)


def test_int_k_and_tensor_k_agree():
    x = torch.randn(4, 30)
    torch.testing.assert_close(hard_topk(x, 5), hard_topk(x, torch.full((4,), 5)))
    torch.testing.assert_close(hard_topk(x, 5), hard_topk(x, torch.tensor(5)))
    torch.testing.assert_close(hard_topk(x, 5), hard_topk(x, torch.full((4, 1), 5)))


def test_k_zero_gives_zeros_and_k_equal_to_width_keeps_all():
    x = torch.randn(3, 10)
    assert torch.equal(hard_topk(x, 0), torch.zeros_like(x))
    assert torch.equal(hard_topk(x, 10), x)
    out = hard_topk(x, torch.tensor([0, 10, 0]))
    assert torch.equal(out[1], x[1]) and not out[[0, 2]].any()


def test_gradient_reaches_kept_entries_only():
    x = torch.randn(4, 20, requires_grad=True)
    k = torch.tensor([0, 3, 10, 20])
    out = hard_topk(x, k)
    g = torch.randn(4, 20)
    (out * g).sum().backward()
    kept = brute_force(x.detach(), k) != 0
    assert torch.equal(x.grad, torch.where(kept, g, torch.zeros_like(g)))


def test_one_dimensional_row_and_dtype():
    x = torch.randn(12, dtype=torch.float16)
    out = hard_topk(x, 4)
    assert out.shape == (12,) and out.dtype == torch.float16
    assert torch.equal(out, hard_topk(x[None], 4)[0])


@settings(max_examples=50, deadline=None)
@given(
    vals=st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, -1.0, 2.0]), min_size=24, max_size=24),
    ks=st.lists(st.integers(0, 8), min_size=3, max_size=3),
)
def test_with_ties_keeps_exactly_k_of_the_largest(vals, ks):
    x = torch.tensor(vals).reshape(3, 8) + 0.0
    k = torch.tensor(ks)
    x.requires_grad_(True)
    out = hard_topk(x, k)
    out.sum().backward()
    kept = x.grad == 1  # the gradient marks exactly the kept positions
    assert torch.equal(kept.sum(1), k)
    for b in range(3):
        if 0 < ks[b] < 8:
            assert x[b][kept[b]].min() >= x[b][~kept[b]].max()
    assert torch.equal(out, torch.where(kept, x, torch.zeros_like(x)))


@pytest.mark.parametrize(
    ("x", "k", "msg"),
    [
        (torch.ones(2, 4), 5, r"\[0, F = 4\]"),
        (torch.ones(2, 4), -1, r"\[0, F = 4\]"),
        (torch.ones(2, 4), torch.tensor([1.5, 2.0]), "integer tensor"),
        (torch.ones(2, 4), torch.tensor([1, 2, 3]), "shape"),
        (torch.ones(2, 4), 2.0, "int or an integer tensor"),
        (torch.ones(2, 3, 4), 1, r"\(B, F\)"),
    ],
)
def test_bad_input_raises_a_clear_error(x, k, msg):
    with pytest.raises(SoftSAEError, match=msg):
        hard_topk(x, k)
