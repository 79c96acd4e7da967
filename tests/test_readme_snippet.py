"""README's Python snippet runs as printed (on a tiny store), without a single warning."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# The snippet's sizes are for a real model; these make it run in seconds on the tiny store.
SMALLER = {
    "n_latents=8192": "n_latents=64",
    "k=32)": "k=4)",
    "steps=5000": "steps=5",
    "batch_size=4096": "batch_size=64",
}


def snippet() -> str:
    """The Python snippet of README's "Python API" section (other sections test their own)."""
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "README's Python API section should have one Python snippet"
    return blocks[0]


@pytest.mark.slow
def test_readme_snippet_runs_without_warnings(tmp_path, monkeypatch):
    from tests._fixtures_render import make_store

    store = make_store(tmp_path)  # test_vit at 64 px: layers 1 and 5, a 4 x 4 patch grid
    code = snippet()
    for old, new in {
        **SMALLER,
        "layer=11": "layer=5",
        "activations(11)": "activations(5)",
        '"patch", 11)': '"patch", 5)',
    }.items():
        assert old in code, f"README snippet no longer contains {old!r}"
        code = code.replace(old, new)
    (tmp_path / "stores").mkdir()
    (tmp_path / "stores" / "dino").symlink_to(store)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, str(README), "exec"), namespace)
    h, w = namespace["store"].grid
    assert namespace["codes"].shape == (h, w, 64) and namespace["k_map"].shape == (h, w)
    assert (tmp_path / "runs" / "soft" / "sae.safetensors").is_file()


def test_readme_snippet_imports_only_what_it_uses():
    code = snippet()
    imported = []
    for line in code.splitlines():
        if line.startswith("from softsae_vision import "):
            imported += [n.strip() for n in line.split("import", 1)[1].split(",")]
        elif line.startswith("import "):
            imported.append(line.split()[-1])  # the alias of "import numpy as np"
    body = "\n".join(line for line in code.splitlines() if "import" not in line)
    unused = [name for name in imported if not re.search(rf"\b{name}\b", body)]
    assert not unused, unused
