"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary must each reconstruct alone.

The latents are split into groups (by default 1/64, 1/32, 1/16, 1/8, 1/4 of the dictionary and
the rest). Prefix m uses groups 0..m; the loss is the mean of the prefix reconstruction losses,
which pushes general features into early latents and specific ones later (Bussmann et al., 2025).
"""

from __future__ import annotations

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops.sparse_decode import sparse_decode, sparse_decode_enabled
from softsae_vision.sae.base import StepContext, TrainOutput, register_sae
from softsae_vision.sae.batchtopk import BatchTopKSAE
from softsae_vision.sae_configs import DEFAULT_GROUP_FRACTIONS, MatryoshkaConfig


def group_sizes(n_latents: int, fractions: tuple[float, ...]) -> list[int]:
    """Sizes of the nested groups: one per fraction, then the remainder."""
    sizes = [max(1, round(f * n_latents)) for f in fractions]
    rest = n_latents - sum(sizes)
    if rest < 1 or any(f <= 0 for f in fractions):
        raise SoftSAEError(
            f"group fractions {fractions} must be positive and sum to less than 1 "
            f"(with {n_latents} latents)"
        )
    return [*sizes, rest]


@register_sae("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK selection, loss averaged over nested dictionary prefixes."""

    config_class = MatryoshkaConfig

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        k: int = 32,
        group_fractions: tuple[float, ...] | list[float] = DEFAULT_GROUP_FRACTIONS,
        threshold_momentum: float = 0.99,
        seed: int | None = None,
    ) -> None:
        super().__init__(d_in, n_latents, k, threshold_momentum, seed)
        self.group_fractions = tuple(float(f) for f in group_fractions)
        self.group_sizes = group_sizes(n_latents, self.group_fractions)

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        enc = self.sparse_encoding(xn_BD)  # on only with the sparse decoder (same switch)
        z_BF = self.pre_acts(xn_BD) if enc is None else enc.z_BF
        sel = self.train_selection(z_BF)
        if sparse_decode_enabled():  # each group's kept entries, gathered (the rest weigh 0)
            ends = torch.tensor(self.group_sizes, device=z_BF.device).cumsum(0)
            group_N = torch.bucketize(sel.cols, ends, right=True)
            vals_N = self.selected_values(sel, enc)
            partials = [
                sparse_decode(sel.cols, vals_N * (group_N == g), self.W_dec, sel.offsets)
                for g in range(len(self.group_sizes))
            ]
        else:
            partials = [
                c_BG @ w_GD
                for c_BG, w_GD in zip(
                    sel.codes.split(self.group_sizes, dim=1),
                    self.W_dec.split(self.group_sizes, dim=0),
                    strict=True,
                )
            ]
        prefix_GBD = torch.stack(partials).cumsum(0) + self.b_dec  # (groups, B, d)
        prefix_losses_G = (prefix_GBD - xn_BD).pow(2).sum(-1).mean(-1)
        return TrainOutput(
            prefix_GBD[-1], sel.selected(), z_BF, recon_loss=prefix_losses_G.mean(), encoding=enc
        )
