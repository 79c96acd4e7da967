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


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in the package's __init__."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(softsae_vision))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = str(stmt.module)
    return found


def test_lazy_names_are_visible_to_type_checkers():
    """Every lazily loaded name is imported under TYPE_CHECKING from the module that loads it."""
    lazy = softsae_vision._LAZY
    assert _type_checking_imports() == lazy
    assert sorted(softsae_vision.__all__) == sorted([*lazy, "SoftSAEError", "__version__"])


def test_package_declares_inline_types():
    from pathlib import Path

    assert (Path(softsae_vision.__file__).parent / "py.typed").is_file()
