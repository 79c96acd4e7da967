"""k of a pairing: per-patch k maps and per-image k, from the tokens the SAE was trained on.

Where :mod:`softsae_vision.analysis.kstats` computes k for any SAE on any layer, this module
decides which tokens count for a run and a store (:class:`Pairing`): patch maps for SAEs trained
on patches (plus the CLS token's k only if the SAE saw CLS tokens), one token per image for SAEs
trained on CLS tokens or pooled embeddings. Figures of the results are drawn in
:mod:`softsae_vision.viz.kmaps` and :mod:`softsae_vision.viz.complexity`.
"""

from __future__ import annotations

import numpy as np

from softsae_vision.analysis.kstats import (
    QUANTITY_SYMBOLS,
    KMaps,
    k_maps,
    resolve_quantity,
    token_k,
)
from softsae_vision.analysis.pairing import Pairing
from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import CLS, EMBED, PATCH

MEAN_OVER_PATCHES = "mean_over_patches"
"""Name of the per-image k variable that averages an image's patch k."""


def compute_kmaps(
    pairing: Pairing, quantity: str = "auto", device: str = "cpu", progress: bool = False
) -> tuple[KMaps, str]:
    """The k maps of every stored image, and a sentence on whether CLS k is included."""
    pairing.require_patches("k maps")
    if not (pairing.saw(PATCH) or pairing.trained_on == "unknown"):
        raise SoftSAEError(
            f"k maps need an SAE trained on patch tokens; {pairing.name} was trained on "
            f"{pairing.trained_on} tokens (use `softsae complexity` for per-image k)"
        )
    with_cls = pairing.saw(CLS) and pairing.has_tokens(CLS)
    maps = k_maps(
        pairing.sae,
        pairing.store,
        pairing.layer,
        quantity=quantity,
        with_cls=with_cls,
        device=device,
        progress=progress,
    )
    sym = maps.symbol
    if with_cls:
        note = f"CLS {sym} from the CLS token (the SAE was trained on CLS tokens too)"
    elif pairing.has_tokens(CLS):
        note = (
            f"per-image {sym} is the mean over patches; CLS {sym} not computed because the SAE "
            "was not trained on CLS tokens"
        )
    else:
        note = f"per-image {sym} is the mean over patches (the store has no CLS token)"
    return maps, note


def per_image_k(
    pairing: Pairing,
    quantity: str = "auto",
    device: str = "cpu",
    progress: bool = False,
    maps: tuple[KMaps, str] | None = None,
) -> tuple[str, np.ndarray, dict[str, np.ndarray], KMaps | None, str]:
    """(quantity, rows, {variable: k per image}, k maps or None, note) for the pairing.

    SAEs trained on patches use their k maps (mean over patches, plus CLS if trained on it);
    SAEs trained on CLS tokens or pooled embeddings use that one token per image. ``maps``
    reuses k maps already computed by :func:`compute_kmaps`.
    """
    if pairing.saw(PATCH) or (pairing.trained_on == "unknown" and pairing.has_tokens(PATCH)):
        kmaps, note = maps or compute_kmaps(pairing, quantity, device, progress)
        k = {MEAN_OVER_PATCHES: kmaps.per_image}
        if kmaps.cls is not None:
            k[CLS] = kmaps.cls
        return kmaps.quantity, kmaps.rows, k, kmaps, note
    kind = pairing.trained_on if pairing.trained_on in (CLS, EMBED) else None
    if kind is None or not pairing.has_tokens(kind):
        raise SoftSAEError(
            f"{pairing.name} was trained on {pairing.trained_on} tokens; per-image k needs an "
            "SAE trained on patch, CLS or pooled-embedding tokens that the store also holds"
        )
    q = resolve_quantity(pairing.sae, quantity)
    rows, values = token_k(
        pairing.sae,
        pairing.store,
        pairing.layer,
        kind,
        quantity=q,
        device=device,
        progress=progress,
    )
    return q, rows, {kind: values}, None, f"per-image {QUANTITY_SYMBOLS[q]} of the {kind} token"


__all__ = ["MEAN_OVER_PATCHES", "compute_kmaps", "per_image_k"]
