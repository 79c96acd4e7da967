import pytest

from softsae_vision.cli import main
from tests._fixtures_render import assert_figure, render_fixtures


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    return render_fixtures(tmp_path_factory)


def test_kmaps_command(fx, tmp_path, capsys):
    out = tmp_path / "k"
    args = ["kmaps", str(fx.soft_run), str(fx.store), "--out", str(out), "--no-progress"]
    assert main([*args, "--n-grid", "2", "--n-single", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "per-image k̂" in stdout and "mean over patches" in stdout
    for name in ("lowest", "highest", "distribution"):
        assert_figure(out / f"{name}.png")
    assert len(list(out.glob("kmap_*.png"))) == 1
    assert (out / "kmaps.csv").is_file() and (out / "kmaps.json").is_file()
    # The figure commands write PDFs for papers by default.
    assert {p.stem for p in out.glob("*.pdf")} == {p.stem for p in out.glob("*.png")}


def test_kmaps_no_pdf_writes_pngs_only(fx, tmp_path):
    out = tmp_path / "k"
    args = ["kmaps", str(fx.soft_run), str(fx.store), "--out", str(out), "--no-progress"]
    assert main([*args, "--n-grid", "2", "--n-single", "0", "--no-pdf"]) == 0
    assert {p.name for p in out.glob("*.png")} == {"lowest.png", "highest.png", "distribution.png"}
    assert not list(out.glob("*.pdf"))


def test_kmaps_needs_patch_tokens(fx, tmp_path, capsys):
    args = ["kmaps", str(fx.soft_run), str(fx.cls_store), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "needs patch tokens" in capsys.readouterr().err


def test_k_hat_of_a_topk_run_is_refused(fx, tmp_path, capsys):
    args = ["kmaps", str(fx.topk_run), str(fx.store), "--out", str(tmp_path)]
    assert main([*args, "--quantity", "k_hat"]) == 2
    assert "needs a SoftSAE" in capsys.readouterr().err
