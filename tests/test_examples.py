"""examples/tour.ipynb runs top to bottom (nbclient), and is committed without outputs."""

from datetime import datetime
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_tour_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs"


def test_tour_runs(monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel inherits this environment: the checkout on the path, inline figures
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    client.execute()
    elapsed = sum(_seconds(c) for c in nb.cells if c.cell_type == "code")  # kernel start excluded
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # two overlays drawn
    assert "strongest feature" in "".join(o.get("text", "") for o in outputs)
    # ~30 s of cells on 2 busy CPU cores; the bound catches a tour that grew, not a slow machine
    assert elapsed < 180, f"the tour's cells took {elapsed:.0f} s; keep it near half a minute"


def _seconds(cell) -> float:
    """Execution time nbclient recorded for a cell."""
    times = cell.metadata["execution"]
    start, end = (
        datetime.fromisoformat(times[key].replace("Z", "+00:00"))
        for key in ("iopub.execute_input", "shell.execute_reply")
    )
    return (end - start).total_seconds()
