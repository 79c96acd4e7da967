"""What the ``write_*`` functions share: named figures, CSV tables and JSON summary headers.

Each writer collects what it wrote in a result with ``out`` (the folder), ``figures`` (name →
first format's path) and ``files`` (every path written, in order); the helpers here keep those
in step so no writer re-implements them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from softsae_vision._io import write_csv_atomic, write_json_atomic
from softsae_vision.viz.style import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from softsae_vision.analysis.pairing import Pairing


class Written(Protocol):
    """A writer's result: where it wrote, and what."""

    out: Path
    files: list[Path]


def save_named(
    result: Written,
    name: str,
    fig: Figure,
    formats: Sequence[str],
    figures: MutableMapping[Any, Path] | None = None,
    key: Hashable | None = None,
) -> Path:
    """Save ``fig`` as ``out/name.<fmt>`` per format; list the files; return the first path.

    The first path is also recorded in ``figures`` under ``key`` (default: ``name``) if given.
    """
    paths = save_figure(fig, result.out / name, formats)
    result.files += paths
    if figures is not None:
        figures[name if key is None else key] = paths[0]
    return paths[0]


def write_table(
    result: Written, name: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Path:
    """Write ``out/name`` as a CSV table (atomically) and list it; return its path."""
    path = write_csv_atomic(result.out / name, header, rows)
    result.files.append(path)
    return path


def write_summary(result: Written, name: str, summary: dict[str, Any]) -> Path:
    """Write ``out/name`` as indented JSON (atomically) and list it; return its path."""
    path = result.out / name
    write_json_atomic(path, summary)
    result.files.append(path)
    return path


def summary_header(pairing: Pairing, architecture: bool = True) -> dict[str, Any]:
    """The keys every JSON summary starts with: run, store, layer (and the SAE architecture)."""
    header: dict[str, Any] = {
        "run": str(pairing.run_dir) if pairing.run_dir else None,
        "store": str(pairing.store.path),
        "layer": pairing.layer,
    }
    if architecture:
        header["architecture"] = pairing.sae.architecture
    return header


__all__ = ["Written", "save_named", "summary_header", "write_summary", "write_table"]
