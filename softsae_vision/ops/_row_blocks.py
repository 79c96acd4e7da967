"""Row-wise batching and dtype helpers shared by the soft top-k paths."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Dense float64 work is done this many elements at a time, to bound temporary memory.
CHUNK_ELEMS = 1 << 21

# Row blocks for the small candidate math stay below torch's intra-op grain size (32768
# elements), so its many small elementwise ops run inline on one thread: on a shared CPU,
# waking the thread pool for each of them costs more than the op itself.
SERIAL_ELEMS = 32767


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for narrower floats: the dtype of dense gradients."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def row_chunks(n_rows: int, n_cols: int, elems: int = CHUNK_ELEMS) -> list[slice]:
    """Slices of rows holding at most `elems` elements each (at least one row)."""
    step = max(1, elems // max(n_cols, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def by_row_blocks(fn: Callable[..., tuple[Tensor, ...]], *tensors: Tensor) -> tuple[Tensor, ...]:
    """fn over row blocks of the tensors (on CPU) or all at once (elsewhere), concatenated.

    The block size is set by the widest tensor's row length.
    """
    R = tensors[0].shape[0]
    n_cols = max(t[0].numel() if t.dim() > 1 and R else 1 for t in tensors)
    blocks = row_chunks(R, n_cols, SERIAL_ELEMS)
    if tensors[0].device.type != "cpu" or len(blocks) <= 1:
        return fn(*tensors)
    parts = [fn(*(t[sl] for t in tensors)) for sl in blocks]
    return tuple(torch.cat(outs) for outs in zip(*parts, strict=True))
