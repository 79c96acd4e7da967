"""One interface over ViT backbones from different libraries: token layout and layer outputs.

A layer is a block index (its residual-stream output, negative indices count from the end) or
the pseudo-layer ``"embed"``: the model's pooled (and, for CLIP, projected) image embedding.
Block outputs are captured with forward hooks, and the forward pass is cut short after the last
block needed unless the embedding is wanted too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from softsae_vision.backbones.transform import Preprocess
from softsae_vision.errors import SoftSAEError

EMBED = "embed"
"""Name of the pooled image-embedding pseudo-layer."""

Layer = int | str
"""A block index (int, negative counts from the end) or ``"embed"``."""

TOKEN_TYPES = ("cls", "register", "patch")


@dataclass(frozen=True)
class TokenLayout:
    """Order of tokens in a block's output: ``n_cls`` CLS, ``n_reg`` register, then patches."""

    n_cls: int
    n_reg: int
    grid: tuple[int, int]
    """Patch grid (h, w); patch tokens are stored row-major."""

    @property
    def n_prefix(self) -> int:
        return self.n_cls + self.n_reg

    @property
    def n_tokens(self) -> int:
        return self.n_prefix + self.grid[0] * self.grid[1]

    def token_types(self) -> list[str]:
        """The type of each token position: "cls", "register" or "patch"."""
        n_patch = self.grid[0] * self.grid[1]
        return ["cls"] * self.n_cls + ["register"] * self.n_reg + ["patch"] * n_patch

    def count(self, kind: str) -> int:
        """Number of tokens of one type."""
        return {"cls": self.n_cls, "register": self.n_reg, "patch": self.grid[0] * self.grid[1]}[
            kind
        ]


def resolve_layer_index(layer: Layer, n_blocks: int, owner: str = "the model") -> Layer:
    """The block index in ``0..n_blocks-1`` (or ``"embed"``) meant by ``layer``.

    The one home of layer resolution (backbones, extraction and stores share it): negative
    indices count from the end, and anything outside ``-n_blocks..n_blocks-1`` is an error,
    never wrapped around.
    """
    if isinstance(layer, str):
        if layer.strip().lower() == EMBED:
            return EMBED
        try:
            layer = int(layer)
        except ValueError:
            raise SoftSAEError(
                f"unknown layer {layer!r}; use a block index (0..{n_blocks - 1}, "
                f"negative counts from the end) or {EMBED!r}"
            ) from None
    if isinstance(layer, bool) or not hasattr(layer, "__index__"):
        raise SoftSAEError(f"layer must be a block index or {EMBED!r}, got {layer!r}")
    layer = int(layer)
    if not -n_blocks <= layer < n_blocks:
        raise SoftSAEError(
            f"layer {layer} is out of range: {owner} has {n_blocks} blocks "
            f"(use 0..{n_blocks - 1}, negative counts from the end, or {EMBED!r})"
        )
    return layer % n_blocks


class _StopForwardSignal(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from a hook once every requested block output is captured."""


class Backbone(ABC):
    """A ViT image model with a known preprocessing transform and token layout."""

    name: str
    """Canonical name, e.g. ``timm/vit_small_patch16_224.augreg_in21k``."""
    weights: str
    """Where the weights came from: a pretrained tag, ``checkpoint:<sha256>`` or ``random``."""
    model: nn.Module
    preprocess: Preprocess
    layout: TokenLayout
    d_model: int
    """Width of the residual stream (block layers)."""
    d_embed: int
    """Width of the ``embed`` pseudo-layer."""
    device: torch.device

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks, in order; their outputs are the block layers."""

    @abstractmethod
    def _run_features(self, x_BCHW: torch.Tensor) -> None:
        """Run the model through its blocks (hooks capture what is needed)."""

    @abstractmethod
    def _run_embed(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Run the full model; return the pooled embedding (B, d_embed)."""

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def grid(self) -> tuple[int, int]:
        return self.layout.grid

    def _block_output(self, output: torch.Tensor) -> torch.Tensor:
        """A block's hook output as (B, T, d); adapters with sequence-first blocks override."""
        return output

    def resolve_layer(self, layer: Layer) -> Layer:
        """Normalise a layer spec (int, "-1", "embed") to a block index >= 0 or ``"embed"``."""
        return resolve_layer_index(layer, self.n_blocks, self.name)

    def layer_width(self, layer: Layer) -> int:
        """Activation width d of a (resolved) layer."""
        return self.d_embed if self.resolve_layer(layer) == EMBED else self.d_model

    @torch.inference_mode()
    def forward_layers(
        self, x_BCHW: torch.Tensor, layers: Sequence[Layer]
    ) -> dict[Layer, torch.Tensor]:
        """Activations of the requested layers for one preprocessed batch.

        Returns resolved layer -> (B, T, d) float tensor on the backbone's device, where a block
        layer has every token of :attr:`layout` and ``"embed"`` has T = 1.
        """
        wanted = [self.resolve_layer(layer) for layer in layers]
        block_ids = sorted({layer for layer in wanted if isinstance(layer, int)})
        need_embed = EMBED in wanted
        last = block_ids[-1] if block_ids else -1
        captured: dict[Layer, torch.Tensor] = {}

        def make_hook(index: int):
            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                out = output[0] if isinstance(output, tuple) else output
                captured[index] = self._block_output(out)
                if index == last and not need_embed:
                    raise _StopForwardSignal

            return hook

        handles = [self.blocks[i].register_forward_hook(make_hook(i)) for i in block_ids]
        x_BCHW = x_BCHW.to(self.device, non_blocking=True)
        try:
            if need_embed:
                captured[EMBED] = self._run_embed(x_BCHW)[:, None, :]
            elif block_ids:
                self._run_features(x_BCHW)
        except _StopForwardSignal:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {layer: captured[layer] for layer in dict.fromkeys(wanted)}

    def describe(self) -> dict[str, object]:
        """JSON-able identity of the backbone (what a store records and checks on resume)."""
        return {
            "name": self.name,
            "weights": self.weights,
            "n_blocks": self.n_blocks,
            "d_model": self.d_model,
            "d_embed": self.d_embed,
            "n_cls": self.layout.n_cls,
            "n_reg": self.layout.n_reg,
            "grid": list(self.layout.grid),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, weights={self.weights!r}, "
            f"blocks={self.n_blocks}, d_model={self.d_model}, layout={self.layout})"
        )
