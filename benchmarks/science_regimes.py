"""Synthetic regimes of the science suite: known number of active atoms per input."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from softsae_vision.data.synthetic import SyntheticSparseData


@dataclass(frozen=True)
class Regime:
    name: str
    data: SyntheticSparseData
    n_latents: int
    """SAE dictionary size F."""

    @property
    def d(self) -> int:
        return self.data.d

    @property
    def k(self) -> int:
        """Budget K: the expected number of active atoms, rounded (at least 2)."""
        return max(2, round(self.data.expected_active()))

    def describe(self) -> dict:
        return {
            **asdict(self.data),
            "n_latents": self.n_latents,
            "k": self.k,
            "atoms_per_dim": self.data.n_atoms / self.data.d,
        }


def _regime(name: str, n_latents: int, **data) -> Regime:
    return Regime(name, SyntheticSparseData(**data), n_latents)


REGIMES = [
    _regime("base", 512, d=64, n_atoms=256, max_active=16),
    _regime("few-exp", 256, d=64, n_atoms=128, max_active=4, coeff_law="exponential", noise=0.0),
    _regime("wide-range", 2048, d=128, n_atoms=1024, max_active=64),
    _regime(
        "lognormal", 2048, d=256, n_atoms=2048, max_active=32, coeff_law="lognormal", noise=0.05
    ),
    _regime("noisy", 1024, d=128, n_atoms=512, max_active=16, noise=0.1),
    _regime("dense-dict", 2048, d=64, n_atoms=1024, max_active=16, coeff_law="exponential"),
    _regime(
        "clustered",
        2048,
        d=128,
        n_atoms=1024,
        max_active=32,
        coeff_law="lognormal",
        structure="clustered",
        noise=0.02,
    ),
    _regime(
        "correlated", 2048, d=256, n_atoms=1024, max_active=32, structure="correlated", noise=0.02
    ),
    _regime(
        "vit-width", 1536, d=768, n_atoms=1536, max_active=64, coeff_law="lognormal", noise=0.02
    ),
]
"""The full suite: every axis of the generator moves somewhere."""

QUICK_REGIMES = [
    _regime("quick-base", 256, d=32, n_atoms=128, max_active=12),
    _regime("quick-wide", 512, d=64, n_atoms=512, max_active=32, coeff_law="lognormal"),
    _regime(
        "quick-clustered",
        512,
        d=64,
        n_atoms=256,
        max_active=16,
        coeff_law="exponential",
        structure="clustered",
        noise=0.05,
    ),
]
"""Small regimes for ``--quick`` (a few minutes on 2 CPU cores)."""
