"""BatchTopK SAE: the K·B largest pre-activations over the whole batch are kept.

Inputs compete for a shared budget during training, so the mean L0 is K but single inputs
vary. At inference there is no batch to compete in: a global threshold θ (an exponential moving
average of the smallest activation selected in training) keeps every latent above θ.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from softsae_vision.ops import SelectedCodes, batch_group, hard_topk
from softsae_vision.ops.sparse_decode import row_offsets, sparse_decode, sparse_decode_enabled
from softsae_vision.ops.sparse_encode import SparseEncoding
from softsae_vision.sae.base import BaseSAE, StepContext, TrainOutput, register_sae
from softsae_vision.sae.topk import check_k
from softsae_vision.sae_configs import BatchTopKConfig


@dataclass
class BatchSelection:
    """The kept entries of a batch-level top-k, ordered by row (for gather decoding)."""

    shape: tuple[int, int]  # (B, F)
    smallest: Tensor  # () the smallest positive kept value (0 if none)
    rows: Tensor  # (N,) int64 row of each kept entry, ascending
    cols: Tensor  # (N,) int64 latent of each kept entry
    vals: Tensor  # (N,) its value
    offsets: Tensor  # (B,) where each row's entries start

    def selected(self, vals_N: Tensor | None = None) -> SelectedCodes:
        """The kept entries as :class:`SelectedCodes`, with values ``vals_N`` if given."""
        vals_N = self.vals if vals_N is None else vals_N
        return SelectedCodes.from_entries(self.rows, self.cols, vals_N, self.shape)

    @functools.cached_property
    def codes(self) -> Tensor:
        """The codes (B, F), built on first use."""
        return self.selected().dense()


def batch_topk_sparse(z_BF: Tensor, k: float) -> BatchSelection:
    """Keep the round(k·B) largest entries of the whole batch, with no host synchronisation.

    Under data-parallel training the batch is the global one: each rank keeps its entries
    among the global batch's round(k·B) largest (its top list has fixed width, the others
    weigh 0).
    """
    B, F = z_BF.shape
    B_all = batch_group.global_rows(B)
    n_keep = max(1, min(B_all * F, round(k * B_all)))
    values, flat_idx = z_BF.flatten().topk(min(n_keep, z_BF.numel()), sorted=False)
    if batch_group.active() is not None:
        values = values * (values >= batch_group.kth_largest(values, n_keep))
    smallest = batch_group.minimum(torch.where(values > 0, values, torch.inf).amin())
    smallest = torch.where(torch.isfinite(smallest), smallest, 0.0)
    flat_sorted, order = flat_idx.sort()
    rows = torch.div(flat_sorted, F, rounding_mode="floor")
    offsets = row_offsets(rows, B)
    return BatchSelection((B, F), smallest, rows, flat_sorted - rows * F, values[order], offsets)


def batch_topk(z_BF: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """Keep the round(k·B) largest entries of the whole batch; also return the smallest kept."""
    sel = batch_topk_sparse(z_BF, k)
    return sel.codes, sel.smallest


@register_sae("batchtopk")
class BatchTopKSAE(BaseSAE):
    """Batch-level top-K in training; a learned global threshold at inference."""

    config_class = BatchTopKConfig
    threshold: Tensor  # () buffer; < 0 until estimated

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        k: int = 32,
        threshold_momentum: float = 0.99,
        seed: int | None = None,
    ) -> None:
        super().__init__(d_in, n_latents, seed)
        check_k(k, n_latents)
        self.k = int(k)
        self.threshold_momentum = float(threshold_momentum)
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not yet estimated

    @property
    def target_l0(self) -> float:
        return float(self.k)

    def select(self, z_BF: Tensor) -> Tensor:
        if self.threshold < 0:  # untrained: behave like a TopK SAE rather than keep everything
            return hard_topk(z_BF, self.k)
        return z_BF * (z_BF > self.threshold)

    @torch.no_grad()
    def update_threshold(self, smallest_kept: Tensor) -> None:
        """First value as is, then an EMA; decided on the device (no host read)."""
        smallest = smallest_kept.to(self.threshold)
        ema = torch.lerp(self.threshold, smallest, 1 - self.threshold_momentum)
        self.threshold.copy_(torch.where(self.threshold < 0, smallest, ema))

    def train_selection(self, z_BF: Tensor) -> BatchSelection:
        sel = batch_topk_sparse(z_BF, self.k)
        self.update_threshold(sel.smallest.detach())
        return sel

    def train_codes(self, z_BF: Tensor) -> Tensor:
        return self.train_selection(z_BF).codes

    def decode_selection(self, sel: BatchSelection, vals_N: Tensor | None = None) -> Tensor:
        """Normalised reconstruction (B, d) of a batch selection (values ``vals_N`` if given)."""
        vals_N = sel.vals if vals_N is None else vals_N
        if sparse_decode_enabled():
            return sparse_decode(sel.cols, vals_N, self.W_dec, sel.offsets) + self.b_dec
        return self.decode_normalized(sel.selected(vals_N).dense())

    def selected_values(self, sel: BatchSelection, enc: SparseEncoding | None) -> Tensor:
        """The kept values (N,), read through ``enc`` (a sparse encoder gradient) if given.

        Entries of this rank's top list outside the global batch's (data-parallel training)
        are 0 in ``sel.vals`` and stay 0 here.
        """
        return sel.vals if enc is None else enc.kept_flat(sel.rows, sel.cols, sel.vals)

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        enc = self.sparse_encoding(xn_BD)
        z_BF = self.pre_acts(xn_BD) if enc is None else enc.z_BF
        sel = self.train_selection(z_BF)
        x_hat_BD = self.decode_selection(sel, self.selected_values(sel, enc))
        return TrainOutput(x_hat_BD, sel.selected(), z_BF, encoding=enc)
