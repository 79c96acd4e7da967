"""The sparse encoder gradient equals its dense twin: values and every gradient."""

from __future__ import annotations

import pytest
import torch

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import soft_topk_codes
from softsae_vision.ops._soft_topk_plan import PATH_ENV
from softsae_vision.ops.sparse_decode import sparse_decode_enabled
from softsae_vision.ops.sparse_encode import (
    SparseEncoding,
    dense_selected_pre_acts,
    row_major,
    sparse_encode_enabled,
)
from softsae_vision.training.losses import auxk_loss

B, F, D, K = 10, 64, 12, 6


def _params(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xn = torch.randn(B, D, generator=g, dtype=dtype)
    W = torch.randn(F, D, generator=g, dtype=dtype)
    b_enc = torch.randn(F, generator=g, dtype=dtype) * 0.5  # some pre-activations at 0 (ReLU)
    b_dec = torch.randn(D, generator=g, dtype=dtype) * 0.1
    return [t.requires_grad_(True) for t in (xn, W, b_enc, b_dec)]


def _flat_entries(seed=0):
    """Variable counts per row (BatchTopK's layout), a latent picked by several rows."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([3, 0, K, 1, 2, K, 0, 4, 5, K])
    cols = [torch.randperm(F, generator=g)[:c] for c in counts.tolist()]
    cols[3] = torch.tensor([7])  # latent 7 also chosen by rows 5 and 9 below
    cols[5][0] = cols[9][0] = 7
    rows = torch.repeat_interleave(torch.arange(B), counts)
    return rows, torch.cat(cols)


def _value_and_grads(gather, seed=1):
    xn, W, b_enc, b_dec = params = _params()
    out = gather(xn, W, b_enc, b_dec)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out.detach(), *torch.autograd.grad((out * weights).sum(), params))


@pytest.mark.parametrize("layout", ["per_row", "flat"])
def test_equals_the_dense_twin_values_and_gradients(layout):
    if layout == "per_row":
        g = torch.Generator().manual_seed(3)
        idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
        rows, cols = row_major(idx)
    else:
        rows, cols = _flat_entries()
        idx = None

    def sparse(xn, W, b_enc, b_dec):
        enc = SparseEncoding(xn, W, b_enc, b_dec)
        return enc.gather(idx).reshape(-1) if idx is not None else enc.gather_flat(rows, cols)

    def dense(xn, W, b_enc, b_dec):
        return dense_selected_pre_acts(xn, W, b_enc, b_dec, rows, cols)

    got, want = _value_and_grads(sparse), _value_and_grads(dense)
    assert (want[0] == 0).any() and (want[0] > 0).any()  # both sides of the ReLU are exercised
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert got[2].abs().sum() > 0  # W_enc's gradient is not trivially zero


def test_z_is_detached_and_equals_the_pre_activations():
    xn, W, b_enc, b_dec = _params()
    enc = SparseEncoding(xn, W, b_enc, b_dec)
    assert not enc.z_BF.requires_grad
    torch.testing.assert_close(enc.z_BF, torch.relu((xn - b_dec) @ W.T + b_enc))


def test_auxk_through_the_encoding_equals_the_dense_loss_and_gradients():
    dead = torch.zeros(F, dtype=torch.bool)
    dead[::5] = True
    residual = torch.randn(B, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    W_dec = torch.randn(F, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = []
    for sparse in (True, False):
        xn, W, b_enc, b_dec = params = _params()
        if sparse:
            enc = SparseEncoding(xn, W, b_enc, b_dec)
            loss = auxk_loss(residual, enc.z_BF, dead, W_dec, 4, enc)
        else:
            z = torch.relu(torch.addmm(b_enc, xn - b_dec, W.T))
            loss = auxk_loss(residual, z, dead, W_dec, 4)
        results.append((loss.detach(), *torch.autograd.grad(loss, params)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert results[0][2][dead].abs().sum() > 0 and results[0][2][~dead].abs().sum() == 0


@pytest.mark.parametrize("path", ["adaptive", "fixed"])
@pytest.mark.parametrize("alpha", [1e-3, 30.0])  # candidate rows; every row served densely
def test_soft_codes_through_the_encoding_equal_the_dense_gradient(path, alpha, monkeypatch):
    """SoftSAE's soft phase: z ⊙ soft_topk(z, k) with the encoder's gradient through each
    row's candidates (and a dense recomputation for rows the plan serves densely)."""
    monkeypatch.setenv(PATH_ENV, path)
    k = torch.tensor([1.5, 3.0, 6.2, 2.0, 4.5, 1.0, 8.0, 2.5, 3.3, 5.0], dtype=torch.float64)
    results = []
    for sparse in (True, False):
        xn, W, b_enc, b_dec = params = _params()
        if sparse:
            enc = SparseEncoding(xn, W, b_enc, b_dec)
            sel = soft_topk_codes(enc.z_BF, k, alpha, False, k_max=9.0, encoding=enc)
        else:
            z = torch.relu(torch.addmm(b_enc, xn - b_dec, W.T))
            sel = soft_topk_codes(z, k, alpha, False, k_max=9.0)
        codes = sel.dense()
        weights = torch.randn(codes.shape, generator=torch.Generator().manual_seed(6))
        loss = (codes * weights.double()).sum()
        results.append((codes.detach(), *torch.autograd.grad(loss, params)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert results[0][2].abs().sum() > 0
    with pytest.raises(SoftSAEError, match="selection_grad"):
        soft_topk_codes(enc.z_BF, k, alpha, True, encoding=enc)


def test_autocast_grads_come_back_in_the_parameter_dtype():
    xn, W, b_enc, b_dec = (t.detach().float().requires_grad_(True) for t in _params())
    idx = torch.stack([torch.randperm(F)[:K] for _ in range(B)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = SparseEncoding(xn, W, b_enc, b_dec)
        vals = enc.gather(idx)
    assert vals.dtype == torch.bfloat16
    vals.float().sum().backward()
    assert W.grad is not None and W.grad.dtype == torch.float32
    ref_W = W.detach().requires_grad_(True)
    frozen = (t.detach() for t in (xn, b_enc, b_dec))
    xn0, b_enc0, b_dec0 = frozen
    ref = dense_selected_pre_acts(xn0, ref_W, b_enc0, b_dec0, *row_major(idx))
    ref.sum().backward()
    torch.testing.assert_close(W.grad, ref_W.grad, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("value", "cpu", "cuda"),
    [
        ("0", False, False),
        ("decode", False, False),
        ("1", True, True),
        ("auto", True, False),
        (None, True, False),
    ],
)
def test_switch(monkeypatch, value, cpu, cuda):
    if value is None:
        monkeypatch.delenv("SOFTSAE_SPARSE_DECODE", raising=False)
    else:
        monkeypatch.setenv("SOFTSAE_SPARSE_DECODE", value)
    assert sparse_encode_enabled(torch.device("cpu")) is cpu
    assert sparse_encode_enabled(torch.device("cuda")) is cuda
    assert sparse_decode_enabled() is (value != "0")  # the decoder: off only at 0
