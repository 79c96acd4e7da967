"""Selection operators, each module named for what it holds.

- ``lapsum_topk``: :func:`soft_topk`, the LapSum soft top-k (training), and its bisection
  oracle :func:`soft_topk_reference`.
- ``soft_codes``: :func:`soft_topk_codes` / :func:`soft_topk_product`, the SoftSAE's soft codes
  z ⊙ soft_topk(z, k, α) formed on each row's candidates.
- ``selected_codes``: :class:`SelectedCodes`, a batch's codes held as the entries its selection
  kept (every SAE's training step returns them so).
- ``topk_select``: :func:`hard_topk` / :func:`hard_topk_sparse` / :func:`hard_topk_entries`,
  per-row hard top-k (inference, and the TopK SAEs' training selection).
- ``sparse_decode``: decoding through the selected latents only.

``ops.soft_topk`` and ``ops.hard_topk`` were also module paths; those modules remain as
re-exports, loaded first here so that the names bound below stay the functions.
"""

from softsae_vision.ops import hard_topk as _hard_topk_module  # noqa: F401 (old path, first)
from softsae_vision.ops import soft_topk as _soft_topk_module  # noqa: F401 (old path, first)
from softsae_vision.ops.lapsum_topk import soft_topk, soft_topk_reference
from softsae_vision.ops.selected_codes import SelectedCodes
from softsae_vision.ops.soft_codes import soft_topk_codes, soft_topk_product
from softsae_vision.ops.topk_select import hard_topk, hard_topk_entries, hard_topk_sparse

__all__ = [
    "SelectedCodes",
    "hard_topk",
    "hard_topk_entries",
    "hard_topk_sparse",
    "soft_topk",
    "soft_topk_codes",
    "soft_topk_product",
    "soft_topk_reference",
]
