"""Synthetic activations with a known number of active dictionary atoms per sample.

Used to test that SoftSAE's k̂ tracks the information in an input: each sample is a positive
combination of ``n_active`` unit atoms, with ``n_active`` spread widely between samples
(log-uniform) but kept well below d so the sparse code is recoverable.

The science suite (``benchmarks/science.py``) varies every part of the generator, so that no
default is chosen on one latent distribution:

- ``coeff_law``: active coefficients uniform in ``coeff_range``, exponential or log-normal
  (both rescaled to the same mean as the uniform law, so only the shape changes);
- ``structure``: independent random atoms; ``"clustered"`` atoms (groups of atoms around shared
  centroids, so the dictionary is coherent); ``"correlated"`` co-activation (each sample draws
  most of its atoms from one of a few groups);
- ``noise`` and ``offset`` as in a ViT residual stream (a large shared mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

CoeffLaw = Literal["uniform", "exponential", "lognormal"]
Structure = Literal["independent", "clustered", "correlated"]

N_GROUPS = 16
"""Atom groups used by the "clustered" and "correlated" structures."""
CORRELATED_IN_GROUP = 0.8
"""For "correlated": the share of a sample's atoms drawn from its own group."""
CLUSTER_SPREAD = 0.6
"""For "clustered": the norm of each atom's own direction added to its group centroid."""


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
    """Active coefficients are uniform in this range (other laws keep its mean)."""
    noise: float = 0.01
    """Std of isotropic Gaussian noise added to every sample."""
    offset: float = 2.0
    """Norm of a constant offset added to every sample (like a ViT's residual-stream mean)."""
    seed: int = 0
    """Seed of the dictionary; sample draws take their own seed."""
    coeff_law: CoeffLaw = "uniform"
    """Law of the active coefficients: "uniform", "exponential" or "lognormal"."""
    structure: Structure = "independent"
    """"independent", "clustered" (coherent atoms) or "correlated" (co-activation groups)."""

    def atoms(self) -> torch.Tensor:
        """The ground-truth dictionary (n_atoms, d), unit rows, and the offset as row -1."""
        gen = torch.Generator().manual_seed(self.seed)
        atoms = torch.randn(self.n_atoms + 1, self.d, generator=gen)
        atoms = atoms / atoms.norm(dim=1, keepdim=True)
        if self.structure == "clustered":
            centroids_GD = torch.randn(N_GROUPS, self.d, generator=gen)
            centroids_GD /= centroids_GD.norm(dim=1, keepdim=True)
            group_A = torch.arange(self.n_atoms) % N_GROUPS
            mixed = centroids_GD[group_A] + CLUSTER_SPREAD * atoms[:-1]
            atoms[:-1] = mixed / mixed.norm(dim=1, keepdim=True)
        return atoms

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
        keys_NA = torch.rand(n, self.n_atoms, generator=gen)
        if self.structure == "correlated":
            # Atoms of the sample's own group get keys in [0, 1 - p), the rest in [1 - p, 1]:
            # a share of about p of its atoms comes from its group.
            group_N = torch.randint(N_GROUPS, (n,), generator=gen)
            own_NA = (torch.arange(self.n_atoms) % N_GROUPS)[None, :] == group_N[:, None]
            keys_NA = torch.where(own_NA, keys_NA * (1 - CORRELATED_IN_GROUP), keys_NA)
        ranks_NA = keys_NA.argsort(dim=1).argsort(dim=1)
        active_NA = ranks_NA < n_active_N[:, None]
        coeffs_NA = self._coefficients(n, gen) * active_NA
        x_ND = coeffs_NA @ atoms_AD + offset_D + self.noise * torch.randn(n, self.d, generator=gen)
        return x_ND.float(), n_active_N

    def _coefficients(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n, n_atoms) positive coefficients drawn from ``coeff_law``."""
        lo, hi = self.coeff_range
        u_NA = torch.rand(n, self.n_atoms, generator=gen)
        if self.coeff_law == "uniform":
            return lo + (hi - lo) * u_NA
        mean = (lo + hi) / 2
        if self.coeff_law == "exponential":
            return -mean * torch.log1p(-u_NA)  # inverse CDF of Exp(1/mean)
        if self.coeff_law == "lognormal":
            sigma = 0.75
            g_NA = torch.randn(n, self.n_atoms, generator=gen)
            return mean * torch.exp(sigma * g_NA - sigma**2 / 2)
        raise ValueError(f"unknown coeff_law {self.coeff_law!r}")

    def expected_active(self) -> float:
        """Mean number of active atoms per sample under the log-uniform count law."""
        counts = torch.arange(self.min_active, self.max_active + 1, dtype=torch.float64)
        lo, hi = torch.log(
            torch.tensor([self.min_active, self.max_active + 1.0], dtype=torch.float64)
        )
        probs = (torch.log(counts + 1) - torch.log(counts)) / (hi - lo)
        return float((counts * probs).sum())
