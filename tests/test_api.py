"""The public API named in DESIGN.md is importable from the package top level."""

import softsae_vision

CONTRACT = [
    "soft_topk",
    "SoftSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "load_sae",
    "load_backbone",
    "open_store",
    "train",
    "TrainConfig",
    "evaluate",
    "build_report",
]


def test_contract_names_are_exported():
    for name in CONTRACT:
        assert name in softsae_vision.__all__
        assert getattr(softsae_vision, name) is not None


def test_every_exported_name_resolves():
    for name in softsae_vision.__all__:
        getattr(softsae_vision, name)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError):
        softsae_vision.not_a_thing  # noqa: B018
