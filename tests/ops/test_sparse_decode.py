"""Sparse decoding equals its dense twin: values and gradients, per-row and flat layouts."""

from __future__ import annotations

import torch

from softsae_vision.ops import SelectedCodes
from softsae_vision.ops.sparse_decode import decode_selected, dense_decode, sparse_decode

B, F, D, K = 12, 200, 24, 7


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    vals = torch.rand(B, K, generator=g, dtype=torch.float64)
    vals[0, 3:] = 0.0  # masked slots, as a per-row k below the width leaves them
    W = torch.randn(F, D, generator=g, dtype=torch.float64)
    return idx, vals, W


def _value_and_grads(fn, idx, vals, W, *extra):
    v, w = vals.clone().requires_grad_(True), W.clone().requires_grad_(True)
    out = fn(idx, v, w, *extra)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    return (out.detach(), *torch.autograd.grad((out * g).sum(), (v, w)))


def test_equals_the_dense_twin_with_gradients():
    idx, vals, W = _inputs()
    for a, b in zip(
        _value_and_grads(sparse_decode, idx, vals, W),
        _value_and_grads(dense_decode, idx, vals, W),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_flat_entries_with_offsets_equal_per_row_bags():
    idx, vals, W = _inputs(1)
    counts = torch.tensor([K, 0, 3, K, 1, 0, K, 2, K, K, 5, 4])  # variable, some empty rows
    keep = torch.arange(K)[None, :] < counts[:, None]
    flat_idx, flat_vals = idx[keep], vals[keep]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    expected = dense_decode(idx, vals * keep, W)
    torch.testing.assert_close(
        sparse_decode(flat_idx, flat_vals, W, offsets), expected, atol=1e-12, rtol=0
    )


def test_selected_codes_with_row_groups_and_remainder():
    idx, vals, W = _inputs(2)
    rows = torch.tensor([1, 4, 7])
    rest = torch.zeros(B, F, dtype=torch.float64)
    rest[5, 10] = 0.7
    codes = SelectedCodes((B, F), [(None, idx, vals), (rows, idx[rows, :2], vals[rows, :2])], rest)
    torch.testing.assert_close(decode_selected(codes, W), codes.dense() @ W, atol=1e-12, rtol=0)


def test_selected_codes_with_a_flat_group_decode_row_by_row():
    """A flat group: entries listed one by one, rows ascending, some rows with none."""
    idx, vals, W = _inputs(3)
    counts = torch.tensor([K, 0, 3, K, 1, 0, K, 2, K, K, 5, 4])
    keep = torch.arange(K)[None, :] < counts[:, None]
    rows = torch.arange(B)[:, None].expand_as(idx)[keep]
    codes = SelectedCodes((B, F), flat=[(rows, idx[keep], vals[keep])])
    torch.testing.assert_close(codes.dense(), dense_decode(idx, vals * keep, torch.eye(F).double()))
    torch.testing.assert_close(decode_selected(codes, W), codes.dense() @ W, atol=1e-12, rtol=0)


def test_autocast_decodes_in_the_autocast_dtype():
    idx, vals, W = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_decode(idx, vals.float(), W.float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), dense_decode(idx, vals, W).float(), atol=0.1, rtol=0.02)
