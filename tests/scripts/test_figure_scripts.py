"""The paper-figure scripts run end to end on the tiny store (they use only the public API)."""

import runpy
import sys
from pathlib import Path

import pytest

from tests._fixtures_render import assert_figure, render_fixtures

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return render_fixtures(tmp_path_factory)


def run_script(name: str, args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


def test_kmap_panel(fx, tmp_path, monkeypatch):
    out = tmp_path / "panel"
    args = [str(fx.soft_run), str(fx.store), "--images", "im0.png,im7.png,3", "--out", str(out)]
    run_script("kmap_panel.py", args, monkeypatch)
    assert_figure(out.with_suffix(".png"))


def test_complexity_compare(fx, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare"
    args = [str(fx.store), str(fx.soft_run), str(fx.topk_run), "--n-boot", "20", "--out", str(out)]
    run_script("complexity_compare.py", args, monkeypatch)
    assert_figure(out.with_suffix(".png"), min_width=300)
    assert "run_topk_patch: ρ undefined" in capsys.readouterr().out


def test_softsae_vs_topk(fx, tmp_path, monkeypatch):
    out = tmp_path / "versus"
    args = [str(fx.soft_run), str(fx.topk_run), str(fx.store), "--images", "0,7", "--out", str(out)]
    run_script("softsae_vs_topk.py", args, monkeypatch)
    assert_figure(out.with_suffix(".png"))
