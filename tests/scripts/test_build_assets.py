"""scripts/build_assets.py reads its table from build_assets.json, which matches LICENSES.md."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_assets.py"


def _load():
    spec = importlib.util.spec_from_file_location("build_assets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_assets"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["build_assets"]
    return module


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_the_table_describes_every_bundled_image_as_licenses_md_does():
    build = _load()
    build._self_check()
    shipped = {
        _cells(line)[0]: _cells(line)
        for line in (ROOT / "assets" / "LICENSES.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    }
    assert sorted(shipped) == sorted(f"`{a.name}`" for a in build.ASSETS)
    for asset in build.ASSETS:
        row = _cells(build.table_row(asset, "-"))
        assert row[:-1] == shipped[row[0]][:-1], asset.name  # all but the Modification cell
        assert (ROOT / "assets" / "images" / asset.name).is_file()


def test_help_answers():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "--lomiri-dir" in out.stdout, out.stderr
