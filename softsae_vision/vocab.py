"""Names for places in a ViT's output: layers and token kinds (the one home of each).

A layer is a block index (its residual-stream output; negative indices count from the end) or
the pseudo-layer ``"embed"``, the model's pooled image embedding. A block layer's tokens are, in
order, CLS tokens, register tokens, then the patch grid row-major (:class:`TokenLayout`); the
embed layer has one token, of kind ``"embed"``.

Torch-free, so that the command line can offer these names without importing a model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from softsae_vision.errors import SoftSAEError

EMBED: Literal["embed"] = "embed"
"""Name of the pooled image-embedding pseudo-layer, and the kind of its one token."""

Layer = int | str
"""A block index (int, negative counts from the end) or ``"embed"``."""

TokenKind = Literal["cls", "register", "patch"]
"""Kind of one token position of a block layer, in the order the layout stores them."""
TOKEN_KINDS: tuple[TokenKind, ...] = get_args(TokenKind)

TokenChoice = Literal["patch", "cls", "register", "all", "embed"]
"""Which tokens become rows (``--tokens``): one kind, every stored token, or the embed token."""
TOKEN_CHOICES: tuple[TokenChoice, ...] = get_args(TokenChoice)

CLS: TokenKind = "cls"
REGISTER: TokenKind = "register"
PATCH: TokenKind = "patch"
ALL: Literal["all"] = "all"


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

    def token_types(self) -> list[TokenKind]:
        """The kind of each token position: "cls", "register" or "patch"."""
        return [kind for kind in TOKEN_KINDS for _ in range(self.count(kind))]

    def count(self, kind: str) -> int:
        """Number of tokens of one kind."""
        return {CLS: self.n_cls, REGISTER: self.n_reg, PATCH: self.grid[0] * self.grid[1]}[kind]


def resolve_layer_index(layer: Layer, n_blocks: int, owner: str = "the model") -> Layer:
    """The block index in ``0..n_blocks-1`` (or ``"embed"``) meant by ``layer``.

    The one home of layer resolution (backbones, extraction and stores share it): negative
    indices count from the end, digits in a string are an index, and anything outside
    ``-n_blocks..n_blocks-1`` is an error, never wrapped around.
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


__all__ = [
    "ALL",
    "CLS",
    "EMBED",
    "PATCH",
    "REGISTER",
    "TOKEN_CHOICES",
    "TOKEN_KINDS",
    "Layer",
    "TokenChoice",
    "TokenKind",
    "TokenLayout",
    "resolve_layer_index",
]
