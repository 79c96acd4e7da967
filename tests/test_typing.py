"""The type checker is part of the project: configured, installed by the dev extra, shipped."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyright_is_configured_and_installed_by_the_dev_extra():
    project = _pyproject()
    pyright = project["tool"]["pyright"]
    assert pyright["typeCheckingMode"] in ("standard", "strict")
    assert pyright["include"] == ["softsae_vision"]
    assert any(
        dep.startswith("pyright") for dep in project["project"]["optional-dependencies"]["dev"]
    )


def test_py_typed_ships_with_the_package():
    project = _pyproject()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["softsae_vision"]
    assert (ROOT / "softsae_vision" / "py.typed").is_file()


def test_contributing_documents_every_shape_letter_once():
    """CONTRIBUTING.md's key gives each suffix letter one meaning."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    letters = [cell.strip("` ") for row in rows for cell in row.split("|")[1].split(",")]
    assert {"B", "D", "F", "K", "M", "N", "P", "T"} <= set(letters)
    assert len(letters) == len(set(letters))
