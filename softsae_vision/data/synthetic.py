"""Synthetic activations with a known number of active dictionary atoms per sample.

Used to test that SoftSAE's k̂ tracks the information in an input: each sample is a positive
combination of ``n_active`` random unit atoms, with ``n_active`` spread widely between samples
(log-uniform) but kept well below d so the sparse code is recoverable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SyntheticSparseData:
    d: int = 64
    """Activation width."""
    n_atoms: int = 256
    """Size of the ground-truth dictionary."""
    min_active: int = 1
    """Fewest active atoms in a sample."""
    max_active: int = 16
    """Most active atoms in a sample (keep ≪ d)."""
    coeff_range: tuple[float, float] = (0.5, 1.5)
    """Active atoms' coefficients are uniform in this range."""
    noise: float = 0.01
    """Std of isotropic Gaussian noise added to every sample."""
    offset: float = 2.0
    """Norm of a constant offset added to every sample (like a ViT's residual-stream mean)."""
    seed: int = 0
    """Seed of the dictionary; sample draws take their own seed."""

    def atoms(self) -> torch.Tensor:
        """The ground-truth dictionary (n_atoms, d), unit rows, and the offset as row -1."""
        gen = torch.Generator().manual_seed(self.seed)
        atoms = torch.randn(self.n_atoms + 1, self.d, generator=gen)
        return atoms / atoms.norm(dim=1, keepdim=True)

    def generate(self, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Return activations (n, d) float32 and the true active-atom count per sample (n,)."""
        dictionary = self.atoms()
        atoms_AD, offset_D = dictionary[:-1], dictionary[-1] * self.offset
        gen = torch.Generator().manual_seed(seed)
        log_lo, log_hi = torch.log(torch.tensor([self.min_active, self.max_active + 1.0]))
        u = torch.rand(n, generator=gen)
        n_active_N = torch.exp(log_lo + u * (log_hi - log_lo)).floor().long()
        n_active_N = n_active_N.clamp(self.min_active, self.max_active)
        # Choose atoms without replacement: the n_active smallest of random keys.
        ranks_NA = torch.rand(n, self.n_atoms, generator=gen).argsort(dim=1).argsort(dim=1)
        active_NA = ranks_NA < n_active_N[:, None]
        lo, hi = self.coeff_range
        coeffs_NA = (lo + (hi - lo) * torch.rand(n, self.n_atoms, generator=gen)) * active_NA
        x_ND = coeffs_NA @ atoms_AD + offset_D + self.noise * torch.randn(n, self.d, generator=gen)
        return x_ND.float(), n_active_N
