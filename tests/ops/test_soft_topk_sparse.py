"""soft_topk_product: the candidate-only z ⊙ p equals the dense product, gradients included."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import soft_topk, soft_topk_codes, soft_topk_product
from softsae_vision.ops._soft_topk_plan import PATH_ENV, plan_rows
from softsae_vision.ops.lapsum_topk import plan_width


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def case_mixed():
    """Rows whose mass sits in a few large values next to evenly spaced rows that need a
    wider candidate list: the plan has a first group and a widened one."""
    g = _gen(0)
    x = torch.rand(4, 512, generator=g, dtype=torch.float64) * 0.1
    x[:2, :20] = 0.5 + 0.5 * torch.rand(2, 20, generator=g, dtype=torch.float64)
    base = torch.linspace(1.0, 0.0, 512, dtype=torch.float64)
    x[2:] = torch.stack([base[torch.randperm(512, generator=_gen(s))] for s in (1, 2)])
    return x, torch.tensor([3.0, 6.2, 4.0, 2.5], dtype=torch.float64), 2e-3


def case_sparse():
    """ReLU-like rows with about half zeros and small alpha: one group serves every row."""
    x = torch.relu(torch.randn(6, 256, generator=_gen(3), dtype=torch.float64))
    return x, torch.tensor([1.5, 3.0, 6.2, 8.0, 2.0, 11.7], dtype=torch.float64), 1e-3


def case_dense():
    """alpha far above the values' spread: every row is served densely (the fallback)."""
    x = torch.rand(3, 64, generator=_gen(4), dtype=torch.float64)
    return x, torch.tensor([3.0, 7.5, 20.0], dtype=torch.float64), 10.0


CASES = {"mixed": case_mixed, "sparse": case_sparse, "dense": case_dense}


def groups(x, k, alpha):
    plan = plan_rows(x, k, alpha, fast=True)
    return len(plan.sparse), len(plan.dense)


def test_cases_take_the_paths_they_are_named_for():
    assert groups(*case_mixed()) == (2, 0)
    assert groups(*case_sparse()) == (1, 0)
    assert groups(*case_dense())[1] >= 1


def dense_and_sparse(x, k, alpha, selection_grad, dtype=torch.float64):
    """(codes, ∂/∂z, ∂/∂k) of a weighted sum, from the dense product and from the sparse one."""
    w = torch.randn(x.shape, generator=_gen(9), dtype=dtype)
    results = []
    for sparse in (False, True):
        z = x.to(dtype).clone().requires_grad_(True)
        kk = k.clone().requires_grad_(True)
        if sparse:
            codes = soft_topk_product(z, kk, alpha, selection_grad)
        else:
            codes = z * soft_topk(z if selection_grad else z.detach(), kk, alpha)
        gz, gk = torch.autograd.grad((codes * w).sum(), (z, kk))
        results.append((codes.detach(), gz, gk))
    return results


@pytest.mark.parametrize("selection_grad", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_dense_product_and_its_gradients(name, selection_grad):
    x, k, alpha = CASES[name]()
    dense, sparse = dense_and_sparse(x, k, alpha, selection_grad)
    for d, s in zip(dense, sparse, strict=True):
        torch.testing.assert_close(s, d, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("path", ["adaptive", "fixed"])
@pytest.mark.parametrize("width", ["plan", "row"])  # what plan_width says, every entry sorted
@pytest.mark.parametrize("name", list(CASES))
def test_a_shared_top_gives_the_same_codes_and_gradients(name, width, path, monkeypatch):
    # Callers that already hold each row's largest entries (SoftSAE: one topk a step for the
    # marginal gains and both soft top-k's) pass them; the plan slices them instead of a topk.
    monkeypatch.setenv(PATH_ENV, path)
    x, k, alpha = CASES[name]()
    k_max = float(k.max()) + 1
    n = plan_width(k_max, x.shape[1], x.device) if width == "plan" else x.shape[1]
    w = torch.randn(x.shape, generator=_gen(9), dtype=x.dtype)
    results = []
    for top in (None, x.topk(n, dim=1, sorted=True)):
        z = x.clone().requires_grad_(True)
        kk = k.clone().requires_grad_(True)
        codes = soft_topk_codes(z, kk, alpha, False, k_max=k_max, top=top).dense()
        results.append((codes.detach(), *torch.autograd.grad((codes * w).sum(), (z, kk))))
    for own, shared in zip(*results, strict=True):
        assert torch.equal(own, shared)


def test_float32_codes_are_bitwise_the_dense_product():
    x, k, alpha = case_mixed()
    dense, sparse = dense_and_sparse(x, k, alpha, False, dtype=torch.float32)
    assert torch.equal(sparse[0], dense[0])
    assert torch.equal(sparse[1], dense[1])
    torch.testing.assert_close(sparse[2], dense[2], atol=1e-6, rtol=1e-6)


def test_each_row_keeps_only_the_candidates_that_matter(monkeypatch):
    """The first group is as wide as the largest k needs; a row with a small k keeps fewer
    entries (its other candidates' weights round to 0 and their share of ∂L/∂k is nil), and
    nothing else changes: ∂L/∂k included, though a candidate below a wide gap at the
    threshold has a weight of 0 in float32 and half of ∂L/∂k. (The adaptive plan's.)"""
    monkeypatch.setenv(PATH_ENV, "adaptive")
    x, k, alpha = case_sparse()
    x, k = x.float(), k.float()
    width = plan_rows(x, k, alpha, fast=True).sparse[0].idx.shape[1]
    codes = soft_topk_codes(x, k, alpha, False)
    assert not codes.groups and codes.rest is None and len(codes.flat) == 1
    rows_N, cols_N, vals_N = codes.flat[0]
    per_row = torch.bincount(rows_N, minlength=len(k))
    assert bool((rows_N[1:] >= rows_N[:-1]).all())  # ascending: one bag per row
    assert int(per_row.max()) <= width and int(per_row.min()) < width // 2
    assert per_row[k.argmin()] < per_row[k.argmax()]
    dense, sparse = dense_and_sparse(x, k, alpha, False, dtype=torch.float32)
    assert torch.equal(sparse[0], dense[0]) and torch.equal(sparse[1], dense[1])
    torch.testing.assert_close(sparse[2], dense[2], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_in_k(name):
    x, k, alpha = CASES[name]()
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: soft_topk_product(x, k, alpha, False), (k,))


@pytest.mark.parametrize("name", ["mixed", "sparse"])
def test_gradcheck_in_z_and_k_with_selection_grad(name):
    x, k, alpha = CASES[name]()
    x.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, k: soft_topk_product(x, k, alpha, True), (x, k), fast_mode=True
    )


def test_rows_with_fewer_positives_than_k_and_scalar_k():
    x = torch.zeros(3, 100)
    x[0, :3] = torch.tensor([1.0, 0.5, 0.25])
    x[1] = torch.rand(100, generator=_gen(5))
    expected = x * soft_topk(x, 4.5, 1e-3)
    torch.testing.assert_close(soft_topk_product(x, 4.5, 1e-3, False), expected, atol=0, rtol=0)


def test_bad_input_raises_a_clear_error():
    with pytest.raises(SoftSAEError, match=r"\(B, F\)"):
        soft_topk_product(torch.rand(10), 2.0, 0.1, False)
    with pytest.raises(SoftSAEError, match="0 < k < F"):
        soft_topk_product(torch.rand(2, 10), 10.0, 0.1, False)
