"""The read-ahead loader: same stream as the source, errors surface, threads stop."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from softsae_vision.data.arrays import ArraySource
from softsae_vision.training.loader import Prefetcher, source_stream

CPU = torch.device("cpu")


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_yields_the_source_stream_in_order_and_resumes(depth):
    source = ArraySource(torch.randn(500, 8))
    expected = list(itertools.islice(source.batches(64, seed=3, start=0), 12))
    with Prefetcher(source_stream(source, 64, 3, 0), CPU, depth) as loader:
        got = list(itertools.islice(loader, 12))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    with Prefetcher(source_stream(source, 64, 3, 5), CPU, depth) as loader:
        assert torch.equal(next(loader), expected[5])


class _Raw:
    """A source offering its storage dtype: the loader prefers it and casts to fp32."""

    def __init__(self):
        self.data = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float16)

    def raw_batches(self, batch_size, seed, start=0):
        for i in itertools.count(start):
            j = (i * batch_size) % 100
            yield self.data[j : j + batch_size]

    def batches(self, batch_size, seed, start=0):
        raise AssertionError("raw_batches should be used")


def test_raw_storage_batches_are_cast_to_fp32():
    src = _Raw()
    with Prefetcher(source_stream(src, 10, 0, 2), CPU) as loader:
        batch = next(loader)
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.from_numpy(src.data[20:30]).float())


def test_source_errors_reach_the_consumer_and_threads_stop():
    def broken():
        yield torch.zeros(2, 2)
        raise ValueError("bad shard")

    before = threading.active_count()
    loader = Prefetcher(broken(), CPU, 2)
    next(loader)
    with pytest.raises(ValueError, match="bad shard"):
        next(loader)
    loader.close()
    endless = Prefetcher((torch.zeros(2, 2) for _ in itertools.count()), CPU, 2)
    next(endless)
    endless.close()
    assert threading.active_count() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_are_pinned_sent_as_fp16_and_cast_on_the_device():
    src = _Raw()
    with Prefetcher(source_stream(src, 10, 0, 0), torch.device("cuda"), 2) as loader:
        batch = next(loader)
    assert batch.is_cuda and batch.dtype == torch.float32
    assert torch.equal(batch.cpu(), torch.from_numpy(src.data[:10]).float())


@pytest.fixture(scope="module")
def store_source(tmp_path_factory):
    from softsae_vision.data.store_source import StoreSource
    from tests._fixtures_extract import write_synthetic_store

    path = tmp_path_factory.mktemp("loader") / "store"
    write_synthetic_store(path, n_images=30, fail_every=0)
    return StoreSource(path, layer=3, tokens="all", buffer_rows=60, block_bytes=200)


@pytest.mark.parametrize("depth", [0, 2])
def test_a_store_streams_fp16_and_gives_its_fp32_stream_exactly(store_source, depth):
    """The loader reads the store's fp16 rows and casts them itself: values, order, resume."""
    raw = source_stream(store_source, 16, 7, 0)
    assert next(raw).dtype == np.float16  # the store's own dtype reaches the loader
    expected = list(itertools.islice(store_source.batches(16, seed=7), 20))
    with Prefetcher(source_stream(store_source, 16, 7, 0), CPU, depth) as loader:
        got = list(itertools.islice(loader, 20))
    assert all(g.dtype == torch.float32 for g in got)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    with Prefetcher(source_stream(store_source, 16, 7, 13), CPU, depth) as loader:
        resumed = list(itertools.islice(loader, 7))
    assert all(torch.equal(a, b) for a, b in zip(resumed, expected[13:], strict=True))


def test_cpu_training_never_pins(monkeypatch, store_source):
    def no_pin(self, *args, **kwargs):
        raise AssertionError("pinned memory is for CUDA copies only")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    with Prefetcher(source_stream(store_source, 16, 0, 0), CPU, 2) as loader:
        assert next(loader).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_read_ahead_pins_fp16_host_batches(store_source):
    loader = Prefetcher(iter(()), torch.device("cuda"), 0)
    host = loader._prepare(next(source_stream(store_source, 16, 0, 0)))
    assert host.is_pinned() and host.dtype == torch.float16
