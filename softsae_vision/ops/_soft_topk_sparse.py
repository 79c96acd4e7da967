"""Old (private) path of :mod:`softsae_vision.ops.soft_codes` (``SelectedCodes`` now lives in
:mod:`softsae_vision.ops.selected_codes`).

Import ``soft_topk_codes``, ``soft_topk_product`` and ``SelectedCodes`` from
``softsae_vision.ops`` instead. Remove this module once nothing imports it.
"""

from softsae_vision.ops.soft_codes import SelectedCodes, soft_topk_codes, soft_topk_product

__all__ = ["SelectedCodes", "soft_topk_codes", "soft_topk_product"]
