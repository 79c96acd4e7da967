"""TopK SAE: exactly the K largest pre-activations of every input are kept."""

from __future__ import annotations

from torch import Tensor

from softsae_vision.errors import SoftSAEError
from softsae_vision.ops import SelectedCodes, hard_topk, hard_topk_entries, hard_topk_sparse
from softsae_vision.sae.base import BaseSAE, StepContext, TrainOutput, register_sae
from softsae_vision.sae_configs import TopKConfig


def check_k(k: float, n_latents: int) -> None:
    """Raise a clear error unless 0 < k < n_latents."""
    if not 0 < k < n_latents:
        raise SoftSAEError(
            f"k must satisfy 0 < k < n_latents ({n_latents}), got {k}; "
            "pick a smaller --k or a larger --n-latents"
        )


@register_sae("topk")
class TopKSAE(BaseSAE):
    """Per-row top-K selection (Gao et al., 2024)."""

    config_class = TopKConfig

    def __init__(self, d_in: int, n_latents: int, k: int = 32, seed: int | None = None) -> None:
        super().__init__(d_in, n_latents, seed)
        check_k(k, n_latents)
        self.k = int(k)

    @property
    def target_l0(self) -> float:
        return float(self.k)

    def select(self, z_BF: Tensor) -> Tensor:
        return hard_topk(z_BF, self.k)

    def select_sparse(self, z_BF: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return hard_topk_sparse(z_BF, self.k, validate=False)

    def train_output(self, xn_BD: Tensor, ctx: StepContext) -> TrainOutput:
        """The K kept entries only, with either encoder gradient (no dense (B, F) codes)."""
        enc = self.sparse_encoding(xn_BD)  # the encoder's gradient through the K kept latents
        z_BF = self.pre_acts(xn_BD) if enc is None else enc.z_BF
        idx_BK, vals_BK = hard_topk_entries(z_BF, self.k, validate=False)
        decoded_BK = vals_BK if enc is None else enc.gather(idx_BK)
        x_hat_BD = self.decode_sparse_normalized(idx_BK, decoded_BK)
        selected = SelectedCodes.from_rows(idx_BK, vals_BK, self.n_latents)
        return TrainOutput(x_hat_BD, selected, z_BF, encoding=enc)
