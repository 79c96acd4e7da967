"""Old import paths kept working: each gives its object once with a DeprecationWarning."""

from __future__ import annotations

import warnings
from typing import TypeVar

T = TypeVar("T")


def deprecated(old: str, new: str, value: T) -> T:
    """``value``, after warning that ``old`` is deprecated in favour of ``new``.

    Call it from a module's ``__getattr__``, so the warning points at the importing line.
    """
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)
    return value
