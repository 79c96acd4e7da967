"""BatchTopK SAE: the K·B largest pre-activations over the whole batch are kept.

Inputs compete for a shared budget during training, so the mean L0 is K but single inputs
vary. At inference there is no batch to compete in: a global threshold θ (an exponential moving
average of the smallest activation selected in training) keeps every latent above θ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softsae_vision.ops import hard_topk
from softsae_vision.sae.base import BaseSAE, StepContext, TrainOutput, register_sae
from softsae_vision.sae.topk import check_k


def batch_topk(z_BF: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """Keep the round(k·B) largest entries of the whole batch; also return the smallest kept."""
    n_keep = max(1, min(z_BF.numel(), round(k * z_BF.shape[0])))
    values, flat_idx = z_BF.flatten().topk(n_keep, sorted=False)
    codes = torch.zeros_like(z_BF).flatten().scatter(0, flat_idx, values).view_as(z_BF)
    positive = values[values > 0]
    smallest = positive.min() if positive.numel() else values.new_zeros(())
    return codes, smallest


@register_sae("batchtopk")
class BatchTopKSAE(BaseSAE):
    """Batch-level top-K in training; a learned global threshold at inference."""

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

    def hparams(self) -> dict:
        return {"k": self.k, "threshold_momentum": self.threshold_momentum}

    def select(self, z_BF: Tensor, xn_BD: Tensor) -> Tensor:
        if self.threshold < 0:  # untrained: behave like a TopK SAE rather than keep everything
            return hard_topk(z_BF, self.k)
        return z_BF * (z_BF > self.threshold)

    @torch.no_grad()
    def update_threshold(self, smallest_kept: Tensor) -> None:
        if self.threshold < 0:
            self.threshold.copy_(smallest_kept)
        else:
            self.threshold.lerp_(smallest_kept.to(self.threshold), 1 - self.threshold_momentum)

    def train_codes(self, z_BF: Tensor) -> Tensor:
        codes_BF, smallest = batch_topk(z_BF, self.k)
        self.update_threshold(smallest.detach())
        return codes_BF

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        z_BF = self.pre_acts(xn_BD)
        codes_BF = self.train_codes(z_BF)
        return TrainOutput(self.decode_normalized(codes_BF), codes_BF, z_BF)
