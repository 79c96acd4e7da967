import pytest

from softsae_vision.cli import main
from tests._fixtures_render import assert_figure, render_fixtures


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return render_fixtures(tmp_path_factory)


def test_features_command(fx, tmp_path, capsys):
    out = tmp_path / "features"
    args = ["features", str(fx.soft_run), str(fx.store), "--out", str(out), "--no-progress"]
    assert main([*args, "--features", "0-1", "--top", "3", "--device", "cpu"]) == 0
    assert "feature figures" in capsys.readouterr().out
    pngs = sorted(p.name for p in out.glob("*.png"))
    fired = [f"feature_{i:05d}.png" for i in (0, 1) if (out / f"feature_{i:05d}.png").exists()]
    assert pngs == sorted([*fired, "index.png"]) and fired
    for name in pngs:
        assert_figure(out / name)


def test_features_rejects_bad_ids(fx, tmp_path, capsys):
    args = ["features", str(fx.soft_run), str(fx.store), "--out", str(tmp_path)]
    assert main([*args, "--features", "5000"]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--features", "a,b"])


def test_features_on_a_store_of_another_width_fails_clearly(fx, tmp_path, capsys):
    from softsae_vision.sae import TopKSAE

    TopKSAE(32, 16, k=2).save(tmp_path / "run")
    args = ["features", str(tmp_path / "run"), str(fx.store), "--out", str(tmp_path / "o")]
    assert main([*args, "--layer", "-1"]) == 2
    err = capsys.readouterr().err
    assert "run/store mismatch" in err and "Traceback" not in err
