import json

import pytest

from softsae_vision.cli import main
from tests._fixtures_render import assert_figure, render_fixtures


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return render_fixtures(tmp_path_factory)


def test_complexity_command_on_a_topk_run(fx, tmp_path, capsys):
    out = tmp_path / "c"
    args = ["complexity", str(fx.topk_run), str(fx.store), "--out", str(out), "--no-progress"]
    assert main([*args, "--n-boot", "20"]) == 0
    stdout = capsys.readouterr().out
    assert "L0 (mean_over_patches) vs jpeg_bpp" in stdout and "undefined" in stdout
    summary = json.loads((out / "complexity.json").read_text())
    assert summary["architecture"] == "topk" and summary["n_images"] == 8
    assert_figure(out / "scatter_mean_over_patches.png", min_width=400)


def test_complexity_k_hat_needs_a_softsae(fx, tmp_path, capsys):
    args = ["complexity", str(fx.topk_run), str(fx.store), "--out", str(tmp_path)]
    assert main([*args, "--quantity", "k_hat"]) == 2
    assert "needs a SoftSAE" in capsys.readouterr().err
