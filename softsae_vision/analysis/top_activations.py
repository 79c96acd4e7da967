"""Per-feature top-activating images in one streaming pass over a store.

For every feature we keep the S images (slots) where it fires most strongly — an image's score
is the feature's largest activation over the scanned tokens, remembered with that token's
position — plus how often it fires and how strongly on average. Memory is O(S x F) whatever
the store's size: each chunk of images is encoded, reduced to a per-image maximum (B, F), and
merged into the running top-S by ``torch.topk`` over the concatenated candidates. No codes
matrix for the whole store ever exists; heat maps are recomputed later for the few images that
are drawn (:func:`feature_maps`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softsae_vision.analysis.reading import images_per_chunk, iter_chunks, token_positions
from softsae_vision.data.store import Store
from softsae_vision.devices import resolve_device
from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import BaseSAE, atomic_write


@dataclass
class TopActivations:
    """Top-S images per feature (S slots) and per-feature firing statistics."""

    scores: np.ndarray  # (F, S) float32, descending; 0 in empty slots
    images: np.ndarray  # (F, S) int64 store rows; -1 in empty slots (fewer than S firing)
    tokens: np.ndarray  # (F, S) int64 token positions (store token axis); -1 if empty
    frequency: np.ndarray  # (F,) fraction of scanned tokens with a non-zero code
    mean_activation: np.ndarray  # (F,) mean code over the tokens where the feature fires
    n_tokens: int  # tokens scanned
    n_images: int  # images scanned
    token_kind: str  # which tokens were scanned ("patch", "cls", "all", ...)

    @property
    def n_latents(self) -> int:
        return int(self.scores.shape[0])

    def examples(self, feature: int) -> list[tuple[float, int, int]]:
        """(score, store row, token position) of a feature's filled slots, strongest first."""
        keep = self.images[feature] >= 0
        return [
            (float(s), int(i), int(t))
            for s, i, t in zip(
                self.scores[feature][keep],
                self.images[feature][keep],
                self.tokens[feature][keep],
                strict=True,
            )
        ]

    def save(self, path: str | os.PathLike) -> Path:
        """Write to a ``.npz`` file (reload with :meth:`load`)."""
        path = Path(path)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                arrays: dict[str, Any] = {k: np.asarray(v) for k, v in vars(self).items()}
                np.savez(f, **arrays)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TopActivations:
        with np.load(path, allow_pickle=False) as data:
            values = {k: data[k] for k in data.files}
        for key in ("n_tokens", "n_images"):
            values[key] = int(values[key])
        values["token_kind"] = str(values["token_kind"])
        return cls(**values)


@torch.no_grad()
def top_activations(
    sae: BaseSAE,
    store: Store,
    layer: int | str,
    tokens: str | tuple[str, ...] = "patch",
    n_top: int = 16,
    *,
    device: str = "cpu",
    chunk_images: int | None = None,
    rows: np.ndarray | None = None,
    progress: bool = False,
) -> TopActivations:
    """Scan ``layer`` of ``store`` once; return each feature's top ``n_top`` images.

    ``tokens`` picks the scanned token kinds ("patch", "cls", "register", "all"); ``rows``
    restricts the scan to some store rows.
    """
    if n_top < 1:
        raise SoftSAEError(f"--top must be at least 1, got {n_top}")
    dev = resolve_device(device)
    sae = sae.to(dev).eval()
    positions = token_positions(store, layer, tokens)
    pos_T = torch.from_numpy(positions)
    n_lat = sae.n_latents
    chunk_images = chunk_images or images_per_chunk(len(positions), n_lat)
    best_SF = torch.full((0, n_lat), -torch.inf)
    best_img_SF = torch.zeros((0, n_lat), dtype=torch.long)
    best_tok_SF = torch.zeros((0, n_lat), dtype=torch.long)
    fired_F = torch.zeros(n_lat, dtype=torch.float64)
    total_F = torch.zeros(n_lat, dtype=torch.float64)
    n_tokens = n_images = 0
    for rows_B, acts_BTD in iter_chunks(
        store, layer, positions, chunk_images, rows=rows, progress=progress, desc="top activations"
    ):
        b, t, d = acts_BTD.shape
        codes_BTF = sae.encode(acts_BTD.reshape(b * t, d).to(dev)).reshape(b, t, n_lat).cpu()
        fired_F += (codes_BTF != 0).sum((0, 1), dtype=torch.float64)
        total_F += codes_BTF.sum((0, 1), dtype=torch.float64)
        n_tokens, n_images = n_tokens + b * t, n_images + b
        peak_BF, arg_BF = codes_BTF.max(dim=1)
        # M = S + B candidates: the slots so far and this chunk's images
        cand_MF = torch.cat([best_SF, peak_BF])
        cand_img_MF = torch.cat(
            [best_img_SF, torch.from_numpy(rows_B).long()[:, None].expand(b, n_lat)]
        )
        cand_tok_MF = torch.cat([best_tok_SF, pos_T[arg_BF]])
        keep = min(n_top, len(cand_MF))
        best_SF, idx_SF = torch.topk(cand_MF, keep, dim=0)
        best_img_SF = cand_img_MF.gather(0, idx_SF)
        best_tok_SF = cand_tok_MF.gather(0, idx_SF)
    if n_images == 0:
        raise SoftSAEError(f"{store.path} has no images to scan")
    empty = ~(best_SF > 0)
    pad = n_top - best_SF.shape[0]  # fewer images than n_top: pad with empty slots
    scores = torch.nn.functional.pad(best_SF.masked_fill(empty, 0.0), (0, 0, 0, pad)).T
    images = torch.nn.functional.pad(best_img_SF.masked_fill(empty, -1), (0, 0, 0, pad), value=-1).T
    tokens_ = torch.nn.functional.pad(
        best_tok_SF.masked_fill(empty, -1), (0, 0, 0, pad), value=-1
    ).T
    return TopActivations(
        scores=scores.contiguous().numpy().astype(np.float32),
        images=images.contiguous().numpy(),
        tokens=tokens_.contiguous().numpy(),
        frequency=(fired_F / n_tokens).numpy(),
        mean_activation=(total_F / fired_F.clamp_min(1)).numpy(),
        n_tokens=n_tokens,
        n_images=n_images,
        token_kind=tokens if isinstance(tokens, str) else ",".join(tokens),
    )


@torch.no_grad()
def feature_maps(
    sae: BaseSAE,
    store: Store,
    layer: int | str,
    rows: Sequence[int] | np.ndarray,
    features: Sequence[int] | np.ndarray,
    positions: np.ndarray,
    device: str = "cpu",
) -> np.ndarray:
    """Codes of ``features`` at token ``positions`` of a few store ``rows``: (R, P, len(F)).

    Used to recompute heat maps for the images that are drawn (reshape P to the patch grid).
    """
    dev = resolve_device(device)
    sae = sae.to(dev).eval()
    out = []
    feats = torch.as_tensor(np.asarray(features), dtype=torch.long)
    chunk = images_per_chunk(len(positions), sae.n_latents)
    for _, acts_BTD in iter_chunks(store, layer, positions, chunk, rows=np.asarray(rows)):
        b, t, d = acts_BTD.shape
        codes = sae.encode(acts_BTD.reshape(b * t, d).to(dev)).cpu().reshape(b, t, -1)
        out.append(codes[:, :, feats])
    return torch.cat(out).numpy()
