import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softsae_vision import SoftSAEError
from softsae_vision.data.arrays import ArraySource
from softsae_vision.data.sources import open_source
from softsae_vision.data.synthetic import SyntheticSparseData


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 17), seed=st.integers(0, 5))
def test_every_row_once_per_epoch_and_resume_is_exact(n, batch, seed):
    rows = np.arange(n, dtype=np.float32)[:, None].repeat(2, 1)
    src = ArraySource(rows)
    n_batches = -(-3 * n // batch)
    seen = torch.cat(list(itertools.islice(src.batches(batch, seed), n_batches)))[:, 0].long()
    for epoch in range(3):
        chunk = seen[epoch * n : (epoch + 1) * n]
        if len(chunk) == n:
            assert sorted(chunk.tolist()) == list(range(n))
    start = n_batches // 2
    tail = torch.cat(list(itertools.islice(src.batches(batch, seed, start), n_batches - start)))
    assert torch.equal(tail[:, 0].long(), seen[start * batch :])


def test_epochs_are_reshuffled():
    src = ArraySource(np.arange(100, dtype=np.float32)[:, None])
    first, second = itertools.islice(src.batches(100, seed=0), 2)
    assert not torch.equal(first, second)


def test_iter_eval_covers_rows_in_order(tmp_path):
    rows = np.random.default_rng(0).normal(size=(37, 4)).astype(np.float16)
    np.save(tmp_path / "a.npy", rows)
    src = open_source(tmp_path / "a.npy")
    out = torch.cat([b for group, b in src.iter_eval(10)])
    assert out.dtype == torch.float32 and torch.equal(
        out, torch.from_numpy(rows.astype(np.float32))
    )
    assert src.describe()["shape"] == [37, 4]


def test_open_source_errors(tmp_path):
    with pytest.raises(SoftSAEError, match="no such"):
        open_source(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SoftSAEError, match=".npy file"):
        open_source(tmp_path / "x.txt")
    np.save(tmp_path / "i.npy", np.zeros((3, 2), np.int64))
    with pytest.raises(SoftSAEError, match="floating"):
        open_source(tmp_path / "i.npy")
    np.save(tmp_path / "f.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(SoftSAEError, match="stores"):
        open_source(tmp_path / "f.npy", layer=3)


def test_synthetic_counts_match_construction():
    gen = SyntheticSparseData(d=64, n_atoms=48, min_active=2, max_active=9, noise=0.0, offset=0)
    x, n = gen.generate(500, seed=3)
    assert n.min() >= 2 and n.max() <= 9 and len(torch.unique(n)) == 8
    atoms = gen.atoms()[:-1]
    coeffs = torch.linalg.lstsq(atoms.T, x.T).solution.T  # exact: atoms are independent
    assert torch.equal((coeffs.abs() > 1e-3).sum(-1), n)
