"""SAEs from other toolkits' files, imported into the matching softsae_vision class.

Each importer maps the source's weights and input scaling exactly, so the imported SAE's
``encode``/``forward`` equal the source's own forward pass (see docs/formats.md, "Imported
formats", for each layout and its one caveat). ``detect_format`` recognises a path's layout;
``load_sae(path)`` calls it, ``load_sae(path, format=...)`` skips it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from softsae_vision.errors import SoftSAEError
from softsae_vision.sae.base import CONFIG_FILE, WEIGHTS_FILE, BaseSAE

NATIVE = "native"
FORMATS = (
    NATIVE,
    "dictionary_learning",
    "dictionary_learning:softsae",
    "dictionary_learning:topk",
    "dictionary_learning:batchtopk",
    "saelens",
    "sparsify",
    "saev",
)
"""Names ``format=`` accepts (``softsae import --format``)."""


def detect_format(path: str | os.PathLike) -> str:
    """The layout of ``path`` (a folder or a file) as one of :data:`FORMATS`."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or path.suffix == ".safetensors":
        if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return NATIVE
        if (folder / "cfg.json").is_file() and (folder / WEIGHTS_FILE).is_file():
            return "saelens" if "d_sae" in _json(folder / "cfg.json") else "sparsify"
        if path.is_dir() and (path / "ae.pt").is_file():
            return "dictionary_learning"
        if path.is_dir() or path.suffix == ".safetensors":
            return NATIVE  # an unfinished, damaged or empty run: load_sae says which
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(1)
        return "saev" if head == b"{" else "dictionary_learning"
    raise SoftSAEError(
        f"{path} is neither an SAE run directory nor a file or folder of a known format "
        f"({', '.join(FORMATS[1:])}); check the path"
    )


def _json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SoftSAEError(f"{path} is not valid JSON ({err})") from None


def import_sae(
    path: str | os.PathLike, format: str | None = None
) -> tuple[BaseSAE, dict[str, Any]]:
    """(SAE, provenance) for a file or folder in another toolkit's format."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt not in FORMATS or fmt == NATIVE:
        raise SoftSAEError(f"format must be one of {', '.join(FORMATS[1:])}, got {fmt!r}")
    if not path.exists():
        raise SoftSAEError(f"no such file or directory: {path}")
    if fmt.startswith("dictionary_learning"):
        from softsae_vision.sae.importers import dictionary_learning

        kind = fmt.partition(":")[2] or None
        return dictionary_learning.load(path, kind)
    if fmt == "saev":
        from softsae_vision.sae.importers import saev

        return saev.load(path)
    from softsae_vision.sae.importers import folders

    return folders.load_saelens(path) if fmt == "saelens" else folders.load_sparsify(path)


def resolve_source(path: str | os.PathLike, format: str | None = None) -> tuple[Path, str]:
    """(local path, format) for what ``load_sae`` was given: ``hf://`` is fetched first."""
    text = os.fspath(path)
    if text.startswith("hf:"):
        from softsae_vision.hub import resolve_hub

        local = resolve_hub(text)
    else:
        local = Path(text)
    if format is not None and format not in FORMATS:
        raise SoftSAEError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format is None and not local.exists():
        return local, NATIVE  # load_sae reports the missing run
    return local, format or detect_format(local)


def as_run_dir(path: str | os.PathLike) -> str:
    """A native run directory for ``path``: itself, the cached copy of a ``hf://`` run, or a
    temporary run imported from another toolkit's file (removed when the process exits)."""
    import atexit
    import logging
    import shutil
    import tempfile

    local, fmt = resolve_source(path)
    if fmt == NATIVE:
        return str(local)
    sae, info = import_sae(local, fmt)
    tmp = tempfile.mkdtemp(prefix="softsae-import-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    sae.save(
        tmp,
        extra_config={
            "imported_from": {**info, "source": os.fspath(path)},
            "data": {"kind": "imported"},
        },
    )
    logging.getLogger(__name__).info(
        "read %s as %s; `softsae import` writes a lasting run", os.fspath(path), info["format"]
    )
    return tmp
