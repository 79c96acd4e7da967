"""A batch's codes (B, F) held as the entries its selection kept, not as a dense matrix.

Public as ``softsae_vision.ops.SelectedCodes``. Every SAE's training step returns its codes in
this form (``TrainOutput.selected``): a TopK selection is one group of K entries per row, a
batch-level top-k one flat list, the SoftSAE's soft codes candidate groups (ops/soft_codes.py).
The trainer's per-step statistics (which latents fired, each row's L0) are read from the
entries, so a step never writes, scans or keeps a dense (B, F) code matrix; ``dense()`` builds
one on demand (tests, the dense decoders).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from softsae_vision.errors import SoftSAEError


@dataclass
class SelectedCodes:
    """Codes (B, F) held as candidate groups plus an optional dense remainder.

    codes = rest (or zeros) + Σ_groups scatter of ``vals`` at (rows, idx) + Σ_flat scatter of
    ``vals`` at (rows, cols). A group has the same number of candidates in every row, ``rows``
    None meaning every row of the batch; a flat group lists entries one by one (``rows``
    ascending), as many per row as that row keeps. The groups and flat groups name distinct
    (row, latent) pairs, so an entry is active exactly when its value is nonzero.
    """

    shape: tuple[int, int]
    groups: list[tuple[Tensor | None, Tensor, Tensor]] = field(default_factory=list)
    rest: Tensor | None = None  # (B, F)
    flat: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)  # (N,) each

    @classmethod
    def from_dense(cls, codes_BF: Tensor) -> SelectedCodes:
        """Codes that are already a dense (B, F) matrix (a ReLU SAE's, a dense fallback's)."""
        return cls((codes_BF.shape[0], codes_BF.shape[1]), rest=codes_BF)

    @classmethod
    def from_rows(cls, idx_BK: Tensor, vals_BK: Tensor, n_latents: int) -> SelectedCodes:
        """K entries per row: latents ``idx_BK`` (distinct within a row) with ``vals_BK``."""
        return cls((idx_BK.shape[0], n_latents), groups=[(None, idx_BK, vals_BK)])

    @classmethod
    def from_entries(
        cls, rows_N: Tensor, cols_N: Tensor, vals_N: Tensor, shape: tuple[int, int]
    ) -> SelectedCodes:
        """Entries listed one by one (``rows_N`` ascending, distinct (row, latent) pairs)."""
        return cls(shape, flat=[(rows_N, cols_N, vals_N)])

    def dense(self) -> Tensor:
        """The codes as one (B, F) tensor."""
        codes_BF = self.rest
        for rows_R, idx_RN, vals_RN in self.groups:
            if codes_BF is None:
                codes_BF = vals_RN.new_zeros(self.shape)
            if rows_R is None:
                codes_BF = codes_BF.scatter_add(1, idx_RN, vals_RN)
            else:
                codes_BF = codes_BF.index_put((rows_R[:, None], idx_RN), vals_RN, accumulate=True)
        for rows_N, cols_N, vals_N in self.flat:
            if codes_BF is None:
                codes_BF = vals_N.new_zeros(self.shape)
            codes_BF = codes_BF.index_put((rows_N, cols_N), vals_N, accumulate=True)
        if codes_BF is None:
            raise SoftSAEError("SelectedCodes holds nothing")
        return codes_BF

    @torch.no_grad()
    def row_counts(self) -> Tensor:
        """Each row's number of nonzero codes, its L0 (B,) float32, with no host sync."""
        if self.rest is not None:  # a dense part may overlap the entries: count the sum
            return (self.dense() != 0).sum(1).float()
        B = self.shape[0]
        counts_B = torch.zeros(B, device=self._device(), dtype=torch.float32)
        for rows_R, _, vals_RN in self.groups:
            per_row_R = (vals_RN != 0).sum(1).float()
            counts_B = (
                counts_B + per_row_R if rows_R is None else counts_B.index_add(0, rows_R, per_row_R)
            )
        for rows_N, _, vals_N in self.flat:
            counts_B = counts_B.index_add(0, rows_N, (vals_N != 0).float())
        return counts_B

    @torch.no_grad()
    def fired(self) -> Tensor:
        """Whether each latent is nonzero in some row (F,) bool, with no host sync."""
        if self.rest is not None:
            return (self.dense() != 0).any(0)
        hits_F = torch.zeros(self.shape[1], device=self._device(), dtype=torch.float32)
        for _, idx_RN, vals_RN in self.groups:
            hits_F = hits_F.index_add(0, idx_RN.flatten(), (vals_RN != 0).flatten().float())
        for _, cols_N, vals_N in self.flat:
            hits_F = hits_F.index_add(0, cols_N, (vals_N != 0).float())
        return hits_F > 0

    def _device(self) -> torch.device:
        for _, _, vals in [*self.groups, *self.flat]:
            return vals.device
        raise SoftSAEError("SelectedCodes holds nothing")
