"""StoreSource: exact epochs, good mixing, exact resume, per-type evaluation, clear errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softsae_vision.data.source import ActivationSource
from softsae_vision.data.store_source import StoreSource
from softsae_vision.errors import SoftSAEError
from tests._fixtures_extract import write_synthetic_store

N_TYPES = {"cls": 1, "register": 2, "patch": 6, "all": 9}
POSITIONS = {"cls": [0], "register": [1, 2], "patch": list(range(3, 9)), "all": list(range(9))}


@pytest.fixture(scope="module", params=[1, 2], ids=["schema1", "schema2"])
def store_path(tmp_path_factory, request):
    path = tmp_path_factory.mktemp("source") / "store"
    write_synthetic_store(path, n_images=40, fail_every=9, schema=request.param)  # 36 stored
    return path


def _ids(batch: torch.Tensor) -> list[tuple[int, int]]:
    """(image row, token position) that each synthetic vector encodes."""
    return [(int(r), int(p)) for r, p in batch[:, :2].tolist()]


def test_is_an_activation_source(store_path):
    source = StoreSource(store_path, layer=3)
    assert isinstance(source, ActivationSource)
    assert source.d == 4 and len(source) == 36 * 6
    assert source.describe() == {
        "kind": "store",
        "path": str(store_path.resolve()),
        "layer": 3,
        "tokens": "patch",
        "backbone": "synthetic/model",
        "d": 4,
        "n_rows": 216,
    }


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tokens=st.sampled_from(["cls", "register", "patch", "all"]),
    batch_size=st.integers(1, 70),
    buffer_rows=st.integers(1, 120),
    block_bytes=st.sampled_from([1, 80, 300, 5000]),
    seed=st.integers(0, 2**31),
)
def test_every_token_exactly_once_per_epoch(
    store_path, tokens, batch_size, buffer_rows, block_bytes, seed
):
    source = StoreSource(
        store_path, layer="3", tokens=tokens, buffer_rows=buffer_rows, block_bytes=block_bytes
    )
    n = len(source)
    assert n == 36 * N_TYPES[tokens]
    n_batches = -(-2 * n // batch_size) + 1  # a little more than two epochs
    batches = list(itertools.islice(source.batches(batch_size, seed), n_batches))
    assert all(b.shape == (batch_size, 4) and b.dtype == torch.float32 for b in batches)
    stream = _ids(torch.cat(batches))
    expected = sorted((r, p) for r in range(36) for p in POSITIONS[tokens])
    assert sorted(stream[:n]) == expected
    assert sorted(stream[n : 2 * n]) == expected
    if n > 1:
        assert stream[:n] != stream[n : 2 * n]  # each epoch is reshuffled


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch_size=st.integers(1, 100), start=st.integers(0, 12), buffer_rows=st.integers(10, 200))
def test_resume_gives_the_tail_of_the_same_stream(store_path, batch_size, start, buffer_rows):
    source = StoreSource(
        store_path, layer=3, tokens="all", buffer_rows=buffer_rows, block_bytes=200
    )
    full = list(itertools.islice(source.batches(batch_size, seed=3), start + 5))
    resumed = list(itertools.islice(source.batches(batch_size, seed=3, start=start), 5))
    for a, b in zip(full[start:], resumed, strict=True):
        assert torch.equal(a, b)


def test_seeds_give_different_orders(store_path):
    source = StoreSource(store_path, layer=3)
    a = next(source.batches(64, seed=0))
    assert torch.equal(a, next(source.batches(64, seed=0)))
    assert not torch.equal(a, next(source.batches(64, seed=1)))


def test_batches_mix_many_images_with_a_bounded_buffer(tmp_path):
    """Consecutive batches each draw from many images spread over the whole store."""
    write_synthetic_store(tmp_path / "big", n_images=400, layers=(0,))
    # The buffer holds 1200 of the 2400 patch rows (200 images), read in blocks of 4 images.
    source = StoreSource(tmp_path / "big", layer=0, buffer_rows=1200, block_bytes=4 * 9 * 4 * 2)
    assert source._block_images == 4 and source._window_blocks == 50
    for batch in itertools.islice(source.batches(64, seed=0), 60):
        images = np.array([r for r, _ in _ids(batch)])
        # In file order 64 patches come from 11 images; uniform draws from 200 give ~55.
        assert len(set(images)) >= 40
        assert images.max() - images.min() > 250  # not one neighbourhood of the store


def test_sample_returns_distinct_rows_reproducibly(store_path):
    source = StoreSource(store_path, layer=3, tokens="all")
    sample = source.sample(100, seed=5)
    assert sample.shape == (100, 4) and sample.dtype == torch.float32
    assert len(set(_ids(sample))) == 100
    assert torch.equal(sample, source.sample(100, seed=5))
    assert not torch.equal(sample, source.sample(100, seed=6))
    assert source.sample(10_000, seed=0).shape == (len(source), 4)


def test_iter_eval_covers_each_row_once_grouped_by_type(store_path):
    source = StoreSource(store_path, layer=3, tokens="all")
    groups: dict[str, list] = {}
    for kind, batch in source.iter_eval(batch_size=5):
        assert 0 < len(batch) <= 5
        groups.setdefault(kind, []).extend(_ids(batch))
    assert list(groups) == ["cls", "register", "patch"]
    for kind, ids in groups.items():
        assert ids == [(r, p) for r in range(36) for p in POSITIONS[kind]]  # in order


def test_embed_layer(store_path):
    source = StoreSource(store_path, layer="embed", tokens=None)
    assert len(source) == 36 and source.tokens == "embed"
    groups = [kind for kind, _ in source.iter_eval(100)]
    assert groups == ["embed"]
    assert torch.all(next(source.batches(8, 0))[:, 2] == 1)  # values of the embed layer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": None}, "several layers"),
        ({"layer": 2}, "not in"),
        ({"layer": 3, "tokens": "pixels"}, "unknown --tokens"),
        ({"layer": "embed", "tokens": "patch"}, "pass --tokens embed"),
        ({"layer": 3, "tokens": "embed"}, "pass --layer embed"),
    ],
)
def test_errors_name_the_fix(store_path, kwargs, message):
    with pytest.raises(SoftSAEError, match=message):
        StoreSource(store_path, **kwargs)


def test_missing_token_type_and_missing_store(tmp_path):
    write_synthetic_store(tmp_path / "noreg", n_images=3, n_reg=0, layers=(1,))
    with pytest.raises(SoftSAEError, match="no register tokens.*cls, patch"):
        StoreSource(tmp_path / "noreg", tokens="register")
    with pytest.raises(SoftSAEError, match="no such activation store"):
        StoreSource(tmp_path / "absent")


@pytest.mark.parametrize("start", [0, 3])
def test_raw_batches_are_the_same_stream_in_the_store_dtype(store_path, start):
    source = StoreSource(store_path, layer=3, tokens="all", buffer_rows=50, block_bytes=200)
    raw = list(itertools.islice(source.raw_batches(32, seed=5, start=start), 6))
    cast = list(itertools.islice(source.batches(32, seed=5, start=start), 6))
    assert all(r.dtype == np.float16 and r.shape == (32, 4) for r in raw)
    for r, c in zip(raw, cast, strict=True):
        assert c.dtype == torch.float32
        assert torch.equal(torch.from_numpy(r).float(), c)


def test_a_damaged_window_names_the_images_that_hold_nan(store_path):
    source = StoreSource(store_path, layer=3, tokens="patch", block_bytes=200)
    damaged = np.array(source._array)  # a copy: the store's file stays intact
    damaged[20, 5, 1] = np.nan
    source._array = damaged
    with pytest.raises(SoftSAEError, match=r"NaN or infinite values in images (\d+)-(\d+)") as err:
        next(source.raw_batches(8, seed=0))
    first, last = (int(v) for v in err.value.args[0].split("images ")[1].split(";")[0].split("-"))
    assert first <= 20 <= last and last - first < 10
