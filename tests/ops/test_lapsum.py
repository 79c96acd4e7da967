"""The closed-form threshold solve and the math helpers under soft_topk."""

from __future__ import annotations

import math

import pytest
import torch

from softsae_vision.ops import _inline_math as im
from softsae_vision.ops._lapsum import laplace_cdf, solve_threshold


def sum_at(v_RN, w_RN, u_R):
    return (w_RN * laplace_cdf(v_RN - u_R[:, None])).sum(1)


@pytest.mark.parametrize("scale", [0.1, 10.0, 1e4])  # 1e4: knots too far apart for plain exp
def test_solve_hits_k_and_weights_equal_repeated_knots(scale):
    g = torch.Generator().manual_seed(0)
    v = torch.sort(torch.randn(4, 12, generator=g, dtype=torch.float64) * scale, 1, True).values
    w = torch.randint(0, 4, (4, 12), generator=g).double()
    w[:, 0] = 1.0
    k = torch.tensor([0.01, 1.0, 3.5, 11.0], dtype=torch.float64).clamp(max=w.sum(1) - 0.01)
    u = solve_threshold(v, k, w)
    torch.testing.assert_close(sum_at(v, w, u), k, atol=1e-12, rtol=0)
    for b in range(4):  # the same row with each knot written out w times
        v_rep = torch.repeat_interleave(v[b], w[b].long())[None]
        u_rep = solve_threshold(v_rep, k[b : b + 1])
        torch.testing.assert_close(u_rep, u[b : b + 1], atol=1e-9 * max(1.0, scale), rtol=0)


def test_solve_with_huge_gaps_between_knots():
    v = torch.tensor([[3000.0, 1000.0, 0.0, -5000.0]], dtype=torch.float64)
    for k in [0.5, 1.0, 1.5, 2.0, 3.5]:
        u = solve_threshold(v, torch.tensor([k], dtype=torch.float64))
        assert torch.isfinite(u).all()
        total = sum_at(v, torch.ones_like(v), u)
        torch.testing.assert_close(total, torch.tensor([k], dtype=torch.float64))


def test_laplace_cdf_branches():
    t = torch.tensor([-800.0, -1.0, 0.0, 1.0, 800.0], dtype=torch.float64)
    expected = [0.0, 0.5 * math.exp(-1), 0.5, 1 - 0.5 * math.exp(-1), 1.0]
    torch.testing.assert_close(laplace_cdf(t), torch.tensor(expected, dtype=torch.float64))


def test_inline_math_matches_torch():
    x = torch.linspace(-700, 700, 10001, dtype=torch.float64)  # normal range
    torch.testing.assert_close(im.exp(x), torch.exp(x), rtol=1e-12, atol=0)
    y = torch.exp(x)
    torch.testing.assert_close(im.log(y), torch.log(y), rtol=0, atol=1e-12)
    assert im.log(torch.tensor([0.0])).item() == -math.inf
    z = torch.randn(5, 7, dtype=torch.float64) * 30
    z[2] = -math.inf
    torch.testing.assert_close(im.logsumexp(z, 1), torch.logsumexp(z, 1))
