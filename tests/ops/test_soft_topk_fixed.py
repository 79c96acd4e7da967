"""The fixed-shape soft top-k plan: exact against the oracle, equal to the adaptive plan,
no host reads (CPU: op trace; CUDA: sync debug mode)."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import (
    hard_topk,
    hard_topk_sparse,
    soft_topk,
    soft_topk_codes,
    soft_topk_product,
    soft_topk_reference,
)
from softsae_vision.ops._soft_topk_fixed import fixed_width, plan_fixed
from softsae_vision.ops._soft_topk_plan import PATH_ENV, planner
from tests._sync_probe import HostReads
from tests.ops.test_soft_topk_plan import CASES


@pytest.fixture
def fixed(monkeypatch):
    monkeypatch.setenv(PATH_ENV, "fixed")


def test_planner_switch(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    assert planner(torch.device("cpu")) == "adaptive"
    assert planner(torch.device("cuda")) == "fixed"
    monkeypatch.setenv(PATH_ENV, "adaptive")
    assert planner(torch.device("cuda")) == "adaptive"
    monkeypatch.setenv(PATH_ENV, "fast please")
    with pytest.raises(SoftSAEError, match=PATH_ENV):
        planner(torch.device("cpu"))


def test_width_exceeds_twice_k_max():
    assert fixed_width(32.0, 16384) == 66 and fixed_width(7.5, 16384) == 17
    assert fixed_width(100.0, 64) == 64


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("slack", [0.0, 7.3])
def test_each_case_matches_the_oracle_and_the_adaptive_gradients(name, slack, monkeypatch):
    x, k, alpha = CASES[name]()
    k_max = float(k.max()) + slack
    results = []
    for path in ("fixed", "adaptive"):
        monkeypatch.setenv(PATH_ENV, path)
        xx, kk = x.clone().requires_grad_(True), k.clone().requires_grad_(True)
        p = soft_topk(xx, kk, alpha, k_max=k_max if path == "fixed" else None)
        w = torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype)
        results.append((p.detach(), *torch.autograd.grad((p * w).sum(), (xx, kk))))
    torch.testing.assert_close(results[0][0], soft_topk_reference(x, k, alpha), atol=1e-12, rtol=0)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_rows_are_flagged_dense_only_when_their_tail_matters():
    x, k, alpha = CASES["sparse"]()
    assert not plan_fixed(x, k, alpha, float(k.max())).fixed.dense.any()
    x, k, alpha = CASES["large_alpha"]()
    assert plan_fixed(x, k, alpha, float(k.max())).fixed.dense.all()


def test_gradcheck_with_dense_and_sparse_rows(fixed):
    x = torch.rand(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[0] *= 100  # spread out: served by its candidates; the others need their whole row
    k = torch.tensor([2.5, 4.0, 7.2], dtype=torch.float64, requires_grad=True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, k: soft_topk(x, k, 0.05, k_max=8.0), (x, k))


@pytest.mark.parametrize("selection_grad", [False, True])
def test_product_equals_the_dense_product(fixed, selection_grad):
    g = torch.Generator().manual_seed(5)
    z = torch.relu(torch.randn(8, 300, generator=g)) * 0.5
    z[1] = 0.0
    z[2, :5] = 1.0
    k = torch.linspace(1.5, 12.0, 8)
    w = torch.randn(8, 300, generator=g)
    out = []
    for sparse in (True, False):
        zz, kk = z.clone().requires_grad_(True), k.clone().requires_grad_(True)
        if sparse:
            codes = soft_topk_product(zz, kk, 1e-2, selection_grad, k_max=12.0)
        else:
            codes = zz * soft_topk(zz if selection_grad else zz.detach(), kk, 1e-2, k_max=12.0)
        out.append((codes.detach(), *torch.autograd.grad((codes * w).sum(), (zz, kk))))
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_validation_catches_k_above_k_max():
    with pytest.raises(SoftSAEError, match="k_max"):
        soft_topk(torch.rand(2, 50), torch.tensor([3.0, 9.0]), 0.1, k_max=8.0)
    with pytest.raises(SoftSAEError, match="k_max"):
        hard_topk(torch.rand(2, 50), torch.tensor([3, 9]), k_max=8)


def test_fixed_plan_and_hard_topk_read_nothing_back(fixed):
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(64, 512, generator=g)).requires_grad_(True)
    k = (torch.rand(64, generator=g) * 20 + 1).requires_grad_(True)
    with HostReads() as probe:
        sel = soft_topk_codes(z, k, 1e-3, False, k_max=21.0, validate=False)
        codes = sel.dense()
        p = soft_topk(z, k, 1e-3, k_max=21.0, validate=False)
        ((codes + p) * torch.randn(64, 512, generator=g)).sum().backward()
        out, _, _ = hard_topk_sparse(z, k.detach().floor().long(), k_max=21, validate=False)
        out.sum().backward()
    assert probe.found == []
    with HostReads() as probe:  # the probe does see host reads
        soft_topk(z, k, 1e-3)
    assert "aten::_local_scalar_dense" in probe.found


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_sync_on_cuda():
    dev = torch.device("cuda")
    z = torch.relu(torch.randn(256, 4096, device=dev)).requires_grad_(True)
    k = (torch.rand(256, device=dev) * 60 + 1).requires_grad_(True)
    ref = soft_topk(z.detach().double(), k.detach().double(), 1e-3)  # validated, may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        p = soft_topk(z, k, 1e-3, k_max=61.0, validate=False)
        (p * p).sum().backward()
        hard_topk(z, k.detach().floor().long(), k_max=61, validate=False).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(p.double(), ref, atol=1e-6, rtol=0)


def test_entry_whose_knot_rounds_onto_the_sentinel_keeps_its_weight(fixed):
    # Found by hypothesis: 2.5e-92 lies above the sentinel (0) but its knot rounds onto the
    # sentinel's; deciding ties on the knots dropped it from both the candidates and the fold.
    x = torch.zeros(1, 10, dtype=torch.float64)
    x[0, 6:9] = 1.0
    x[0, 9] = 2.4584e-92
    k = torch.tensor([2.5], dtype=torch.float64)
    p = soft_topk(x, k, 1.0)
    torch.testing.assert_close(p.sum(1), k, atol=1e-12, rtol=0)
    torch.testing.assert_close(p, soft_topk_reference(x, k, 1.0), atol=1e-12, rtol=0)
