"""How many features an SAE spends per patch and per image: predicted k̂ or realised L0.

For a SoftSAE the natural quantity is its predicted k̂ (real-valued; inference keeps ⌊k̂⌋
latents). For any SAE the realised L0 — the number of non-zero codes — is available; for a TopK
SAE it is the constant K, which is exactly the point of comparison.

A per-image value is the mean over the image's patches. The CLS token's own k is computed only
when the caller says the SAE was trained on CLS tokens (an SAE applied to a token type it never
saw gives numbers without meaning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from softsae_vision.analysis.labels import K_HAT, L0, QUANTITY_LABELS, QUANTITY_SYMBOLS
from softsae_vision.analysis.reading import images_per_chunk, iter_chunks, patch_positions
from softsae_vision.data.store import Store
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE

__all__ = [
    "K_HAT",
    "L0",
    "QUANTITY_LABELS",
    "QUANTITY_SYMBOLS",
    "KMaps",
    "k_maps",
    "resolve_quantity",
    "target_k",
    "token_k",
]


@dataclass
class KMaps:
    """Per-patch k of every analysed image, on the patch grid."""

    quantity: str  # "k_hat" (SoftSAE prediction) or "l0" (realised number of active latents)
    per_patch: np.ndarray  # (N, h, w) float32
    rows: np.ndarray  # (N,) store rows
    cls: np.ndarray | None = None  # (N,) k of the CLS token, when meaningful
    target: float | None = None  # the SAE's target mean k (its ``k``), if it has one

    @property
    def per_image(self) -> np.ndarray:
        """(N,) mean over each image's patches."""
        return self.per_patch.reshape(len(self.per_patch), -1).mean(axis=1)

    @property
    def label(self) -> str:
        """Axis / colour-bar label with units."""
        return QUANTITY_LABELS[self.quantity]

    @property
    def symbol(self) -> str:
        return QUANTITY_SYMBOLS[self.quantity]


def resolve_quantity(sae: BaseSAE, quantity: str = "auto") -> str:
    """ "k_hat" for a SoftSAE, "l0" otherwise; validates an explicit choice."""
    has_k = sae.predicts_k
    if quantity == "auto":
        return K_HAT if has_k else L0
    if quantity not in QUANTITY_LABELS:
        raise SoftSAEError(f"unknown k quantity {quantity!r}; use auto, k_hat or l0")
    if quantity == K_HAT and not has_k:
        raise SoftSAEError(
            f"predicted k̂ needs a SoftSAE, but this is a {sae.architecture!r} SAE; "
            "use realised L0 (quantity 'l0') for fixed-k baselines"
        )
    return quantity


def target_k(sae: BaseSAE) -> float | None:
    """The SAE's target mean k (``target_l0``), or None if it has none."""
    return sae.target_l0


def _token_k(sae: BaseSAE, x_RD: torch.Tensor, quantity: str) -> torch.Tensor:
    if quantity == K_HAT:  # resolve_quantity checked that the SAE predicts k
        return sae.predict_k(x_RD)
    return (sae.encode(x_RD) != 0).sum(-1).float()


@torch.no_grad()
def k_maps(
    sae: BaseSAE,
    store: Store,
    layer: int | str,
    *,
    quantity: str = "auto",
    with_cls: bool = False,
    rows: np.ndarray | None = None,
    device: str = "cpu",
    chunk_images: int | None = None,
    progress: bool = False,
) -> KMaps:
    """Per-patch k (predicted k̂ or realised L0) for ``rows`` of the store (default: all).

    ``with_cls`` adds the CLS token's k (use it only if the SAE was trained on CLS tokens).
    Raises :class:`SoftSAEError` if the layer has no patch tokens, or if k̂ is asked of an SAE
    that does not predict it.
    """
    quantity = resolve_quantity(sae, quantity)
    dev = resolve_device(device)
    sae = sae.to(dev).eval()
    positions = patch_positions(store, layer)
    if with_cls:
        cls_pos = store.token_indices("cls", layer)
        if cls_pos.size == 0:
            raise SoftSAEError(f"layer {layer} of {store.path} has no CLS token")
        positions = np.r_[cls_pos[:1], positions]
    width = 1 if quantity == K_HAT else sae.n_latents
    chunk_images = chunk_images or images_per_chunk(len(positions), width)
    h, w = store.grid
    maps, cls_k, seen = [], [], []
    for rows_B, acts_BTD in iter_chunks(
        store, layer, positions, chunk_images, rows=rows, progress=progress, desc="k maps"
    ):
        b, t, d = acts_BTD.shape
        k_BT = _token_k(sae, acts_BTD.reshape(b * t, d).to(dev), quantity).reshape(b, t).cpu()
        if with_cls:
            cls_k.append(k_BT[:, 0])
            k_BT = k_BT[:, 1:]
        maps.append(k_BT.reshape(b, h, w))
        seen.append(rows_B)
    if not maps:
        raise SoftSAEError(f"no images to compute k maps for in {store.path}")
    return KMaps(
        quantity=quantity,
        per_patch=torch.cat(maps).numpy().astype(np.float32),
        rows=np.concatenate(seen),
        cls=torch.cat(cls_k).numpy().astype(np.float32) if with_cls else None,
        target=target_k(sae),
    )


@torch.no_grad()
def token_k(
    sae: BaseSAE,
    store: Store,
    layer: int | str,
    kind: str = "cls",
    *,
    quantity: str = "auto",
    device: str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """k of one token per image — the first of ``kind`` ("cls", or "embed" for pooled
    embeddings) — for SAEs that read one vector per image. Returns (rows (N,), k (N,))."""
    quantity = resolve_quantity(sae, quantity)
    dev = resolve_device(device)
    sae = sae.to(dev).eval()
    positions = store.token_indices(kind, layer)[:1]
    if positions.size == 0:
        raise SoftSAEError(f"layer {layer} of {store.path} has no {kind} token")
    chunk = images_per_chunk(1, 1 if quantity == K_HAT else sae.n_latents)
    rows, values = [], []
    for rows_B, acts_B1D in iter_chunks(store, layer, positions, chunk, progress=progress):
        values.append(_token_k(sae, acts_B1D[:, 0].to(dev), quantity).cpu())
        rows.append(rows_B)
    return np.concatenate(rows), torch.cat(values).numpy().astype(np.float32)
