"""Record the ATen ops a piece of code runs and flag those that read data back to the host.

On a GPU these ops block the CPU until the device catches up (``.item()``, ``bool(t)``,
boolean-mask indexing, ``nonzero``...). The CPU has no such stalls to detect, so CPU tests
use this trace as the proxy; where CUDA is present, ``torch.cuda.set_sync_debug_mode`` checks
the real thing.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCING_OPS = {
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t)
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
    "aten::equal",
    "aten::is_nonzero",
    "aten::allclose",
}


class HostReads(TorchDispatchMode):
    """Collects the names of host-reading ATen ops run inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        bool_index = name.startswith("aten::index") and any(
            isinstance(a, (list, tuple))
            and any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in a)
            for a in args
        )
        if name in SYNCING_OPS or bool_index:
            self.found.append(name)
        return func(*args, **(kwargs or {}))
