"""Architecture hyperparameters: one frozen dataclass per SAE architecture.

Each field is a constructor argument of its architecture (beyond ``d_in``, ``n_latents`` and
``seed``) and an attribute of the built model, with its default and one docstring.
``BaseSAE.hparams()`` writes a model's config into config.json, ``load_sae`` reads it back
through these classes, and ``softsae train`` / ``softsae sweep`` build their architecture flags
from the fields and docstrings (``cli/config_flags.py``). This module imports no torch, so the
command line can build its parser without it; the SAE classes name theirs as ``config_class``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from softsae_vision.errors import SoftSAEError

Estimator = Literal["paper", "lean", "gains", "loggains", "priced"]
"""SoftSAE's k estimators (see ``SoftSAE``)."""
KSignal = Literal["soft", "gain", "batch"]
"""How SoftSAE's k̂ learns (see ``SoftSAE``)."""
KLoss = Literal["log", "linear", "weighted", "regret", "log+regret"]
"""How SoftSAE's estimator is scored against its target (see ``k_targets.estimator_loss``)."""
KCount = Literal["above", "prefix"]
"""How SoftSAE's gain target counts an input's latents (see ``k_targets.count_at``)."""
SoftPhaseK = Literal["budget", "estimated", "both", "ramp", "at_least"]
"""Which count of latents SoftSAE's soft-phase reconstruction keeps per input (see ``SoftSAE``)."""
HardPhaseEstimator = Literal["trained", "frozen"]
"""Whether SoftSAE's k estimator keeps learning in the hard phase (see ``SoftSAE``)."""

DEFAULT_GROUP_FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)

_C = TypeVar("_C", bound="SAEConfig")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of dataclass ``cls`` (its string annotations evaluated)."""
    return typing.get_type_hints(cls)


def literal_choices(kind: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` type (or of ``Literal[...] | None``), else None."""
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        return typing.get_args(args[0])
    return None


@dataclass(frozen=True)
class SAEConfig:
    """Base of the architecture configs; an architecture without hyperparameters uses it as is."""

    def __post_init__(self) -> None:
        for name, kind in field_types(type(self)).items():
            choices = literal_choices(kind)
            value = getattr(self, name)
            if choices is not None and value is not None and value not in choices:
                wanted = ", ".join(map(str, choices))
                raise SoftSAEError(f"{name} must be one of {wanted}; got {value!r}")

    def to_kwargs(self) -> dict[str, Any]:
        """The fields as constructor keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (tuples as lists): config.json's ``hparams``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.to_kwargs().items()}

    @classmethod
    def from_dict(cls: type[_C], values: Mapping[str, Any]) -> _C:
        """The config from an ``hparams`` mapping; unknown names are a SoftSAEError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            names, allowed = ", ".join(unknown), ", ".join(sorted(known)) or "none"
            raise SoftSAEError(f"unknown hyperparameter(s) {names} (known: {allowed})")
        types = field_types(cls)
        kwargs = {
            name: tuple(v) if isinstance(v, list) and _is_tuple(types[name]) else v
            for name, v in values.items()
        }
        return cls(**kwargs)


def _is_tuple(kind: Any) -> bool:
    return typing.get_origin(kind) is tuple


@dataclass(frozen=True)
class TopKConfig(SAEConfig):
    """TopK: every input keeps its K largest pre-activations."""

    k: int = 32
    """Active latents per input (K)."""


@dataclass(frozen=True)
class BatchTopKConfig(SAEConfig):
    """BatchTopK: a batch of B inputs keeps its K·B largest pre-activations."""

    k: int = 32
    """Mean active latents per input (K), shared out over the batch."""

    threshold_momentum: float = 0.99
    """Momentum of the moving average that sets the inference threshold."""


@dataclass(frozen=True)
class MatryoshkaConfig(BatchTopKConfig):
    """Matryoshka BatchTopK: nested prefixes of the dictionary each reconstruct alone."""

    group_fractions: tuple[float, ...] = DEFAULT_GROUP_FRACTIONS
    """Sizes of the nested latent groups as fractions of n_latents (the last group is the rest)."""


@dataclass(frozen=True)
class ReLUConfig(SAEConfig):
    """ReLU with an L1 penalty: every positive pre-activation is kept."""

    l1_coeff: float = 5e-3
    """Weight of the L1 sparsity penalty."""


@dataclass(frozen=True)
class SoftSAEConfig(SAEConfig):
    """SoftSAE: a TopK SAE whose k is predicted per input."""

    k: float = 32
    """Target mean number of active latents per input (K)."""

    k_max: float | None = None
    """Largest predicted k̂ (default 4·K, at most n_latents − 1)."""

    estimator: Estimator = "priced"
    """k estimator: "paper" (an MLP on the input, n_latents wide), "lean" (a small MLP on the
    encoder's pre-activations), "gains" / "loggains" / "priced" (a small MLP on the SAE's own
    marginal gains: as shares of the input's energy / their logs / both shares and gains against
    the budget's running price)."""

    estimator_hidden: int | None = None
    """k-estimator hidden width (default: n_latents for "paper", 64 otherwise)."""

    k_loss_coeff: float = 1.0
    """Weight of the k estimator's loss."""

    k_loss_beta: float = 5.0
    """Sharpness of the soft hinge on the batch-mean k̂ (k_signal "soft")."""

    selection_grad: bool = False
    """Let the soft top-k weights' gradient reach the latents (the paper's setting)."""

    k_signal: KSignal = "gain"
    """How k̂ learns: "gain" (regressed on the batch's marginal-gain allocation of the budget),
    "soft" (the paper's gradient through the soft top-k and a hinge on the batch mean) or
    "batch" (regressed on BatchTopK's allocation of the activations)."""

    k_loss: KLoss = "log"
    """How the estimator is scored against the gain allocation: "log" (log k̂ → log k*),
    "linear", "weighted" (by each input's energy), "regret" (the reconstruction a wrong count
    costs) or "log+regret"."""

    k_count: KCount = "above"
    """How the gain allocation counts an input's latents at the batch's price λ: "above" (its
    candidates whose marginal gain is at least λ) or "prefix" (the number of its largest
    latents, in the encoder's order as inference keeps them, whose gains net of λ add up the
    most)."""

    estimator_lr_scale: float | None = None
    """k-estimator learning rate as a multiple of the SAE's (default: scaled to its size)."""

    soft_phase_k: SoftPhaseK | None = None
    """Latents each input keeps in the soft phase's reconstruction: "ramp" (two losses, from
    its top-K as in a TopK SAE and from its top-k̂, the top-k̂ one's weight rising from 0 to 1
    over the soft phase), "both" (the mean of those two losses), "budget" (its top-K only: the
    dictionary learns at a fixed budget while k̂ learns the allocation beside it), "estimated"
    (its top-k̂ only, the paper's) or "at_least" (its top-max(k̂, K)). Default: "ramp", or
    "estimated" with k_signal "soft" (whose k̂ learns only through those codes)."""

    hard_phase_estimator: HardPhaseEstimator | None = None
    """Whether the k estimator keeps learning its target in the hard phase ("trained") or is
    frozen ("frozen", the paper's). Default: "trained", or "frozen" with k_signal "soft"."""


ARCH_CONFIGS: dict[str, type[SAEConfig]] = {
    "softsae": SoftSAEConfig,
    "topk": TopKConfig,
    "batchtopk": BatchTopKConfig,
    "matryoshka": MatryoshkaConfig,
    "relu": ReLUConfig,
}
"""The built-in architectures' names (as ``--arch`` takes them) and their configs."""
