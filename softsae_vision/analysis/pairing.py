"""An SAE run and an activation store, checked to belong together before any analysis.

A run records what it was trained on (``config.json`` → ``data``: store layer and token type).
Analysis reads the same layer of a store by default, refuses a store whose activation width
differs from the SAE's, and knows which token kinds the SAE has seen, so it never applies the
SAE (or its k estimator) to tokens from another distribution without saying so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softsae_vision.data.store import Store, open_store
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE, load_run
from softsae_vision.vocab import ALL, CLS, EMBED, PATCH, REGISTER

log = logging.getLogger(__name__)

__all__ = ["ALL", "CLS", "EMBED", "PATCH", "REGISTER", "Pairing", "pair"]


@dataclass
class Pairing:
    """A loaded SAE, the store to analyse and the layer/tokens that connect them."""

    sae: BaseSAE
    store: Store
    layer: int | str
    trained_on: str
    """Token kind the SAE was trained on: "patch", "cls", "register", "all", "embed" or
    "unknown" (a run trained on a plain array, or an SAE passed without a run directory)."""
    run_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    """Token kinds the paired layer of the store holds (read once, when paired)."""

    def __post_init__(self) -> None:
        if not self.held:
            self.held = frozenset(self.store.layer_token_types(self.layer))

    @property
    def name(self) -> str:
        """A short name for titles: the run directory's name or the architecture."""
        return self.run_dir.name if self.run_dir else self.sae.architecture

    @property
    def is_softsae(self) -> bool:
        return self.sae.predicts_k

    def has_tokens(self, kind: str) -> bool:
        """Whether the paired layer of the store holds tokens of ``kind``."""
        return kind in self.held

    def saw(self, kind: str) -> bool:
        """Whether the SAE was trained on tokens of ``kind`` (patch, cls, register)."""
        return self.trained_on in (kind, ALL)

    def image_level(self) -> bool:
        """True when the SAE reads one vector per image (CLS-token or pooled-embedding SAEs)."""
        return self.trained_on in (CLS, EMBED)

    def require_patches(self, what: str) -> None:
        """Raise unless the paired layer holds patch tokens (needed for any per-patch map)."""
        if not self.has_tokens(PATCH):
            held = ", ".join(sorted(self.held))
            raise SoftSAEError(
                f"{what} needs patch tokens, but layer {self.layer} of {self.store.path} holds "
                f"only {held}; extract a store with --tokens including patch"
            )

    def require_softsae(self, what: str) -> None:
        """Raise unless the SAE predicts k̂ (a SoftSAE)."""
        if not self.is_softsae:
            raise SoftSAEError(
                f"{what} needs a SoftSAE (predicted k̂), but {self.name} is a "
                f"{self.sae.architecture!r} SAE; for fixed-k baselines use realised L0 instead"
            )


def pair(
    run: str | os.PathLike | BaseSAE,
    store: str | os.PathLike | Store,
    layer: int | str | None = None,
    device: str = "cpu",
) -> Pairing:
    """Load (if needed) and check an SAE run and a store; pick the layer to analyse.

    ``layer`` defaults to the layer the run was trained on, or the store's only layer.
    Raises :class:`SoftSAEError` if the store's activation width differs from the SAE's.
    """
    run_dir, config, data = None, {}, {}
    if isinstance(run, BaseSAE):
        sae = run
    else:
        loaded = load_run(run, device=device)
        sae, run_dir, config, data = loaded.sae, loaded.dir, loaded.config, loaded.data
    store = store if isinstance(store, Store) else open_store(store)
    trained_layer = data.get("layer") if data.get("kind") == "store" else None
    if layer is None and trained_layer is not None:
        layer = trained_layer
    resolved = store.resolve_layer(layer)
    d_store = int(store.activations(resolved).shape[-1])
    if d_store != sae.d_in:
        raise SoftSAEError(
            f"run/store mismatch: the SAE reads {sae.d_in}-dimensional activations but layer "
            f"{resolved} of {store.path} ({store.backbone}) has d_model {d_store}; use a store "
            "extracted with the backbone the SAE was trained on"
        )
    if data.get("kind") == "store":
        _warn_on_drift(data, store, resolved)
    trained_on = str(data.get("tokens", "unknown")) if data.get("kind") == "store" else "unknown"
    if resolved == EMBED:
        trained_on = EMBED
    return Pairing(sae.eval(), store, resolved, trained_on, run_dir, config)


def _warn_on_drift(data: dict[str, Any], store: Store, layer: int | str) -> None:
    """Log (not raise) when the store differs from the training data in backbone or layer."""
    if data.get("backbone") and data["backbone"] != store.backbone:
        log.warning(
            "the SAE was trained on %s activations but the store holds %s; results may be "
            "meaningless",
            data["backbone"],
            store.backbone,
        )
    if data.get("layer") is not None and str(data["layer"]) != str(layer):
        log.warning(
            "the SAE was trained on layer %s but layer %s is analysed", data["layer"], layer
        )
