"""The one home of layer names and token kinds."""

import subprocess
import sys
from typing import get_args

import pytest

from softsae_vision.errors import SoftSAEError
from softsae_vision.vocab import (
    EMBED,
    TOKEN_CHOICES,
    TOKEN_KINDS,
    TokenChoice,
    TokenKind,
    TokenLayout,
    resolve_layer_index,
)


def test_tuples_are_the_literals_values():
    assert TOKEN_KINDS == get_args(TokenKind) == ("cls", "register", "patch")
    assert get_args(TokenChoice) == TOKEN_CHOICES
    assert set(TOKEN_KINDS) | {"all", EMBED} == set(TOKEN_CHOICES)


def test_every_old_home_uses_the_same_objects():
    from softsae_vision.analysis import pairing
    from softsae_vision.backbones import base
    from softsae_vision.cli import train
    from softsae_vision.data import store_source

    assert base.TOKEN_TYPES is TOKEN_KINDS and base.TokenLayout is TokenLayout
    assert base.resolve_layer_index is resolve_layer_index
    assert train.TOKEN_CHOICES is TOKEN_CHOICES is store_source.TOKEN_CHOICES
    assert (pairing.PATCH, pairing.CLS, pairing.EMBED, pairing.ALL) == (
        "patch",
        "cls",
        EMBED,
        "all",
    )


def test_layout_token_types_follow_the_kinds_order():
    layout = TokenLayout(1, 2, (2, 3))
    assert layout.token_types() == ["cls", "register", "register"] + ["patch"] * 6
    assert [layout.count(k) for k in TOKEN_KINDS] == [1, 2, 6] and layout.n_tokens == 9


@pytest.mark.parametrize(
    ("layer", "expected"), [(0, 0), (-1, 11), ("-2", 10), (" 3 ", 3), ("EMBED", EMBED)]
)
def test_resolve_layer_index(layer, expected):
    assert resolve_layer_index(layer, 12) == expected


@pytest.mark.parametrize("layer", [12, -13, "x", True, 1.5])
def test_resolve_layer_index_refuses_what_it_cannot_mean(layer):
    with pytest.raises(SoftSAEError, match="layer"):
        resolve_layer_index(layer, 12, "vit")


def test_vocab_imports_no_model_library():
    code = "import sys, softsae_vision.vocab; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
