"""Command-line flags generated from frozen config dataclasses: one flag per field.

A field ``batch_size: int = 4096`` followed by the docstring "Activation vectors per step."
becomes ``--batch-size N`` with that help and default, so a setting is declared once, in its
dataclass (as sparsify's simple_parsing does, here in a few lines over ``dataclasses.fields``
and argparse). Types map as: bool → ``--x/--no-x``; int, float, str; ``Literal[...]`` →
choices; ``X | None`` → X with no default; ``tuple[float, ...]`` → a comma-separated list.
Imports no torch (the parser is built before any heavy import).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae_configs import field_types, literal_choices


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right after it), base classes' first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a frozen build): flags without help
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for item, after in zip(body, body[1:], strict=False):
            if (
                isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[item.target.id] = " ".join(after.value.value.split())
    return docs


def flag_name(field_name: str) -> str:
    """``batch_size`` → ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def _base_type(kind: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None was allowed)."""
    args = typing.get_args(kind)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return kind, False


def _sequence(item: type, length: int | None):
    """argparse type: a comma-separated list of ``item`` as a tuple (of ``length`` if given)."""

    def parse(text: str) -> tuple:
        parts = [t.strip() for t in text.split(",") if t.strip()]
        try:
            values = tuple(item(t) for t in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {item.__name__}: {text!r}") from None
        if not values or (length is not None and len(values) != length):
            count = f"{length} " if length is not None else ""
            raise argparse.ArgumentTypeError(f"expected {count}comma-separated {item.__name__}s")
        return values

    parse.__name__ = f"list of {item.__name__}"
    return parse


def argument_kwargs(kind: Any, default: Any) -> dict[str, Any]:
    """``add_argument`` keyword arguments (type, choices, action, metavar) for a field type."""
    base, _ = _base_type(kind)
    choices = literal_choices(base)
    if choices is not None:
        return {"type": type(choices[0]), "choices": choices, "default": default}
    if base is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        fixed = None if len(args) == 2 and args[1] is Ellipsis else len(args)
        item = args[0]
        metavar = ",".join(["X"] * fixed) if fixed else "X,Y,..."
        return {"type": _sequence(item, fixed), "default": default, "metavar": metavar}
    if base in (int, float, str):
        return {"type": base, "default": default}
    raise TypeError(f"no command-line form for a field of type {kind!r}")


def _help(doc: str, default: Any, suffix: str = "") -> str:
    """Help text: the docstring (literal markup dropped), what reads it, and unset defaults."""
    text = doc.replace("``", "") + (f" [{suffix}]" if suffix else "")
    if "default" not in text.lower():
        if default is None:
            text += " (default: not set)"
        elif isinstance(default, bool):
            text += f" (default: {'on' if default else 'off'})"
    return text.replace("%", "%%")


def add_dataclass_flags(
    group: argparse._ActionsContainer, cls: type, skip: Iterable[str] = ()
) -> list[str]:
    """A flag for every field of dataclass ``cls`` (but ``skip``); returns the field names."""
    docs, types, names = field_docs(cls), field_types(cls), []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs = argument_kwargs(types[f.name], default)
        group.add_argument(flag_name(f.name), help=_help(docs.get(f.name, ""), default), **kwargs)
        names.append(f.name)
    return names


def add_config_flags(
    parser: argparse.ArgumentParser, configs: Mapping[str, type], option: str = "--arch"
) -> None:
    """One flag per field of the ``configs`` (name → dataclass); a field several share, once.

    A field of one configuration goes in that one's group, a shared field in a common group
    with the names that read it; int and float versions of one field make a float flag, and
    differing defaults make the flag default to each configuration's own.
    """
    owners: dict[str, list[str]] = {}
    for name, cls in configs.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(name)
    groups: dict[str, argparse._ActionsContainer] = {}

    def group_for(names: list[str]) -> argparse._ActionsContainer:
        key = names[0] if len(names) == 1 else ""
        if key not in groups:
            title = f"{option} {key}" if key else f"hyperparameters of several {option} values"
            doc = (configs[key].__doc__ or "").strip().splitlines()[0] if key else None
            groups[key] = parser.add_argument_group(title, doc)
        return groups[key]

    for field_name, names in sorted(owners.items(), key=lambda kv: len(kv[1]) == 1):
        kinds = {field_types(configs[n])[field_name] for n in names}
        defaults = {repr(_default(configs[n], field_name)) for n in names}
        kind = kinds.pop() if len(kinds) == 1 else _merge(kinds, field_name)
        default = _default(configs[names[0]], field_name) if len(defaults) == 1 else None
        doc = field_docs(configs[names[0]]).get(field_name, "")
        shown = doc if len(defaults) == 1 else f"{doc} (default: each {option}'s own)"
        group_for(names).add_argument(
            flag_name(field_name),
            help=_help(shown, default, ", ".join(names) if len(names) > 1 else ""),
            **argument_kwargs(kind, default),
        )


def _default(cls: type, field_name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
    return f.default if f.default is not dataclasses.MISSING else None


def _merge(kinds: set[Any], field_name: str) -> Any:
    if {_base_type(k)[0] for k in kinds} <= {int, float}:
        return float
    raise TypeError(f"field {field_name!r} has different types in different configs: {kinds}")


def config_from_args(cls: type, args: argparse.Namespace, owner: str) -> Any:
    """Dataclass ``cls`` from the parsed flags named after its fields (unset flags: defaults).

    ``owner`` names what chose ``cls`` in errors (e.g. "--arch topk"): an int field given a
    fractional number is a SoftSAEError.
    """
    types, values = field_types(cls), {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if _base_type(types[f.name])[0] is int and isinstance(value, float):
            if value != int(value):
                raise SoftSAEError(f"{owner} needs an integer {flag_name(f.name)}, got {value:g}")
            value = int(value)
        values[f.name] = value
    return cls(**values)
