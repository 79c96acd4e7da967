"""Read-ahead of activation batches: a background thread keeps the next batches ready.

The source's stream is consumed in order by one thread, so the batches (and a resumed run's
batches) are exactly the source's. On CUDA the thread pins each batch and the training
thread copies it asynchronously and casts it to fp32 on the device, so a source that yields
its storage dtype (fp16) sends half the bytes over the bus; on the CPU the thread does the
cast too, off the training thread.

A source may offer ``raw_batches(batch_size, seed, start)``: the same stream as ``batches``
in its storage dtype (not cast to fp32). The loader prefers it when present.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch

log = logging.getLogger(__name__)

_END = object()
_POLL_S = 0.1


def source_stream(source: Any, batch_size: int, seed: int, start: int) -> Iterator[Any]:
    """The source's batches from ``start``, in storage dtype when it offers ``raw_batches``."""
    raw = getattr(source, "raw_batches", None)
    if callable(raw):
        return cast(Iterator[Any], raw(batch_size, seed, start))
    return source.batches(batch_size, seed, start)


def _as_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    return torch.from_numpy(np.ascontiguousarray(batch))


class Prefetcher:
    """Iterate (B, d) float32 batches on ``device``, read ``depth`` batches ahead.

    ``depth=0`` reads in the calling thread (no background thread). Always ``close()`` it
    (or use it as a context manager); a source's error is raised in the consumer.
    """

    def __init__(self, batches: Iterator[Any], device: torch.device, depth: int = 2) -> None:
        self._batches = iter(batches)
        self._device = device
        self._on_host = device.type == "cpu"
        self._pin = device.type == "cuda"
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._fill, name="softsae-prefetch", daemon=True)
            self._thread.start()

    def _prepare(self, batch: Any) -> torch.Tensor:
        """Host-side work: a tensor, fp32 when training on the CPU, pinned for CUDA."""
        if self._on_host and isinstance(batch, np.ndarray):
            # numpy's cast runs in this thread alone; torch's would start a second intra-op
            # thread pool here, competing with the training thread's for the same cores.
            return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        t = _as_tensor(batch)
        if self._on_host:
            return t.float()
        return t.pin_memory() if self._pin else t

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(self._prepare(batch)):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> torch.Tensor:
        if self._thread is None:
            host = self._prepare(next(self._batches))
        else:
            host = self._queue.get()
            if host is _END:
                raise StopIteration
            if isinstance(host, BaseException):
                raise host
        if self._on_host:
            return host
        return host.to(self._device, non_blocking=True).float()  # cast on the device

    def close(self) -> None:
        """Stop the reader thread and drop what it read ahead."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_POLL_S)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
