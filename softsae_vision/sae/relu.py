"""The classic ReLU SAE with an L1 sparsity penalty."""

from __future__ import annotations

from torch import Tensor

from softsae_vision.sae.base import BaseSAE, StepContext, TrainOutput, register_sae
from softsae_vision.sae_configs import ReLUConfig


@register_sae("relu")
class ReLUSAE(BaseSAE):
    """All positive pre-activations are kept; sparsity comes from λ·mean_b Σ_i f_i ‖W_dec,i‖."""

    config_class = ReLUConfig

    def __init__(
        self, d_in: int, n_latents: int, l1_coeff: float = 5e-3, seed: int | None = None
    ) -> None:
        super().__init__(d_in, n_latents, seed)
        self.l1_coeff = float(l1_coeff)

    def select(self, z_BF: Tensor) -> Tensor:
        return z_BF

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        out = super().train_output(xn_BD, ctx)
        l1 = (out.codes * self.W_dec.norm(dim=1)).sum(-1).mean()
        out.extra_losses["l1"] = self.l1_coeff * l1
        return out
